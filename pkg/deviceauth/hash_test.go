package deviceauth

import (
	"strings"
	"testing"
	"time"
)

func TestHashToken(t *testing.T) {
	const tok = "device-token-0123456789"
	h1, err := HashToken(tok)
	if err != nil {
		t.Fatal(err)
	}
	h2, _ := HashToken(tok)
	if h1 == h2 {
		t.Fatal("two hashes of one token are equal: no salt")
	}
	if !strings.HasPrefix(h1, "$pbkdf2-sha256$i=10000$") || strings.Contains(h1, tok) || !IsSlowHash(h1) {
		t.Fatalf("hash %q", h1)
	}
	if !VerifyToken(h1, tok) || !VerifyToken(h2, tok) || VerifyToken(h1, tok+"x") || VerifyToken(h1, "") {
		t.Fatal("verify")
	}
	// Legacy sha256 still verifies (either case), and its wrapped form too.
	legacy := TokenSHA256(tok)
	if !VerifyToken(legacy, tok) || !VerifyToken(strings.ToUpper(legacy), tok) || VerifyToken(legacy, "other-token-0123456") {
		t.Fatal("legacy verify")
	}
	up, err := UpgradeHash(legacy)
	if err != nil || !strings.HasPrefix(up, "$pbkdf2-sha256-hex-sha256$i=") || strings.Contains(up, legacy) {
		t.Fatalf("upgrade: %q %v", up, err)
	}
	if !VerifyToken(up, tok) || VerifyToken(up, legacy) || VerifyToken(up, "other-token-0123456") {
		t.Fatal("wrapped verify")
	}
	if same, _ := UpgradeHash(h1); same != h1 {
		t.Fatal("upgrade changed a slow hash")
	}
	// Malformed stored values never match, nor cost more than maxIterations.
	for _, bad := range []string{"", "$pbkdf2-sha256$i=0$c2FsdHNhbHQ$" + strings.Repeat("A", 43),
		"$pbkdf2-sha256$i=99999999$c2FsdHNhbHQ$" + strings.Repeat("A", 43), "$md5$x", "abc", strings.Repeat("z", 64)} {
		if VerifyToken(bad, tok) || VerifyToken(bad, "") {
			t.Errorf("%q verified", bad)
		}
	}
}

func TestAuthenticateSlowHash(t *testing.T) {
	h, _ := HashToken("device-token-0123456789")
	l := Login{ClientID: "SN1", Username: "SN1", Password: "device-token-0123456789"}
	if d := Authenticate(l, Accounts{}, h); !d.Allow || d.Reason != ReasonDevice {
		t.Fatalf("%+v", d)
	}
	l.Password = "device-token-0123456780"
	if d := Authenticate(l, Accounts{}, h); d.Allow || d.Reason != ReasonBadPassword {
		t.Fatalf("%+v", d)
	}
}

func TestLoginLimiter(t *testing.T) {
	now := time.Unix(0, 0)
	l := NewLoginLimiter(2, 10*time.Second, func() time.Time { return now })
	if !l.Allow("a") {
		t.Fatal("fresh id refused")
	}
	l.Failed("a")
	if !l.Allow("a") {
		t.Fatal("refused after 1 of 2 failures")
	}
	l.Failed("a")
	if l.Allow("a") {
		t.Fatal("allowed after the burst")
	}
	if !l.Allow("b") {
		t.Fatal("another id refused")
	}
	now = now.Add(10 * time.Second)
	if !l.Allow("a") {
		t.Fatal("refused after a token came back")
	}
	l.Failed("a")
	if l.Allow("a") {
		t.Fatal("allowed with no token left")
	}
	// Memory stays bounded under a flood of ids.
	l.max = 100
	for i := range 1000 {
		l.Failed(strings.Repeat("x", i%7) + string(rune('a'+i%26)) + time.Duration(i).String())
	}
	if len(l.buckets) > 100 {
		t.Fatalf("%d buckets", len(l.buckets))
	}
}

// BenchmarkVerifyToken is the CPU cost of one device login (one PBKDF2 of
// HashIterations): go test -bench VerifyToken ./pkg/deviceauth/
func BenchmarkVerifyToken(b *testing.B) {
	h, _ := HashToken("device-token-0123456789")
	for b.Loop() {
		if !VerifyToken(h, "device-token-0123456789") {
			b.Fatal("no match")
		}
	}
}

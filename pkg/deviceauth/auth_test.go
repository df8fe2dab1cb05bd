package deviceauth

import (
	"encoding/base64"
	"strings"
	"testing"
)

func testAccounts(t *testing.T) Accounts {
	t.Helper()
	a, err := ParseAccounts("ingest:in-pw, egress:eg-pw")
	if err != nil {
		t.Fatal(err)
	}
	return a
}

func TestParseAccounts(t *testing.T) {
	a := testAccounts(t)
	if got := strings.Join(a.Names(), ","); got != "egress,ingest" {
		t.Fatalf("names %q", got)
	}
	for _, bad := range []string{"x", "x:", "a:1,a:2", "a/b:1", "+:1"} {
		if _, err := ParseAccounts(bad); err == nil {
			t.Errorf("ParseAccounts(%q) accepted", bad)
		}
	}
	f, err := ReadAccounts(strings.NewReader("# c\n\napi:p:with:colons\n"))
	if err != nil || !f.check("api", "p:with:colons") {
		t.Fatalf("ReadAccounts: %v", err)
	}
}

func TestAuthenticate(t *testing.T) {
	a := testAccounts(t)
	hash := TokenSHA256("tok-1")
	cases := []struct {
		name   string
		login  Login
		hash   string
		allow  bool
		reason string
	}{
		{"device", Login{"SN1", "SN1", "tok-1"}, hash, true, ReasonDevice},
		{"device upper-case hash", Login{"SN1", "SN1", "tok-1"}, strings.ToUpper(hash), true, ReasonDevice},
		{"wrong token", Login{"SN1", "SN1", "tok-2"}, hash, false, ReasonBadPassword},
		{"empty token", Login{"SN1", "SN1", ""}, hash, false, ReasonBadPassword},
		{"unregistered", Login{"SN1", "SN1", "tok-1"}, "", false, ReasonUnknownDevice},
		{"client id differs", Login{"SN2", "SN1", "tok-1"}, hash, false, ReasonClientIDNotSN},
		{"wildcard sn", Login{"S+", "S+", "tok-1"}, hash, false, ReasonBadUsername},
		{"service", Login{"ingest-1", "ingest", "in-pw"}, "", true, ReasonService},
		{"service wrong password", Login{"ingest", "ingest", "eg-pw"}, "", false, ReasonBadPassword},
		{"service name never a device", Login{"ingest", "ingest", "tok-1"}, hash, false, ReasonBadPassword},
	}
	for _, c := range cases {
		d := Authenticate(c.login, a, c.hash)
		if d.Allow != c.allow || d.Reason != c.reason {
			t.Errorf("%s: got %+v, want allow=%v reason=%s", c.name, d, c.allow, c.reason)
		}
	}
}

func TestAuthorize(t *testing.T) {
	a := testAccounts(t)
	cases := []struct {
		user, client, topic string
		action              Action
		allow               bool
	}{
		{"SN1", "SN1", "/ivms/pub/SN1", Publish, true},
		{"SN1", "SN1", "/ivms/pub/SN2", Publish, false},
		{"SN1", "SN1", "/ivms/pub/+", Publish, false},
		{"SN1", "SN1", "/ivms/sub/SN1", Publish, false},
		{"SN1", "SN1", "/ivms/sub/SN1", Subscribe, true},
		{"SN1", "SN1", "/ivms/push", Subscribe, true},
		{"SN1", "SN1", "/ivms/sub/SN2", Subscribe, false},
		{"SN1", "SN1", "/ivms/sub/+", Subscribe, false},
		{"SN1", "SN1", "/ivms/#", Subscribe, false},
		{"SN1", "SN1", "/ivms/pub/SN1", Subscribe, false},
		{"SN1", "X", "/ivms/pub/SN1", Publish, false},
		{"SN1", "SN1", "/ivms/pub/SN1", "retain", false},
		{"ingest", "ingest-1", "$share/ams-ingest//ivms/pub/+", Subscribe, true},
		{"ingest", "ingest-1", "/ivms/pub/+", Subscribe, true},
		{"ingest", "ingest-1", "$SYS/brokers/+/clients/+/disconnected", Subscribe, true},
		{"ingest", "ingest-1", "$SYS/brokers/n1/clients/SN1/connected", Subscribe, true},
		{"ingest", "ingest-1", "$SYS/#", Subscribe, false},
		{"ingest", "ingest-1", "#", Subscribe, false},
		{"ingest", "ingest-1", "/ivms/sub/+", Subscribe, false},
		{"egress", "egress-0", "/ivms/sub/SN1", Publish, true},
		{"egress", "egress-0", "/ivms/push", Publish, true},
		{"egress", "egress-0", "/ivms/sub/+", Publish, false},
		{"egress", "egress-0", "/ivms/pub/SN1", Publish, false},
	}
	for _, c := range cases {
		d := Authorize(Access{ClientID: c.client, Username: c.user, Topic: c.topic, Action: c.action}, a)
		if d.Allow != c.allow {
			t.Errorf("%s (%s) %s %s: got %+v, want allow=%v", c.user, c.client, c.action, c.topic, d, c.allow)
		}
	}
}

// TestMosquittoHashGolden reproduces a line written by mosquitto_passwd 2.0.11
// (`mosquitto_passwd -b pw alice secret`).
func TestMosquittoHashGolden(t *testing.T) {
	const line = "$7$101$rUegYwde7RpGau6B$WGXKI635EealtDx5BbYjdRsKj6BMGyVPceLn3KK5Fo4HKh+tLgOtxrJJaEm9UagkRe5xTEX+pzyEHlqXJ1KD7Q=="
	salt, err := base64.StdEncoding.DecodeString(strings.Split(line, "$")[3])
	if err != nil {
		t.Fatal(err)
	}
	got, err := MosquittoHash("secret", salt)
	if err != nil {
		t.Fatal(err)
	}
	if got != line {
		t.Fatalf("got  %s\nwant %s", got, line)
	}
}

func TestMosquittoFiles(t *testing.T) {
	a := testAccounts(t)
	devs, err := ReadCredentials(strings.NewReader("# devices\nSN1:tok-1\n\nSN2:tok-2\n"))
	if err != nil || len(devs) != 2 {
		t.Fatalf("ReadCredentials: %v %v", devs, err)
	}
	pw, err := MosquittoPasswd(a, devs, nil)
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSpace(pw), "\n")
	if len(lines) != 4 || !strings.HasPrefix(lines[0], "egress:$7$101$") || !strings.HasPrefix(lines[3], "SN2:$7$101$") {
		t.Fatalf("passwd:\n%s", pw)
	}
	if strings.Contains(pw, "tok-1") || strings.Contains(pw, "in-pw") {
		t.Fatal("passwd holds a plain password")
	}
	if _, err := MosquittoPasswd(a, []Credential{{"ingest", "x"}}, nil); err == nil {
		t.Fatal("a device named like a service was accepted")
	}
	acl := MosquittoACL(a)
	for _, want := range []string{"pattern write /ivms/pub/%u\n", "pattern read /ivms/sub/%u\n", "user ingest\n", "topic read /ivms/pub/+\n"} {
		if !strings.Contains(acl, want) {
			t.Errorf("acl lacks %q:\n%s", want, acl)
		}
	}
	for _, bad := range []string{"SN1", "a:b\na:c", "x/y:t"} {
		if _, err := ReadCredentials(strings.NewReader(bad)); err == nil {
			t.Errorf("ReadCredentials(%q) accepted", bad)
		}
	}
}

package api

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strings"
	"sync"
	"time"
)

// Scope is what a bearer token may do. Each token has exactly one scope.
type Scope string

// Scopes, from narrowest to widest; broker-auth stands apart.
const (
	// ScopeRead may call every GET route.
	ScopeRead Scope = "read"
	// ScopeCommand may do what read may, and POST commands.
	ScopeCommand Scope = "command"
	// ScopeAdmin may call every route, registrations and the broker endpoints included.
	ScopeAdmin Scope = "admin"
	// ScopeBrokerAuth may call only the broker's authentication and
	// authorization endpoints (/v1/emqx/*).
	ScopeBrokerAuth Scope = "broker-auth"
)

// ParseScope returns the scope named s.
func ParseScope(s string) (Scope, error) {
	switch sc := Scope(s); sc {
	case ScopeRead, ScopeCommand, ScopeAdmin, ScopeBrokerAuth:
		return sc, nil
	}
	return "", fmt.Errorf("unknown scope %q (want read, command, admin or broker-auth)", s)
}

// Principal is who a request authenticated as: the token's name (recorded as
// requested_by / updated_by on what it writes) and its scope.
type Principal struct {
	Name  string
	Scope Scope
}

// Allows reports whether p may do what needs the scope need: read <
// command < admin, admin includes broker-auth, broker-auth includes nothing
// else.
func (p Principal) Allows(need Scope) bool {
	switch p.Scope {
	case ScopeAdmin:
		return need == ScopeRead || need == ScopeCommand || need == ScopeAdmin || need == ScopeBrokerAuth
	case ScopeCommand:
		return need == ScopeRead || need == ScopeCommand
	case ScopeRead:
		return need == ScopeRead
	case ScopeBrokerAuth:
		return need == ScopeBrokerAuth
	}
	return false
}

// MinTokenLen is the shortest plain bearer token a tokens file may hold.
const MinTokenLen = 16

// DefaultTokenName is the name of the token given by -api-token (an admin token).
const DefaultTokenName = "default"

type tokenEntry struct {
	name  string
	scope Scope
	sum   [32]byte // sha256 of the token
}

// Tokens is the set of valid bearer tokens: several may be valid at once
// (rotation with overlap), each with a name and a scope. Only sha256 digests
// are held. It is safe for concurrent use; Reload swaps the set atomically
// and keeps the old one when the file is bad.
type Tokens struct {
	file   string
	legacy *tokenEntry

	mu      sync.RWMutex
	entries []tokenEntry
	stamp   fileStamp
}

type fileStamp struct {
	mtime time.Time
	size  int64
}

// NewTokens returns the tokens of file (empty: none) plus, when legacy is
// not empty, legacy as an admin token named "default" (the old single
// -api-token). It fails when the file is unreadable or malformed, or when
// there is no token at all.
func NewTokens(file, legacy string) (*Tokens, error) {
	t := &Tokens{file: file}
	if legacy != "" {
		t.legacy = &tokenEntry{name: DefaultTokenName, scope: ScopeAdmin, sum: sha256.Sum256([]byte(legacy))}
	}
	if err := t.Reload(); err != nil {
		return nil, err
	}
	if t.Len() == 0 {
		return nil, errors.New("api: no API token configured (-api-token or -api-tokens-file)")
	}
	return t, nil
}

// Len returns how many tokens are valid.
func (t *Tokens) Len() int {
	t.mu.RLock()
	defer t.mu.RUnlock()
	return len(t.entries)
}

// Names returns the token names with their scopes ("name:scope"), for logs.
func (t *Tokens) Names() []string {
	t.mu.RLock()
	defer t.mu.RUnlock()
	out := make([]string, 0, len(t.entries))
	for _, e := range t.entries {
		out = append(out, e.name+":"+string(e.scope))
	}
	return out
}

// Authenticate returns the principal whose token is bearer. Every
// configured token is compared (sha256 digests, constant time), so neither
// which token matched nor a token's length leaks through timing.
func (t *Tokens) Authenticate(bearer string) (Principal, bool) {
	if bearer == "" {
		return Principal{}, false
	}
	got := sha256.Sum256([]byte(bearer))
	t.mu.RLock()
	defer t.mu.RUnlock()
	var p Principal
	found := 0
	for i := range t.entries {
		eq := subtle.ConstantTimeCompare(got[:], t.entries[i].sum[:])
		if eq == 1 && found == 0 {
			p = Principal{Name: t.entries[i].name, Scope: t.entries[i].scope}
		}
		found |= eq
	}
	return p, found == 1
}

// Reload re-reads the tokens file. On error the current tokens stay valid.
func (t *Tokens) Reload() error {
	var entries []tokenEntry
	var st fileStamp
	if t.file != "" {
		fi, err := os.Stat(t.file)
		if err != nil {
			return fmt.Errorf("api tokens file: %w", err)
		}
		st = fileStamp{mtime: fi.ModTime(), size: fi.Size()}
		b, err := os.ReadFile(t.file)
		if err != nil {
			return fmt.Errorf("api tokens file: %w", err)
		}
		if entries, err = parseTokens(bytes.NewReader(b)); err != nil {
			return fmt.Errorf("api tokens file %s: %w", t.file, err)
		}
		if len(entries) == 0 {
			// Most likely caught mid-write; an operator retires every token
			// by stopping the API, not by emptying the file.
			return fmt.Errorf("api tokens file %s: no token", t.file)
		}
	}
	if t.legacy != nil {
		for _, e := range entries {
			if e.name == t.legacy.name {
				return fmt.Errorf("api tokens file %s: name %q is taken by -api-token", t.file, e.name)
			}
		}
		entries = append(entries, *t.legacy)
	}
	t.mu.Lock()
	t.entries, t.stamp = entries, st
	t.mu.Unlock()
	return nil
}

// changed reports whether the file's mtime or size differs from the last load.
func (t *Tokens) changed() bool {
	fi, err := os.Stat(t.file)
	if err != nil {
		return true
	}
	t.mu.RLock()
	defer t.mu.RUnlock()
	return !fi.ModTime().Equal(t.stamp.mtime) || fi.Size() != t.stamp.size
}

// Watch re-reads the tokens file whenever its modification time or size
// changes, checking every interval, until ctx is done. Replace the file
// atomically (write a new one, rename it over the old; Kubernetes secret
// volumes do) so a half-written file is never read. A bad file is logged
// (never its content) and the previous tokens stay valid.
func (t *Tokens) Watch(ctx context.Context, interval time.Duration, log *slog.Logger) {
	if t.file == "" {
		return
	}
	tick := time.NewTicker(interval)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		if !t.changed() {
			continue
		}
		if err := t.Reload(); err != nil {
			log.Error("api: tokens file not reloaded; the previous tokens stay valid", "err", err)
			continue
		}
		log.Info("api: tokens reloaded", "tokens", t.Names())
	}
}

// parseTokens reads a tokens file: one "name scope token" or
// "name scope sha256:<64 hex>" per line; blank lines and lines starting
// with '#' are skipped. Names are unique; a plain token has at least
// MinTokenLen bytes. Errors name the line, never its token.
func parseTokens(r io.Reader) ([]tokenEntry, error) {
	var out []tokenEntry
	seen := map[string]bool{}
	sc := bufio.NewScanner(r)
	for n := 1; sc.Scan(); n++ {
		l := strings.TrimSpace(sc.Text())
		if l == "" || strings.HasPrefix(l, "#") {
			continue
		}
		f := strings.Fields(l)
		if len(f) != 3 {
			return nil, fmt.Errorf("line %d: want \"name scope token\" or \"name scope sha256:<hex>\"", n)
		}
		name, tok := f[0], f[2]
		scope, err := ParseScope(f[1])
		if err != nil {
			return nil, fmt.Errorf("line %d: %w", n, err)
		}
		if seen[name] {
			return nil, fmt.Errorf("line %d: name %q appears twice", n, name)
		}
		seen[name] = true
		e := tokenEntry{name: name, scope: scope}
		if h, ok := strings.CutPrefix(tok, "sha256:"); ok {
			b, err := hex.DecodeString(h)
			if err != nil || len(b) != sha256.Size {
				return nil, fmt.Errorf("line %d: sha256: wants 64 hex digits", n)
			}
			copy(e.sum[:], b)
		} else {
			if len(tok) < MinTokenLen {
				return nil, fmt.Errorf("line %d: token of %q shorter than %d bytes", n, name, MinTokenLen)
			}
			e.sum = sha256.Sum256([]byte(tok))
		}
		out = append(out, e)
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("read: %w", err)
	}
	return out, nil
}

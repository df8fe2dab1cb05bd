package console

import (
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"time"
)

// Scopes a token can have. A token of scope read may view every page; a
// token of scope command (or admin) may also send commands.
const (
	ScopeRead    = "read"
	ScopeCommand = "command"
	ScopeAdmin   = "admin"
)

// Authenticator checks an API token. ok is false for an unknown token;
// name is recorded as requested_by on the commands the token sends.
// Implementations compare in constant time and never log the token.
type Authenticator interface {
	Authenticate(token string) (name, scope string, ok bool)
}

// Token is one accepted token of a Tokens authenticator.
type Token struct {
	Name, Scope, Secret string
}

// Tokens is an Authenticator over a fixed list of tokens. It compares the
// sha256 of the given token with each entry's in constant time, so neither
// a token nor its length leaks through timing.
type Tokens struct {
	entries []tokenEntry
}

type tokenEntry struct {
	name, scope string
	sum         [32]byte
}

// NewTokens returns an authenticator accepting tokens; an entry with an
// empty secret is an error.
func NewTokens(tokens ...Token) (*Tokens, error) {
	t := &Tokens{}
	for _, tk := range tokens {
		if tk.Secret == "" {
			return nil, fmt.Errorf("console: token %q has no secret", tk.Name)
		}
		t.entries = append(t.entries, tokenEntry{name: tk.Name, scope: tk.Scope, sum: sha256.Sum256([]byte(tk.Secret))})
	}
	return t, nil
}

// Authenticate implements Authenticator.
func (t *Tokens) Authenticate(token string) (name, scope string, ok bool) {
	if token == "" {
		return "", "", false
	}
	got := sha256.Sum256([]byte(token))
	for _, e := range t.entries { // every entry is compared, match or not
		if subtle.ConstantTimeCompare(got[:], e.sum[:]) == 1 {
			name, scope, ok = e.name, e.scope, true
		}
	}
	return name, scope, ok
}

// canView and canSend say what a scope allows in the console.
func canView(scope string) bool {
	return scope == ScopeRead || scope == ScopeCommand || scope == ScopeAdmin
}

func canSend(scope string) bool { return scope == ScopeCommand || scope == ScopeAdmin }

// Cookie names. The session cookie holds the API token itself (HttpOnly, so
// no script can read it; SameSite=Strict, so no other site can send it).
const (
	sessionCookie = "ams_console"
	preCookie     = "ams_console_pre" // a random value binding the sign-in form's CSRF token
	sessionMaxAge = 12 * time.Hour
)

// principal is the signed-in user of a request.
type principal struct {
	Name, Scope string
	token       string
}

// CanSend reports whether the principal may send commands.
func (p principal) CanSend() bool { return canSend(p.Scope) }

// session returns the request's principal from its cookie.
func (s *Server) session(r *http.Request) (principal, bool) {
	c, err := r.Cookie(sessionCookie)
	if err != nil || c.Value == "" {
		return principal{}, false
	}
	tok, err := url.QueryUnescape(c.Value)
	if err != nil {
		return principal{}, false
	}
	name, scope, ok := s.auth.Authenticate(tok)
	if !ok || !canView(scope) {
		return principal{}, false
	}
	return principal{Name: name, Scope: scope, token: tok}, true
}

// csrfToken is the CSRF token of a session: an HMAC of the session's token
// under a key random per server, so it cannot be forged without the key and
// is worthless for another session (synchronizer token, derived).
func (s *Server) csrfToken(binding string) string {
	m := hmac.New(sha256.New, s.csrfKey[:])
	m.Write([]byte(binding))
	return base64.RawURLEncoding.EncodeToString(m.Sum(nil))
}

// checkCSRF verifies a form's csrf field against binding, and that the
// request came from this origin when the browser says where it came from.
func (s *Server) checkCSRF(r *http.Request, binding string) error {
	if site := r.Header.Get("Sec-Fetch-Site"); site != "" && site != "same-origin" && site != "none" {
		return fmt.Errorf("cross-site request (Sec-Fetch-Site: %s)", site)
	}
	got := r.PostFormValue("csrf")
	want := s.csrfToken(binding)
	if got == "" || !hmac.Equal([]byte(got), []byte(want)) {
		return errors.New("missing or wrong CSRF token: reload the page and try again")
	}
	return nil
}

func (s *Server) secure(r *http.Request) bool { return s.cfg.SecureCookie || r.TLS != nil }

func (s *Server) setCookie(w http.ResponseWriter, r *http.Request, name, value string, maxAge time.Duration) {
	c := &http.Cookie{Name: name, Value: url.QueryEscape(value), Path: s.cfg.Prefix, HttpOnly: true,
		SameSite: http.SameSiteStrictMode, Secure: s.secure(r)}
	if maxAge < 0 {
		c.MaxAge = -1
	} else {
		c.MaxAge = int(maxAge.Seconds())
	}
	http.SetCookie(w, c)
}

func randomString() (string, error) {
	var b [24]byte
	if _, err := rand.Read(b[:]); err != nil {
		return "", fmt.Errorf("console: random: %w", err)
	}
	return base64.RawURLEncoding.EncodeToString(b[:]), nil
}

// signInPage shows the sign-in form; it sets a fresh pre-session cookie that
// the form's CSRF token is bound to (login CSRF).
func (s *Server) signInPage(w http.ResponseWriter, r *http.Request) {
	s.renderSignIn(w, r, "", http.StatusOK)
}

func (s *Server) renderSignIn(w http.ResponseWriter, r *http.Request, msg string, status int) {
	pre, err := randomString()
	if err != nil {
		s.internal(w, r, err)
		return
	}
	s.setCookie(w, r, preCookie, pre, 30*time.Minute)
	s.render(w, r, status, "signin", page{Title: "Sign in", CSRF: s.csrfToken("pre:" + pre), Error: msg})
}

func (s *Server) signIn(w http.ResponseWriter, r *http.Request) {
	r.Body = http.MaxBytesReader(w, r.Body, maxForm)
	c, err := r.Cookie(preCookie)
	pre := ""
	if err == nil {
		pre, _ = url.QueryUnescape(c.Value)
	}
	if pre == "" || s.checkCSRF(r, "pre:"+pre) != nil {
		s.renderSignIn(w, r, "The sign-in form expired: try again.", http.StatusForbidden)
		return
	}
	tok := r.PostFormValue("token")
	name, scope, ok := s.auth.Authenticate(tok)
	if !ok || !canView(scope) {
		s.log.Info("console: sign-in refused", "remote", r.RemoteAddr)
		s.renderSignIn(w, r, "Unknown token, or a token without the read or command scope.", http.StatusUnauthorized)
		return
	}
	s.setCookie(w, r, preCookie, "", -1)
	s.setCookie(w, r, sessionCookie, tok, sessionMaxAge)
	s.log.Info("console: signed in", "name", name, "scope", scope, "remote", r.RemoteAddr)
	http.Redirect(w, r, s.cfg.Prefix, http.StatusSeeOther)
}

func (s *Server) signOut(w http.ResponseWriter, r *http.Request) {
	r.Body = http.MaxBytesReader(w, r.Body, maxForm)
	p, ok := s.session(r)
	if ok {
		if err := s.checkCSRF(r, "session:"+p.token); err != nil {
			http.Error(w, err.Error(), http.StatusForbidden)
			return
		}
	}
	s.setCookie(w, r, sessionCookie, "", -1)
	http.Redirect(w, r, s.cfg.Prefix+"signin", http.StatusSeeOther)
}

// authed wraps a page handler: without a valid session a browser is sent to
// the sign-in page (an event stream or JSON request gets 401).
func (s *Server) authed(h func(http.ResponseWriter, *http.Request, principal)) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		p, ok := s.session(r)
		if !ok {
			if r.Method == http.MethodGet && r.Header.Get("Accept") != "text/event-stream" {
				http.Redirect(w, r, s.cfg.Prefix+"signin", http.StatusSeeOther)
				return
			}
			http.Error(w, "sign in first", http.StatusUnauthorized)
			return
		}
		h(w, r, p)
	}
}

// Package deviceauth decides who may connect to the MQTT broker and what each
// client may publish and subscribe to, and writes the same policy as a
// Mosquitto password file and ACL.
//
// The policy (PROTOCOL.md, Transport):
//   - A device logs in with client id = username = its serial number (sn) and
//     the token of its registration as password. The registration holds only
//     a salted PBKDF2 hash of the token (schemas.Registration.TokenHash, see
//     HashToken), or the bare sha256 of registrations written before it, so
//     the token is checked by hashing the presented password (VerifyToken).
//   - A device may publish only to /ivms/pub/{its sn} and subscribe only to
//     /ivms/sub/{its sn} and the broadcast topic /ivms/push.
//   - ams's own roles (ingest, egress, ...) log in with service accounts from
//     configuration. A service may publish downlinks (/ivms/sub/{sn}) and
//     broadcasts, subscribe to uplinks (/ivms/pub/+, also as a shared
//     subscription) and to the broker's client connected / disconnected
//     events ($SYS/brokers/+/clients/+/connected|disconnected).
//
// Everything here is a pure function of its arguments: the EMQX HTTP
// endpoints of `ams api`, the Mosquitto configuration and the tests share it.
package deviceauth

import (
	"bufio"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"sort"
	"strings"

	"github.com/ivms/ams/pkg/protocol"
)

// TokenSHA256 returns the hex sha256 of a device token, the form
// registrations stored before HashToken (schemas.Registration.TokenSHA256).
func TokenSHA256(token string) string {
	s := sha256.Sum256([]byte(token))
	return hex.EncodeToString(s[:])
}

// Action is what a client asks to do with a topic.
type Action string

// Actions, as EMQX names them in its authorization requests.
const (
	Publish   Action = "publish"
	Subscribe Action = "subscribe"
)

// Accounts are the service accounts of ams's own roles: name and password.
// Passwords are held only as sha256 digests. The zero value has no accounts.
// Accounts is immutable once built.
type Accounts struct {
	digests map[string][32]byte
	plain   map[string]string // kept only for writing a Mosquitto password file
}

// ErrAccounts is returned (wrapped) for a malformed service account list.
var ErrAccounts = errors.New("deviceauth: service accounts")

// ParseAccounts reads "name:password,name:password". Blank items are
// skipped. A name must be a valid sn-like MQTT username and appear once; a
// password must not be empty.
func ParseAccounts(spec string) (Accounts, error) {
	var lines []string
	for _, item := range strings.Split(spec, ",") {
		if item = strings.TrimSpace(item); item != "" {
			lines = append(lines, item)
		}
	}
	return parseAccountLines(lines)
}

// ReadAccountsFile reads one "name:password" per line; blank lines and lines
// starting with '#' are skipped.
func ReadAccountsFile(path string) (Accounts, error) {
	f, err := os.Open(path)
	if err != nil {
		return Accounts{}, fmt.Errorf("%w: %w", ErrAccounts, err)
	}
	defer f.Close()
	return ReadAccounts(f)
}

// ReadAccounts is ReadAccountsFile on a reader.
func ReadAccounts(r io.Reader) (Accounts, error) {
	var lines []string
	sc := bufio.NewScanner(r)
	for sc.Scan() {
		l := strings.TrimSpace(sc.Text())
		if l == "" || strings.HasPrefix(l, "#") {
			continue
		}
		lines = append(lines, l)
	}
	if err := sc.Err(); err != nil {
		return Accounts{}, fmt.Errorf("%w: %w", ErrAccounts, err)
	}
	return parseAccountLines(lines)
}

func parseAccountLines(lines []string) (Accounts, error) {
	a := Accounts{digests: map[string][32]byte{}, plain: map[string]string{}}
	for i, l := range lines {
		name, pw, ok := strings.Cut(l, ":")
		name = strings.TrimSpace(name)
		switch {
		case !ok || pw == "":
			return Accounts{}, fmt.Errorf("%w: item %d: want name:password", ErrAccounts, i+1)
		case !protocol.ValidSN(name):
			return Accounts{}, fmt.Errorf("%w: item %d: name %q is not a valid MQTT username", ErrAccounts, i+1, name)
		case a.Has(name):
			return Accounts{}, fmt.Errorf("%w: %q appears twice", ErrAccounts, name)
		}
		a.digests[name] = sha256.Sum256([]byte(pw))
		a.plain[name] = pw
	}
	return a, nil
}

// Merge returns the accounts of a and b; b's password wins for a name in both.
func (a Accounts) Merge(b Accounts) Accounts {
	out := Accounts{digests: map[string][32]byte{}, plain: map[string]string{}}
	for _, src := range []Accounts{a, b} {
		for n, d := range src.digests {
			out.digests[n] = d
			out.plain[n] = src.plain[n]
		}
	}
	return out
}

// Has reports whether name is a service account.
func (a Accounts) Has(name string) bool {
	_, ok := a.digests[name]
	return ok
}

// Names returns the account names, sorted.
func (a Accounts) Names() []string {
	out := make([]string, 0, len(a.digests))
	for n := range a.digests {
		out = append(out, n)
	}
	sort.Strings(out)
	return out
}

// check compares a password with the account's in constant time.
func (a Accounts) check(name, password string) bool {
	want, ok := a.digests[name]
	got := sha256.Sum256([]byte(password))
	return ok && subtle.ConstantTimeCompare(want[:], got[:]) == 1
}

// Login is what a client presents at CONNECT.
type Login struct {
	ClientID string `json:"clientid"`
	Username string `json:"username"`
	Password string `json:"password"`
}

// Decision is the answer to a login or an access request. Reason is a short
// machine-readable word for logs and metrics; it never holds a secret.
type Decision struct {
	Allow   bool
	Service bool // the client is a service account
	Reason  string
}

// Decision reasons.
const (
	ReasonService         = "service"
	ReasonDevice          = "device"
	ReasonBadPassword     = "bad_password"
	ReasonUnknownDevice   = "unknown_device"
	ReasonBadUsername     = "bad_username"
	ReasonClientIDNotSN   = "clientid_not_sn"
	ReasonOwnTopic        = "own_topic"
	ReasonOtherTopic      = "not_own_topic"
	ReasonServiceTopic    = "service_topic"
	ReasonNotServiceTopic = "not_service_topic"
	ReasonBadAction       = "bad_action"
	ReasonRateLimited     = "rate_limited"
)

// Authenticate decides a login. tokenHash is the registration's stored
// token hash for l.Username (HashToken's form or a legacy hex sha256), or ""
// when no device of that sn is registered (it is ignored for service
// accounts). A service account name always logs in as that service, never
// as a device.
func Authenticate(l Login, accounts Accounts, tokenHash string) Decision {
	if accounts.Has(l.Username) {
		if accounts.check(l.Username, l.Password) {
			return Decision{Allow: true, Service: true, Reason: ReasonService}
		}
		return Decision{Service: true, Reason: ReasonBadPassword}
	}
	switch {
	case !protocol.ValidSN(l.Username):
		return Decision{Reason: ReasonBadUsername}
	case l.ClientID != l.Username:
		return Decision{Reason: ReasonClientIDNotSN}
	case tokenHash == "":
		return Decision{Reason: ReasonUnknownDevice}
	}
	if !VerifyToken(tokenHash, l.Password) {
		return Decision{Reason: ReasonBadPassword}
	}
	return Decision{Allow: true, Reason: ReasonDevice}
}

// Access is one authorization request of a logged-in client. Topic is the
// topic of a publish or the topic filter of a subscribe.
type Access struct {
	ClientID string `json:"clientid"`
	Username string `json:"username"`
	Topic    string `json:"topic"`
	Action   Action `json:"action"`
}

// Authorize decides a publish or subscribe of a client that has logged in
// (Authenticate allowed it), by the policy in the package doc.
func Authorize(r Access, accounts Accounts) Decision {
	if r.Action != Publish && r.Action != Subscribe {
		return Decision{Reason: ReasonBadAction}
	}
	if accounts.Has(r.Username) {
		if serviceMay(r.Action, r.Topic) {
			return Decision{Allow: true, Service: true, Reason: ReasonServiceTopic}
		}
		return Decision{Service: true, Reason: ReasonNotServiceTopic}
	}
	if !protocol.ValidSN(r.Username) || r.ClientID != r.Username {
		return Decision{Reason: ReasonBadUsername}
	}
	sn := r.Username
	ok := false
	switch r.Action {
	case Publish:
		ok = r.Topic == protocol.UplinkTopic(sn)
	case Subscribe:
		ok = r.Topic == protocol.DownlinkTopic(sn) || r.Topic == protocol.BroadcastTopic
	}
	if ok {
		return Decision{Allow: true, Reason: ReasonOwnTopic}
	}
	return Decision{Reason: ReasonOtherTopic}
}

// ServiceFilters are the topic filters a service may subscribe to (also as
// shared subscriptions); '+' in one of them allows '+' or one concrete level.
func ServiceFilters() []string {
	return []string{
		protocol.UplinkFilter,
		"$SYS/brokers/+/clients/+/connected",
		"$SYS/brokers/+/clients/+/disconnected",
	}
}

func serviceMay(a Action, topic string) bool {
	switch a {
	case Publish:
		if topic == protocol.BroadcastTopic {
			return true
		}
		sn, ok := strings.CutPrefix(topic, protocol.DownlinkPrefix)
		return ok && protocol.ValidSN(sn)
	case Subscribe:
		topic = stripShared(topic)
		levels := strings.Split(topic, "/")
		for _, p := range ServiceFilters() {
			if levelsMatch(strings.Split(p, "/"), levels) {
				return true
			}
		}
	}
	return false
}

// stripShared removes "$share/{group}/" or EMQX's "$queue/" from a filter.
func stripShared(f string) string {
	if rest, ok := strings.CutPrefix(f, "$share/"); ok {
		if _, after, ok := strings.Cut(rest, "/"); ok {
			return after
		}
		return f
	}
	if rest, ok := strings.CutPrefix(f, "$queue/"); ok {
		return rest
	}
	return f
}

func levelsMatch(pattern, levels []string) bool {
	if len(pattern) != len(levels) {
		return false
	}
	for i, p := range pattern {
		l := levels[i]
		if p == "+" {
			if l != "+" && (l == "" || strings.ContainsAny(l, "+#")) {
				return false
			}
			continue
		}
		if p != l {
			return false
		}
	}
	return true
}

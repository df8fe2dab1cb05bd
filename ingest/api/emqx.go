package api

import (
	"github.com/ivms/ams/pkg/protocol"
	"net/http"

	"github.com/ivms/ams/pkg/deviceauth"
)

// EMQX 5 HTTP authentication and authorization.
//
// Configure EMQX's HTTP authenticator with POST {api}/v1/emqx/auth, body
// {"clientid": "${clientid}", "username": "${username}", "password": "${password}"}
// and its HTTP authorizer with POST {api}/v1/emqx/acl, body
// {"clientid": "${clientid}", "username": "${username}", "topic": "${topic}", "action": "${action}"},
// both with the header "Authorization: Bearer <token>" of a token with scope
// broker-auth (or admin). Each answers
// 200 with {"result": "allow" | "deny"} (and "is_superuser": false for
// authentication); a failure to read Redis is a 503, which EMQX treats as
// "ignore" (the next authenticator in its chain decides, or the client is
// refused). Failed logins are limited per client id (Config.LoginBurst,
// LoginEvery): past the limit a login is denied without checking its
// password, with reason rate_limited (metric
// ams_api_broker_login_rate_limited_total).

type emqxResult struct {
	Result      string `json:"result"`
	IsSuperuser *bool  `json:"is_superuser,omitempty"`
}

func result(allow bool) string {
	if allow {
		return "allow"
	}
	return "deny"
}

func (s *Server) emqxAuth(w http.ResponseWriter, r *http.Request) {
	var l deviceauth.Login
	if !decodeLoose(w, r, &l) {
		return
	}
	// A client id that failed too often is refused before any hashing.
	if !s.logins.Allow(l.ClientID) {
		s.m.loginLimited.Inc()
		s.m.brokerAuth.WithLabelValues("authn", "deny", deviceauth.ReasonRateLimited).Inc()
		no := false
		writeJSON(w, http.StatusOK, emqxResult{Result: "deny", IsSuperuser: &no})
		return
	}
	hash := ""
	if !s.cfg.Accounts.Has(l.Username) && protocol.ValidSN(l.Username) {
		var err error
		if hash, err = s.state.TokenHash(r.Context(), l.Username); err != nil {
			s.log.Error("api: emqx auth: read registration", "username", l.Username, "err", err)
			writeError(w, http.StatusServiceUnavailable, "registration unavailable", "")
			return
		}
	}
	d := deviceauth.Authenticate(l, s.cfg.Accounts, hash)
	s.m.brokerAuth.WithLabelValues("authn", result(d.Allow), d.Reason).Inc()
	if !d.Allow {
		s.logins.Failed(l.ClientID)
		s.log.Info("api: broker login refused", "clientid", l.ClientID, "username", l.Username, "reason", d.Reason)
	}
	no := false
	writeJSON(w, http.StatusOK, emqxResult{Result: result(d.Allow), IsSuperuser: &no})
}

func (s *Server) emqxACL(w http.ResponseWriter, r *http.Request) {
	var a deviceauth.Access
	if !decodeLoose(w, r, &a) {
		return
	}
	d := deviceauth.Authorize(a, s.cfg.Accounts)
	s.m.brokerAuth.WithLabelValues("authz", result(d.Allow), d.Reason).Inc()
	if !d.Allow {
		s.log.Info("api: broker access refused", "clientid", a.ClientID, "username", a.Username,
			"topic", a.Topic, "action", a.Action, "reason", d.Reason)
	}
	writeJSON(w, http.StatusOK, emqxResult{Result: result(d.Allow)})
}

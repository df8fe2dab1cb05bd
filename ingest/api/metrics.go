package api

import (
	"net/http"
	"strconv"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/ivms/ams/pkg/devicestate"
	"github.com/ivms/ams/pkg/hop"
	"github.com/ivms/ams/schemas"
)

type metrics struct {
	requests     *prometheus.CounterVec   // route, code
	duration     *prometheus.HistogramVec // route
	brokerAuth   *prometheus.CounterVec   // kind (authn, authz), result, reason
	authFailures *prometheus.CounterVec   // reason (unauthenticated, forbidden)
	loginLimited prometheus.Counter
	waiting      prometheus.Gauge
	waitRefused  prometheus.Counter
	stages       *prometheus.HistogramVec // stage
}

func newMetrics(reg prometheus.Registerer) *metrics {
	m := &metrics{
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "ams_api_requests_total",
			Help: "HTTP API requests by route and status code"}, []string{"route", "code"}),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "ams_api_request_seconds",
			Help: "HTTP API request duration by route (a ?wait= request included)", Buckets: prometheus.ExponentialBuckets(0.001, 4, 10)}, []string{"route"}),
		brokerAuth: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "ams_api_broker_auth_total",
			Help: "broker authentication (authn) and authorization (authz) decisions by result and reason"}, []string{"kind", "result", "reason"}),
		authFailures: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "ams_api_auth_failures_total",
			Help: "API requests refused: unauthenticated (401) or forbidden by the token's scope (403)"}, []string{"reason"}),
		loginLimited: prometheus.NewCounter(prometheus.CounterOpts{Name: "ams_api_broker_login_rate_limited_total",
			Help: "broker logins denied because their client id failed too often (token bucket per client id)"}),
		waiting: prometheus.NewGauge(prometheus.GaugeOpts{Name: "ams_api_waiting_requests",
			Help: "command requests waiting (?wait=) for a final state"}),
		waitRefused: prometheus.NewCounter(prometheus.CounterOpts{Name: "ams_api_wait_refused_total",
			Help: "?wait= requests answered at once because too many were waiting"}),
		stages: prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "ams_api_command_stage_seconds",
			Help: "Stages of commands posted with ?wait= that reached a final state in the wait, from their history (processor times, " +
				"millisecond resolution): post_to_accepted (POST received to ACCEPTED), accepted_to_sent, sent_to_delivered " +
				"(the broker's PUBACK, through egress's receipt), delivered_to_final (or sent_to_final without a receipt first), " +
				"final_to_answer (final state to the API answering: the Redis projection and the wake-up)",
			Buckets: hop.Buckets()}, []string{"stage"}),
	}
	if reg != nil {
		reg.MustRegister(m.requests, m.duration, m.brokerAuth, m.authFailures, m.loginLimited, m.waiting, m.waitRefused, m.stages)
	}
	return m
}

type statusRecorder struct {
	http.ResponseWriter
	code int
}

func (s *statusRecorder) WriteHeader(code int) {
	if s.code == 0 {
		s.code = code
	}
	s.ResponseWriter.WriteHeader(code)
}

func (s *statusRecorder) Write(b []byte) (int, error) {
	if s.code == 0 {
		s.code = http.StatusOK
	}
	return s.ResponseWriter.Write(b)
}

func (s *Server) instrument(route string, h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		rec := &statusRecorder{ResponseWriter: w}
		h.ServeHTTP(rec, r)
		if rec.code == 0 {
			rec.code = http.StatusOK
		}
		s.m.requests.WithLabelValues(route, strconv.Itoa(rec.code)).Inc()
		s.m.duration.WithLabelValues(route).Observe(time.Since(start).Seconds())
	})
}

// observeStages records the stages of a command that became final while its
// POST waited (posted: when the POST arrived; answered: now).
func (m *metrics) observeStages(posted, answered time.Time, hist []devicestate.CommandEvent) {
	var accepted, sent, delivered, final time.Time
	for _, e := range hist {
		switch e.State {
		case schemas.CommandAccepted:
			accepted = e.At
		case schemas.CommandSent:
			sent = e.At
		case schemas.CommandDelivered:
			delivered = e.At
		case schemas.CommandQueued:
		default:
			final = e.At
		}
	}
	obs := func(stage string, from, to time.Time) {
		if !from.IsZero() && !to.IsZero() {
			m.stages.WithLabelValues(stage).Observe(max(0, to.Sub(from).Seconds()))
		}
	}
	obs("post_to_accepted", posted, accepted)
	obs("accepted_to_sent", accepted, sent)
	obs("sent_to_delivered", sent, delivered)
	if !delivered.IsZero() && !final.Before(delivered) {
		obs("delivered_to_final", delivered, final)
	} else {
		obs("sent_to_final", sent, final)
	}
	obs("final_to_answer", final, answered)
}

package console

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"time"

	"github.com/ivms/ams/pkg/protocol"
)

// Server-Sent Events. Each stream sends "event: NAME\ndata: JSON\n\n" when
// what it watches changes, and a comment every keepAlive so proxies keep it
// open. At most Config.MaxStreams streams are open at once; past it a stream
// is refused with 503 and the page keeps its server-rendered numbers.

const keepAlive = 15 * time.Second

type sseWriter struct {
	w  http.ResponseWriter
	rc *http.ResponseController
}

func (s *Server) startStream(w http.ResponseWriter) (*sseWriter, func(), bool) {
	if s.streams.Add(1) > int64(s.cfg.MaxStreams) {
		s.streams.Add(-1)
		http.Error(w, "too many live streams", http.StatusServiceUnavailable)
		return nil, nil, false
	}
	h := w.Header()
	h.Set("Content-Type", "text/event-stream")
	h.Set("Cache-Control", "no-store")
	h.Set("X-Accel-Buffering", "no")
	w.WriteHeader(http.StatusOK)
	sw := &sseWriter{w: w, rc: http.NewResponseController(w)}
	_ = sw.rc.Flush()
	return sw, func() { s.streams.Add(-1) }, true
}

func (sw *sseWriter) send(event string, v any) error {
	b, err := json.Marshal(v)
	if err != nil {
		return fmt.Errorf("console: event %s: %w", event, err)
	}
	if _, err := fmt.Fprintf(sw.w, "event: %s\ndata: %s\n\n", event, b); err != nil {
		return err
	}
	return sw.rc.Flush()
}

func (sw *sseWriter) ping() error {
	if _, err := fmt.Fprint(sw.w, ": keep-alive\n\n"); err != nil {
		return err
	}
	return sw.rc.Flush()
}

// poll sends read()'s value as event whenever it differs from the last
// one sent, re-reading every Tick until the client goes away.
func (s *Server) poll(w http.ResponseWriter, r *http.Request, event string, read func(context.Context) (any, error)) {
	sw, done, ok := s.startStream(w)
	if !ok {
		return
	}
	defer done()
	ctx := r.Context()
	tick := time.NewTicker(s.cfg.Tick)
	defer tick.Stop()
	last := ""
	lastSent := time.Now()
	for {
		v, err := read(ctx)
		if err != nil {
			if ctx.Err() != nil {
				return
			}
			s.log.Warn("console: live read failed", "event", event, "err", err)
		} else if b, _ := json.Marshal(v); string(b) != last {
			if sw.send(event, v) != nil {
				return
			}
			last, lastSent = string(b), time.Now()
		} else if time.Since(lastSent) > keepAlive {
			if sw.ping() != nil {
				return
			}
			lastSent = time.Now()
		}
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
	}
}

func (s *Server) fleetEvents(w http.ResponseWriter, r *http.Request, _ principal) {
	s.poll(w, r, "counts", func(ctx context.Context) (any, error) { return s.counts(ctx) })
}

func (s *Server) cameraEvents(w http.ResponseWriter, r *http.Request, _ principal) {
	sn := r.PathValue("sn")
	if !protocol.ValidSN(sn) {
		http.Error(w, "not a serial number", http.StatusBadRequest)
		return
	}
	s.poll(w, r, "presence", func(ctx context.Context) (any, error) { return s.presence(ctx, sn) })
}

// commandEvents streams a command's state: it registers a waiter on the
// store's command watcher (woken when the Redis projection publishes an
// event of the command, or after a resubscription), then reads the
// state, and reads it again after every wake-up until the state is final.
func (s *Server) commandEvents(w http.ResponseWriter, r *http.Request, _ principal) {
	id := r.PathValue("id")
	if !validID(id) {
		http.Error(w, "not a command id", http.StatusBadRequest)
		return
	}
	ctx := r.Context()
	wake, stop, err := s.store.WatchCommand(ctx, id)
	if err != nil {
		s.internal(w, r, err)
		return
	}
	defer stop()
	sw, done, ok := s.startStream(w)
	if !ok {
		return
	}
	defer done()
	alive := time.NewTicker(keepAlive)
	defer alive.Stop()
	seq := -1
	for {
		c, found, err := s.store.Command(ctx, id)
		if err != nil {
			if ctx.Err() == nil {
				s.log.Warn("console: command read failed", "id", id, "err", err)
			}
			return
		}
		if found && len(c.History) != seq {
			seq = len(c.History)
			if sw.send("command", c) != nil {
				return
			}
			if c.Final {
				return
			}
		}
		select {
		case <-ctx.Done():
			return
		case <-wake:
		case <-alive.C:
			if sw.ping() != nil {
				return
			}
		}
	}
}

// Package counter is a toy keyed.Handler for the runtime's tests: it counts
// the inputs of each key and, when idle, fires a timer once.
//
// Outputs, all keyed by the input key, on topic Handler.Out:
//   - "<key>:<n>" for the n-th input of the key (so the committed output log
//     of a key must read 1, 2, 3, ... with no gap and no duplicate);
//   - "<key>:idle:<n>" when the key has had no input for IdleAfter;
//   - "<key>:deleted" for a tombstone input, which deletes the state.
package counter

import (
	"encoding/json"
	"fmt"
	"strings"
	"time"

	"github.com/ivms/ams/processors/keyed"
)

// State is one key's count.
type State struct {
	Count int64     `json:"n"`
	Last  time.Time `json:"last"`
	Idle  bool      `json:"idle,omitempty"`
	Pad   string    `json:"pad,omitempty"`
}

// Handler counts inputs per key.
type Handler struct {
	Out       string        // output topic
	IdleAfter time.Duration // 0: no timers
	Pad       int           // bytes of padding in each state (to size the changelog)
}

var _ keyed.Handler[State] = Handler{}

// Process implements keyed.Handler.
func (h Handler) Process(now time.Time, key string, st *State, in keyed.Input) (*State, []keyed.Output, error) {
	if in.Value == nil {
		if st == nil {
			return nil, nil, nil
		}
		return nil, []keyed.Output{{Topic: h.Out, Key: key, Value: []byte(key + ":deleted")}}, nil
	}
	next := &State{Last: now, Pad: strings.Repeat("x", h.Pad)}
	if st != nil {
		next.Count = st.Count
	}
	next.Count++
	return next, []keyed.Output{{Topic: h.Out, Key: key, Value: fmt.Appendf(nil, "%s:%d", key, next.Count)}}, nil
}

// Timer implements keyed.Handler.
func (h Handler) Timer(now time.Time, key string, st *State) (*State, []keyed.Output, error) {
	next := *st
	next.Idle = true
	return &next, []keyed.Output{{Topic: h.Out, Key: key, Value: fmt.Appendf(nil, "%s:idle:%d", key, st.Count)}}, nil
}

// Deadline implements keyed.Handler.
func (h Handler) Deadline(st *State) (time.Time, bool) {
	if h.IdleAfter <= 0 || st.Idle {
		return time.Time{}, false
	}
	return st.Last.Add(h.IdleAfter), true
}

// EncodeState implements keyed.Handler.
func (h Handler) EncodeState(_ string, st *State) ([]byte, error) { return json.Marshal(st) }

// DecodeState implements keyed.Handler.
func (h Handler) DecodeState(_ string, b []byte) (*State, error) {
	var st State
	if err := json.Unmarshal(b, &st); err != nil {
		return nil, err
	}
	return &st, nil
}

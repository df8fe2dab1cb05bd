package devicestate

import (
	"encoding/json"
	"time"

	"github.com/ivms/ams/schemas"
)

// CommandEvent is a schemas.CommandEvent as JSON: the form of the history
// list, of the pub/sub messages and of the API's answers.
type CommandEvent struct {
	EventID   string          `json:"event_id"`
	CommandID string          `json:"command_id"`
	SN        string          `json:"sn"`
	Kind      string          `json:"kind"`
	Code      int32           `json:"code"`
	State     string          `json:"state"`
	At        time.Time       `json:"at"`
	Reason    string          `json:"reason,omitempty"`
	MsgID     string          `json:"msg_id,omitempty"`
	Reply     json.RawMessage `json:"reply,omitempty"` // the device's JSON reply (a JSON string when it is not JSON)
	Seq       int32           `json:"seq"`
}

// CommandEventJSON converts an event to its JSON form.
func CommandEventJSON(e *schemas.CommandEvent) CommandEvent {
	out := CommandEvent{EventID: e.EventID, CommandID: e.CommandID, SN: e.SN, Kind: e.Kind, Code: e.Code,
		State: e.State, At: e.At.UTC(), Reason: e.Reason, MsgID: e.MsgID, Seq: e.Seq}
	if e.Reply != nil {
		out.Reply = replyJSON(*e.Reply)
	}
	return out
}

func replyJSON(s string) json.RawMessage {
	if json.Valid([]byte(s)) {
		return json.RawMessage(s)
	}
	b, _ := json.Marshal(s)
	return b
}

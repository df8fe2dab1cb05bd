package devicestate

import (
	"testing"

	"github.com/ivms/ams/schemas"
)

func TestCommandEventJSONReply(t *testing.T) {
	js, notJS := `{"iResult":0}`, `oops {`
	if got := CommandEventJSON(&schemas.CommandEvent{Reply: &js}).Reply; string(got) != js {
		t.Fatalf("JSON reply: %s", got)
	}
	if got := CommandEventJSON(&schemas.CommandEvent{Reply: &notJS}).Reply; string(got) != `"oops {"` {
		t.Fatalf("non-JSON reply: %s", got)
	}
	if got := CommandEventJSON(&schemas.CommandEvent{}).Reply; got != nil {
		t.Fatalf("no reply: %s", got)
	}
}

// TestKeysNeverCollide: the keys of different names never meet, whatever
// the names hold (the case: the pending set of "X" was the hash of
// the device "X:pending").
func TestKeysNeverCollide(t *testing.T) {
	k := Keys{Prefix: "p:"}
	names := []string{"X", "X:pending", "X:history", "X:events", "X%3Apending", "%", "%25", ":", "", "a:b:c", "X%"}
	seen := map[string]string{}
	for _, n := range names {
		for kind, key := range map[string]string{"dev": k.Device(n), "pending": k.Pending(n), "cmd": k.Command(n),
			"history": k.History(n), "events": k.Events(n)} {
			if prev, ok := seen[key]; ok {
				t.Fatalf("%s of %q collides with %s: %s", kind, n, prev, key)
			}
			seen[key] = kind + " of " + n
		}
	}
	if k.Device("SN1") != "p:dev:SN1" || k.Command("c-1") != "p:cmd:c-1" {
		t.Fatalf("plain names changed: %s %s", k.Device("SN1"), k.Command("c-1"))
	}
}

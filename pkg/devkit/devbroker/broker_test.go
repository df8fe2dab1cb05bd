package devbroker

import (
	"encoding/json"
	"strings"
	"testing"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"

	"github.com/ivms/ams/ingest"
	"github.com/ivms/ams/pkg/deviceauth"
	"github.com/ivms/ams/schemas"
)

func startBroker(t *testing.T) *Broker {
	t.Helper()
	acc, err := deviceauth.ParseAccounts("ams-dev:secret")
	if err != nil {
		t.Fatal(err)
	}
	b, err := Start(Config{Addr: "127.0.0.1:0", Accounts: acc})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = b.Close() })
	return b
}

func connect(t *testing.T, b *Broker, id, user, pw string) (mqtt.Client, error) {
	t.Helper()
	o := mqtt.NewClientOptions().AddBroker(b.URL()).SetClientID(id).SetUsername(user).SetPassword(pw).
		SetAutoReconnect(false).SetConnectRetry(false).SetConnectTimeout(5 * time.Second).SetCleanSession(true)
	c := mqtt.NewClient(o)
	tok := c.Connect()
	if !tok.WaitTimeout(5 * time.Second) {
		t.Fatal("connect timed out")
	}
	return c, tok.Error()
}

type msg struct {
	topic   string
	payload []byte
}

func subscribe(t *testing.T, c mqtt.Client, filter string) <-chan msg {
	t.Helper()
	ch := make(chan msg, 100)
	tok := c.Subscribe(filter, 1, func(_ mqtt.Client, m mqtt.Message) { ch <- msg{m.Topic(), m.Payload()} })
	if !tok.WaitTimeout(5*time.Second) || tok.Error() != nil {
		t.Fatalf("subscribe %s: %v", filter, tok.Error())
	}
	if st, ok := tok.(*mqtt.SubscribeToken); ok {
		for f, code := range st.Result() {
			if code >= 0x80 {
				t.Fatalf("subscribe %s refused: %#x", f, code)
			}
		}
	}
	return ch
}

func next(t *testing.T, ch <-chan msg, what string) msg {
	t.Helper()
	select {
	case m := <-ch:
		return m
	case <-time.After(5 * time.Second):
		t.Fatalf("no %s", what)
		return msg{}
	}
}

// TestEventsAndPolicy: a service account reads device frames and EMQX 5
// connection events through shared subscriptions, in the form ingest
// parses; a device may publish only its own topic; bad logins are refused.
func TestEventsAndPolicy(t *testing.T) {
	b := startBroker(t)
	svc, err := connect(t, b, "ams-ingest-test", "ams-dev", "secret")
	if err != nil {
		t.Fatal(err)
	}
	defer svc.Disconnect(100)
	conn := subscribe(t, svc, "$share/ams/"+ingest.DefaultConnectedFilter)
	disc := subscribe(t, svc, "$share/ams/"+ingest.DefaultDisconnectedFilter)
	up := subscribe(t, svc, "$share/ams//ivms/pub/+")

	if _, err := connect(t, b, "ams-x", "ams-dev", "wrong"); err == nil {
		t.Error("service account with a wrong password logged in")
	}
	if _, err := connect(t, b, "other", "0505050505000001", ""); err == nil {
		t.Error("device whose client id is not its sn logged in")
	}
	if b.Refused() < 2 { // paho may retry with MQTT 3.1 after a refusal
		t.Errorf("refused = %d, want at least 2", b.Refused())
	}

	const sn = "0505050505000001"
	dev, err := connect(t, b, sn, sn, "")
	if err != nil {
		t.Fatal(err)
	}
	m := next(t, conn, "connected event")
	cf, _ := ingest.NewEventFilter(ingest.DefaultConnectedFilter, schemas.UplinkConnected)
	ev, err := ingest.ParseEvent(cf, m.topic, m.payload)
	if err != nil {
		t.Fatalf("connected event %s %s: %v", m.topic, m.payload, err)
	}
	if ev.ClientID != sn || ev.Username != sn || ev.ConnectedAt == nil || ev.Node != DefaultNode {
		t.Errorf("connected event = %+v", ev)
	}

	// Own topic: delivered. Another device's topic: dropped by the ACL (at
	// QoS 1 an MQTT 3 client would also be disconnected).
	dev.Publish("/ivms/pub/0505050505000002", 0, false, "not mine").WaitTimeout(5 * time.Second)
	dev.Publish("/ivms/pub/"+sn, 1, false, "mine").WaitTimeout(5 * time.Second)
	if m := next(t, up, "uplink"); string(m.payload) != "mine" || m.topic != "/ivms/pub/"+sn {
		t.Errorf("uplink = %s %q", m.topic, m.payload)
	}
	// A device may read its downlink topic only.
	tok := dev.Subscribe("/ivms/sub/0505050505000002", 1, nil)
	tok.WaitTimeout(5 * time.Second)
	if st := tok.(*mqtt.SubscribeToken); st.Result()["/ivms/sub/0505050505000002"] < 0x80 {
		t.Errorf("device subscribed to another device's downlink topic")
	}
	down := subscribe(t, dev, "/ivms/sub/"+sn)
	svc.Publish("/ivms/sub/"+sn, 1, false, "cmd").WaitTimeout(5 * time.Second)
	if m := next(t, down, "downlink"); string(m.payload) != "cmd" {
		t.Errorf("downlink = %q", m.payload)
	}

	dev.Disconnect(100)
	m = next(t, disc, "disconnected event")
	df, _ := ingest.NewEventFilter(ingest.DefaultDisconnectedFilter, schemas.UplinkDisconnected)
	dv, err := ingest.ParseEvent(df, m.topic, m.payload)
	if err != nil {
		t.Fatalf("disconnected event: %v", err)
	}
	if dv.Reason != "normal" || dv.ConnectedAt == nil || !dv.ConnectedAt.Equal(*ev.ConnectedAt) || dv.BrokerTime == nil {
		t.Errorf("disconnected event = %+v (payload %s)", dv, m.payload)
	}
	var raw map[string]any
	_ = json.Unmarshal(m.payload, &raw)
	if _, ok := raw["disconnected_at"]; !ok {
		t.Errorf("no disconnected_at in %s", m.payload)
	}

	// A takeover: the old connection's event says so.
	d1, err := connect(t, b, sn, sn, "")
	if err != nil {
		t.Fatal(err)
	}
	defer d1.Disconnect(100)
	next(t, conn, "connected event")
	d2, err := connect(t, b, sn, sn, "")
	if err != nil {
		t.Fatal(err)
	}
	defer d2.Disconnect(100)
	next(t, conn, "connected event")
	m = next(t, disc, "takeover event")
	if !strings.Contains(string(m.payload), `"reason":"takenover"`) {
		t.Errorf("takeover event = %s", m.payload)
	}
}

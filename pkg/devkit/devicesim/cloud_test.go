package devicesim

import (
	crand "crypto/rand"
	"crypto/rsa"
	"encoding/json"
	"fmt"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"

	"github.com/ivms/ams/pkg/protocol"
	"github.com/ivms/ams/pkg/testkit/testenv"
)

// testCloud is a tiny cloud for tests: it subscribes to every device's
// uplink, answers handshakes, configurations, heartbeats and 702/703
// requests with pkg/protocol and the test private key, records what it
// rejected and the devices' command replies, and can corrupt its answers.
type testCloud struct {
	t      testing.TB
	keys   []*rsa.PrivateKey
	prefix string // only devices whose sn starts with it are served
	client mqtt.Client

	// Corruptions, set before the fleet starts.
	badFirstHandshake bool // the first handshake reply to each device has a wrong md5
	badHeartbeats     bool // heartbeat replies lose their last ciphertext block (bad_padding)
	silentHeartbeats  bool // heartbeats are not answered

	heartbeats atomic.Int64

	mu       sync.Mutex
	sessions map[string]protocol.SessionKey
	handshk  map[string]int // handshakes seen per sn
	rejects  map[string]int // reason -> frames refused
	configs  map[string]protocol.Configuration
	replies  map[string]cloudReply      // sMsgId -> the device's answer
	waiters  map[string]chan cloudReply // sMsgId -> who waits for it
}

type cloudReply struct {
	SN    string
	Frame protocol.Frame
	Body  []byte
}

func readTestFile(t testing.TB, name string) []byte {
	t.Helper()
	b, err := os.ReadFile("testdata/" + name)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func testPublicKey(t testing.TB) *rsa.PublicKey {
	t.Helper()
	pub, err := protocol.ParsePublicKey(readTestFile(t, "cloud_rsa_public.pem"))
	if err != nil {
		t.Fatal(err)
	}
	return pub
}

func newTestCloud(t testing.TB, prefix string) *testCloud {
	keys, err := protocol.ParsePrivateKeys(readTestFile(t, "cloud_rsa_private.pem"))
	if err != nil {
		t.Fatal(err)
	}
	return &testCloud{
		t: t, keys: keys, prefix: prefix,
		sessions: map[string]protocol.SessionKey{},
		handshk:  map[string]int{},
		rejects:  map[string]int{},
		configs:  map[string]protocol.Configuration{},
		replies:  map[string]cloudReply{},
		waiters:  map[string]chan cloudReply{},
	}
}

// start connects the cloud to the broker and subscribes to the uplinks.
func (c *testCloud) start(brokerURL string) {
	t := c.t
	// A service of the stack's broker (its role account; empty on an open broker).
	user, pw := testenv.MQTTRoleAccount()
	opts := mqtt.NewClientOptions().AddBroker(brokerURL).SetUsername(user).SetPassword(pw).
		SetClientID(fmt.Sprintf("testcloud-%s-%d", c.prefix, time.Now().UnixNano())).
		SetCleanSession(true).SetOrderMatters(true).SetAutoReconnect(false)
	c.client = mqtt.NewClient(opts)
	if tok := c.client.Connect(); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		t.Fatalf("test cloud connect to %s: %v", brokerURL, tok.Error())
	}
	if tok := c.client.Subscribe(protocol.UplinkFilter, 1, c.onUplink); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		t.Fatalf("test cloud subscribe: %v", tok.Error())
	}
	t.Cleanup(func() { c.client.Disconnect(100) })
}

func (c *testCloud) reject(reason string) {
	c.mu.Lock()
	c.rejects[reason]++
	c.mu.Unlock()
}

func (c *testCloud) rejected() map[string]int {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := map[string]int{}
	for k, v := range c.rejects {
		out[k] = v
	}
	return out
}

func (c *testCloud) session(sn string) (protocol.SessionKey, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	s, ok := c.sessions[sn]
	return s, ok
}

func (c *testCloud) send(sn string, fr protocol.Frame) {
	c.client.Publish(protocol.DownlinkTopic(sn), 1, false, fr.Encode())
}

func (c *testCloud) sendBody(sn string, fr protocol.Frame, body any) {
	s, ok := c.session(sn)
	if !ok {
		c.t.Errorf("test cloud: no session for %s", sn)
		return
	}
	b, err := protocol.MarshalASCII(body)
	if err != nil {
		c.t.Error(err)
		return
	}
	fr.Data = protocol.EncryptBody(s, b)
	c.send(sn, fr)
}

// bound says which devices are bound to a user: those with an even sn.
func bound(sn string) bool { return (sn[len(sn)-1]-'0')%2 == 0 }

// command sends a command (iCmdType 3, or 7 for 704/705) and returns a
// channel that receives the device's answer.
func (c *testCloud) command(sn string, cmd, sub int, body any) (string, <-chan cloudReply) {
	id := msgID()
	ch := make(chan cloudReply, 1)
	c.mu.Lock()
	c.waiters[id] = ch
	c.mu.Unlock()
	fr := protocol.Frame{CmdType: cmd, ProtocolVersion: "V1.0", MsgID: id}
	if cmd == protocol.CmdCommand {
		fr.AppCmdType = sub
	} else {
		fr.AmsCmdType = sub
	}
	c.sendBody(sn, fr, body)
	return id, ch
}

func (c *testCloud) onUplink(_ mqtt.Client, m mqtt.Message) {
	sn, ok := protocol.SNFromUplinkTopic(m.Topic())
	if !ok || !strings.HasPrefix(sn, c.prefix) {
		return
	}
	fr, err := protocol.DecodeFrame(m.Payload())
	if err != nil {
		c.reject(string(protocol.ReasonOf(err)))
		return
	}
	if fr.CmdType == protocol.CmdHandshake {
		c.onHandshake(sn, fr)
		return
	}
	s, ok := c.session(sn)
	if !ok {
		c.reject("no_session")
		return
	}
	body, err := protocol.DecryptBody(s, fr.Data)
	if err != nil {
		c.reject(string(protocol.ReasonOf(err)))
		return
	}
	var obj map[string]any
	if err := json.Unmarshal(body, &obj); err != nil {
		c.reject(string(protocol.ReasonBadJSON))
		return
	}
	reply := protocol.Frame{CmdType: fr.CmdType, ProtocolVersion: fr.ProtocolVersion}
	switch fr.CmdType {
	case protocol.CmdConfiguration:
		var cfg protocol.Configuration
		if err := protocol.DecryptJSON(s, fr.Data, &cfg); err != nil {
			c.reject(string(protocol.ReasonOf(err)))
			return
		}
		if cfg.DeviceSn != sn {
			c.reject("wrong_sn")
			return
		}
		c.mu.Lock()
		c.configs[sn] = cfg
		c.mu.Unlock()
		b := 0
		if bound(sn) {
			b = 1
			c.sendBody(sn, protocol.Frame{CmdType: 3, ProtocolVersion: fr.ProtocolVersion, MsgID: msgID(), AppCmdType: protocol.AppOSD},
				protocol.OSDName{OsdName: protocol.OSDText{Enable: 1, Text: "cam " + sn}})
		}
		c.sendBody(sn, protocol.Frame{CmdType: 3, ProtocolVersion: fr.ProtocolVersion, MsgID: msgID(), AppCmdType: protocol.AppGetConfig},
			protocol.BindStatus{GetConfig: 1, BindStatus: b})
	case protocol.CmdHeartbeat:
		c.heartbeats.Add(1)
		if c.silentHeartbeats {
			return
		}
		if c.badHeartbeats {
			// Two blocks of body, then drop the last: the remaining block
			// decrypts to JSON text, which is never valid padding.
			full := protocol.EncryptBody(s, []byte(`{"iOnline":1,"sPad":"0123456789"}`))
			reply.Data = full[:len(full)-32]
			c.send(sn, reply)
			return
		}
		c.sendBody(sn, reply, protocol.HeartbeatReply{Online: 1})
	case protocol.CmdReply, protocol.CmdAms:
		switch {
		case fr.CmdType == protocol.CmdAms && fr.AmsCmdType == protocol.AmsStreamURL:
			var req protocol.StreamURLRequest
			_ = json.Unmarshal(body, &req)
			if bound(sn) {
				reply.AmsCmdType, reply.MsgID = protocol.AmsStreamURL, msgID()
				c.sendBody(sn, reply, protocol.StreamURLReply{PushURL: "rtmp://example.invalid/live/" + sn, Index: req.Index,
					ExpiresTime: protocol.Float(req.ExpiresTime), Protocol: "rtmp"})
			}
		case fr.CmdType == protocol.CmdAms && fr.AmsCmdType == protocol.AmsUploadParams:
			var req protocol.UploadParamsRequest
			_ = json.Unmarshal(body, &req)
			reply.AmsCmdType, reply.MsgID = protocol.AmsUploadParams, msgID()
			c.sendBody(sn, reply, map[string]any{"isForBidden": 0, "uploadmethod": "http", "index": req.Index})
		default:
			c.mu.Lock()
			r := cloudReply{SN: sn, Frame: fr, Body: body}
			c.replies[fr.MsgID] = r
			ch := c.waiters[fr.MsgID]
			delete(c.waiters, fr.MsgID)
			c.mu.Unlock()
			if ch != nil {
				ch <- r
			}
		}
	default:
		c.reject("unexpected_kind")
	}
}

func (c *testCloud) onHandshake(sn string, fr protocol.Frame) {
	req, err := protocol.ParseHandshake(c.keys, fr.Data)
	if err != nil {
		c.reject(string(protocol.ReasonOf(err)))
		return
	}
	rep, err := req.Reply(crand.Reader)
	if err != nil {
		c.t.Error(err)
		return
	}
	c.mu.Lock()
	c.handshk[sn]++
	first := c.handshk[sn] == 1
	c.sessions[sn] = rep.Session
	c.mu.Unlock()
	data := rep.SData
	if c.badFirstHandshake && first {
		// key2:iv2:md5 with a wrong md5, encrypted correctly.
		data = protocol.EncryptWith([]byte(req.Key1), []byte(req.IV1),
			[]byte(rep.Key2+":"+rep.IV2+":00000000000000000000000000000000"))
	}
	c.send(sn, protocol.Frame{CmdType: protocol.CmdHandshake, ProtocolVersion: fr.ProtocolVersion, Data: data})
}

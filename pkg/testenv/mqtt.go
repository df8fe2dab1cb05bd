package testenv

import (
	"encoding/json"
	"fmt"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"

	"github.com/ivms/ams/pkg/deviceauth"
)

// The stack's Mosquitto runs without anonymous access (deploy/stack/up.sh,
// its "mosquitto auth" section): ams's roles and the tests log in with a
// role account (service ACL), and devices with sn and token. Device
// accounts are made at run time through the broker's dynamic-security
// plugin by its administrator, so tests can register random sns.
//
// Environment (written by up.sh into $AMS_STACK_DIR/env):
//
//	AMS_MQTT_USERNAME, AMS_MQTT_PASSWORD            role account of tests and roles
//	AMS_MQTT_DYNSEC_USERNAME, AMS_MQTT_DYNSEC_PASSWORD_FILE
//	                                                the dynamic-security administrator
//
// With none set (an anonymous broker), the helpers return empty
// credentials and register nothing.

// MQTTRoleAccount returns the role account tests (and the roles they
// start) log in with: AMS_MQTT_USERNAME and AMS_MQTT_PASSWORD (or the
// content of AMS_MQTT_PASSWORD_FILE); empty on an anonymous broker.
func MQTTRoleAccount() (username, password string) {
	return os.Getenv("AMS_MQTT_USERNAME"), secretEnv("AMS_MQTT_PASSWORD")
}

// MQTTOptions returns paho options for the stack's broker (AMS_MQTT_URL)
// with the role account and the given client id.
func MQTTOptions(clientID string) *mqtt.ClientOptions {
	user, pw := MQTTRoleAccount()
	return mqtt.NewClientOptions().AddBroker(MQTTURL()).SetClientID(clientID).SetUsername(user).SetPassword(pw)
}

func secretEnv(key string) string {
	if v := os.Getenv(key); v != "" {
		return v
	}
	if f := os.Getenv(key + "_FILE"); f != "" {
		if b, err := os.ReadFile(f); err == nil {
			return strings.TrimSpace(string(b))
		}
	}
	return ""
}

// MQTTDevice lets device sn log in to the stack's broker with token (client
// id = username = sn) for the rest of the test; it is removed at the end.
func MQTTDevice(t testing.TB, sn, token string) {
	t.Helper()
	MQTTDevices(t, deviceauth.Credential{Username: sn, Password: token})
}

// MQTTDevices is MQTTDevice for many devices, in one round trip per 200.
func MQTTDevices(t testing.TB, creds ...deviceauth.Credential) {
	t.Helper()
	user := os.Getenv("AMS_MQTT_DYNSEC_USERNAME")
	if user == "" {
		return // anonymous broker: any device may connect
	}
	d, err := DialDynsec(MQTTURL(), user, secretEnv("AMS_MQTT_DYNSEC_PASSWORD"))
	if err != nil {
		t.Fatalf("mqtt devices: %v", err)
	}
	defer d.Close()
	if err := d.AddDevices(creds...); err != nil {
		t.Fatalf("mqtt devices: %v", err)
	}
	t.Cleanup(func() {
		d, err := DialDynsec(MQTTURL(), user, secretEnv("AMS_MQTT_DYNSEC_PASSWORD"))
		if err != nil {
			t.Logf("mqtt devices: remove: %v", err)
			return
		}
		defer d.Close()
		if err := d.RemoveDevices(creds...); err != nil {
			t.Logf("mqtt devices: remove: %v", err)
		}
	})
}

// Dynsec is a connection of the dynamic-security administrator.
type Dynsec struct {
	cl      mqtt.Client
	mu      sync.Mutex
	waiting map[string]chan dynsecResponse
	seq     atomic.Uint64
	id      string
}

type dynsecResponse struct {
	Responses []struct {
		Command         string `json:"command"`
		Error           string `json:"error"`
		CorrelationData string `json:"correlationData"`
	} `json:"responses"`
}

// DialDynsec connects to the broker at url as the plugin's administrator.
func DialDynsec(url, user, password string) (*Dynsec, error) {
	d := &Dynsec{waiting: map[string]chan dynsecResponse{}, id: fmt.Sprintf("dynsec-%d-%d", os.Getpid(), time.Now().UnixNano())}
	opts := mqtt.NewClientOptions().AddBroker(url).SetClientID(d.id).SetUsername(user).SetPassword(password).
		SetCleanSession(true).SetAutoReconnect(false).SetConnectTimeout(10 * time.Second)
	d.cl = mqtt.NewClient(opts)
	if tok := d.cl.Connect(); !tok.WaitTimeout(15*time.Second) || tok.Error() != nil {
		return nil, fmt.Errorf("dynsec admin connect %s: %v", url, tok.Error())
	}
	tok := d.cl.Subscribe(deviceauth.DynsecControlTopic+"/response", 1, func(_ mqtt.Client, m mqtt.Message) {
		var r dynsecResponse
		if json.Unmarshal(m.Payload(), &r) != nil || len(r.Responses) == 0 {
			return
		}
		d.mu.Lock()
		ch := d.waiting[r.Responses[0].CorrelationData]
		d.mu.Unlock()
		if ch != nil {
			ch <- r
		}
	})
	if !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		d.cl.Disconnect(0)
		return nil, fmt.Errorf("dynsec admin subscribe: %v", tok.Error())
	}
	return d, nil
}

// Close disconnects.
func (d *Dynsec) Close() { d.cl.Disconnect(100) }

// send publishes the commands of msg (deviceauth.DynsecAddDevice's form)
// with correlation data and returns each command's error ("" = done).
func (d *Dynsec) send(cmds []map[string]any) ([]string, error) {
	corr := fmt.Sprintf("%s-%d", d.id, d.seq.Add(1))
	for _, c := range cmds {
		c["correlationData"] = corr
	}
	body, err := json.Marshal(map[string]any{"commands": cmds})
	if err != nil {
		return nil, err
	}
	ch := make(chan dynsecResponse, 1)
	d.mu.Lock()
	d.waiting[corr] = ch
	d.mu.Unlock()
	defer func() {
		d.mu.Lock()
		delete(d.waiting, corr)
		d.mu.Unlock()
	}()
	if tok := d.cl.Publish(deviceauth.DynsecControlTopic, 1, false, body); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		return nil, fmt.Errorf("dynsec publish: %v", tok.Error())
	}
	select {
	case r := <-ch:
		out := make([]string, len(r.Responses))
		for i, x := range r.Responses {
			out[i] = x.Error
		}
		return out, nil
	case <-time.After(15 * time.Second):
		return nil, fmt.Errorf("dynsec: no response within 15s (is the plugin loaded and this user its admin?)")
	}
}

func commandsOf(msg []byte) ([]map[string]any, error) {
	var m struct {
		Commands []map[string]any `json:"commands"`
	}
	err := json.Unmarshal(msg, &m)
	return m.Commands, err
}

// AddDevices creates each device's role and client (deviceauth.DynsecAddDevice).
func (d *Dynsec) AddDevices(creds ...deviceauth.Credential) error {
	return d.batch(creds, func(c deviceauth.Credential) ([]byte, error) {
		return deviceauth.DynsecAddDevice(c.Username, c.Password)
	})
}

// RemoveDevices deletes each device's client and role.
func (d *Dynsec) RemoveDevices(creds ...deviceauth.Credential) error {
	return d.batch(creds, func(c deviceauth.Credential) ([]byte, error) { return deviceauth.DynsecRemoveDevice(c.Username) })
}

func (d *Dynsec) batch(creds []deviceauth.Credential, msg func(deviceauth.Credential) ([]byte, error)) error {
	for len(creds) > 0 {
		n := min(len(creds), 200)
		var cmds []map[string]any
		for _, c := range creds[:n] {
			b, err := msg(c)
			if err != nil {
				return err
			}
			cs, err := commandsOf(b)
			if err != nil {
				return err
			}
			cmds = append(cmds, cs...)
		}
		errs, err := d.send(cmds)
		if err != nil {
			return err
		}
		for i, e := range errs {
			if e != "" {
				return fmt.Errorf("dynsec %v: %s", cmds[i]["command"], e)
			}
		}
		creds = creds[n:]
	}
	return nil
}

// Package mqttdynsec is a client of Mosquitto's dynamic-security plugin for
// its administrator: it creates and deletes device accounts at run time
// (deviceauth.DynsecAddDevice / DynsecRemoveDevice) over
// $CONTROL/dynamic-security/v1 and waits for the plugin's answer to each
// batch. The messages hold plain device tokens: use it over loopback or TLS.
package mqttdynsec

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"sync"
	"sync/atomic"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"

	"github.com/ivms/ams/pkg/deviceauth"
)

// Client is a connection of the dynamic-security administrator. Its
// methods may be called from several goroutines.
type Client struct {
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

// Dial connects to the broker at url as the plugin's administrator.
func Dial(url, user, password string) (*Client, error) {
	d := &Client{waiting: map[string]chan dynsecResponse{}, id: fmt.Sprintf("dynsec-%d-%d", os.Getpid(), time.Now().UnixNano())}
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
func (d *Client) Close() { d.cl.Disconnect(100) }

// send publishes the commands of msg (deviceauth.DynsecAddDevice's form)
// with correlation data and returns each command's error ("" = done).
func (d *Client) send(cmds []map[string]any) ([]string, error) {
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
	tok := d.cl.Publish(deviceauth.DynsecControlTopic, 1, false, body)
	if !tok.WaitTimeout(10 * time.Second) {
		// The plugin rewrites its whole JSON file on every change, so a
		// broker holding many accounts acknowledges slowly.
		return nil, errors.New("dynsec publish: no PUBACK within 10s (a dynamic-security file with many accounts makes the broker slow)")
	}
	if err := tok.Error(); err != nil {
		return nil, fmt.Errorf("dynsec publish: %w", err)
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

// AddDevices creates each device's role and client
// (deviceauth.DynsecAddDevice). Every device is tried; the first failure
// (e.g. "Client already exists") is returned.
func (d *Client) AddDevices(creds ...deviceauth.Credential) error {
	return d.batch(creds, func(c deviceauth.Credential) ([]byte, error) {
		return deviceauth.DynsecAddDevice(c.Username, c.Password)
	})
}

// RemoveDevices deletes each device's client and role (disconnecting it).
// Every device is tried; the first failure is returned.
func (d *Client) RemoveDevices(creds ...deviceauth.Credential) error {
	return d.batch(creds, func(c deviceauth.Credential) ([]byte, error) { return deviceauth.DynsecRemoveDevice(c.Username) })
}

func (d *Client) batch(creds []deviceauth.Credential, msg func(deviceauth.Credential) ([]byte, error)) error {
	var first error // every batch is sent; the first failed command is returned
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
			if e != "" && first == nil {
				first = fmt.Errorf("dynsec %v %v: %s", cmds[i]["command"], name(cmds[i]), e)
			}
		}
		creds = creds[n:]
	}
	return first
}

func name(cmd map[string]any) any {
	if u, ok := cmd["username"]; ok {
		return u
	}
	return cmd["rolename"]
}

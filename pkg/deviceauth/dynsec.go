package deviceauth

import (
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"

	"github.com/ivms/ams/pkg/protocol"
)

// Mosquitto's dynamic-security plugin (mosquitto_dynamic_security.so, in
// Debian's mosquitto 2.0) holds clients and roles in memory and takes
// changes at run time over $CONTROL/dynamic-security/v1. The policy is the
// same as MosquittoACL's, with one role per device because the plugin of
// Mosquitto 2.0 has no %u patterns:
//
//   - role "ams-device-{sn}": publish /ivms/pub/{sn}; subscribe
//     /ivms/sub/{sn} and the broadcast. The device's client is bound to
//     client id = sn (the plugin refuses any other client id with its
//     credentials), so a device cannot take over another's session.
//   - role "ams-service": publish every downlink and the broadcast;
//     subscribe every uplink (also shared) and $SYS.
//   - role "admin": the plugin's own control topics only.
//
// Default access: no publish and no subscribe without a matching role.

// DynsecControlTopic is where dynamic-security commands are published; the
// plugin answers on DynsecControlTopic + "/response".
const DynsecControlTopic = "$CONTROL/dynamic-security/v1"

// DynsecServiceRole and DynsecAdminRole are the roles of service accounts and of the plugin's administrator.
const (
	DynsecServiceRole = "ams-service"
	DynsecAdminRole   = "admin"
)

// DynsecDeviceRole is the role name of one device.
func DynsecDeviceRole(sn string) string { return "ams-device-" + sn }

// DynsecACL is one ACL of a role.
type DynsecACL struct {
	Type     string `json:"acltype"`
	Topic    string `json:"topic"`
	Allow    bool   `json:"allow"`
	Priority int    `json:"priority,omitempty"`
}

// DynsecRole is a role with its ACLs.
type DynsecRole struct {
	Name string      `json:"rolename"`
	ACLs []DynsecACL `json:"acls"`
}

type dynsecRoleRef struct {
	Name string `json:"rolename"`
}

type dynsecClient struct {
	Username   string          `json:"username"`
	ClientID   string          `json:"clientid,omitempty"`
	Password   string          `json:"password"`
	Salt       string          `json:"salt"`
	Iterations int             `json:"iterations"`
	Roles      []dynsecRoleRef `json:"roles"`
}

func allow(t, topic string) DynsecACL { return DynsecACL{Type: t, Topic: topic, Allow: true} }

// DeviceRole returns the role of device sn.
func DeviceRole(sn string) DynsecRole {
	return DynsecRole{Name: DynsecDeviceRole(sn), ACLs: []DynsecACL{
		allow("publishClientSend", protocol.UplinkTopic(sn)),
		allow("subscribePattern", protocol.DownlinkTopic(sn)),
		allow("subscribePattern", protocol.BroadcastTopic),
		allow("unsubscribePattern", "#"),
	}}
}

// ServiceRole returns the role of ams's service accounts, plus extra ACLs.
func ServiceRole(extra ...DynsecACL) DynsecRole {
	acls := []DynsecACL{
		allow("publishClientSend", protocol.DownlinkPrefix+"+"),
		allow("publishClientSend", protocol.BroadcastTopic),
		allow("subscribePattern", protocol.UplinkFilter),
		allow("subscribePattern", "$share/+/"+protocol.UplinkFilter),
		allow("subscribePattern", "$SYS/#"),
		allow("unsubscribePattern", "#"),
	}
	return DynsecRole{Name: DynsecServiceRole, ACLs: append(acls, extra...)}
}

func adminRole() DynsecRole {
	c := DynsecControlTopic[:len(DynsecControlTopic)-len("/v1")] + "/#"
	return DynsecRole{Name: DynsecAdminRole, ACLs: []DynsecACL{
		allow("publishClientSend", c), allow("publishClientReceive", c), allow("subscribePattern", c),
		allow("unsubscribePattern", "#"),
	}}
}

// dynsecPassword hashes a password as the plugin stores it (PBKDF2-SHA512,
// 101 iterations, 12-byte salt), returning base64 hash and salt.
func dynsecPassword(password string, rnd io.Reader) (hash, salt string, err error) {
	s := make([]byte, mosquittoSaltLen)
	if _, err := io.ReadFull(rnd, s); err != nil {
		return "", "", fmt.Errorf("deviceauth: salt: %w", err)
	}
	full, err := MosquittoHash(password, s) // "$7$101$<salt>$<hash>"
	if err != nil {
		return "", "", err
	}
	return full[len(full)-base64.StdEncoding.EncodedLen(mosquittoHashLen):], base64.StdEncoding.EncodeToString(s), nil
}

// MosquittoDynsec returns an initial dynamic-security.json: the plugin's
// administrator admin (role admin), every service account (role
// ams-service, with serviceExtra ACLs added), every device of devices
// (its own role, bound to client id = sn) and default access denied.
func MosquittoDynsec(admin Credential, accounts Accounts, devices []Credential, serviceExtra []DynsecACL, rnd io.Reader) ([]byte, error) {
	if rnd == nil {
		rnd = rand.Reader
	}
	if admin.Username == "" || admin.Password == "" || accounts.Has(admin.Username) {
		return nil, fmt.Errorf("deviceauth: dynsec admin needs a name of its own and a password")
	}
	var clients []dynsecClient
	add := func(c Credential, clientID string, role string) error {
		h, s, err := dynsecPassword(c.Password, rnd)
		if err != nil {
			return err
		}
		clients = append(clients, dynsecClient{Username: c.Username, ClientID: clientID, Password: h, Salt: s,
			Iterations: mosquittoIterations, Roles: []dynsecRoleRef{{role}}})
		return nil
	}
	roles := []DynsecRole{adminRole(), ServiceRole(serviceExtra...)}
	if err := add(admin, "", DynsecAdminRole); err != nil {
		return nil, err
	}
	for _, n := range accounts.Names() {
		if err := add(Credential{Username: n, Password: accounts.plain[n]}, "", DynsecServiceRole); err != nil {
			return nil, err
		}
	}
	for _, d := range devices {
		if accounts.Has(d.Username) || d.Username == admin.Username {
			return nil, fmt.Errorf("deviceauth: device %q has the name of another account", d.Username)
		}
		roles = append(roles, DeviceRole(d.Username))
		if err := add(d, d.Username, DynsecDeviceRole(d.Username)); err != nil {
			return nil, err
		}
	}
	doc := map[string]any{
		"clients": clients,
		"roles":   roles,
		"defaultACLAccess": map[string]bool{
			"publishClientSend": false, "publishClientReceive": true, "subscribe": false, "unsubscribe": true,
		},
	}
	return json.MarshalIndent(doc, "", "\t")
}

// DynsecAddDevice returns the control message that creates device sn with
// its token: its role and its client (bound to client id = sn). Publish it
// on DynsecControlTopic as the administrator. The message holds the plain
// token: send it only over a connection you trust (loopback or TLS).
func DynsecAddDevice(sn, token string) ([]byte, error) {
	if !protocol.ValidSN(sn) {
		return nil, fmt.Errorf("deviceauth: invalid sn %q", sn)
	}
	r := DeviceRole(sn)
	return json.Marshal(map[string]any{"commands": []map[string]any{
		{"command": "createRole", "rolename": r.Name, "acls": r.ACLs},
		{"command": "createClient", "username": sn, "password": token, "clientid": sn,
			"roles": []dynsecRoleRef{{r.Name}}},
	}})
}

// DynsecRemoveDevice returns the control message that deletes device sn's
// client (disconnecting it) and role.
func DynsecRemoveDevice(sn string) ([]byte, error) {
	return json.Marshal(map[string]any{"commands": []map[string]any{
		{"command": "deleteClient", "username": sn},
		{"command": "deleteRole", "rolename": DynsecDeviceRole(sn)},
	}})
}

// DynsecPlugin is where Debian's mosquitto package installs the plugin.
const DynsecPlugin = "/usr/lib/x86_64-linux-gnu/mosquitto_dynamic_security.so"

// WriteMosquittoDynsec writes into dir dynamic-security.json
// (MosquittoDynsec, mode 0600) and dynsec.conf, a configuration fragment
// that loads the plugin (at plugin; "" = DynsecPlugin) with it and turns
// anonymous access off. The plugin rewrites the JSON file itself when
// clients change, so write it only before the broker starts.
func WriteMosquittoDynsec(dir, plugin string, admin Credential, accounts Accounts, devices []Credential, serviceExtra []DynsecACL) error {
	if plugin == "" {
		plugin = DynsecPlugin
	}
	abs, err := filepath.Abs(dir)
	if err != nil {
		return fmt.Errorf("deviceauth: %w", err)
	}
	if err := os.MkdirAll(abs, 0o755); err != nil {
		return fmt.Errorf("deviceauth: %w", err)
	}
	js, err := MosquittoDynsec(admin, accounts, devices, serviceExtra, nil)
	if err != nil {
		return err
	}
	jsPath := filepath.Join(abs, "dynamic-security.json")
	conf := fmt.Sprintf("# Generated by `ams api -write-mosquitto-config -mosquitto-dynsec-admin ...`; do not edit.\n"+
		"allow_anonymous false\nplugin %s\nplugin_opt_config_file %s\n", plugin, jsPath)
	for _, f := range []struct {
		path string
		body []byte
		mode os.FileMode
	}{{jsPath, js, 0o600}, {filepath.Join(abs, "dynsec.conf"), []byte(conf), 0o644}} {
		if err := os.WriteFile(f.path+".tmp", f.body, f.mode); err != nil {
			return fmt.Errorf("deviceauth: write %s: %w", f.path, err)
		}
		if err := os.Rename(f.path+".tmp", f.path); err != nil {
			return fmt.Errorf("deviceauth: write %s: %w", f.path, err)
		}
	}
	return nil
}

// ServiceTopics returns ACLs that let services publish and subscribe
// (also as a shared subscription) below each of filters (e.g. "ams/#" for
// the test stack's own checks).
func ServiceTopics(filters ...string) []DynsecACL {
	var out []DynsecACL
	for _, f := range filters {
		out = append(out, allow("publishClientSend", f), allow("subscribePattern", f), allow("subscribePattern", "$share/+/"+f))
	}
	return out
}

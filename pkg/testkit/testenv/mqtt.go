package testenv

import (
	"os"
	"strings"
	"testing"

	mqtt "github.com/eclipse/paho.mqtt.golang"

	"github.com/ivms/ams/pkg/deviceauth"
	"github.com/ivms/ams/pkg/mqttdynsec"
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
	d, err := mqttdynsec.Dial(MQTTURL(), user, secretEnv("AMS_MQTT_DYNSEC_PASSWORD"))
	if err != nil {
		t.Fatalf("mqtt devices: %v", err)
	}
	defer d.Close()
	if err := d.AddDevices(creds...); err != nil {
		t.Fatalf("mqtt devices: %v", err)
	}
	t.Cleanup(func() {
		d, err := mqttdynsec.Dial(MQTTURL(), user, secretEnv("AMS_MQTT_DYNSEC_PASSWORD"))
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

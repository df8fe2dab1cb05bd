package protocol

import "strings"

// MaxSNLen is the longest device serial number ams accepts.
const MaxSNLen = 64

// ValidSN reports whether s can be a device serial number: 1 to MaxSNLen
// printable ASCII characters (0x21 to 0x7e, so no space and no control
// character), none of them '/', '+' or '#'. An sn is used as an MQTT topic
// level (/ivms/pub/{sn}, /ivms/sub/{sn}), as a Kafka key and as an MQTT client
// id, so it must be one topic level without wildcards.
//
// This is the one check of an sn in ams: frames, connection events,
// downlinks, API requests and broker authentication all go through it.
func ValidSN(s string) bool {
	if len(s) == 0 || len(s) > MaxSNLen {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c <= ' ' || c > '~' || c == '/' || c == '+' || c == '#' {
			return false
		}
	}
	return true
}

// MQTT topics of the protocol.
const (
	UplinkPrefix   = "/ivms/pub/" // + sn: the device publishes
	DownlinkPrefix = "/ivms/sub/" // + sn: the device subscribes
	BroadcastTopic = "/ivms/push" // cloud to all devices
	// UplinkFilter subscribes to every device's uplinks.
	UplinkFilter = UplinkPrefix + "+"
)

// DownlinkTopic is the topic a device subscribes to: "/ivms/sub/"+sn.
func DownlinkTopic(sn string) string { return DownlinkPrefix + sn }

// UplinkTopic is the topic a device publishes to: "/ivms/pub/"+sn.
func UplinkTopic(sn string) string { return UplinkPrefix + sn }

// SNFromUplinkTopic returns the sn of an uplink topic. It accepts exactly
// "/ivms/pub/{sn}" where sn passes ValidSN.
func SNFromUplinkTopic(topic string) (string, bool) {
	sn, ok := strings.CutPrefix(topic, UplinkPrefix)
	if !ok || !ValidSN(sn) {
		return "", false
	}
	return sn, true
}

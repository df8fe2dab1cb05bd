package protocol

import (
	"strings"
	"unicode/utf8"
)

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
// "/ivms/pub/{sn}" where sn is non-empty valid UTF-8 with no '/', no MQTT
// wildcard ('+', '#') and no NUL.
func SNFromUplinkTopic(topic string) (string, bool) {
	sn, ok := strings.CutPrefix(topic, UplinkPrefix)
	if !ok || sn == "" || !utf8.ValidString(sn) || strings.ContainsAny(sn, "/+#\x00") {
		return "", false
	}
	return sn, true
}

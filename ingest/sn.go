package ingest

// MaxSNLen is the longest device serial number ams accepts.
const MaxSNLen = 64

// ValidSN reports whether s can be a device serial number: 1 to MaxSNLen
// printable ASCII characters (0x21 to 0x7e, so no space and no control
// character), none of them '/', '+' or '#'. An sn is used as an MQTT topic
// level (/ivms/pub/{sn}, /ivms/sub/{sn}), as a Kafka key and as an MQTT client
// id, so it must be one topic level without wildcards.
//
// This is the one check of an sn in ingest and egress: frames, connection
// events and downlinks all go through it.
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

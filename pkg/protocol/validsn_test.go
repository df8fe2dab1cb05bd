package protocol

import (
	"strings"
	"testing"
)

func TestValidSN(t *testing.T) {
	for _, tc := range []struct {
		sn   string
		want bool
	}{
		{"02931117C6ED8D30", true},
		{"a", true},
		{strings.Repeat("x", 64), true},
		{"dev-1_2.3:4@5", true},
		{"", false},
		{strings.Repeat("x", 65), false},
		{"a/b", false},
		{"a+b", false},
		{"a#", false},
		{"a b", false},
		{"a\x00b", false},
		{"a\tb", false},
		{"é", false},
		{"a\x7f", false},
	} {
		if got := ValidSN(tc.sn); got != tc.want {
			t.Errorf("ValidSN(%q) = %v, want %v", tc.sn, got, tc.want)
		}
	}
}

func TestSNFromUplinkTopicUsesValidSN(t *testing.T) {
	for topic, want := range map[string]string{
		"/ivms/pub/0505050505050003":           "0505050505050003",
		"/ivms/pub/":                           "",
		"/ivms/pub/a/b":                        "",
		"/ivms/pub/é":                          "",
		"/ivms/pub/" + strings.Repeat("x", 65): "",
		"/ivms/sub/0505050505050003":           "",
	} {
		got, ok := SNFromUplinkTopic(topic)
		if got != want || ok != (want != "") {
			t.Errorf("SNFromUplinkTopic(%q) = %q, %v; want %q", topic, got, ok, want)
		}
	}
}

package sessionimport

import "testing"

func TestKeyPatterns(t *testing.T) {
	for _, bad := range []string{"", "mqtt_aes_key", "a:{sn}:{sn}"} {
		if _, _, err := split(bad); err == nil {
			t.Errorf("pattern %q accepted", bad)
		}
	}
	p, s, err := split("ams:mqtt_aes_key:{sn}:v1")
	if err != nil || p != "ams:mqtt_aes_key:" || s != ":v1" {
		t.Errorf("split = %q %q %v", p, s, err)
	}
	if got := globEscape(`a*b?[c]\`); got != `a\*b\?\[c\]\\` {
		t.Errorf("globEscape = %q", got)
	}
}

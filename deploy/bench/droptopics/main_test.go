package main

import "testing"

// TestTopicPrefix: exactly one of -topic-prefix and -namespace, a namespace
// gives its derived prefix, and an empty prefix is refused.
func TestTopicPrefix(t *testing.T) {
	for _, c := range []struct {
		prefix, ns string
		want       string
		ok         bool
	}{
		{"bench123.", "", "bench123.", true},
		{"", "soak123", "soak123.", true},
		{"", "", "", false},
		{"bench123.", "soak123", "", false},
		{"", "not a namespace!", "", false},
	} {
		got, err := topicPrefix(c.prefix, c.ns)
		if (err == nil) != c.ok || got != c.want {
			t.Errorf("topicPrefix(%q, %q) = %q, %v; want %q, ok %v", c.prefix, c.ns, got, err, c.want, c.ok)
		}
	}
}

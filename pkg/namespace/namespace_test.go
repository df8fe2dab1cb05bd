package namespace

import (
	"strings"
	"testing"

	"github.com/ivms/ams/pkg/kafkatopics"
)

// TestTwoNamespacesShareNoName: every name of one namespace differs from the same name of
// another (and of no namespace), no topic is shared, and no Redis prefix or transactional id
// prefix of one is a prefix of the other's (keys and ids are matched by prefix).
func TestTwoNamespacesShareNoName(t *testing.T) {
	spaces := []string{"", "blue", "green", "blue_2", "b"}
	for i, a := range spaces {
		for _, b := range spaces[i+1:] {
			na, nb := Derive(a), Derive(b)
			la, lb := na.List(), nb.List()
			for k := range la {
				if la[k][1] == lb[k][1] {
					t.Errorf("%q and %q share the %s %q", a, b, la[k][0], la[k][1])
				}
			}
			for _, p := range [][2]string{
				{na.RedisPrefix, nb.RedisPrefix}, {na.TransactionalIDPrefix, nb.TransactionalIDPrefix},
			} {
				if strings.HasPrefix(p[0], p[1]) || strings.HasPrefix(p[1], p[0]) {
					t.Errorf("%q and %q: prefix %q overlaps %q", a, b, p[0], p[1])
				}
			}
			ta := map[string]bool{}
			for _, n := range kafkatopics.WithPrefix(na.TopicPrefix).All() {
				ta[n] = true
			}
			for _, n := range kafkatopics.WithPrefix(nb.TopicPrefix).All() {
				if ta[n] {
					t.Errorf("%q and %q share topic %s", a, b, n)
				}
			}
			// Every group name of a is different from every group name of b.
			ga := map[string]bool{na.ProcessGroup: true, na.EgressGroup: true, na.SinkRedisGroup: true, na.SinkClickHouseGroup: true}
			for _, g := range []string{nb.ProcessGroup, nb.EgressGroup, nb.SinkRedisGroup, nb.SinkClickHouseGroup} {
				if ga[g] {
					t.Errorf("%q and %q share consumer group %s", a, b, g)
				}
			}
		}
	}
}

func TestDefaults(t *testing.T) {
	n := Derive("")
	if n.TopicPrefix != "" || n.ProcessGroup != "ams-process-device" || n.RedisPrefix != "ams:" || n.ClickHouseDatabase != "ams" || n.MQTTShareGroup != "ams" {
		t.Fatalf("defaults changed: %+v", n)
	}
	b := Derive("blue")
	if b.TopicPrefix != "blue." || b.ClickHouseDatabase != "blue_ams" || b.RedisPrefix != "blue:ams:" ||
		b.MQTTShareGroup != "blue_ams" || !strings.HasPrefix(b.ClientIDPrefix, "ams-") {
		t.Fatalf("blue: %+v", b)
	}
}

func TestValidate(t *testing.T) {
	for _, ok := range []string{"", "a", "blue", "stage_2", "abcdefghijklmnopqrstuvwxyz012345"} {
		if err := Validate(ok); err != nil {
			t.Errorf("%q: %v", ok, err)
		}
	}
	for _, bad := range []string{"Blue", "2x", "a.b", "a-b", "a:b", "a/b", "_a", "abcdefghijklmnopqrstuvwxyz0123456", " a"} {
		if err := Validate(bad); err == nil {
			t.Errorf("%q accepted", bad)
		}
	}
}

package chserver

import (
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

var placeholder = regexp.MustCompile(`\{[a-z_]+\}`)

// TestEveryPlaceholderFilled: Write fills every placeholder of both files, and
// deploy/stack/up.sh (which renders them with sed) substitutes each one too.
func TestEveryPlaceholderFilled(t *testing.T) {
	dir := t.TempDir()
	cfg, err := Write(Params{Dir: dir, Logs: filepath.Join(dir, "logs"), Host: "127.0.0.1", TCPPort: 19000, HTTPPort: 18123,
		LogLevel: "warning", MaxMemoryUsage: 1 << 30, MaxConnections: 10, MaxConcurrentQueries: 5, UncompressedCacheSize: 1 << 20, MarkCacheSize: 1 << 20})
	if err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(b), "<tcp_port>19000</tcp_port>") || !strings.Contains(string(b), "<path>"+dir+"/data/</path>") {
		t.Errorf("config.xml:\n%s", b)
	}
	upsh, err := os.ReadFile("../up.sh")
	if err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"config.xml", "users.xml"} {
		raw, err := files.ReadFile(name)
		if err != nil {
			t.Fatal(err)
		}
		for _, p := range placeholder.FindAllString(string(raw), -1) {
			if !strings.Contains(string(upsh), `"s|`+p+`|`) {
				t.Errorf("deploy/stack/up.sh does not substitute %s of %s", p, name)
			}
		}
	}
}

// Package chserver is the one configuration of a single-node ClickHouse
// server that ams runs itself: the test stack's (deploy/stack/up.sh renders
// config.xml and users.xml with sed) and ams-dev's private server (Write).
// The files hold {name} placeholders; Params gives their values.
package chserver

import (
	"embed"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
)

//go:embed config.xml users.xml
var files embed.FS

// Params are the values of the placeholders.
type Params struct {
	Dir                   string // {dir}: data, tmp and users.xml go under it
	Logs                  string // {logs}: the server's log folder
	Host                  string // {host}: listen address
	TCPPort, HTTPPort     int    // {tcp_port}, {http_port}
	LogLevel              string // {log_level}: warning, information, ...
	MaxMemoryUsage        int64  // {max_memory_usage} of a query, bytes
	MaxConnections        int    // {max_connections}
	MaxConcurrentQueries  int    // {max_concurrent_queries}
	UncompressedCacheSize int64  // {uncompressed_cache_size}, bytes
	MarkCacheSize         int64  // {mark_cache_size}, bytes
}

// Render returns the file name's contents (config.xml or users.xml) with p's values.
func Render(name string, p Params) ([]byte, error) {
	b, err := files.ReadFile(name)
	if err != nil {
		return nil, fmt.Errorf("clickhouse server config: %w", err)
	}
	r := strings.NewReplacer(
		"{dir}", p.Dir, "{logs}", p.Logs, "{host}", p.Host,
		"{tcp_port}", strconv.Itoa(p.TCPPort), "{http_port}", strconv.Itoa(p.HTTPPort),
		"{log_level}", p.LogLevel, "{max_memory_usage}", strconv.FormatInt(p.MaxMemoryUsage, 10),
		"{max_connections}", strconv.Itoa(p.MaxConnections), "{max_concurrent_queries}", strconv.Itoa(p.MaxConcurrentQueries),
		"{uncompressed_cache_size}", strconv.FormatInt(p.UncompressedCacheSize, 10), "{mark_cache_size}", strconv.FormatInt(p.MarkCacheSize, 10))
	out := r.Replace(string(b))
	if i := strings.Index(out, "{"); i >= 0 {
		return nil, fmt.Errorf("clickhouse server config %s: placeholder left at %q", name, out[i:min(len(out), i+30)])
	}
	return []byte(out), nil
}

// Write writes config.xml and users.xml into p.Dir and returns the path of
// config.xml (the server's --config-file).
func Write(p Params) (string, error) {
	for _, name := range []string{"users.xml", "config.xml"} {
		b, err := Render(name, p)
		if err != nil {
			return "", err
		}
		if err := os.WriteFile(filepath.Join(p.Dir, name), b, 0o644); err != nil {
			return "", fmt.Errorf("clickhouse server config: %w", err)
		}
	}
	return filepath.Join(p.Dir, "config.xml"), nil
}

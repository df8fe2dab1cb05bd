package main

import (
	"flag"
	"fmt"
	"io"
	"log/slog"
	"strings"

	"github.com/ivms/ams/pkg/envflag"
	"github.com/ivms/ams/pkg/kafkatopics"
)

func parseFlags(fs *flag.FlagSet, args []string, getenv func(string) string) error {
	return envflag.Parse(fs, args, getenv)
}

func usageFlags(w io.Writer, fs *flag.FlagSet) { envflag.Usage(w, fs) }

// Shared flag groups. Every default is the loopback address of `make up`'s
// service, so a role started with no configuration talks to the local stack.

// kafkaFlags are the flags of every role that talks to Kafka.
type kafkaFlags struct {
	brokers     string
	topicPrefix string
	partitions  int
	replication int
	namespace   string
	sec         kafkaSecurityFlags
}

func (k *kafkaFlags) register(fs *flag.FlagSet) {
	fs.StringVar(&k.brokers, "kafka-brokers", "127.0.0.1:9092", "Kafka bootstrap brokers, comma-separated")
	fs.StringVar(&k.topicPrefix, "topic-prefix", "", "prefix of every Kafka topic name (isolates test runs)")
	fs.IntVar(&k.partitions, "partitions", 12, "partition count of every ams topic (all topics share it)")
	fs.IntVar(&k.replication, "replication", 3, "replication factor of topics created by migrate (min.insync.replicas is set to one less, at least 1)")
	fs.StringVar(&k.namespace, "namespace", "", "namespace of this stack: derives the topic prefix, consumer groups, transactional ids, MQTT share group, Redis prefix and ClickHouse database (explicit flags still win)")
	k.sec.register(fs)
}

func (k *kafkaFlags) seeds() []string { return splitList(k.brokers) }

func (k *kafkaFlags) names() kafkatopics.Names { return kafkatopics.WithPrefix(k.topicPrefix) }

// logFlags configure the process's slog logger.
type logFlags struct {
	level  string
	format string
}

func (l *logFlags) register(fs *flag.FlagSet) {
	fs.StringVar(&l.level, "log-level", "info", "log level: debug, info, warn, error")
	fs.StringVar(&l.format, "log-format", "text", "log format: text or json")
}

func (l *logFlags) logger(w io.Writer) (*slog.Logger, error) {
	var lvl slog.Level
	if err := lvl.UnmarshalText([]byte(l.level)); err != nil {
		return nil, fmt.Errorf("log level %q: %w", l.level, err)
	}
	opts := &slog.HandlerOptions{Level: lvl}
	switch l.format {
	case "text":
		return slog.New(slog.NewTextHandler(w, opts)), nil
	case "json":
		return slog.New(slog.NewJSONHandler(w, opts)), nil
	default:
		return nil, fmt.Errorf("log format %q: want text or json", l.format)
	}
}

func splitList(s string) []string {
	var out []string
	for _, p := range strings.Split(s, ",") {
		if p = strings.TrimSpace(p); p != "" {
			out = append(out, p)
		}
	}
	return out
}

package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"log/slog"

	goredis "github.com/redis/go-redis/v9"

	"github.com/ivms/ams/pkg/connsec"
	"github.com/ivms/ams/pkg/kafkagroup"
	"github.com/ivms/ams/pkg/opshttp"
	"github.com/ivms/ams/schemas"
	amsredis "github.com/ivms/ams/sinks/redis"
)

// redisFlags are the flags of every role that talks to Redis.
type redisFlags struct {
	addr     string
	username string
	password string
	db       int
	prefix   string
	sec      redisSecurityFlags
}

func (r *redisFlags) register(fs *flag.FlagSet) {
	fs.StringVar(&r.addr, "redis-addr", "127.0.0.1:6379", "Redis address (host:port)")
	fs.StringVar(&r.username, "redis-username", "", "Redis ACL user (empty: default)")
	fs.StringVar(&r.password, "redis-password", "", "Redis password (prefer -redis-password-file; never logged)")
	fs.IntVar(&r.db, "redis-db", 0, "Redis database number")
	fs.StringVar(&r.prefix, "redis-prefix", amsredis.DefaultPrefix, "prefix of every Redis key (isolates test runs; the sink and the API must agree)")
	r.sec.register(fs)
}

// client returns a Redis client with the TLS and credentials of the flags
// (it connects lazily).
func (r *redisFlags) client() (*goredis.Client, error) {
	pass, err := connsec.Secret("redis password", r.password, r.sec.passwordFile)
	if err != nil {
		return nil, err
	}
	tc, err := r.sec.tls.config()
	if err != nil {
		return nil, err
	}
	return goredis.NewClient(&goredis.Options{Addr: r.addr, Username: r.username, Password: pass, DB: r.db, TLSConfig: tc}), nil
}

// logSecurity logs how the role reaches Redis (never the password).
func (r *redisFlags) logSecurity(log *slog.Logger) {
	tlsOn := r.sec.tls.set.On()
	log.Info("redis connection", "addr", r.addr, "tls", tlsOn, "user", r.username, "password", r.password != "" || r.sec.passwordFile != "")
	if !tlsOn {
		log.Warn("redis: no TLS (traffic and password readable on the network)")
	}
}

func (r *redisFlags) keys() amsredis.Keys { return amsredis.Keys{Prefix: r.prefix} }

// redisSinkFlags is `ams sink redis`: project the current state into Redis.
func redisSinkFlags(fs *flag.FlagSet) func(context.Context, io.Writer, io.Writer) error {
	var k kafkaFlags
	var lf logFlags
	var rf redisFlags
	k.register(fs)
	lf.register(fs)
	rf.register(fs)
	opsAddr := fs.String("ops-addr", ":9105", "listen address of /healthz, /readyz and /metrics (empty: off)")
	group := fs.String("sink-group", "ams-sink-redis", "Kafka consumer group of the Redis sink instances (a new group replays the whole log)")
	maxPoll := fs.Int("max-poll", 1000, "most records applied to Redis in one pipeline")
	instanceID := fs.String("instance-id", "", "this instance's stable name (the pod name), unique among live instances: its Kafka group.instance.id (static membership: restarted after a crash, it takes its partitions back at once); empty: dynamic membership")
	session := fs.Duration("kafka-session-timeout", kafkagroup.DefaultSessionTimeout, "Kafka group session timeout: how long the partitions of a crashed instance that is not restarted with its -instance-id wait before they move")
	return func(ctx context.Context, stdout, stderr io.Writer) error {
		log, err := lf.logger(stderr)
		if err != nil {
			return err
		}
		if _, err := applyNamespace(fs); err != nil {
			return err
		}
		kopts, err := k.opts()
		if err != nil {
			return err
		}
		k.logSecurity(log)
		rf.logSecurity(log)
		reg, err := schemas.NewRegistry()
		if err != nil {
			return err
		}
		rdb, err := rf.client()
		if err != nil {
			return err
		}
		defer rdb.Close()
		ops := opshttp.New(log)
		proj := amsredis.NewProjector(rdb, rf.keys(), k.names(), reg)
		s, err := amsredis.NewSink(amsredis.SinkConfig{Seeds: k.seeds(), Group: *group, MaxPoll: *maxPoll,
			InstanceID: *instanceID, SessionTimeout: *session, KafkaOpts: kopts,
			Projector: proj, Redis: rdb, Log: log, Metrics: ops.Registry})
		if err != nil {
			return fmt.Errorf("redis sink: %w", err)
		}
		ops.AddCheck("kafka+redis", s.Ready)
		log.Info("redis sink starting", "redis", rf.addr, "prefix", rf.prefix, "group", *group)
		return runWithOps(ctx, ops, *opsAddr, s.Run)
	}
}

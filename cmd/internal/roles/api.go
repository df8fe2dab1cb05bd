package roles

import (
	"context"
	"crypto/tls"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"
	goredis "github.com/redis/go-redis/v9"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/ivms/ams/ingest/api"
	"github.com/ivms/ams/ingest/console"
	"github.com/ivms/ams/pkg/connsec"
	"github.com/ivms/ams/pkg/deviceauth"
	"github.com/ivms/ams/pkg/devicestate"
	"github.com/ivms/ams/pkg/kafkatopics"
	"github.com/ivms/ams/schemas"
	"github.com/ivms/ams/sinks/chsink"
)

// APIOptions configure `ams api`: the HTTP JSON API (commands, devices,
// registrations), the broker's HTTP auth endpoints and the fleet console;
// with MosquittoDir, it writes the broker's configuration and exits instead.
type APIOptions struct {
	Output
	Kafka               Kafka
	Log                 Log
	Redis               Redis
	ClickHouse          ClickHouse
	Console             bool
	ConsoleSecureCookie bool
	HTTPAddr            string
	OpsAddr             string
	Token               string
	TokenFile           string
	TokensFile          string
	TLSCertFile         string
	TLSKeyFile          string
	LoginBurst          int
	LoginEvery          time.Duration
	ServiceAccounts     string // name:password,...
	ServiceAccountsFile string
	MaxWait             time.Duration
	Mosquitto           MosquittoOptions
}

// MosquittoOptions: write the broker's configuration files and exit (`ams api
// -write-mosquitto-config DIR`).
type MosquittoOptions struct {
	Dir                 string
	DevicesFile         string
	DynsecAdmin         string
	DynsecAdminPassFile string
	ServiceTopics       string // comma-separated
}

// DefaultAPI returns the defaults of `ams api`.
func DefaultAPI() APIOptions {
	return APIOptions{
		Kafka: DefaultKafka(), Log: DefaultLog(), Redis: DefaultRedis(), ClickHouse: DefaultClickHouse(),
		Console:    true,
		HTTPAddr:   ":8080",
		OpsAddr:    ":9106",
		LoginBurst: 5,
		LoginEvery: time.Minute,
		MaxWait:    60 * time.Second,
	}
}

// Flags declares the flags of `ams api` on o's fields.
func (o *APIOptions) Flags(fs *flag.FlagSet) {
	o.Kafka.Flags(fs)
	o.Log.Flags(fs)
	o.Redis.Flags(fs)
	o.ClickHouse.Flags(fs)
	fs.BoolVar(&o.Console, "console", o.Console, "serve the fleet console under /ui/ (history from ClickHouse, -clickhouse-*)")
	fs.BoolVar(&o.ConsoleSecureCookie, "console-secure-cookie", o.ConsoleSecureCookie, "mark the console's cookies Secure on plain HTTP too (behind a TLS-terminating proxy)")
	fs.StringVar(&o.HTTPAddr, "http-addr", o.HTTPAddr, "listen address of the public API (only its authenticated routes)")
	fs.StringVar(&o.OpsAddr, "ops-addr", o.OpsAddr, "listen address of /healthz, /readyz and /metrics (empty: off); keep it off the public network")
	fs.StringVar(&o.Token, "api-token", o.Token, "an admin bearer token named \"default\" (legacy; prefer -api-tokens-file; never logged)")
	fs.StringVar(&o.TokenFile, "api-token-file", o.TokenFile, "file holding the -api-token")
	fs.StringVar(&o.TokensFile, "api-tokens-file", o.TokensFile, "file of named, scoped bearer tokens, one \"name scope token\" or \"name scope sha256:<hex>\" per line (scope: read, command, admin, broker-auth); re-read when its mtime or size changes")
	fs.StringVar(&o.TLSCertFile, "api-tls-cert-file", o.TLSCertFile, "PEM certificate (chain) of the API; with -api-tls-key-file the API serves HTTPS (files re-read when they change); without, it expects a TLS-terminating proxy")
	fs.StringVar(&o.TLSKeyFile, "api-tls-key-file", o.TLSKeyFile, "PEM private key of -api-tls-cert-file")
	fs.IntVar(&o.LoginBurst, "broker-login-burst", o.LoginBurst, "failed broker logins allowed at once per client id before logins of that id are denied")
	fs.DurationVar(&o.LoginEvery, "broker-login-every", o.LoginEvery, "one more failed broker login allowed per client id every this long")
	fs.StringVar(&o.ServiceAccounts, "service-accounts", o.ServiceAccounts, "MQTT service accounts of ams's roles, name:password,... (broker auth; never logged)")
	fs.StringVar(&o.ServiceAccountsFile, "service-accounts-file", o.ServiceAccountsFile, "file of MQTT service accounts, one name:password per line")
	fs.DurationVar(&o.MaxWait, "max-wait", o.MaxWait, "longest ?wait= of a command request")
	m := &o.Mosquitto
	fs.StringVar(&m.Dir, "write-mosquitto-config", m.Dir, "write a Mosquitto password file, ACL and ams.conf into this directory, then exit")
	fs.StringVar(&m.DevicesFile, "mosquitto-devices", m.DevicesFile, "with -write-mosquitto-config: file of device credentials, one sn:token per line")
	fs.StringVar(&m.DynsecAdmin, "mosquitto-dynsec-admin", m.DynsecAdmin, "with -write-mosquitto-config: also write dynamic-security.json and dynsec.conf (Mosquitto's dynamic-security plugin) with this administrator, who adds devices at run time")
	fs.StringVar(&m.DynsecAdminPassFile, "mosquitto-dynsec-admin-password-file", m.DynsecAdminPassFile, "file holding the password of -mosquitto-dynsec-admin")
	fs.StringVar(&m.ServiceTopics, "mosquitto-service-topics", m.ServiceTopics, "with -mosquitto-dynsec-admin: comma-separated extra topic filters service accounts may publish and subscribe (the test stack: ams/#)")
}

// RunAPI serves the API until ctx is done (or writes the Mosquitto
// configuration and returns, with Mosquitto.Dir).
func RunAPI(ctx context.Context, o APIOptions) error {
	e, err := newEnv("api", o.Output, o.Log)
	if err != nil {
		return err
	}
	accounts, err := loadAccounts(o.ServiceAccounts, o.ServiceAccountsFile)
	if err != nil {
		return err
	}
	if o.Mosquitto.Dir != "" {
		return o.Mosquitto.write(o.stdout(), accounts)
	}
	token, err := connsec.Secret("api token", o.Token, o.TokenFile)
	if err != nil {
		return err
	}
	if token == "" && o.TokensFile == "" {
		return errors.New("no API token: set -api-tokens-file (AMS_API_TOKENS_FILE) or -api-token / -api-token-file")
	}
	tokens, err := api.NewTokens(o.TokensFile, token)
	if err != nil {
		return err
	}
	var tlsCfg *tls.Config
	switch {
	case o.TLSCertFile != "" && o.TLSKeyFile != "":
		cr, err := api.NewCertReloader(o.TLSCertFile, o.TLSKeyFile)
		if err != nil {
			return err
		}
		tlsCfg = cr.TLSConfig()
	case o.TLSCertFile != "" || o.TLSKeyFile != "":
		return errors.New("api tls: set both -api-tls-cert-file and -api-tls-key-file")
	default:
		e.log.Warn("api: serving plain HTTP (no -api-tls-cert-file); it expects a TLS-terminating proxy in front, bearer tokens cross the network in clear otherwise")
	}
	if _, err := names(o.Kafka.Namespace); err != nil {
		return err
	}
	o.Kafka.LogSecurity(e.log)
	// No linger: a command or registry change is one record whose POST
	// waits for it (franz-go lingers 10ms by default); under load records
	// still batch behind the requests in flight.
	cl, err := o.Kafka.Client(kgo.RequiredAcks(kgo.AllISRAcks()), kgo.ProducerLinger(0),
		kgo.ProduceRequestTimeout(10*time.Second), kgo.RecordDeliveryTimeout(30*time.Second))
	if err != nil {
		return err
	}
	defer cl.Close()
	checkCtx, cancel := context.WithTimeout(ctx, 30*time.Second)
	err = kafkatopics.Check(checkCtx, kadm.NewClient(cl), o.Kafka.Names(), int32(o.Kafka.Partitions))
	cancel()
	if err != nil {
		return err
	}
	rdb, err := o.Redis.open(e.log)
	if err != nil {
		return err
	}
	defer rdb.Close()
	store := devicestate.NewStore(rdb, o.Redis.Keys())
	defer store.Close() // the command watcher's subscription (before rdb.Close)
	srv, err := api.New(api.Config{Tokens: tokens, Names: o.Kafka.Names(), Accounts: accounts, MaxWait: o.MaxWait,
		LoginBurst: o.LoginBurst, LoginEvery: o.LoginEvery},
		store, api.KafkaProducer{Client: cl}, e.reg, e.log, e.ops.Registry)
	if err != nil {
		return err
	}
	if o.Console {
		hist, err := startConsole(srv, o.ConsoleSecureCookie || tlsCfg != nil, o, rdb, store, cl, e.reg, e.log)
		if err != nil {
			return err
		}
		defer hist.Close()
	}
	e.ops.AddCheck("kafka", func(ctx context.Context) error { return cl.Ping(ctx) })
	e.ops.AddCheck("redis", store.Ping)
	e.log.Info("api starting", "addr", o.HTTPAddr, "ops_addr", o.OpsAddr, "tls", tlsCfg != nil, "redis", o.Redis.Addr,
		"prefix", o.Redis.Prefix, "service_accounts", accounts.Names(), "tokens", tokens.Names())
	ln, err := net.Listen("tcp", o.HTTPAddr)
	if err != nil {
		return fmt.Errorf("api listen %s: %w", o.HTTPAddr, err)
	}
	return e.serve(ctx, o.OpsAddr, func(ctx context.Context) error {
		go tokens.Watch(ctx, 2*time.Second, e.log)
		return srv.Serve(ctx, ln, tlsCfg)
	})
}

func loadAccounts(spec, file string) (deviceauth.Accounts, error) {
	a, err := deviceauth.ParseAccounts(spec)
	if err != nil {
		return deviceauth.Accounts{}, err
	}
	if file != "" {
		f, err := deviceauth.ReadAccountsFile(file)
		if err != nil {
			return deviceauth.Accounts{}, err
		}
		a = a.Merge(f)
	}
	return a, nil
}

// readDeviceCredentials reads a file of sn:token lines (none when file is "").
func readDeviceCredentials(file string) ([]deviceauth.Credential, error) {
	if file == "" {
		return nil, nil
	}
	f, err := os.Open(file)
	if err != nil {
		return nil, fmt.Errorf("mosquitto devices: %w", err)
	}
	defer f.Close()
	return deviceauth.ReadCredentials(f)
}

// write writes the Mosquitto password file, ACL and ams.conf into m.Dir, and
// with DynsecAdmin the dynamic-security files too.
func (m MosquittoOptions) write(stdout io.Writer, accounts deviceauth.Accounts) error {
	devices, err := readDeviceCredentials(m.DevicesFile)
	if err != nil {
		return err
	}
	if err := deviceauth.WriteMosquittoConfig(m.Dir, accounts, devices); err != nil {
		return err
	}
	fmt.Fprintf(stdout, "mosquitto: wrote passwd (%d service accounts, %d devices), acl and ams.conf into %s\n",
		len(accounts.Names()), len(devices), m.Dir)
	if m.DynsecAdmin == "" {
		return nil
	}
	pw, err := connsec.Secret("mosquitto dynsec admin password", "", m.DynsecAdminPassFile)
	if err != nil {
		return err
	}
	if pw == "" {
		return errors.New("no -mosquitto-dynsec-admin-password-file")
	}
	if err := deviceauth.WriteMosquittoDynsec(m.Dir, "", deviceauth.Credential{Username: m.DynsecAdmin, Password: pw}, accounts, devices,
		deviceauth.ServiceTopics(SplitList(m.ServiceTopics)...)); err != nil {
		return err
	}
	fmt.Fprintf(stdout, "mosquitto: wrote dynamic-security.json (administrator %s, %d service accounts, %d devices) and dynsec.conf into %s\n",
		m.DynsecAdmin, len(accounts.Names()), len(devices), m.Dir)
	return nil
}

// startConsole mounts the fleet console (ingest/console) on the API's
// listener; it signs in with the API's own named, scoped tokens.
func startConsole(srv *api.Server, secureCookie bool, o APIOptions,
	rdb goredis.UniversalClient, store *devicestate.Store, cl *kgo.Client, reg *schemas.Registry, log *slog.Logger) (*console.History, error) {
	chOpts, err := o.ClickHouse.Options()
	if err != nil {
		return nil, err
	}
	hist, err := console.NewHistory(chOpts.Database, func(ctx context.Context) (driver.Conn, error) { return chsink.Open(ctx, chOpts) })
	if err != nil {
		return nil, err
	}
	con, err := console.New(console.Config{Names: o.Kafka.Names(), Keys: o.Redis.Keys(), SecureCookie: secureCookie},
		console.Deps{Auth: ConsoleAuth{Tokens: srv.Tokens()}, Redis: rdb, Store: store, Producer: api.KafkaProducer{Client: cl}, Encoder: reg, History: hist, Log: log})
	if err != nil {
		return nil, err
	}
	srv.Mount(con.Register)
	return hist, nil
}

// ConsoleAuth lets the console sign in with the API's tokens. A broker-auth
// token does not open the console.
type ConsoleAuth struct{ Tokens *api.Tokens }

// Authenticate returns the name and scope of a token that may open the console.
func (c ConsoleAuth) Authenticate(token string) (name, scope string, ok bool) {
	p, ok := c.Tokens.Authenticate(token)
	if !ok || p.Scope == api.ScopeBrokerAuth {
		return "", "", false
	}
	return p.Name, string(p.Scope), true
}

package main

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
	"strings"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"
	goredis "github.com/redis/go-redis/v9"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/ivms/ams/ingest/api"
	"github.com/ivms/ams/ingest/console"
	"github.com/ivms/ams/pkg/deviceauth"
	"github.com/ivms/ams/pkg/kafkatopics"
	"github.com/ivms/ams/pkg/opshttp"
	"github.com/ivms/ams/schemas"
	chsink "github.com/ivms/ams/sinks/clickhouse"
	amsredis "github.com/ivms/ams/sinks/redis"
)

func apiCommand() command {
	return command{
		name:    "api",
		summary: "serve the HTTP JSON API (commands, devices, registrations) and the broker's HTTP auth endpoints",
		flags: func(fs *flag.FlagSet) func(context.Context, io.Writer, io.Writer) error {
			var k kafkaFlags
			var lf logFlags
			var rf redisFlags
			k.register(fs)
			lf.register(fs)
			rf.register(fs)
			var ch clickHouseFlags
			ch.register(fs)
			consoleOn := fs.Bool("console", true, "serve the fleet console under /ui/ (history from ClickHouse, -clickhouse-*)")
			consoleSecure := fs.Bool("console-secure-cookie", false, "mark the console's cookies Secure on plain HTTP too (behind a TLS-terminating proxy)")
			addr := fs.String("http-addr", ":8080", "listen address of the public API (only its authenticated routes)")
			opsAddr := fs.String("ops-addr", ":9106", "listen address of /healthz, /readyz and /metrics (empty: off); keep it off the public network")
			token := fs.String("api-token", "", "an admin bearer token named \"default\" (legacy; prefer -api-tokens-file; never logged)")
			tokenFile := fs.String("api-token-file", "", "file holding the -api-token")
			tokensFile := fs.String("api-tokens-file", "", "file of named, scoped bearer tokens, one \"name scope token\" or \"name scope sha256:<hex>\" per line (scope: read, command, admin, broker-auth); re-read when its mtime or size changes")
			tlsCert := fs.String("api-tls-cert-file", "", "PEM certificate (chain) of the API; with -api-tls-key-file the API serves HTTPS (files re-read when they change); without, it expects a TLS-terminating proxy")
			tlsKey := fs.String("api-tls-key-file", "", "PEM private key of -api-tls-cert-file")
			loginBurst := fs.Int("broker-login-burst", 5, "failed broker logins allowed at once per client id before logins of that id are denied")
			loginEvery := fs.Duration("broker-login-every", time.Minute, "one more failed broker login allowed per client id every this long")
			accountsSpec := fs.String("service-accounts", "", "MQTT service accounts of ams's roles, name:password,... (broker auth; never logged)")
			accountsFile := fs.String("service-accounts-file", "", "file of MQTT service accounts, one name:password per line")
			maxWait := fs.Duration("max-wait", 60*time.Second, "longest ?wait= of a command request")
			mosqDir := fs.String("write-mosquitto-config", "", "write a Mosquitto password file, ACL and ams.conf into this directory, then exit")
			mosqDevices := fs.String("mosquitto-devices", "", "with -write-mosquitto-config: file of device credentials, one sn:token per line")
			dynsecAdmin := fs.String("mosquitto-dynsec-admin", "", "with -write-mosquitto-config: also write dynamic-security.json and dynsec.conf (Mosquitto's dynamic-security plugin) with this administrator, who adds devices at run time")
			dynsecAdminPwFile := fs.String("mosquitto-dynsec-admin-password-file", "", "file holding the password of -mosquitto-dynsec-admin")
			dynsecTopics := fs.String("mosquitto-service-topics", "", "with -mosquitto-dynsec-admin: comma-separated extra topic filters service accounts may publish and subscribe (the test stack: ams/#)")
			return func(ctx context.Context, stdout, stderr io.Writer) error {
				log, err := lf.logger(stderr)
				if err != nil {
					return err
				}
				accounts, err := loadAccounts(*accountsSpec, *accountsFile)
				if err != nil {
					return err
				}
				if *mosqDir != "" {
					if err := writeMosquittoConfig(stdout, *mosqDir, *mosqDevices, accounts); err != nil {
						return err
					}
					if *dynsecAdmin == "" {
						return nil
					}
					return writeMosquittoDynsec(stdout, *mosqDir, *mosqDevices, *dynsecAdmin, *dynsecAdminPwFile, *dynsecTopics, accounts)
				}
				if *tokenFile != "" {
					b, err := os.ReadFile(*tokenFile)
					if err != nil {
						return fmt.Errorf("api token file: %w", err)
					}
					*token = strings.TrimSpace(string(b))
				}
				if *token == "" && *tokensFile == "" {
					return errors.New("no API token: set -api-tokens-file (AMS_API_TOKENS_FILE) or -api-token / -api-token-file")
				}
				tokens, err := api.NewTokens(*tokensFile, *token)
				if err != nil {
					return err
				}
				var tlsCfg *tls.Config
				switch {
				case *tlsCert != "" && *tlsKey != "":
					cr, err := api.NewCertReloader(*tlsCert, *tlsKey)
					if err != nil {
						return err
					}
					tlsCfg = cr.TLSConfig()
				case *tlsCert != "" || *tlsKey != "":
					return errors.New("api tls: set both -api-tls-cert-file and -api-tls-key-file")
				default:
					log.Warn("api: serving plain HTTP (no -api-tls-cert-file); it expects a TLS-terminating proxy in front, bearer tokens cross the network in clear otherwise")
				}
				if _, err := applyNamespace(fs); err != nil {
					return err
				}
				reg, err := schemas.NewRegistry()
				if err != nil {
					return err
				}
				k.logSecurity(log)
				rf.logSecurity(log)
				// No linger: a command or registry change is one record
				// whose POST waits for it (franz-go lingers 10ms by
				// default); under load records still batch behind the
				// requests in flight.
				cl, err := k.client(kgo.RequiredAcks(kgo.AllISRAcks()), kgo.ProducerLinger(0),
					kgo.ProduceRequestTimeout(10*time.Second), kgo.RecordDeliveryTimeout(30*time.Second))
				if err != nil {
					return err
				}
				defer cl.Close()
				checkCtx, cancel := context.WithTimeout(ctx, 30*time.Second)
				err = kafkatopics.Check(checkCtx, kadm.NewClient(cl), k.names(), int32(k.partitions))
				cancel()
				if err != nil {
					return err
				}
				rdb, err := rf.client()
				if err != nil {
					return err
				}
				defer rdb.Close()
				store := amsredis.NewStore(rdb, rf.keys())
				ops := opshttp.New(log)
				if err := ops.ExportReady("api"); err != nil {
					return err
				}
				srv, err := api.New(api.Config{Tokens: tokens, Names: k.names(), Accounts: accounts, MaxWait: *maxWait,
					LoginBurst: *loginBurst, LoginEvery: *loginEvery},
					store, api.KafkaProducer{Client: cl}, reg, log, ops.Registry)
				if err != nil {
					return err
				}
				if *consoleOn {
					hist, err := startConsole(srv, *consoleSecure || tlsCfg != nil, k, rf, ch, rdb, cl, reg, log)
					if err != nil {
						return err
					}
					defer hist.Close()
				}
				ops.AddCheck("kafka", func(ctx context.Context) error { return cl.Ping(ctx) })
				ops.AddCheck("redis", store.Ping)
				log.Info("api starting", "addr", *addr, "ops_addr", *opsAddr, "tls", tlsCfg != nil, "redis", rf.addr,
					"prefix", rf.prefix, "service_accounts", accounts.Names(), "tokens", tokens.Names())
				ln, err := net.Listen("tcp", *addr)
				if err != nil {
					return fmt.Errorf("api listen %s: %w", *addr, err)
				}
				return runWithOps(ctx, ops, *opsAddr, func(ctx context.Context) error {
					go tokens.Watch(ctx, 2*time.Second, log)
					return srv.Serve(ctx, ln, tlsCfg)
				})
			}
		},
	}
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

func writeMosquittoConfig(stdout io.Writer, dir, devicesFile string, accounts deviceauth.Accounts) error {
	devices, err := readDeviceCredentials(devicesFile)
	if err != nil {
		return err
	}
	if err := deviceauth.WriteMosquittoConfig(dir, accounts, devices); err != nil {
		return err
	}
	fmt.Fprintf(stdout, "mosquitto: wrote passwd (%d service accounts, %d devices), acl and ams.conf into %s\n",
		len(accounts.Names()), len(devices), dir)
	return nil
}

func writeMosquittoDynsec(stdout io.Writer, dir, devicesFile, admin, adminPwFile, topics string, accounts deviceauth.Accounts) error {
	b, err := os.ReadFile(adminPwFile)
	if err != nil {
		return fmt.Errorf("mosquitto dynsec admin password: %w", err)
	}
	pw := strings.TrimSpace(string(b))
	if pw == "" {
		return errors.New("mosquitto dynsec admin password file is empty")
	}
	devices, err := readDeviceCredentials(devicesFile)
	if err != nil {
		return err
	}
	var filters []string
	for _, f := range strings.Split(topics, ",") {
		if f = strings.TrimSpace(f); f != "" {
			filters = append(filters, f)
		}
	}
	if err := deviceauth.WriteMosquittoDynsec(dir, "", deviceauth.Credential{Username: admin, Password: pw}, accounts, devices,
		deviceauth.ServiceTopics(filters...)); err != nil {
		return err
	}
	fmt.Fprintf(stdout, "mosquitto: wrote dynamic-security.json (administrator %s, %d service accounts, %d devices) and dynsec.conf into %s\n",
		admin, len(accounts.Names()), len(devices), dir)
	return nil
}

// startConsole mounts the fleet console (ingest/console) on the API's
// listener; it signs in with the API's own named, scoped tokens.
func startConsole(srv *api.Server, secureCookie bool, k kafkaFlags, rf redisFlags, ch clickHouseFlags,
	rdb goredis.UniversalClient, cl *kgo.Client, reg *schemas.Registry, log *slog.Logger) (*console.History, error) {
	chOpts, err := ch.options()
	if err != nil {
		return nil, err
	}
	hist, err := console.NewHistory(chOpts.Database, func(ctx context.Context) (driver.Conn, error) { return chsink.Open(ctx, chOpts) })
	if err != nil {
		return nil, err
	}
	auth := consoleAuth{srv.Tokens()}
	con, err := console.New(console.Config{Names: k.names(), Keys: rf.keys(), SecureCookie: secureCookie},
		console.Deps{Auth: auth, Redis: rdb, Producer: api.KafkaProducer{Client: cl}, Encoder: reg, History: hist, Log: log})
	if err != nil {
		return nil, err
	}
	srv.Mount(con.Register)
	return hist, nil
}

// consoleAuth lets the console sign in with the API's tokens. A broker-auth
// token does not open the console.
type consoleAuth struct{ t *api.Tokens }

func (c consoleAuth) Authenticate(token string) (name, scope string, ok bool) {
	p, ok := c.t.Authenticate(token)
	if !ok || p.Scope == api.ScopeBrokerAuth {
		return "", "", false
	}
	return p.Name, string(p.Scope), true
}

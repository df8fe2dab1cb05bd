package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/ivms/ams/ingest/api"
	"github.com/ivms/ams/pkg/deviceauth"
	"github.com/ivms/ams/pkg/kafkatopics"
	"github.com/ivms/ams/pkg/opshttp"
	"github.com/ivms/ams/schemas"
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
			addr := fs.String("http-addr", ":8080", "listen address of the API, with /healthz, /readyz and /metrics (those without authentication)")
			token := fs.String("api-token", "", "bearer token every API request must carry (required; never logged)")
			accountsSpec := fs.String("service-accounts", "", "MQTT service accounts of ams's roles, name:password,... (broker auth; never logged)")
			accountsFile := fs.String("service-accounts-file", "", "file of MQTT service accounts, one name:password per line")
			maxWait := fs.Duration("max-wait", 60*time.Second, "longest ?wait= of a command request")
			mosqDir := fs.String("write-mosquitto-config", "", "write a Mosquitto password file, ACL and ams.conf into this directory, then exit")
			mosqDevices := fs.String("mosquitto-devices", "", "with -write-mosquitto-config: file of device credentials, one sn:token per line")
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
					return writeMosquittoConfig(stdout, *mosqDir, *mosqDevices, accounts)
				}
				if *token == "" {
					return errors.New("no API token: set -api-token or AMS_API_TOKEN")
				}
				reg, err := schemas.NewRegistry()
				if err != nil {
					return err
				}
				cl, err := kgo.NewClient(kgo.SeedBrokers(k.seeds()...), kgo.RequiredAcks(kgo.AllISRAcks()),
					kgo.ProduceRequestTimeout(10*time.Second), kgo.RecordDeliveryTimeout(30*time.Second))
				if err != nil {
					return fmt.Errorf("kafka client: %w", err)
				}
				defer cl.Close()
				checkCtx, cancel := context.WithTimeout(ctx, 30*time.Second)
				err = kafkatopics.Check(checkCtx, kadm.NewClient(cl), k.names(), int32(k.partitions))
				cancel()
				if err != nil {
					return err
				}
				rdb := rf.client()
				defer rdb.Close()
				store := amsredis.NewStore(rdb, rf.keys())
				ops := opshttp.New(log)
				srv, err := api.New(api.Config{Token: *token, Names: k.names(), Accounts: accounts, MaxWait: *maxWait},
					store, api.KafkaProducer{Client: cl}, reg, log, ops.Registry)
				if err != nil {
					return err
				}
				srv.Register(ops.Mux())
				ops.AddCheck("kafka", func(ctx context.Context) error { return cl.Ping(ctx) })
				ops.AddCheck("redis", store.Ping)
				log.Info("api starting", "addr", *addr, "redis", rf.addr, "prefix", rf.prefix, "service_accounts", accounts.Names())
				return ops.Serve(ctx, *addr)
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

func writeMosquittoConfig(stdout io.Writer, dir, devicesFile string, accounts deviceauth.Accounts) error {
	var devices []deviceauth.Credential
	if devicesFile != "" {
		f, err := os.Open(devicesFile)
		if err != nil {
			return fmt.Errorf("mosquitto devices: %w", err)
		}
		devices, err = deviceauth.ReadCredentials(f)
		f.Close()
		if err != nil {
			return err
		}
	}
	if err := deviceauth.WriteMosquittoConfig(dir, accounts, devices); err != nil {
		return err
	}
	fmt.Fprintf(stdout, "mosquitto: wrote passwd (%d service accounts, %d devices), acl and ams.conf into %s\n",
		len(accounts.Names()), len(devices), dir)
	return nil
}

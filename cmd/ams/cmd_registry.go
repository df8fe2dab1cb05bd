package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"time"

	goredis "github.com/redis/go-redis/v9"

	"github.com/ivms/ams/cmd/internal/roles"
	"github.com/ivms/ams/pkg/connsec"
	"github.com/ivms/ams/pkg/registryimport"
	"github.com/ivms/ams/pkg/sessionimport"
	"github.com/ivms/ams/schemas"
)

// registryActions are the actions of `ams registry ACTION [flags]`: the
// cutover from the old service. Each declares its flags on fs and returns the
// function that runs it.
func registryActions() []command {
	return []command{
		{name: "import", summary: "register the devices of an export (CSV or JSON lines: sn, token, bound, name) through the API; prints a JSON report",
			flags: registryImportFlags},
		{name: "import-sessions", summary: "carry the cameras' AES sessions over from the old service's Redis into the processors' changelog, sealed under the KEK (before the processors first run); prints a JSON report",
			flags: sessionImportFlags},
		{name: "republish", summary: "write the latest registration of every device of the given partitions to ams.registry again (recovery of a lost changelog partition); prints a JSON report",
			flags: registryRepublishFlags},
	}
}

// registryCommand is `ams registry {import|import-sessions|republish} [flags]`
// (pkg/registryimport, pkg/sessionimport). Every action's flags are declared
// on the `registry` flag set too, so `ams config` lists them under registry.
func registryCommand() command {
	return command{
		name:    "registry",
		summary: "cut over from the old service: ams registry {import|import-sessions|republish} [flags]",
		flags: func(fs *flag.FlagSet) func(context.Context, io.Writer, io.Writer) error {
			for _, a := range registryActions() {
				a.flags(fs)
			}
			return func(ctx context.Context, stdout, stderr io.Writer) error {
				return runSub(ctx, "registry", registryActions(), fs.Args(), stdout, stderr)
			}
		},
	}
}

func registryImportFlags(fs *flag.FlagSet) func(context.Context, io.Writer, io.Writer) error {
	file := fs.String("import-file", "", "export to import: CSV with a header (sn, token, bound, name) or JSON lines; - for stdin (required)")
	format := fs.String("import-format", "", "csv or jsonl (empty: csv for a .csv file, else jsonl)")
	apiURL := fs.String("api-url", "http://127.0.0.1:8080", "base URL of the ams API, which writes each registration to ams.registry")
	token := fs.String("api-token", "", "bearer token of the API (or use -api-token-file; never logged)")
	tokenFile := fs.String("api-token-file", "", "file holding the API's bearer token")
	apiCA := fs.String("api-tls-ca-file", "", "CA certificate (PEM) that signs the API's HTTPS certificate (default: the system's)")
	timeout := fs.Duration("api-timeout", 30*time.Second, "timeout of one API request")
	return func(ctx context.Context, stdout, _ io.Writer) error {
		if *file == "" {
			return errors.New("-import-file is required")
		}
		tok, err := connsec.Secret("api token", *token, *tokenFile)
		if err != nil {
			return err
		}
		if tok == "" {
			return errors.New("-api-token or -api-token-file is required")
		}
		var in io.Reader = os.Stdin
		if *file != "-" {
			f, err := os.Open(*file)
			if err != nil {
				return fmt.Errorf("open export: %w", err)
			}
			defer f.Close()
			in = f
		}
		fm := registryimport.Format(*format)
		if fm == "" {
			fm = registryimport.FormatOf(*file)
		}
		hc := &http.Client{Timeout: *timeout}
		if *apiCA != "" {
			tc, err := connsec.TLS{CAFile: *apiCA}.Config()
			if err != nil {
				return fmt.Errorf("api-tls-ca-file: %w", err)
			}
			tr := http.DefaultTransport.(*http.Transport).Clone()
			tr.TLSClientConfig = tc
			hc.Transport = tr
		}
		c := &registryimport.Client{HTTP: hc, BaseURL: *apiURL, Token: tok}
		rep, err := registryimport.Import(ctx, c, in, fm)
		if rep.Refused == nil {
			rep.Refused = []registryimport.Refusal{}
		}
		return report(stdout, rep, err, len(rep.Refused), rep.Rows, "rows")
	}
}

func sessionImportFlags(fs *flag.FlagSet) func(context.Context, io.Writer, io.Writer) error {
	k := roles.DefaultKafka()
	k.Flags(fs)
	group := fs.String("process-group", "ams-process-device", "Kafka consumer group of the device processors (must have no running member)")
	kekFile := fs.String("kek-file", "", "file holding the processors' key-encryption key, hex (required)")
	oldAddr := fs.String("old-redis-addr", "127.0.0.1:6379", "the old service's Redis (host:port)")
	oldDB := fs.Int("old-redis-db", 0, "the old service's Redis database number")
	oldUser := fs.String("old-redis-username", "", "the old service's Redis ACL user (empty: default)")
	oldPassFile := fs.String("old-redis-password-file", "", "file holding the old service's Redis password (empty: none)")
	keyPattern := fs.String("old-key-pattern", "", "the old service's RedisKeyConstants.mqtt_aes_key with {sn} for the serial number (required)")
	ivPattern := fs.String("old-iv-pattern", "", "the old service's RedisKeyConstants.mqtt_aes_iv with {sn} for the serial number (required)")
	return func(ctx context.Context, stdout, _ io.Writer) error {
		if *keyPattern == "" || *ivPattern == "" {
			return errors.New("-old-key-pattern and -old-iv-pattern are required (the old service's RedisKeyConstants.mqtt_aes_key and mqtt_aes_iv, with {sn})")
		}
		kek, err := roles.ReadKEK(*kekFile)
		if err != nil {
			return fmt.Errorf("kek-file: %w", err)
		}
		pass, err := connsec.Secret("old redis password", "", *oldPassFile)
		if err != nil {
			return err
		}
		old := goredis.NewClient(&goredis.Options{Addr: *oldAddr, DB: *oldDB, Username: *oldUser, Password: pass})
		defer old.Close()
		cl, err := k.Client()
		if err != nil {
			return fmt.Errorf("kafka client: %w", err)
		}
		defer cl.Close()
		reg, err := schemas.NewRegistry()
		if err != nil {
			return err
		}
		rep, err := sessionimport.Import(ctx, sessionimport.Config{Old: old, KeyPattern: *keyPattern, IVPattern: *ivPattern,
			Kafka: cl, Names: k.Names(), Group: *group, Registry: reg, KEK: kek})
		return report(stdout, rep, err, len(rep.Refused), rep.Found, "sessions")
	}
}

// report writes an import's report as indented JSON, then returns the
// import's error, or one saying how many of the items were refused.
func report(stdout io.Writer, rep any, err error, refused, total int, items string) error {
	enc := json.NewEncoder(stdout)
	enc.SetIndent("", "  ")
	if werr := enc.Encode(rep); werr != nil {
		return errors.Join(err, fmt.Errorf("write report: %w", werr))
	}
	if err != nil {
		return err
	}
	if refused > 0 {
		return fmt.Errorf("%d of %d %s refused (listed in the report)", refused, total, items)
	}
	return nil
}

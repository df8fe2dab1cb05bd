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
	"strings"
	"time"

	"github.com/ivms/ams/pkg/registryimport"
)

// registryCommand is `ams registry import [flags]`: the cutover from the old
// service's device list (pkg/registryimport). Its flags are declared on the
// `registry` flag set too, so `ams config` lists them under role registry.
func registryCommand() command {
	return command{
		name:    "registry",
		summary: "ams registry import [flags]: register the devices of an export (CSV or JSON lines: sn, token, bound, name) through the API",
		flags: func(fs *flag.FlagSet) func(context.Context, io.Writer, io.Writer) error {
			registryImportFlags(fs)
			return func(ctx context.Context, stdout, stderr io.Writer) error {
				args := fs.Args()
				if len(args) == 0 || args[0] != "import" {
					return errors.New("usage: ams registry import [flags] (ams registry import -h)")
				}
				ifs := flag.NewFlagSet("ams registry import", flag.ContinueOnError)
				ifs.SetOutput(stderr)
				run := registryImportFlags(ifs)
				ifs.Usage = func() {
					fmt.Fprintln(stderr, "ams registry import: register the devices of an export through the API; prints a JSON report")
					fmt.Fprintln(stderr, "\nFlags (each also read from its environment variable):")
					usageFlags(stderr, ifs)
				}
				if err := parseFlags(ifs, args[1:], os.Getenv); err != nil {
					if errors.Is(err, flag.ErrHelp) {
						return nil
					}
					return err
				}
				return run(ctx, stdout, stderr)
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
	timeout := fs.Duration("api-timeout", 30*time.Second, "timeout of one API request")
	return func(ctx context.Context, stdout, _ io.Writer) error {
		if *file == "" {
			return errors.New("-import-file is required")
		}
		tok := *token
		if *tokenFile != "" {
			b, err := os.ReadFile(*tokenFile)
			if err != nil {
				return fmt.Errorf("read -api-token-file: %w", err)
			}
			tok = strings.TrimSpace(string(b))
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
		c := &registryimport.Client{HTTP: &http.Client{Timeout: *timeout}, BaseURL: *apiURL, Token: tok}
		rep, err := registryimport.Import(ctx, c, in, fm)
		if rep.Refused == nil {
			rep.Refused = []registryimport.Refusal{}
		}
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		if werr := enc.Encode(rep); werr != nil {
			return errors.Join(err, fmt.Errorf("write report: %w", werr))
		}
		if err != nil {
			return err
		}
		if len(rep.Refused) > 0 {
			return fmt.Errorf("%d of %d rows refused (listed in the report)", len(rep.Refused), rep.Rows)
		}
		return nil
	}
}

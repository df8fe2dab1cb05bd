// Package envflag binds every flag of a flag.FlagSet to an AMS_* environment
// variable, so each role is configured by flags or environment alike.
//
// The variable of flag "kafka-brokers" is AMS_KAFKA_BROKERS. Precedence: a flag
// given on the command line wins over the environment, which wins over the
// flag's default.
package envflag

import (
	"flag"
	"fmt"
	"io"
	"os"
	"sort"
	"strings"
)

// EnvName returns the environment variable bound to a flag name.
func EnvName(flagName string) string {
	return "AMS_" + strings.ToUpper(strings.NewReplacer("-", "_", ".", "_").Replace(flagName))
}

// Parse parses args into fs, then fills every flag not given on the command
// line from its environment variable (looked up with getenv; nil means
// os.Getenv). A malformed value in the environment is an error naming the
// variable.
func Parse(fs *flag.FlagSet, args []string, getenv func(string) string) error {
	if getenv == nil {
		getenv = os.Getenv
	}
	if err := fs.Parse(args); err != nil {
		return err
	}
	given := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { given[f.Name] = true })
	var err error
	fs.VisitAll(func(f *flag.Flag) {
		if err != nil || given[f.Name] {
			return
		}
		name := EnvName(f.Name)
		v := getenv(name)
		if v == "" {
			return
		}
		if e := fs.Set(f.Name, v); e != nil {
			err = fmt.Errorf("environment %s=%q: %w", name, v, e)
		}
	})
	return err
}

// Usage writes fs's flags as a table: flag, environment variable, default, meaning.
func Usage(w io.Writer, fs *flag.FlagSet) {
	var rows []string
	fs.VisitAll(func(f *flag.Flag) {
		rows = append(rows, fmt.Sprintf("  -%-28s %-32s default %q\n      %s\n", f.Name, EnvName(f.Name), f.DefValue, f.Usage))
	})
	sort.Strings(rows)
	for _, r := range rows {
		fmt.Fprint(w, r)
	}
}

// Markdown writes fs's flags as the rows of a Markdown table
// (| flag | variable | default | meaning |), for the README.
func Markdown(w io.Writer, role string, fs *flag.FlagSet) {
	fs.VisitAll(func(f *flag.Flag) {
		fmt.Fprintf(w, "| %s | `-%s` | `%s` | `%s` | %s |\n", role, f.Name, EnvName(f.Name), f.DefValue, f.Usage)
	})
}

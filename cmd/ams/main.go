// Command ams is the one binary of the ams pipeline; each role is a subcommand.
//
//	ams <role> [flags]
//
// Every flag can also be set by its AMS_* environment variable (flag
// "kafka-brokers" is AMS_KAFKA_BROKERS); `ams <role> -h` lists them.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"

	"sort"

	"github.com/ivms/ams/cmd/internal/roles"
)

// command is one subcommand of ams.
type command struct {
	name    string
	summary string
	// flags declares the subcommand's flags on fs and returns the function
	// that runs it once they are parsed.
	flags func(fs *flag.FlagSet) func(ctx context.Context, stdout, stderr io.Writer) error
}

// commands lists every subcommand: the roles (roles.go, on
// cmd/internal/roles) and the others in cmd_<name>.go. The order is the
// README's configuration table's.
func commands() []command {
	r := map[string]command{}
	for _, c := range roleCommands() {
		r[c.name] = c
	}
	return []command{
		r["migrate"],
		configCommand(),
		simulateCommand(),
		r["ingest"],
		r["egress"],
		sinkCommand(),
		rebuildCommand(),
		r["process"],
		r["api"],
		registryCommand(),
		r["media-hook"],
		r["upload-gateway"],
	}
}

func main() { roles.Main(run) }

// run executes one subcommand and returns the process exit code.
func run(ctx context.Context, args []string, stdout, stderr io.Writer, getenv func(string) string) int {
	cmds := commands()
	if len(args) == 0 || args[0] == "-h" || args[0] == "--help" || args[0] == "help" {
		usage(stderr, cmds)
		if len(args) == 0 {
			return 2
		}
		return 0
	}
	for _, c := range cmds {
		if c.name != args[0] {
			continue
		}
		fs := flag.NewFlagSet("ams "+c.name, flag.ContinueOnError)
		fs.SetOutput(stderr)
		exec := c.flags(fs)
		fs.Usage = func() {
			fmt.Fprintf(stderr, "ams %s: %s\n\nFlags (each also read from its environment variable):\n", c.name, c.summary)
			usageFlags(stderr, fs)
		}
		if err := parseFlags(fs, args[1:], getenv); err != nil {
			if errors.Is(err, flag.ErrHelp) {
				return 0
			}
			fmt.Fprintf(stderr, "ams %s: %v\n", c.name, err)
			return 2
		}
		if err := exec(ctx, stdout, stderr); err != nil {
			fmt.Fprintf(stderr, "ams %s: %v\n", c.name, err)
			return 1
		}
		return 0
	}
	fmt.Fprintf(stderr, "ams: unknown command %q\n\n", args[0])
	usage(stderr, cmds)
	return 2
}

func usage(w io.Writer, cmds []command) {
	sort.Slice(cmds, func(i, j int) bool { return cmds[i].name < cmds[j].name })
	fmt.Fprintln(w, "usage: ams <command> [flags]\n\ncommands:")
	for _, c := range cmds {
		fmt.Fprintf(w, "  %-10s %s\n", c.name, c.summary)
	}
	fmt.Fprintln(w, "\nRun `ams <command> -h` for its flags; each flag has an AMS_* environment variable.")
}

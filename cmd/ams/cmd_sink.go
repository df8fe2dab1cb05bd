package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"sort"
	"strings"
)

// sinkCommand is `ams sink NAME [flags]`: the first argument picks the sink,
// the flags after it are that sink's (each also read from its AMS_*
// environment variable).
func sinkCommand() command {
	return command{
		name:    "sink",
		summary: "run a sink: ams sink {" + commandNames(sinkKinds()) + "} [flags]",
		flags: func(fs *flag.FlagSet) func(context.Context, io.Writer, io.Writer) error {
			return func(ctx context.Context, stdout, stderr io.Writer) error {
				return runSub(ctx, "sink", sinkKinds(), fs.Args(), stdout, stderr)
			}
		},
	}
}

// runSub runs the subcommand of `ams NAME SUB [flags]` (sink, registry):
// args[0] picks it, the flags after it are its own.
func runSub(ctx context.Context, name string, subs []command, args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		return fmt.Errorf("usage: ams %s {%s} [flags] (add -h for the flags)", name, commandNames(subs))
	}
	for _, s := range subs {
		if s.name != args[0] {
			continue
		}
		sfs := flag.NewFlagSet("ams "+name+" "+s.name, flag.ContinueOnError)
		sfs.SetOutput(stderr)
		exec := s.flags(sfs)
		sfs.Usage = func() {
			fmt.Fprintf(stderr, "ams %s %s: %s\n\nFlags (each also read from its environment variable):\n", name, s.name, s.summary)
			usageFlags(stderr, sfs)
		}
		if err := parseFlags(sfs, args[1:], os.Getenv); err != nil {
			if errors.Is(err, flag.ErrHelp) {
				return nil
			}
			return err
		}
		return exec(ctx, stdout, stderr)
	}
	return fmt.Errorf("unknown %s %q (have: %s)", name, args[0], commandNames(subs))
}

func commandNames(cmds []command) string {
	var names []string
	for _, c := range cmds {
		names = append(names, c.name)
	}
	sort.Strings(names)
	return strings.Join(names, "|")
}

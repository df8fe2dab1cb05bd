package main

import (
	"context"
	"flag"
	"fmt"
	"io"

	"github.com/ivms/ams/pkg/envflag"
)

// configCommand prints every role's flags and environment variables as the
// README's configuration table, so the table cannot drift from the code.
func configCommand() command {
	return command{
		name:    "config",
		summary: "print every role's flags and AMS_* variables as a Markdown table",
		flags: func(fs *flag.FlagSet) func(context.Context, io.Writer, io.Writer) error {
			return func(_ context.Context, stdout, _ io.Writer) error {
				fmt.Fprintln(stdout, "| role | flag | variable | default | meaning |")
				fmt.Fprintln(stdout, "| --- | --- | --- | --- | --- |")
				for _, c := range commands() {
					switch c.name {
					case "config":
						continue
					case "sink":
						for _, k := range sinkKinds() {
							sfs := flag.NewFlagSet(k.name, flag.ContinueOnError)
							k.flags(sfs)
							envflag.Markdown(stdout, "sink "+k.name, sfs)
						}
						continue
					}
					rfs := flag.NewFlagSet(c.name, flag.ContinueOnError)
					c.flags(rfs)
					envflag.Markdown(stdout, c.name, rfs)
				}
				return nil
			}
		},
	}
}

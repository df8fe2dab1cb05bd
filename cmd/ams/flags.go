package main

import (
	"flag"
	"io"

	"github.com/ivms/ams/pkg/envflag"
)

func parseFlags(fs *flag.FlagSet, args []string, getenv func(string) string) error {
	return envflag.Parse(fs, args, getenv)
}

func usageFlags(w io.Writer, fs *flag.FlagSet) { envflag.Usage(w, fs) }

package main

import (
	"context"
	"flag"
	"io"

	"github.com/ivms/ams/cmd/internal/roles"
)

// options is what every role's Options struct does for the flag layer:
// declare its flags on its own fields, and take the process's writers.
type options[O any] interface {
	*O
	Flags(fs *flag.FlagSet)
	SetOutput(stdout, stderr io.Writer)
}

// roleFlags is the flags function of a role: its Options start at defaults(),
// the flags (and their AMS_* variables) fill them, -namespace fills the names
// not given, and run gets the struct.
func roleFlags[O any, P options[O]](defaults func() O, run func(context.Context, O) error) func(*flag.FlagSet) func(context.Context, io.Writer, io.Writer) error {
	return func(fs *flag.FlagSet) func(context.Context, io.Writer, io.Writer) error {
		o := defaults()
		P(&o).Flags(fs)
		return func(ctx context.Context, stdout, stderr io.Writer) error {
			if err := roles.ApplyNamespace(fs); err != nil {
				return err
			}
			P(&o).SetOutput(stdout, stderr)
			return run(ctx, o)
		}
	}
}

// roleCommands are the long-running roles and migrate: each an Options
// struct of cmd/internal/roles, filled by its flags.
func roleCommands() []command {
	return []command{
		{name: "migrate", summary: "create or check the Kafka topics and apply the ClickHouse migrations",
			flags: roleFlags(roles.DefaultMigrate, roles.RunMigrate)},
		{name: "ingest", summary: "move device frames and broker connection events from MQTT to Kafka (ams.uplink.raw)",
			flags: roleFlags(roles.DefaultIngest, roles.RunIngest)},
		{name: "egress", summary: "publish downlinks from Kafka (ams.downlink) to the devices over MQTT, with receipts",
			flags: roleFlags(roles.DefaultEgress, roles.RunEgress)},
		{name: "process", summary: "run the device processor: uplinks to events, presence and replies, exactly-once over Kafka transactions",
			flags: roleFlags(roles.DefaultProcess, roles.RunProcess)},
		{name: "api", summary: "serve the HTTP JSON API (commands, devices, registrations) and the broker's HTTP auth endpoints",
			flags: roleFlags(roles.DefaultAPI, roles.RunAPI)},
		{name: "media-hook", summary: "answer a media server's publish callback (nginx-rtmp, SRS) for the signed stream push URLs",
			flags: roleFlags(roles.DefaultMediaHook, roles.RunMediaHook)},
		{name: "upload-gateway", summary: "accept camera picture uploads (KS3 API, 703 credentials) and forward them to an S3-compatible store",
			flags: roleFlags(roles.DefaultUploadGateway, roles.RunUploadGateway)},
	}
}

// sinkKinds lists the sinks `ams sink NAME` can run, one entry each.
func sinkKinds() []command {
	return []command{
		{name: "clickhouse", summary: "copy the event topics into ClickHouse tables (history)",
			flags: roleFlags(roles.DefaultSinkClickHouse, roles.RunSinkClickHouse)},
		{name: "redis", summary: "project presence, devices and command states into Redis (current state)",
			flags: roleFlags(roles.DefaultSinkRedis, roles.RunSinkRedis)},
	}
}

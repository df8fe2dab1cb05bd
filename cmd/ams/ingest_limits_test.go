package main

import (
	"bytes"
	"context"
	"strings"
	"testing"
)

// TestIngestRefusesPayloadAboveRecordLimit: ingest does not start when its
// largest accepted frame could not be sent as one Kafka record.
func TestIngestRefusesPayloadAboveRecordLimit(t *testing.T) {
	var stderr bytes.Buffer
	code := run(context.Background(), []string{"ingest", "-max-payload", "1048576", "-ops-addr", ""}, &bytes.Buffer{}, &stderr,
		func(string) string { return "" })
	if code == 0 || !strings.Contains(stderr.String(), "-kafka-max-record-bytes") {
		t.Fatalf("exit %d, stderr:\n%s", code, stderr.String())
	}
}

package chsink

import (
	"context"
	"errors"
	"fmt"
	"testing"

	"github.com/ClickHouse/clickhouse-go/v2"
)

func TestDataErrorCode(t *testing.T) {
	for _, c := range []struct {
		err  error
		data bool
	}{
		{fmt.Errorf("send: %w", &clickhouse.Exception{Code: 395, Message: "Value passed to 'throwIf' function is non zero"}), true},
		{&clickhouse.Exception{Code: 53, Message: "Type mismatch"}, true},
		{&clickhouse.Exception{Code: 241, Message: "Memory limit exceeded"}, false},
		{&clickhouse.Exception{Code: 252, Message: "Too many parts"}, false},
		{&clickhouse.Exception{Code: 60, Message: "Table doesn't exist"}, false},
		{errors.New("dial tcp 127.0.0.1:9000: connect: connection refused"), false},
		{context.DeadlineExceeded, false},
	} {
		if _, got := DataErrorCode(c.err); got != c.data {
			t.Errorf("DataErrorCode(%v) = %v, want %v", c.err, got, c.data)
		}
	}
}

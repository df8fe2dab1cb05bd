package kafkatopics_test

import (
	"testing"

	"github.com/ivms/ams/pkg/kafkatopics"
)

func TestMinInsyncFor(t *testing.T) {
	for rf, want := range map[int16]int16{1: 1, 2: 1, 3: 2, 5: 4} {
		if got := kafkatopics.MinInsyncFor(rf); got != want {
			t.Errorf("MinInsyncFor(%d) = %d, want %d", rf, got, want)
		}
	}
}

package device

import (
	"reflect"
	"slices"
	"strings"
	"testing"

	"github.com/ivms/ams/schemas"
)

// TestTopologyLists: Inputs and Outputs are the declaration, in its order.
func TestTopologyLists(t *testing.T) {
	p := newTestProcessor(t, nil)
	tp := testTopics
	if got, want := p.Inputs(), []string{tp.UplinkRaw, tp.Registry, tp.Commands, tp.DownlinkReceipts}; !slices.Equal(got, want) {
		t.Errorf("Inputs() = %v, want %v", got, want)
	}
	if got, want := p.Outputs(), []string{tp.DeviceEvents, tp.Presence, tp.CommandEvents, tp.Downlink, tp.Rejects}; !slices.Equal(got, want) {
		t.Errorf("Outputs() = %v, want %v", got, want)
	}
}

// TestNewChecksTopicNames: New refuses a topic without a name and a topic
// named twice (two inputs, or an input that is also an output).
func TestNewChecksTopicNames(t *testing.T) {
	for name, tc := range map[string]struct {
		edit func(cfg *Config)
		want string
	}{
		"no name":             {func(cfg *Config) { cfg.Topics.Presence = "" }, "output of *schemas.Presence has no topic"},
		"no input name":       {func(cfg *Config) { cfg.Topics.Commands = "" }, "input of *schemas.Command has no topic"},
		"two inputs":          {func(cfg *Config) { cfg.Topics.Commands = cfg.Topics.Registry }, "declared twice (input and input)"},
		"input is an output":  {func(cfg *Config) { cfg.Topics.Rejects = cfg.Topics.UplinkRaw }, "declared twice (input and output)"},
		"two outputs":         {func(cfg *Config) { cfg.Topics.Presence = cfg.Topics.DeviceEvents }, "declared twice (output and output)"},
		"receipts as uplinks": {func(cfg *Config) { cfg.Topics.DownlinkReceipts = cfg.Topics.UplinkRaw }, "topic " + testTopics.UplinkRaw + " declared twice"},
	} {
		t.Run(name, func(t *testing.T) {
			cfg := testConfig(t, nil)
			tc.edit(&cfg)
			_, err := New(cfg)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("New: %v, want an error with %q", err, tc.want)
			}
		})
	}
}

// TestTopologyChecks covers what a declaration can get wrong besides names
// (newTopology is what New runs on the declaration).
func TestTopologyChecks(t *testing.T) {
	setup(t)
	ins, outs := declare(testTopics)
	emitted := emittedRecords()
	if _, err := newTopology(testReg, ins, outs, emitted); err != nil {
		t.Fatalf("the processor's own declaration: %v", err)
	}
	handler := func(c *call, s *State, rec any) *State { return s }
	with := func(extra ...input) []input { return append(slices.Clone(ins), extra...) }
	for name, tc := range map[string]struct {
		ins     []input
		outs    []output
		emitted []reflect.Type
		want    string
	}{
		"handler without codec": {ins: with(input{topic: "x", handle: handler}), want: "input x has no codec"},
		"codec without handler": {ins: with(inputOf[schemas.Command]("x", nil)), want: "input x has no handler"},
		"codec not a record":    {ins: with(inputOf("x", func(*call, *State, *struct{}) *State { return nil })), want: "is not a schemas record"},
		"input topic twice":     {ins: with(inputOf(testTopics.Registry, (*call).command)), want: "topic " + testTopics.Registry + " declared twice"},
		"output never declared": {outs: outs[:len(outs)-1], want: "writes *schemas.Reject, and no output is declared for it"},
		"output never written":  {outs: append(slices.Clone(outs), outputOf[schemas.UplinkRaw]("x")), want: "output x (*schemas.UplinkRaw) is declared but never written"},
		"one record, two outputs": {outs: append(slices.Clone(outs), outputOf[schemas.Reject]("x")),
			want: "outputs " + testTopics.Rejects + " and x both carry *schemas.Reject"},
		"output not a record": {outs: append(slices.Clone(outs), outputOf[struct{}]("x")), want: "output x: *struct {} is not a schemas record"},
		"emits an undeclared": {emitted: append(slices.Clone(emitted), reflect.TypeFor[*schemas.Registration]()),
			want: "writes *schemas.Registration, and no output is declared"},
	} {
		t.Run(name, func(t *testing.T) {
			if tc.ins == nil {
				tc.ins = ins
			}
			if tc.outs == nil {
				tc.outs = outs
			}
			if tc.emitted == nil {
				tc.emitted = emitted
			}
			_, err := newTopology(testReg, tc.ins, tc.outs, tc.emitted)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("newTopology: %v, want an error with %q", err, tc.want)
			}
		})
	}
}

package schemas_test

import (
	"errors"
	"io/fs"
	"os"
	"testing"
	"testing/fstest"
	"time"

	"github.com/ivms/ams/schemas"
)

// The schema upgrade of docs/OPERATIONS.md ("Upgrade a schema"), played
// with a new optional field on DeviceEvent (firmware_version, in
// testdata/upgrade: an example, not a released schema) and three releases:
//
//   - before: today's files; it does not know the new version.
//   - step 1: today's files plus the new version in next/: reads it, still
//     writes today's version.
//   - step 2: the new version is current, today's is in history/; it writes
//     the new field.
//
// Step 1 is rolled out everywhere before step 2 starts, so every reader
// knows every version that is written during the rollout of step 2.

// DeviceEvent is step 2's Go type: today's DeviceEvent plus the new field.
type DeviceEvent struct {
	EventID         string              `avro:"event_id"`
	SN              string              `avro:"sn"`
	Kind            string              `avro:"kind"`
	CmdType         int32               `avro:"cmd_type"`
	SubType         int32               `avro:"sub_type"`
	MsgID           string              `avro:"msg_id"`
	ProtocolVersion string              `avro:"protocol_version"`
	Body            string              `avro:"body"`
	Connection      *schemas.Connection `avro:"connection"`
	BrokerTime      *time.Time          `avro:"broker_time"`
	IngestTime      time.Time           `avro:"ingest_time"`
	ProcessedAt     time.Time           `avro:"processed_at"`
	FirmwareVersion *string             `avro:"firmware_version"`
}

// upgradeReleases are the Registries of the three releases; step2Sinks is
// step 2's files with today's Go type, as the sinks (which do not project
// the new field) decode.
type upgradeReleases struct {
	before, step1, step2, step2Sinks *schemas.Registry
}

func newUpgradeReleases(t testing.TB) upgradeReleases {
	t.Helper()
	v2, err := os.ReadFile("testdata/upgrade/device_event.v2.avsc")
	if err != nil {
		t.Fatal(err)
	}
	today, err := fs.ReadFile(schemas.SchemaFiles, "device_event.avsc")
	if err != nil {
		t.Fatal(err)
	}
	folder := func(edit func(fstest.MapFS)) fs.FS {
		m := fstest.MapFS{}
		err := fs.WalkDir(schemas.SchemaFiles, ".", func(p string, d fs.DirEntry, err error) error {
			if err != nil || d.IsDir() {
				return err
			}
			b, err := fs.ReadFile(schemas.SchemaFiles, p)
			m[p] = &fstest.MapFile{Data: b}
			return err
		})
		if err != nil {
			t.Fatal(err)
		}
		edit(m)
		return m
	}
	step1 := folder(func(m fstest.MapFS) { m["next/device_event.avsc"] = &fstest.MapFile{Data: v2} })
	step2 := folder(func(m fstest.MapFS) {
		m["device_event.avsc"] = &fstest.MapFile{Data: v2}
		m["history/device_event.v1.avsc"] = &fstest.MapFile{Data: today}
	})
	var r upgradeReleases
	must := func(reg *schemas.Registry, err error) *schemas.Registry {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
		return reg
	}
	r.before = must(schemas.NewRegistry())
	r.step1 = must(schemas.RegistryFrom(step1, nil))
	r.step2 = must(schemas.RegistryFrom(step2, map[string]any{"device_event.avsc": DeviceEvent{}}))
	r.step2Sinks = must(schemas.RegistryFrom(step2, nil))
	return r
}

// eventPair returns the same event as step 1 writes it and as step 2
// writes it (with the new field set).
func eventPair(id, sn, fw string, at time.Time) (*schemas.DeviceEvent, *DeviceEvent) {
	bt := at.Add(-time.Millisecond)
	old := &schemas.DeviceEvent{EventID: id, SN: sn, Kind: schemas.EventHeartbeat, CmdType: 2, MsgID: id,
		ProtocolVersion: "1.0", Body: `{"sDeviceSn":"` + sn + `","iHeartBeat":1}`, BrokerTime: &bt, IngestTime: at, ProcessedAt: at.Add(2 * time.Millisecond)}
	nw := &DeviceEvent{EventID: old.EventID, SN: old.SN, Kind: old.Kind, CmdType: old.CmdType, MsgID: old.MsgID,
		ProtocolVersion: old.ProtocolVersion, Body: old.Body, BrokerTime: old.BrokerTime, IngestTime: old.IngestTime,
		ProcessedAt: old.ProcessedAt, FirmwareVersion: &fw}
	return old, nw
}

// asToday is step 2's event without the new field.
func asToday(e *DeviceEvent) schemas.DeviceEvent {
	return schemas.DeviceEvent{EventID: e.EventID, SN: e.SN, Kind: e.Kind, CmdType: e.CmdType, SubType: e.SubType, MsgID: e.MsgID,
		ProtocolVersion: e.ProtocolVersion, Body: e.Body, Connection: e.Connection, BrokerTime: e.BrokerTime,
		IngestTime: e.IngestTime, ProcessedAt: e.ProcessedAt}
}

// Every release of the upgrade decodes what the releases beside it write,
// except "before", which cannot read step 2's records: the reason for step 1.
func TestSchemaUpgradeCodec(t *testing.T) {
	r := newUpgradeReleases(t)
	at := time.UnixMilli(1_700_000_000_123).UTC()
	oldEv, newEv := eventPair("ev-1", "SN0001", "V2.1.7", at)
	fromOld, err := r.step1.Encode(oldEv)
	if err != nil {
		t.Fatal(err)
	}
	fromNew, err := r.step2.Encode(newEv)
	if err != nil {
		t.Fatal(err)
	}
	if string(fromOld[:schemas.HeaderLen]) == string(fromNew[:schemas.HeaderLen]) {
		t.Fatal("step 1 and step 2 write the same schema fingerprint")
	}
	if b, _ := r.before.Encode(oldEv); string(b) != string(fromOld) {
		t.Fatal("step 1 does not write what the release before it writes")
	}

	var got schemas.DeviceEvent
	if err := r.before.Decode(fromNew, &got); !errors.Is(err, schemas.ErrUnknownFingerprint) {
		t.Fatalf("the release before the upgrade decoded a step-2 record: %v (want ErrUnknownFingerprint)", err)
	}
	for name, reg := range map[string]*schemas.Registry{"before": r.before, "step1": r.step1, "step2Sinks": r.step2Sinks} {
		for i, v := range [][]byte{fromOld, fromNew} {
			if name == "before" && i == 1 {
				continue // checked above
			}
			got = schemas.DeviceEvent{}
			if err := reg.Decode(v, &got); err != nil {
				t.Fatalf("%s: %v", name, err)
			}
			if want := asToday(newEv); !equalEvent(got, want) {
				t.Fatalf("%s decoded %+v\nwant %+v", name, got, want)
			}
		}
	}
	var g2 DeviceEvent
	if err := r.step2.Decode(fromOld, &g2); err != nil {
		t.Fatal(err)
	}
	if g2.FirmwareVersion != nil || !equalEvent(asToday(&g2), *oldEv) {
		t.Fatalf("step 2 decoded an old record as %+v (want the new field null)", g2)
	}
	if err := r.step2.Decode(fromNew, &g2); err != nil {
		t.Fatal(err)
	}
	if g2.FirmwareVersion == nil || *g2.FirmwareVersion != "V2.1.7" || !equalEvent(asToday(&g2), *oldEv) {
		t.Fatalf("step 2 decoded its own record as %+v", g2)
	}
}

func equalEvent(a, b schemas.DeviceEvent) bool {
	timeEq := func(x, y *time.Time) bool { return (x == nil) == (y == nil) && (x == nil || x.Equal(*y)) }
	return a.EventID == b.EventID && a.SN == b.SN && a.Kind == b.Kind && a.CmdType == b.CmdType && a.SubType == b.SubType &&
		a.MsgID == b.MsgID && a.ProtocolVersion == b.ProtocolVersion && a.Body == b.Body && (a.Connection == nil) == (b.Connection == nil) &&
		timeEq(a.BrokerTime, b.BrokerTime) && a.IngestTime.Equal(b.IngestTime) && a.ProcessedAt.Equal(b.ProcessedAt)
}

package schemas

import (
	"encoding/binary"
	"io/fs"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/hamba/avro/v2"
)

// Every .avsc field has a doc, and the schema files and the Go types agree
// field for field (names from the avro tags, types as below), so they cannot
// drift apart.
func TestSchemasMatchGoTypes(t *testing.T) {
	for _, rt := range recordTypes() {
		t.Run(rt.file, func(t *testing.T) {
			s, err := parseFile(rt.file)
			if err != nil {
				t.Fatal(err)
			}
			checkType(t, rt.file, s, rt.typ)
		})
	}
}

// History files follow the same documentation rule.
func TestHistoryDocumented(t *testing.T) {
	files, err := fs.Glob(schemaFiles, "history/*.avsc")
	if err != nil {
		t.Fatal(err)
	}
	if len(files) == 0 {
		t.Fatal("no history/*.avsc: the evolution tests have nothing to check")
	}
	for _, file := range files {
		s, err := parseFile(file)
		if err != nil {
			t.Fatal(err)
		}
		walkRecords(s, func(rs *avro.RecordSchema) {
			if rs.Doc() == "" {
				t.Errorf("%s: record %s has no doc", file, rs.FullName())
			}
			for _, f := range rs.Fields() {
				if strings.TrimSpace(f.Doc()) == "" {
					t.Errorf("%s: field %s.%s has no doc", file, rs.FullName(), f.Name())
				}
			}
		})
	}
}

func walkRecords(s avro.Schema, fn func(*avro.RecordSchema)) {
	switch s := s.(type) {
	case *avro.RecordSchema:
		fn(s)
		for _, f := range s.Fields() {
			walkRecords(f.Type(), fn)
		}
	case *avro.UnionSchema:
		for _, u := range s.Types() {
			walkRecords(u, fn)
		}
	case *avro.ArraySchema:
		walkRecords(s.Items(), fn)
	case *avro.MapSchema:
		walkRecords(s.Values(), fn)
	}
}

// checkType checks that Go type typ is what schema s maps to under this
// package's rules.
func checkType(t *testing.T, at string, s avro.Schema, typ reflect.Type) {
	t.Helper()
	if ref, ok := s.(*avro.RefSchema); ok {
		s = ref.Schema()
	}
	switch s := s.(type) {
	case *avro.RecordSchema:
		if typ.Kind() != reflect.Struct {
			t.Errorf("%s: record %s maps to %v, want a struct", at, s.FullName(), typ)
			return
		}
		if typ.Name() != s.Name() {
			t.Errorf("%s: record %s maps to Go type %s: use the same name", at, s.Name(), typ.Name())
		}
		if strings.TrimSpace(s.Doc()) == "" {
			t.Errorf("%s: record %s has no doc", at, s.FullName())
		}
		goFields := make(map[string]reflect.StructField)
		var goOrder []string
		for i := range typ.NumField() {
			sf := typ.Field(i)
			tag := sf.Tag.Get("avro")
			if tag == "" || tag == "-" {
				t.Errorf("%s: Go field %s.%s has no avro tag", at, typ.Name(), sf.Name)
				continue
			}
			goFields[tag] = sf
			goOrder = append(goOrder, tag)
		}
		var avroOrder []string
		for _, f := range s.Fields() {
			path := at + ": " + s.Name() + "." + f.Name()
			avroOrder = append(avroOrder, f.Name())
			if strings.TrimSpace(f.Doc()) == "" {
				t.Errorf("%s: no doc", path)
			}
			sf, ok := goFields[f.Name()]
			if !ok {
				t.Errorf("%s: no Go field tagged avro:%q in %s", path, f.Name(), typ.Name())
				continue
			}
			delete(goFields, f.Name())
			if u, ok := f.Type().(*avro.UnionSchema); ok && u.Nullable() {
				if !f.HasDefault() || f.Default() != nil {
					t.Errorf("%s: nullable field without default null", path)
				}
			}
			checkType(t, path, f.Type(), sf.Type)
		}
		for name, sf := range goFields {
			t.Errorf("%s: Go field %s.%s (avro:%q) is not in the schema", at, typ.Name(), sf.Name, name)
		}
		if !t.Failed() && !reflect.DeepEqual(goOrder, avroOrder) {
			t.Errorf("%s: field order differs:\n  Go   %v\n  Avro %v", at, goOrder, avroOrder)
		}
	case *avro.UnionSchema:
		types := s.Types()
		if len(types) != 2 || types[0].Type() != avro.Null {
			t.Errorf("%s: union %s: only [\"null\", T] unions are used", at, s)
			return
		}
		switch {
		case typ.Kind() == reflect.Pointer:
			checkType(t, at, types[1], typ.Elem())
		case typ == reflect.TypeFor[[]byte]() && types[1].Type() == avro.Bytes:
		default:
			t.Errorf("%s: nullable %s maps to %v, want a pointer (or []byte for bytes)", at, types[1].Type(), typ)
		}
	case *avro.ArraySchema:
		if typ.Kind() != reflect.Slice {
			t.Errorf("%s: array maps to %v, want a slice", at, typ)
			return
		}
		checkType(t, at, s.Items(), typ.Elem())
	case *avro.EnumSchema:
		t.Errorf("%s: enum %s: use a documented string instead of an Avro enum (see README)", at, s.FullName())
	case *avro.PrimitiveSchema:
		var want reflect.Type
		switch s.Type() {
		case avro.Boolean:
			want = reflect.TypeFor[bool]()
		case avro.Int:
			want = reflect.TypeFor[int32]()
		case avro.Long:
			want = reflect.TypeFor[int64]()
			if s.Logical() != nil {
				if s.Logical().Type() != avro.TimestampMillis {
					t.Errorf("%s: logical type %s: times are timestamp-millis", at, s.Logical().Type())
				}
				want = reflect.TypeFor[time.Time]()
			}
		case avro.String:
			want = reflect.TypeFor[string]()
		case avro.Bytes:
			want = reflect.TypeFor[[]byte]()
		default:
			t.Errorf("%s: type %s is not used by ams schemas", at, s.Type())
			return
		}
		if typ != want {
			t.Errorf("%s: %s maps to %v, want %v", at, s, typ, want)
		}
	default:
		t.Errorf("%s: schema type %s is not used by ams schemas", at, s.Type())
	}
}

// Every embedded top-level .avsc is the current schema of a Go type.
func TestEverySchemaFileHasAType(t *testing.T) {
	files, err := fs.Glob(schemaFiles, "*.avsc")
	if err != nil {
		t.Fatal(err)
	}
	known := make(map[string]bool)
	for _, rt := range recordTypes() {
		known[rt.file] = true
	}
	for _, f := range files {
		if !known[f] {
			t.Errorf("%s is not listed in recordTypes()", f)
		}
	}
	if len(files) != len(known) {
		t.Errorf("%d schema files, %d record types", len(files), len(known))
	}
}

// Every current schema can read records written with every older version of
// the same record kept in history/ (backward compatibility).
func TestHistoryBackwardCompatible(t *testing.T) {
	current := make(map[string]avro.Schema)
	for _, rt := range recordTypes() {
		s, err := parseFile(rt.file)
		if err != nil {
			t.Fatal(err)
		}
		current[s.(avro.NamedSchema).FullName()] = s
	}
	files, err := fs.Glob(schemaFiles, "history/*.avsc")
	if err != nil {
		t.Fatal(err)
	}
	for _, file := range files {
		old, err := parseFile(file)
		if err != nil {
			t.Fatal(err)
		}
		name := old.(avro.NamedSchema).FullName()
		cur, ok := current[name]
		if !ok {
			t.Errorf("%s: no current schema named %s", file, name)
			continue
		}
		if err := avro.NewSchemaCompatibility().Compatible(cur, old); err != nil {
			t.Errorf("current %s cannot read %s: %v", name, file, err)
		}
		if Fingerprint(cur) == Fingerprint(old) {
			t.Errorf("%s has the same canonical form as the current %s: delete it", file, name)
		}
	}
}

func TestGoldenFingerprints(t *testing.T) {
	// The fingerprints of the current schemas, as Python's fastavro computes them
	// (fastavro.schema.fingerprint(to_parsing_canonical_form(s), "CRC-64-AVRO"),
	// read little-endian). A change here means the canonical form changed: keep
	// the previous file in history/ (so old records still decode) and update the
	// value.
	goldenFingerprints := map[string]uint64{
		"uplink_raw.avsc":                  0xbc450eb59bb7190c,
		"command.avsc":                     0x8dd86e52ab8d874a,
		"registration.avsc":                0xf33e5fa60740caf2,
		"device_event.avsc":                0xfb4d048d9006fe47,
		"presence.avsc":                    0x4255fffae1f598be,
		"command_event.avsc":               0x4a68fcc949f5ae3f,
		"downlink.avsc":                    0xc7d67ef0c1a43d22,
		"downlink_receipt.avsc":            0x0173286390d43d5f,
		"reject.avsc":                      0xbdc39274a3a10e2f,
		"device_state.avsc":                0x756aedbc5dac5b40,
		"history/presence.v1.avsc":         0xd8285e9e59128035,
		"history/registration.v1.avsc":     0xb3c1eae47f4e85db,
		"history/downlink.v1.avsc":         0x554638a9f2b4f4ac,
		"history/downlink_receipt.v1.avsc": 0x1a1a47ecfa22ef89,
		"history/device_state.v1.avsc":     0xcf6a62f8b1e767c9,
	}
	r := newRegistry(t)
	versions := r.Versions()
	if len(versions) != len(goldenFingerprints) {
		t.Errorf("%d schema versions, %d golden fingerprints", len(versions), len(goldenFingerprints))
	}
	for _, v := range versions {
		want, ok := goldenFingerprints[v.File]
		if !ok {
			t.Errorf("%s: no golden fingerprint (its fingerprint is %#016x)", v.File, v.Fingerprint)
			continue
		}
		if v.Fingerprint != want {
			t.Errorf("%s: fingerprint %#016x, golden %#016x: its canonical form changed", v.File, v.Fingerprint, want)
		}
	}
}

func TestCanonicalFormAndFingerprint(t *testing.T) {
	tests := []struct {
		schema    string
		canonical string
		fp        uint64 // from fastavro, little-endian bytes read as uint64
	}{
		{`"null"`, `"null"`, 0x63dd24e7cc258f8a},
		{`{"type":"int"}`, `"int"`, 0x7275d51a3f395c8f},
		// logicalType is stripped: a timestamp is a long for fingerprinting.
		{`{"type":"long","logicalType":"timestamp-millis"}`, `"long"`, 0xd054e14493f41db7},
		{
			`{"type":"record","name":"R","namespace":"a.b","doc":"d","fields":[
			  {"name":"f","type":["null",{"type":"long","logicalType":"timestamp-millis"}],"default":null,"doc":"x"},
			  {"name":"e","type":{"type":"enum","name":"E","symbols":["A","B"]}},
			  {"name":"g","type":{"type":"array","items":"E"}},
			  {"name":"m","type":{"type":"map","values":{"type":"fixed","name":"F","size":4}}}]}`,
			`{"name":"a.b.R","type":"record","fields":[{"name":"f","type":["null","long"]},` +
				`{"name":"e","type":{"name":"a.b.E","type":"enum","symbols":["A","B"]}},` +
				`{"name":"g","type":{"type":"array","items":"a.b.E"}},` +
				`{"name":"m","type":{"type":"map","values":{"name":"a.b.F","type":"fixed","size":4}}}]}`,
			0,
		},
	}
	for _, tt := range tests {
		s, err := avro.ParseWithCache(tt.schema, "", &avro.SchemaCache{})
		if err != nil {
			t.Fatal(err)
		}
		if got := CanonicalForm(s); got != tt.canonical {
			t.Errorf("CanonicalForm(%s)\n got %s\nwant %s", tt.schema, got, tt.canonical)
		}
		if tt.fp != 0 && Fingerprint(s) != tt.fp {
			t.Errorf("Fingerprint(%s) = %#016x, want %#016x", tt.schema, Fingerprint(s), tt.fp)
		}
	}
}

// Without logical types our canonical form is hamba's, so the fingerprints
// agree: a cross-check of the CRC-64-AVRO implementation.
func TestFingerprintAgreesWithHambaWithoutLogicalTypes(t *testing.T) {
	for _, src := range []string{
		`"string"`,
		`{"type":"record","name":"X","namespace":"n","fields":[{"name":"a","type":"long"},{"name":"b","type":["null","bytes"]},{"name":"c","type":{"type":"array","items":"string"}}]}`,
	} {
		s, err := avro.ParseWithCache(src, "", &avro.SchemaCache{})
		if err != nil {
			t.Fatal(err)
		}
		hb, err := s.FingerprintUsing(avro.CRC64AvroLE)
		if err != nil {
			t.Fatal(err)
		}
		if got, want := Fingerprint(s), binary.LittleEndian.Uint64(hb); got != want {
			t.Errorf("%s: %#016x, hamba %#016x", src, got, want)
		}
	}
}

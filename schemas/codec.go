package schemas

import (
	"embed"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"reflect"
	"sort"
	"sync"

	"github.com/hamba/avro/v2"
)

// The schema files: the current version of every record type beside this
// file; older versions, kept so that records written with them still
// decode, in history/; and newer versions, which this release reads but
// does not write yet (the first step of an upgrade, README "Evolution"),
// in next/.
//
//go:embed *.avsc history/*.avsc next
var schemaFiles embed.FS

// Single-object encoding header: 0xC3 0x01, then the writer schema's
// CRC-64-AVRO fingerprint, 8 bytes little-endian.
const (
	magic0 = 0xC3
	magic1 = 0x01
	// HeaderLen is the length of the single-object header that precedes the
	// Avro binary body of every value.
	HeaderLen = 10
)

// Limits on what Decode allocates for one value, so that a corrupt or hostile
// value cannot make it allocate without bound.
const (
	maxBytesLen  = 16 << 20 // longest bytes or string field
	maxArrayLen  = 1 << 16  // most items in one array field
	maxPooledBuf = 64 << 10 // encode buffers above this are not pooled
)

// Errors returned by the codec; check them with errors.Is. The returned
// errors wrap these with context (type names, fingerprints, the cause).
var (
	// ErrShort: the value is shorter than the 10-byte single-object header
	// (an empty value, e.g. a tombstone, included).
	ErrShort = errors.New("schemas: value shorter than the single-object header")
	// ErrNotSingleObject: the value does not start with the single-object
	// marker 0xC3 0x01 (e.g. Confluent wire format, JSON, raw Avro).
	ErrNotSingleObject = errors.New("schemas: not Avro single-object encoding")
	// ErrUnknownFingerprint: the value names a schema this Registry does not
	// know (written by a newer ams, or not an ams record at all).
	ErrUnknownFingerprint = errors.New("schemas: unknown schema fingerprint")
	// ErrWrongType: the value is a record of another type than the one asked
	// for (e.g. a Presence decoded into a *Command).
	ErrWrongType = errors.New("schemas: record is of another type")
	// ErrUnsupportedType: the Go value is not one of this package's record
	// types (or a nil pointer to one).
	ErrUnsupportedType = errors.New("schemas: Go type has no schema")
	// ErrMalformed: the Avro body does not decode with the writer schema
	// (truncated, trailing bytes, bad lengths, bad union index).
	ErrMalformed = errors.New("schemas: malformed Avro body")
)

// recordTypes lists the current schema file of every Go record type.
func recordTypes() []struct {
	file string
	typ  reflect.Type
} {
	return []struct {
		file string
		typ  reflect.Type
	}{
		{"uplink_raw.avsc", reflect.TypeFor[UplinkRaw]()},
		{"command.avsc", reflect.TypeFor[Command]()},
		{"registration.avsc", reflect.TypeFor[Registration]()},
		{"device_event.avsc", reflect.TypeFor[DeviceEvent]()},
		{"presence.avsc", reflect.TypeFor[Presence]()},
		{"command_event.avsc", reflect.TypeFor[CommandEvent]()},
		{"downlink.avsc", reflect.TypeFor[Downlink]()},
		{"downlink_receipt.avsc", reflect.TypeFor[DownlinkReceipt]()},
		{"reject.avsc", reflect.TypeFor[Reject]()},
		{"device_state.avsc", reflect.TypeFor[DeviceState]()},
	}
}

// recordType is one Go record type and its current schema.
type recordType struct {
	goType      reflect.Type // the struct type, e.g. Presence
	ptrType     reflect.Type // *Presence
	file        string       // current schema file
	schema      avro.Schema  // current schema
	name        string       // full Avro name, e.g. io.ams.v1.Presence
	fingerprint uint64
	header      [HeaderLen]byte
}

// writerSchema is one schema a value may have been written with: a current
// one or one from history/.
type writerSchema struct {
	file        string
	fingerprint uint64
	schema      avro.Schema
	target      *recordType // the Go type its records decode into
	// read is the schema Decode reads with: the current schema itself for a
	// current writer, else hamba's resolution of the writer schema against
	// the current one (dropped fields skipped, added fields defaulted).
	read avro.Schema
}

// Registry encodes and decodes every ams record type with Avro single-object
// encoding. It is built once from the embedded schema files, immutable
// afterwards, and safe for concurrent use by any number of goroutines.
//
// Encode always writes with the current schema of the value's type. Decode
// accepts any schema version the Registry knows (current or history/) and
// resolves it to the current schema, so fields added since are set to their
// defaults and removed ones are skipped.
type Registry struct {
	api           avro.API
	byType        map[reflect.Type]*recordType // both T and *T
	byFingerprint map[uint64]*writerSchema
	writers       sync.Pool // *avro.Writer
	readers       sync.Pool // *avro.Reader
}

// NewRegistry parses the embedded schemas, checks that every history/
// version can be read by the current schema of the same name, and checks
// that every Go type encodes and decodes with its schema. It fails on any
// mismatch, so a broken schema file stops a process at start-up.
func NewRegistry() (*Registry, error) {
	return buildRegistry(schemaFiles, nil)
}

// buildRegistry builds a Registry from the schema folder fsys (laid out as
// this package's: *.avsc, history/*.avsc, next/*.avsc). goTypes replaces
// the Go type of a current schema file (tests: another release's types).
func buildRegistry(fsys fs.FS, goTypes map[string]reflect.Type) (*Registry, error) {
	api := avro.Config{
		TagKey:            "avro",
		MaxByteSliceSize:  maxBytesLen,
		MaxSliceAllocSize: maxArrayLen,
		// Arrays as a plain item count per block, without the optional
		// block byte size: valid Avro either way, and what Java writes.
		DisableBlockSizeHeader: true,
	}.Freeze()
	r := &Registry{
		api:           api,
		byType:        make(map[reflect.Type]*recordType),
		byFingerprint: make(map[uint64]*writerSchema),
	}
	r.writers.New = func() any { return avro.NewWriter(nil, 512, avro.WithWriterConfig(api)) }
	r.readers.New = func() any { return avro.NewReader(nil, 0, avro.WithReaderConfig(api)) }

	byName := make(map[string]*recordType)
	for _, rt := range recordTypes() {
		if typ, ok := goTypes[rt.file]; ok {
			rt.typ = typ
		}
		s, err := parseFS(fsys, rt.file)
		if err != nil {
			return nil, err
		}
		rs, ok := s.(*avro.RecordSchema)
		if !ok {
			return nil, fmt.Errorf("schemas: %s: top-level schema is %s, want a record", rt.file, s.Type())
		}
		t := &recordType{
			goType:      rt.typ,
			ptrType:     reflect.PointerTo(rt.typ),
			file:        rt.file,
			schema:      s,
			name:        rs.FullName(),
			fingerprint: Fingerprint(s),
		}
		t.header[0], t.header[1] = magic0, magic1
		binary.LittleEndian.PutUint64(t.header[2:], t.fingerprint)
		if prev, dup := byName[t.name]; dup {
			return nil, fmt.Errorf("schemas: %s and %s both define %s", prev.file, t.file, t.name)
		}
		byName[t.name] = t
		r.byType[t.goType] = t
		r.byType[t.ptrType] = t
		if err := r.addWriter(&writerSchema{file: t.file, fingerprint: t.fingerprint, schema: s, target: t, read: s}); err != nil {
			return nil, err
		}
	}

	// Other versions: older ones (history/) and newer ones (next/). Either
	// is read by resolving it to the current schema: fields the current
	// schema lacks are skipped, fields it added take their defaults.
	history, err := fs.Glob(fsys, "history/*.avsc")
	if err != nil {
		return nil, fmt.Errorf("schemas: list history: %w", err)
	}
	next, err := fs.Glob(fsys, "next/*.avsc")
	if err != nil {
		return nil, fmt.Errorf("schemas: list next: %w", err)
	}
	sort.Strings(history)
	sort.Strings(next)
	compat := avro.NewSchemaCompatibility()
	for _, file := range append(history, next...) {
		s, err := parseFS(fsys, file)
		if err != nil {
			return nil, err
		}
		rs, ok := s.(*avro.RecordSchema)
		if !ok {
			return nil, fmt.Errorf("schemas: %s: top-level schema is %s, want a record", file, s.Type())
		}
		t, ok := byName[rs.FullName()]
		if !ok {
			return nil, fmt.Errorf("schemas: %s: no current schema named %s", file, rs.FullName())
		}
		read, err := compat.Resolve(t.schema, s)
		if err != nil {
			return nil, fmt.Errorf("schemas: %s cannot read records written with %s: %w", t.file, file, err)
		}
		if err := r.addWriter(&writerSchema{file: file, fingerprint: Fingerprint(s), schema: s, target: t, read: read}); err != nil {
			return nil, err
		}
	}

	// Round-trip a zero value of every type through every schema it may be
	// read with: this catches Go types that drifted from their schemas now
	// rather than on the first record, and warms hamba's codec caches.
	for _, w := range r.byFingerprint {
		if err := r.selfCheck(w); err != nil {
			return nil, err
		}
	}
	return r, nil
}

func parseFile(file string) (avro.Schema, error) { return parseFS(schemaFiles, file) }

func parseFS(fsys fs.FS, file string) (avro.Schema, error) {
	b, err := fs.ReadFile(fsys, file)
	if err != nil {
		return nil, fmt.Errorf("schemas: read %s: %w", file, err)
	}
	// A cache per file: names must not leak between files (history/ holds
	// other versions of the same names), and nothing global is touched.
	s, err := avro.ParseBytesWithCache(b, "", &avro.SchemaCache{})
	if err != nil {
		return nil, fmt.Errorf("schemas: parse %s: %w", file, err)
	}
	return s, nil
}

func (r *Registry) addWriter(w *writerSchema) error {
	if prev, dup := r.byFingerprint[w.fingerprint]; dup {
		return fmt.Errorf("schemas: %s and %s have the same fingerprint %016x (same canonical form)", prev.file, w.file, w.fingerprint)
	}
	r.byFingerprint[w.fingerprint] = w
	return nil
}

// selfCheck writes a zero value of w's target type with w's schema and reads
// it back with w.read.
func (r *Registry) selfCheck(w *writerSchema) error {
	zero := reflect.New(w.target.goType)
	var body []byte
	if w.schema == w.target.schema {
		b, err := r.api.Marshal(w.schema, zero.Interface())
		if err != nil {
			return fmt.Errorf("schemas: %s does not encode with %s: %w", w.target.goType, w.file, err)
		}
		body = b
	} else {
		// A history schema may lack fields of the Go type: write a generic
		// record with every field at its zero value instead.
		b, err := r.api.Marshal(w.schema, zeroGeneric(w.schema))
		if err != nil {
			return fmt.Errorf("schemas: encode a zero record with %s: %w", w.file, err)
		}
		body = b
	}
	if err := r.decodeBody(w, body, zero.Interface()); err != nil {
		return fmt.Errorf("schemas: %s does not decode from %s: %w", w.target.goType, w.file, err)
	}
	return nil
}

// zeroGeneric returns a generic value (as hamba's generic codec takes it) of
// schema s with every field at its zero value and every union null.
func zeroGeneric(s avro.Schema) any {
	switch s := s.(type) {
	case *avro.RefSchema:
		return zeroGeneric(s.Schema())
	case *avro.RecordSchema:
		m := make(map[string]any, len(s.Fields()))
		for _, f := range s.Fields() {
			m[f.Name()] = zeroGeneric(f.Type())
		}
		return m
	case *avro.UnionSchema:
		return nil
	case *avro.ArraySchema:
		return []any{}
	case *avro.MapSchema:
		return map[string]any{}
	case *avro.EnumSchema:
		return s.Symbols()[0]
	case *avro.FixedSchema:
		return make([]byte, s.Size())
	}
	switch s.Type() {
	case avro.Boolean:
		return false
	case avro.Int:
		return int32(0)
	case avro.Long:
		return int64(0)
	case avro.Float:
		return float32(0)
	case avro.Double:
		return float64(0)
	case avro.Bytes:
		return []byte{}
	case avro.String:
		return ""
	}
	return nil
}

// lookup returns the record type of v (T or *T) and whether v is a pointer.
func (r *Registry) lookup(v any) (*recordType, error) {
	t := reflect.TypeOf(v)
	rt, ok := r.byType[t]
	if !ok {
		return nil, fmt.Errorf("%w: %v", ErrUnsupportedType, t)
	}
	if t == rt.ptrType && reflect.ValueOf(v).IsNil() {
		return nil, fmt.Errorf("%w: nil %v", ErrUnsupportedType, t)
	}
	return rt, nil
}

// Encode returns v framed with Avro single-object encoding: 0xC3 0x01, the
// fingerprint of the current schema of v's type (8 bytes, little-endian),
// then the Avro binary encoding of v. v is one of this package's record types,
// by value or by pointer (*UplinkRaw or UplinkRaw, ...). Times are written
// with millisecond precision (timestamp-millis). The returned slice is owned
// by the caller.
func (r *Registry) Encode(v any) ([]byte, error) {
	rt, err := r.lookup(v)
	if err != nil {
		return nil, err
	}
	w := r.writers.Get().(*avro.Writer)
	w.Reset(nil)
	_, _ = w.Write(rt.header[:]) // appends to the buffer; never fails
	w.WriteVal(rt.schema, v)
	if err := w.Error; err != nil {
		w.Error = nil
		r.writers.Put(w)
		return nil, fmt.Errorf("schemas: encode %s: %w", rt.name, err)
	}
	buf := w.Buffer()
	out := make([]byte, len(buf))
	copy(out, buf)
	if cap(buf) <= maxPooledBuf {
		r.writers.Put(w)
	}
	return out, nil
}

// Decode reads a single-object encoded value into v, a non-nil pointer to one
// of this package's record types. It overwrites every field of *v. The writer
// schema is looked up by the value's fingerprint among every version this
// Registry knows, and resolved to the current schema of v's type: fields
// added since that version get their defaults, fields removed are skipped.
//
// Errors (all errors.Is-able): ErrShort, ErrNotSingleObject,
// ErrUnknownFingerprint, ErrWrongType, ErrUnsupportedType, ErrMalformed.
// A tombstone (nil value) is not a record: check for it before decoding
// (Decode reports ErrShort for it). Decode never panics on bad input, and on
// error *v holds an unspecified mix of decoded and zero fields.
//
// Times come back in UTC. A null decodes as a nil pointer or nil []byte; an
// empty array decodes as an empty, non-nil slice. Decoded strings and byte
// slices do not alias b.
func (r *Registry) Decode(b []byte, v any) error {
	w, err := r.writerOf(b)
	if err != nil {
		return err
	}
	t := reflect.TypeOf(v)
	if t != w.target.ptrType {
		if rt, ok := r.byType[t]; !ok || t != rt.ptrType {
			return fmt.Errorf("%w: decode into %v (want a pointer to a record type)", ErrUnsupportedType, t)
		}
		return fmt.Errorf("%w: value is a %s (%s), cannot decode into %v", ErrWrongType, w.target.name, w.file, t)
	}
	rv := reflect.ValueOf(v)
	if rv.IsNil() {
		return fmt.Errorf("%w: decode into nil %v", ErrUnsupportedType, t)
	}
	rv.Elem().SetZero()
	return r.decodeBody(w, b[HeaderLen:], v)
}

// DecodeNew decodes a single-object encoded value into a new value of the
// Go type that its fingerprint names, and returns a pointer to it (e.g. a
// *Presence). It is for consumers that do not know a topic's type
// beforehand; errors are those of Decode.
func (r *Registry) DecodeNew(b []byte) (any, error) {
	w, err := r.writerOf(b)
	if err != nil {
		return nil, err
	}
	v := reflect.New(w.target.goType).Interface()
	if err := r.decodeBody(w, b[HeaderLen:], v); err != nil {
		return nil, err
	}
	return v, nil
}

// writerOf checks the single-object header of b and returns the writer
// schema it names.
func (r *Registry) writerOf(b []byte) (*writerSchema, error) {
	if len(b) < HeaderLen {
		return nil, fmt.Errorf("%w: %d bytes", ErrShort, len(b))
	}
	if b[0] != magic0 || b[1] != magic1 {
		return nil, fmt.Errorf("%w: starts with %#02x %#02x, want 0xc3 0x01", ErrNotSingleObject, b[0], b[1])
	}
	fp := binary.LittleEndian.Uint64(b[2:HeaderLen])
	w, ok := r.byFingerprint[fp]
	if !ok {
		return nil, fmt.Errorf("%w: %016x", ErrUnknownFingerprint, fp)
	}
	return w, nil
}

// decodeBody reads the Avro binary body written with w into v, which must be
// a non-nil pointer to w's target type, and requires the body to be consumed
// exactly. It drives an avro.Reader itself rather than calling
// api.Unmarshal, which reports a body cut short at some field boundaries as
// success (it maps io.EOF to nil) and ignores trailing bytes.
func (r *Registry) decodeBody(w *writerSchema, body []byte, v any) error {
	rd := r.readers.Get().(*avro.Reader)
	rd.Reset(body)
	rd.ReadVal(w.read, v)
	err := rd.Error
	if err == nil {
		// Past the end, Peek sets io.EOF: anything else means bytes left.
		rd.Peek()
		if rd.Error == nil {
			err = errors.New("trailing bytes after the record")
		}
	} else if errors.Is(err, io.EOF) {
		err = io.ErrUnexpectedEOF
	}
	rd.Error = nil
	rd.Reset(nil)
	r.readers.Put(rd)
	if err != nil {
		return fmt.Errorf("%w: %s written with %s (%016x): %w", ErrMalformed, w.target.name, w.file, w.fingerprint, err)
	}
	return nil
}

// Schema returns the current schema of v's type (T or *T), or nil when v is
// not one of this package's record types.
func (r *Registry) Schema(v any) avro.Schema {
	rt, ok := r.byType[reflect.TypeOf(v)]
	if !ok {
		return nil
	}
	return rt.schema
}

// SchemaVersion describes one schema a Registry knows.
type SchemaVersion struct {
	File        string      // path in this package, e.g. "presence.avsc" or "history/presence.v1.avsc"
	Name        string      // full Avro name, e.g. "io.ams.v1.Presence"
	Fingerprint uint64      // CRC-64-AVRO of the Parsing Canonical Form
	Current     bool        // the version Encode writes
	Schema      avro.Schema // the parsed schema
}

// Versions lists every schema version the Registry knows, sorted by file.
// It is what a tool needs to publish the fingerprint -> schema table for
// readers outside ams.
func (r *Registry) Versions() []SchemaVersion {
	out := make([]SchemaVersion, 0, len(r.byFingerprint))
	for _, w := range r.byFingerprint {
		out = append(out, SchemaVersion{
			File:        w.file,
			Name:        w.target.name,
			Fingerprint: w.fingerprint,
			Current:     w.schema == w.target.schema,
			Schema:      w.schema,
		})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].File < out[j].File })
	return out
}

// Package commandkinds is the one table of the commands the cloud can send to
// a device: their names, their frame kind (iCmdType 3 with an iAppCmdType, or
// iCmdType 7 with an iAmsCmdType), and the shape their JSON body must have.
//
// The HTTP API validates requests with it (Lookup, then Kind.Normalize, and a
// *BodyError becomes a 400 answer), and the device processor validates again
// and builds the downlink body from it, so both agree on what is valid. There
// is no code per command: a new command is a new row in the table.
//
// The table is immutable: every function returns copies, and nothing in the
// package holds mutable state.
package commandkinds

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"slices"
	"strconv"
	"strings"
	"unicode/utf8"

	"github.com/ivms/ams/pkg/protocol"
)

// MaxBodyBytes is the largest body (as given, before normalisation) that
// Normalize accepts; a body is one encrypted MQTT frame to a camera.
const MaxBodyBytes = 16 << 10

// FieldType is the JSON type a Field must have.
type FieldType int

// Field types.
const (
	Int    FieldType = iota + 1 // a JSON number that is an integer (no fraction, no exponent), fits int64
	String                      // a JSON string
	Object                      // a JSON object, checked against Field.Fields
)

func (t FieldType) String() string {
	switch t {
	case Int:
		return "integer"
	case String:
		return "string"
	case Object:
		return "object"
	}
	return "FieldType(" + strconv.Itoa(int(t)) + ")"
}

// Field is one member of a body object.
type Field struct {
	Name     string
	Type     FieldType
	Required bool
	// OneOf lists the allowed values of an Int field; empty = any.
	OneOf []int64
	// Min is the smallest allowed value of an Int field, when HasMin.
	Min    int64
	HasMin bool
	// MaxLen is the longest allowed String field, in characters; 0 = no limit.
	MaxLen int
	// Spec checks the members of an Object field.
	Spec *Spec
	// Doc says what the member means (in the body's JSON Schema).
	Doc string
}

// Spec is the shape of a JSON object body (or of an Object field).
type Spec struct {
	// Fields are checked when present (and must be present when Required).
	Fields []Field
	// Open allows members not named in Fields (any value); otherwise an
	// unknown member is an error.
	Open bool
	// NonEmpty requires at least one member.
	NonEmpty bool
}

// Kind is one command a device understands.
type Kind struct {
	// Name is the stable name used by the API and by schemas.Command.Kind,
	// e.g. "reboot".
	Name string
	// CmdType is the frame's iCmdType: protocol.CmdCommand (3, Code is the
	// iAppCmdType) or protocol.CmdAms (7, Code is the iAmsCmdType).
	CmdType int
	// Code is the iAppCmdType or iAmsCmdType.
	Code int
	// Doc says what the command does, in one line.
	Doc string
	// Body is the shape the body must have.
	Body Spec
	// Default is the body used when a request carries none (empty, or JSON
	// null); "" means a body is required.
	Default string
	// Idempotent: carrying the command out twice has the same effect as
	// once (a query, or setting values to what the body says). Egress may
	// publish the frame of an idempotent command again when it cannot tell
	// whether an earlier publish reached the broker; a command that is not
	// idempotent is published at most once, and an uncertain delivery ends
	// it FAILED delivery_unknown (sinks/egress README, "At most once").
	Idempotent bool
	// Example is a valid body, shown in the API's description; every kind
	// has one.
	Example string
}

// ErrUnknownKind is returned (wrapped) for a command name that is not in the table.
var ErrUnknownKind = errors.New("commandkinds: unknown command kind")

// BodyError says what is wrong with a command body. Field is the dotted path
// of the offending member ("sOsdName.strText"), or "" for the body as a whole.
// Reason is a short human-readable explanation fit for an API answer.
type BodyError struct {
	Kind   string
	Field  string
	Reason string
}

func (e *BodyError) Error() string {
	if e.Field == "" {
		return "command " + e.Kind + ": body: " + e.Reason
	}
	return "command " + e.Kind + ": body field " + e.Field + ": " + e.Reason
}

// table is the command table. Unexported and never handed out, so callers
// cannot mutate it; All and Lookup return deep copies.
func table() []Kind {
	one, bindStatus := []int64{1}, []int64{0, 1}
	// The devices' settings objects of 328..331 are not defined by the
	// protocol (PROTOCOL.md: "a JSON object"): ams passes their members
	// through unchanged and only requires at least one.
	const passThrough = "; the members are the device's own settings (not defined by PROTOCOL.md), passed through unchanged: at least one member, any names and values"
	return []Kind{
		{Name: "config", CmdType: protocol.CmdCommand, Code: protocol.AppGetConfig,
			Doc: "ask for the configuration and tell the bind status", Idempotent: true,
			Body: Spec{Fields: []Field{
				{Name: "iGetconfig", Type: Int, Required: true, OneOf: one, Doc: "always 1"},
				{Name: "iBindStatus", Type: Int, Required: true, OneOf: bindStatus, Doc: "1 bound to a user, 0 not bound"},
			}},
			Example: `{"iGetconfig":1,"iBindStatus":1}`},
		{Name: "reboot", CmdType: protocol.CmdCommand, Code: protocol.AppReboot,
			Doc:     "reboot the device",
			Body:    Spec{Fields: []Field{{Name: "iReboot", Type: Int, Required: true, OneOf: one, Doc: "always 1"}}},
			Default: `{"iReboot":1}`, Example: `{"iReboot":1}`},
		{Name: "reset", CmdType: protocol.CmdCommand, Code: protocol.AppReset,
			Doc: "reset: 1 factory reset, 0 default settings, 328/329/330/331/333 that settings group",
			Body: Spec{Fields: []Field{{Name: "iReset", Type: Int, Required: true,
				OneOf: []int64{0, 1, 328, 329, 330, 331, 333},
				Doc:   "1 factory reset, 0 default settings, 328/329/330/331/333 reset that settings group"}}},
			Example: `{"iReset":333}`},
		{Name: "log_upload", CmdType: protocol.CmdCommand, Code: protocol.AppUploadLog,
			Doc:     "upload the device's logs",
			Body:    Spec{Fields: []Field{{Name: "iReqUploadZlog", Type: Int, Required: true, Min: 0, HasMin: true, Doc: "which logs to upload (device-defined, 0 or more)"}}},
			Example: `{"iReqUploadZlog":1}`},
		{Name: "sd_format", CmdType: protocol.CmdCommand, Code: protocol.AppFormatSD,
			Doc:     "format the SD card",
			Body:    Spec{Fields: []Field{{Name: "iFormat", Type: Int, Required: true, OneOf: one, Doc: "always 1"}}},
			Example: `{"iFormat":1}`},
		{Name: "face_snapshot", CmdType: protocol.CmdCommand, Code: protocol.AppFaceSnapshot,
			Doc: "face snapshot settings" + passThrough, Body: Spec{Open: true, NonEmpty: true},
			Example: `{"iEnable":1,"iSensitivity":50}`},
		{Name: "vehicle_snapshot", CmdType: protocol.CmdCommand, Code: protocol.AppVehicleSnapshot,
			Doc: "vehicle snapshot settings" + passThrough, Body: Spec{Open: true, NonEmpty: true},
			Example: `{"iEnable":1}`},
		{Name: "other_settings", CmdType: protocol.CmdCommand, Code: protocol.AppTimeAlarm,
			Doc: "time zone, alarm light, siren settings" + passThrough, Idempotent: true, Body: Spec{Open: true, NonEmpty: true},
			Example: `{"strTimeZone":"UTC+8","iAlarmLight":0,"iSiren":0}`},
		{Name: "audio_video", CmdType: protocol.CmdCommand, Code: protocol.AppAudioVideo,
			Doc: "audio and video settings" + passThrough, Idempotent: true, Body: Spec{Open: true, NonEmpty: true},
			Example: `{"iMicEnable":1,"iVolume":80}`},
		{Name: "sd_info", CmdType: protocol.CmdCommand, Code: protocol.AppGetSDInfo,
			Doc: "read the SD card state", Idempotent: true,
			Body:    Spec{Fields: []Field{{Name: "iGetSDInfo", Type: Int, Required: true, OneOf: one, Doc: "always 1"}}},
			Default: `{"iGetSDInfo":1}`, Example: `{"iGetSDInfo":1}`},
		{Name: "osd", CmdType: protocol.CmdCommand, Code: protocol.AppOSD,
			Doc:        `OSD settings, at least one member; the device name is {"sOsdName":{"iEnable":1,"strText":"front door"}}; other members are passed through unchanged`,
			Idempotent: true,
			Body: Spec{Open: true, NonEmpty: true, Fields: []Field{
				{Name: "sOsdName", Type: Object, Doc: "the device name shown in the video: an object, not a string", Spec: &Spec{Open: true, Fields: []Field{
					{Name: "iEnable", Type: Int, Required: true, OneOf: bindStatus, Doc: "1 show the name, 0 hide it"},
					{Name: "strText", Type: String, MaxLen: 64, Doc: "the name, at most 64 characters"},
				}}},
			}},
			Example: `{"sOsdName":{"iEnable":1,"strText":"front door"}}`},
		{Name: "stream_control", CmdType: protocol.CmdAms, Code: protocol.AmsStreamControl,
			Doc:     "streaming: 0 stop, 1 start, 2 restart with a new URL",
			Body:    Spec{Fields: []Field{{Name: "icmdtype", Type: Int, Required: true, OneOf: []int64{0, 1, 2}, Doc: "0 stop, 1 start, 2 restart with a new URL"}}},
			Example: `{"icmdtype":1}`},
		{Name: "upload_control", CmdType: protocol.CmdAms, Code: protocol.AmsUploadControl,
			Doc:     "picture upload: 0 stop, 1 start",
			Body:    Spec{Fields: []Field{{Name: "icmdtype", Type: Int, Required: true, OneOf: []int64{0, 1}, Doc: "0 stop, 1 start"}}},
			Example: `{"icmdtype":1}`},
	}
}

// All returns every kind, in table order (by CmdType, then Code). The slice
// and its contents are the caller's own.
func All() []Kind { return table() }

// Names returns the name of every kind, in table order.
func Names() []string {
	t := table()
	out := make([]string, len(t))
	for i, k := range t {
		out[i] = k.Name
	}
	return out
}

// Lookup returns the kind named name (exact match).
func Lookup(name string) (Kind, bool) {
	for _, k := range table() {
		if k.Name == name {
			return k, true
		}
	}
	return Kind{}, false
}

// Find is Lookup that returns an error wrapping ErrUnknownKind, naming the known kinds.
func Find(name string) (Kind, error) {
	if k, ok := Lookup(name); ok {
		return k, nil
	}
	return Kind{}, fmt.Errorf("%w %q (known: %s)", ErrUnknownKind, name, strings.Join(Names(), ", "))
}

// ByCode returns the kind sent as iCmdType cmdType with sub-kind code.
func ByCode(cmdType, code int) (Kind, bool) {
	for _, k := range table() {
		if k.CmdType == cmdType && k.Code == code {
			return k, true
		}
	}
	return Kind{}, false
}

// Normalize validates body against the kind and returns the body to encrypt:
// compact JSON, pure ASCII with '/' as '\/' (protocol.MarshalASCII's
// escaping), members in the order given. An empty or null body is replaced
// by Default when the kind has one.
//
// Every failure is a *BodyError (check with errors.As): not JSON, not an
// object, a duplicated member, a missing or unknown member, a wrong type or
// a value out of range, or a body over MaxBodyBytes.
func (k Kind) Normalize(body json.RawMessage) ([]byte, error) {
	body = bytes.TrimSpace(body)
	if len(body) == 0 || string(body) == "null" {
		if k.Default == "" {
			return nil, &BodyError{Kind: k.Name, Reason: "a body is required"}
		}
		body = json.RawMessage(k.Default)
	}
	if len(body) > MaxBodyBytes {
		return nil, &BodyError{Kind: k.Name, Reason: fmt.Sprintf("body is %d bytes, more than %d", len(body), MaxBodyBytes)}
	}
	if !utf8.Valid(body) {
		return nil, &BodyError{Kind: k.Name, Reason: "body is not valid UTF-8"}
	}
	v, err := decodeStrict(body)
	if err != nil {
		return nil, &BodyError{Kind: k.Name, Reason: err.Error()}
	}
	obj, ok := v.(map[string]any)
	if !ok {
		return nil, &BodyError{Kind: k.Name, Reason: "body must be a JSON object, not " + jsonType(v)}
	}
	if err := k.Body.check(k.Name, "", obj); err != nil {
		return nil, err
	}
	out, err := protocol.MarshalASCII(body)
	if err != nil { // cannot happen: body was just decoded
		return nil, &BodyError{Kind: k.Name, Reason: err.Error()}
	}
	return out, nil
}

// Validate reports whether body is valid for the kind, with Normalize's errors.
func (k Kind) Validate(body json.RawMessage) error {
	_, err := k.Normalize(body)
	return err
}

// check validates obj against s; path is the dotted path of obj ("" for the body).
func (s Spec) check(kind, path string, obj map[string]any) error {
	if s.NonEmpty && len(obj) == 0 {
		return &BodyError{Kind: kind, Field: path, Reason: "must be a non-empty object"}
	}
	if !s.Open {
		keys := make([]string, 0, len(obj))
		for name := range obj {
			keys = append(keys, name)
		}
		slices.Sort(keys)
		for _, name := range keys {
			if !slices.ContainsFunc(s.Fields, func(f Field) bool { return f.Name == name }) {
				return &BodyError{Kind: kind, Field: join(path, name), Reason: "unknown field (allowed: " + s.names() + ")"}
			}
		}
	}
	for _, f := range s.Fields {
		fp := join(path, f.Name)
		v, present := obj[f.Name]
		if !present || v == nil {
			if f.Required {
				return &BodyError{Kind: kind, Field: fp, Reason: "required " + f.Type.String() + " missing"}
			}
			if present { // explicit null for an optional field
				return &BodyError{Kind: kind, Field: fp, Reason: "must be " + article(f.Type) + ", not null"}
			}
			continue
		}
		if err := f.check(kind, fp, v); err != nil {
			return err
		}
	}
	return nil
}

func (s Spec) names() string {
	n := make([]string, len(s.Fields))
	for i, f := range s.Fields {
		n[i] = f.Name
	}
	return strings.Join(n, ", ")
}

func (f Field) check(kind, path string, v any) error {
	bad := func(reason string) error { return &BodyError{Kind: kind, Field: path, Reason: reason} }
	switch f.Type {
	case Int:
		num, ok := v.(json.Number)
		if !ok {
			return bad("must be an integer, not " + jsonType(v))
		}
		n, err := strconv.ParseInt(num.String(), 10, 64)
		if err != nil {
			return bad("must be an integer, not " + num.String())
		}
		if len(f.OneOf) > 0 && !slices.Contains(f.OneOf, n) {
			return bad("must be one of " + joinInts(f.OneOf) + ", not " + num.String())
		}
		if f.HasMin && n < f.Min {
			return bad(fmt.Sprintf("must be at least %d, not %d", f.Min, n))
		}
	case String:
		s, ok := v.(string)
		if !ok {
			return bad("must be a string, not " + jsonType(v))
		}
		if f.MaxLen > 0 && utf8.RuneCountInString(s) > f.MaxLen {
			return bad(fmt.Sprintf("must be at most %d characters, not %d", f.MaxLen, utf8.RuneCountInString(s)))
		}
	case Object:
		o, ok := v.(map[string]any)
		if !ok {
			return bad("must be an object, not " + jsonType(v))
		}
		if f.Spec != nil {
			return f.Spec.check(kind, path, o)
		}
	default:
		return bad("field type not supported: " + f.Type.String())
	}
	return nil
}

// decodeStrict decodes exactly one JSON value with numbers as json.Number and
// refuses objects that repeat a member name (the device might read the other
// copy than the one validated).
func decodeStrict(b []byte) (any, error) {
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.UseNumber()
	v, err := decodeValue(dec, 0)
	if err != nil {
		return nil, err
	}
	if _, err := dec.Token(); err != io.EOF {
		return nil, errors.New("body must be exactly one JSON value")
	}
	return v, nil
}

const maxDepth = 32

func decodeValue(dec *json.Decoder, depth int) (any, error) {
	if depth > maxDepth {
		return nil, fmt.Errorf("body nests deeper than %d", maxDepth)
	}
	tok, err := dec.Token()
	if err != nil {
		return nil, fmt.Errorf("body is not valid JSON: %w", err)
	}
	switch t := tok.(type) {
	case json.Delim:
		switch t {
		case '{':
			obj := map[string]any{}
			for dec.More() {
				kt, err := dec.Token()
				if err != nil {
					return nil, fmt.Errorf("body is not valid JSON: %w", err)
				}
				key := kt.(string) // the decoder guarantees a string key here
				if _, dup := obj[key]; dup {
					return nil, fmt.Errorf("member %q appears twice", key)
				}
				v, err := decodeValue(dec, depth+1)
				if err != nil {
					return nil, err
				}
				obj[key] = v
			}
			if _, err := dec.Token(); err != nil {
				return nil, fmt.Errorf("body is not valid JSON: %w", err)
			}
			return obj, nil
		case '[':
			arr := []any{}
			for dec.More() {
				v, err := decodeValue(dec, depth+1)
				if err != nil {
					return nil, err
				}
				arr = append(arr, v)
			}
			if _, err := dec.Token(); err != nil {
				return nil, fmt.Errorf("body is not valid JSON: %w", err)
			}
			return arr, nil
		}
		return nil, fmt.Errorf("body is not valid JSON: unexpected %v", t)
	default:
		return t, nil // string, json.Number, bool, nil
	}
}

func jsonType(v any) string {
	switch v.(type) {
	case nil:
		return "null"
	case bool:
		return "a boolean"
	case json.Number:
		return "a number"
	case string:
		return "a string"
	case []any:
		return "an array"
	case map[string]any:
		return "an object"
	}
	return fmt.Sprintf("%T", v)
}

func article(t FieldType) string {
	if t == Int || t == Object {
		return "an " + t.String()
	}
	return "a " + t.String()
}

func join(path, name string) string {
	if path == "" {
		return name
	}
	return path + "." + name
}

func joinInts(v []int64) string {
	s := make([]string, len(v))
	for i, n := range v {
		s[i] = strconv.FormatInt(n, 10)
	}
	return strings.Join(s, ", ")
}

package commandkinds

import (
	"encoding/json"
	"strings"
	"testing"

	"github.com/pb33f/jsonschema/v6"
)

// compileSchema compiles k's JSON Schema (round-tripped through JSON, as a
// client reads it) with the validator libopenapi-validator uses.
func compileSchema(t *testing.T, k Kind) *jsonschema.Schema {
	t.Helper()
	b, err := json.Marshal(k.JSONSchema())
	if err != nil {
		t.Fatal(err)
	}
	doc, err := jsonschema.UnmarshalJSON(strings.NewReader(string(b)))
	if err != nil {
		t.Fatal(err)
	}
	c := jsonschema.NewCompiler()
	c.DefaultDraft(jsonschema.Draft2020)
	if err := c.AddResource(k.Name+".json", doc); err != nil {
		t.Fatal(err)
	}
	s, err := c.Compile(k.Name + ".json")
	if err != nil {
		t.Fatalf("%s: schema does not compile: %v\n%s", k.Name, err, b)
	}
	return s
}

// TestJSONSchemaAgreesWithNormalize checks, for every kind, that its example
// is valid, and that the schema and Normalize agree on a corpus of bodies
// (every kind's example, wrong types, out-of-range values, missing, unknown
// and nested members).
func TestJSONSchemaAgreesWithNormalize(t *testing.T) {
	corpus := []string{`{}`, `[]`, `"x"`, `1`, `{"x":1}`, `{"iReboot":2}`, `{"iReboot":"1"}`, `{"iReboot":1,"x":1}`,
		`{"iReset":328}`, `{"iReset":332}`, `{"iReqUploadZlog":-1}`, `{"iReqUploadZlog":0}`,
		`{"sOsdName":"front door"}`, `{"sOsdName":{"iEnable":1}}`, `{"sOsdName":{"iEnable":2}}`,
		`{"sOsdName":{"strText":"a"}}`, `{"sOsdName":{"iEnable":1,"strText":"` + strings.Repeat("n", 65) + `"}}`,
		`{"sOsdName":{"iEnable":0,"strText":"` + strings.Repeat("n", 64) + `"},"iOther":1}`,
		`{"icmdtype":2}`, `{"icmdtype":3}`, `{"iGetconfig":1}`, `{"iGetconfig":1,"iBindStatus":0}`, `{"iGetSDInfo":null}`}
	for _, k := range All() {
		corpus = append(corpus, k.Example)
	}
	for _, k := range All() {
		if k.Example == "" {
			t.Errorf("%s: no example", k.Name)
			continue
		}
		if err := k.Validate(json.RawMessage(k.Example)); err != nil {
			t.Errorf("%s: example %s is invalid: %v", k.Name, k.Example, err)
		}
		s := compileSchema(t, k)
		for _, body := range corpus {
			inst, err := jsonschema.UnmarshalJSON(strings.NewReader(body))
			if err != nil {
				t.Fatal(err)
			}
			schemaErr := s.Validate(inst)
			normErr := k.Validate(json.RawMessage(body))
			if (schemaErr == nil) != (normErr == nil) {
				t.Errorf("%s %s: schema says %v, Normalize says %v", k.Name, body, schemaErr, normErr)
			}
		}
	}
}

// TestOSDNameShape is the case: the device name is an object.
func TestOSDNameShape(t *testing.T) {
	k, _ := Lookup("osd")
	if err := k.Validate(json.RawMessage(`{"sOsdName":"front door"}`)); err == nil {
		t.Error(`osd {"sOsdName":"front door"} accepted`)
	}
	if err := k.Validate(json.RawMessage(`{"sOsdName":{"iEnable":1,"strText":"front door"}}`)); err != nil {
		t.Error(err)
	}
	if !strings.Contains(k.Doc, `{"sOsdName":{"iEnable":1,"strText":`) {
		t.Errorf("osd doc does not show the name's shape: %s", k.Doc)
	}
}

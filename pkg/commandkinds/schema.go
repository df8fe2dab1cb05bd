package commandkinds

import "encoding/json"

// JSONSchema returns the JSON Schema (draft 2020-12, as OpenAPI 3.1 uses it)
// of the kind's body, built from the same Spec that Normalize checks: member
// types, required members, allowed values (enum), minimums, string lengths,
// nested objects, whether other members are allowed, and the kind's example.
// A body valid for Normalize is valid for the schema. The schema cannot say
// two things Normalize also refuses: a member given twice, and an integer
// written with a fraction or exponent (1.0, 1e0).
func (k Kind) JSONSchema() map[string]any {
	s := k.Body.schema()
	s["title"] = k.Name
	s["description"] = k.Doc
	if k.Default != "" {
		s["default"] = json.RawMessage(k.Default)
	}
	if k.Example != "" {
		s["examples"] = []json.RawMessage{json.RawMessage(k.Example)}
	}
	return s
}

func (s Spec) schema() map[string]any {
	out := map[string]any{"type": "object"}
	props := map[string]any{}
	var required []string
	for _, f := range s.Fields {
		props[f.Name] = f.schema()
		if f.Required {
			required = append(required, f.Name)
		}
	}
	if len(props) > 0 {
		out["properties"] = props
	}
	if len(required) > 0 {
		out["required"] = required
	}
	if !s.Open {
		out["additionalProperties"] = false
	}
	if s.NonEmpty {
		out["minProperties"] = 1
	}
	return out
}

func (f Field) schema() map[string]any {
	var out map[string]any
	switch f.Type {
	case Int:
		out = map[string]any{"type": "integer"}
		if len(f.OneOf) > 0 {
			out["enum"] = f.OneOf
		}
		if f.HasMin {
			out["minimum"] = f.Min
		}
	case String:
		out = map[string]any{"type": "string"}
		if f.MaxLen > 0 {
			out["maxLength"] = f.MaxLen
		}
	case Object:
		if f.Spec != nil {
			out = f.Spec.schema()
		} else {
			out = map[string]any{"type": "object"}
		}
	default:
		out = map[string]any{}
	}
	if f.Doc != "" {
		out["description"] = f.Doc
	}
	return out
}

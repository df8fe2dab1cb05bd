package schemas

import (
	"strconv"
	"strings"

	"github.com/hamba/avro/v2"
)

// CanonicalForm returns the Parsing Canonical Form of s as the Avro
// specification defines it: full names, only the attributes that matter for
// parsing (name, type, fields, symbols, items, values, size) in that order, no
// whitespace. Doc, default, aliases and logicalType are stripped, so editing a
// doc or a default never changes a fingerprint.
//
// This deliberately differs from hamba/avro's Schema.String (and so from its
// FingerprintUsing and its soe package), which keeps logicalType: a fingerprint
// computed that way would not match the one Java's SchemaNormalization,
// BinaryMessageDecoder or Python's fastavro compute for the same schema.
func CanonicalForm(s avro.Schema) string {
	var b strings.Builder
	writeCanonical(&b, s)
	return b.String()
}

func writeCanonical(b *strings.Builder, s avro.Schema) {
	switch s := s.(type) {
	case *avro.RefSchema:
		// A named type defined earlier in the schema: its full name.
		writeJSONString(b, s.Schema().FullName())
	case *avro.RecordSchema:
		b.WriteString(`{"name":`)
		writeJSONString(b, s.FullName())
		if s.IsError() {
			b.WriteString(`,"type":"error","fields":[`)
		} else {
			b.WriteString(`,"type":"record","fields":[`)
		}
		for i, f := range s.Fields() {
			if i > 0 {
				b.WriteByte(',')
			}
			b.WriteString(`{"name":`)
			writeJSONString(b, f.Name())
			b.WriteString(`,"type":`)
			writeCanonical(b, f.Type())
			b.WriteByte('}')
		}
		b.WriteString(`]}`)
	case *avro.EnumSchema:
		b.WriteString(`{"name":`)
		writeJSONString(b, s.FullName())
		b.WriteString(`,"type":"enum","symbols":[`)
		for i, sym := range s.Symbols() {
			if i > 0 {
				b.WriteByte(',')
			}
			writeJSONString(b, sym)
		}
		b.WriteString(`]}`)
	case *avro.FixedSchema:
		b.WriteString(`{"name":`)
		writeJSONString(b, s.FullName())
		b.WriteString(`,"type":"fixed","size":`)
		b.WriteString(strconv.Itoa(s.Size()))
		b.WriteByte('}')
	case *avro.ArraySchema:
		b.WriteString(`{"type":"array","items":`)
		writeCanonical(b, s.Items())
		b.WriteByte('}')
	case *avro.MapSchema:
		b.WriteString(`{"type":"map","values":`)
		writeCanonical(b, s.Values())
		b.WriteByte('}')
	case *avro.UnionSchema:
		b.WriteByte('[')
		for i, t := range s.Types() {
			if i > 0 {
				b.WriteByte(',')
			}
			writeCanonical(b, t)
		}
		b.WriteByte(']')
	default:
		// Primitives (null, boolean, int, long, float, double, bytes,
		// string), with any logicalType stripped.
		writeJSONString(b, string(s.Type()))
	}
}

// writeJSONString writes s as a JSON string literal. Avro names and symbols
// are restricted to [A-Za-z0-9_.], so only the generic escapes matter, and
// the spec asks for UTF-8 rather than \u escapes.
func writeJSONString(b *strings.Builder, s string) {
	b.WriteByte('"')
	for _, r := range s {
		switch {
		case r == '"' || r == '\\':
			b.WriteByte('\\')
			b.WriteRune(r)
		case r < 0x20:
			b.WriteString(`\u00`)
			b.WriteByte("0123456789abcdef"[r>>4])
			b.WriteByte("0123456789abcdef"[r&0xF])
		default:
			b.WriteRune(r)
		}
	}
	b.WriteByte('"')
}

// crc64AvroEmpty is the CRC-64-AVRO "empty" value and polynomial.
const crc64AvroEmpty uint64 = 0xc15d213aa4d7a795

// Fingerprint returns the CRC-64-AVRO fingerprint of s's Parsing Canonical
// Form (see CanonicalForm): the 64-bit Rabin fingerprint that Avro
// single-object encoding puts, little-endian, after the two marker bytes.
func Fingerprint(s avro.Schema) uint64 {
	return crc64Avro([]byte(CanonicalForm(s)))
}

// crc64Avro is the fingerprint algorithm of the Avro specification. It runs
// once per schema when a Registry is built, so it needs no lookup table.
func crc64Avro(data []byte) uint64 {
	fp := crc64AvroEmpty
	for _, c := range data {
		fp ^= uint64(c)
		for range 8 {
			fp = (fp >> 1) ^ (crc64AvroEmpty & -(fp & 1))
		}
	}
	return fp
}

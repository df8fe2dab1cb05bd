package protocol

import (
	"bytes"
	"encoding/json"
	"fmt"
	"math"
	"strconv"
	"unicode/utf16"
	"unicode/utf8"
)

// MarshalASCII encodes v as JSON the way the seed's ujson.dumps does, so that
// bodies (and their PKCS#7 padding) are byte-identical to what the firmware
// has always received:
//
//   - compact: no spaces after ':' and ','; no trailing newline;
//   - pure ASCII: every non-ASCII character is written as \uXXXX (lowercase
//     hex), characters above U+FFFF as a UTF-16 surrogate pair;
//   - '/' is written as '\/'; '<', '>' and '&' are not escaped;
//   - control characters as \b \f \n \r \t or \u00XX.
//
// Field order is the struct's field order (Go maps are written with sorted
// keys; use a struct where the order matters). Floats that must print like
// Python's (1574321354.0) use the Float type. Invalid UTF-8 in strings is
// written as \ufffd. Errors are those of encoding/json.
func MarshalASCII(v any) ([]byte, error) {
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(v); err != nil {
		return nil, fmt.Errorf("protocol: marshal: %w", err)
	}
	out := bytes.TrimSuffix(buf.Bytes(), []byte{'\n'})
	return asciiFromJSON(make([]byte, 0, len(out)+len(out)/8), out), nil
}

// asciiFromJSON appends the JSON text src (as produced by encoding/json with
// HTML escaping off) to dst with every '/' written as '\/' and every
// non-ASCII character as \uXXXX. Outside string literals JSON text is pure
// ASCII and holds no '/', so the rewrite can be done byte by byte.
func asciiFromJSON(dst, src []byte) []byte {
	for i := 0; i < len(src); {
		c := src[i]
		if c < utf8.RuneSelf {
			if c == '/' {
				dst = append(dst, '\\', '/')
			} else {
				dst = append(dst, c)
			}
			i++
			continue
		}
		r, size := utf8.DecodeRune(src[i:])
		dst = appendRuneEscape(dst, r)
		i += size
	}
	return dst
}

const lowerHex = "0123456789abcdef"

// appendRuneEscape appends r as \uXXXX, or as a surrogate pair above U+FFFF.
// utf8.RuneError (from invalid input) is written as \ufffd.
func appendRuneEscape(dst []byte, r rune) []byte {
	if r > 0xFFFF {
		r1, r2 := utf16.EncodeRune(r)
		dst = appendU16(dst, r1)
		return appendU16(dst, r2)
	}
	return appendU16(dst, r)
}

func appendU16(dst []byte, r rune) []byte {
	return append(dst, '\\', 'u',
		lowerHex[(r>>12)&0xF], lowerHex[(r>>8)&0xF], lowerHex[(r>>4)&0xF], lowerHex[r&0xF])
}

// appendJSONString appends s as a JSON string literal with the same escaping
// as MarshalASCII.
func appendJSONString(dst []byte, s string) []byte {
	dst = append(dst, '"')
	for i := 0; i < len(s); {
		c := s[i]
		if c < utf8.RuneSelf {
			switch c {
			case '"':
				dst = append(dst, '\\', '"')
			case '\\':
				dst = append(dst, '\\', '\\')
			case '/':
				dst = append(dst, '\\', '/')
			case '\b':
				dst = append(dst, '\\', 'b')
			case '\f':
				dst = append(dst, '\\', 'f')
			case '\n':
				dst = append(dst, '\\', 'n')
			case '\r':
				dst = append(dst, '\\', 'r')
			case '\t':
				dst = append(dst, '\\', 't')
			default:
				if c < 0x20 {
					dst = append(dst, '\\', 'u', '0', '0', lowerHex[c>>4], lowerHex[c&0xF])
				} else {
					dst = append(dst, c)
				}
			}
			i++
			continue
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		dst = appendRuneEscape(dst, r)
		i += size
	}
	return append(dst, '"')
}

// Float is a float64 that marshals like the seed's ujson (and, for the values
// the protocol uses, like Python's repr): the shortest representation that
// reads back exactly, always with a decimal point or an exponent. Integral
// values keep a trailing ".0" (1574321354.0), values with a decimal exponent
// below -4 or at least 16 use exponent notation without zero padding
// (1e-5, 1e+16). NaN and infinities cannot be marshalled (an error).
// It unmarshals like a float64.
type Float float64

// MarshalJSON implements json.Marshaler.
func (f Float) MarshalJSON() ([]byte, error) {
	return appendFloat(nil, float64(f))
}

func appendFloat(dst []byte, f float64) ([]byte, error) {
	if math.IsNaN(f) || math.IsInf(f, 0) {
		return nil, fmt.Errorf("protocol: unsupported float value %v", f)
	}
	var scratch [32]byte
	e := strconv.AppendFloat(scratch[:0], f, 'e', -1, 64)
	// e is like "-1.2345e+09" or "5e-324": read its decimal exponent.
	ei := bytes.IndexByte(e, 'e')
	exp, err := strconv.Atoi(string(e[ei+1:]))
	if err != nil { // cannot happen: strconv always writes a valid exponent
		return nil, fmt.Errorf("protocol: formatting float: %w", err)
	}
	if exp >= -4 && exp < 16 {
		start := len(dst)
		dst = strconv.AppendFloat(dst, f, 'f', -1, 64)
		if bytes.IndexByte(dst[start:], '.') < 0 {
			dst = append(dst, '.', '0')
		}
		return dst, nil
	}
	// Exponent notation: mantissa, 'e', sign, exponent without leading zeros.
	dst = append(dst, e[:ei+1]...)
	if exp < 0 {
		dst = append(dst, '-')
		exp = -exp
	} else {
		dst = append(dst, '+')
	}
	return strconv.AppendInt(dst, int64(exp), 10), nil
}

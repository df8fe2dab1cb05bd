package protocol

import (
	"strconv"
	"unicode"
	"unicode/utf16"
	"unicode/utf8"
)

// maxJSONDepth bounds the nesting of ignored values, as encoding/json does.
const maxJSONDepth = 10000

// envParser is a single-pass, allocation-light parser for the frame envelope.
// It accepts exactly the JSON grammar (RFC 8259, as encoding/json does) and
// decodes the six envelope fields; every other value is validated and
// skipped. The input must already be valid UTF-8.
type envParser struct {
	b []byte
	i int
	// first type error (a field of the wrong JSON type), reported after the
	// whole input is known to be valid JSON.
	typeErr string
}

type syntaxError struct {
	off int
	msg string
}

func (e *syntaxError) Error() string {
	return "invalid JSON at offset " + strconv.Itoa(e.off) + ": " + e.msg
}

func (p *envParser) fail(msg string) *syntaxError { return &syntaxError{off: p.i, msg: msg} }

func (p *envParser) ws() {
	for p.i < len(p.b) {
		switch p.b[p.i] {
		case ' ', '\t', '\n', '\r':
			p.i++
		default:
			return
		}
	}
}

// parseEnvelope parses b as one JSON object into w. It returns a syntax error
// for invalid JSON; notObject is true for valid JSON that is not an object.
func parseEnvelope(b []byte, w *envelope) (notObject bool, serr *syntaxError) {
	p := envParser{b: b}
	p.ws()
	if p.i >= len(b) {
		return false, p.fail("empty input")
	}
	if b[p.i] != '{' {
		if err := p.skipValue(0); err != nil {
			return false, err
		}
		p.ws()
		if p.i != len(b) {
			return false, p.fail("data after the JSON value")
		}
		return true, nil
	}
	p.i++
	p.ws()
	if p.i < len(b) && b[p.i] == '}' {
		p.i++
	} else {
		for {
			p.ws()
			key, err := p.str()
			if err != nil {
				return false, err
			}
			p.ws()
			if p.i >= len(b) || b[p.i] != ':' {
				return false, p.fail("expected ':' after object key")
			}
			p.i++
			p.ws()
			if err := p.field(key, w); err != nil {
				return false, err
			}
			p.ws()
			if p.i >= len(b) {
				return false, p.fail("unterminated object")
			}
			if b[p.i] == ',' {
				p.i++
				continue
			}
			if b[p.i] == '}' {
				p.i++
				break
			}
			return false, p.fail("expected ',' or '}' in object")
		}
	}
	p.ws()
	if p.i != len(b) {
		return false, p.fail("data after the JSON object")
	}
	w.typeErr = p.typeErr
	return false, nil
}

// envelope is the decoded envelope before validation. Keys match exactly
// (case-sensitive, as the seed's dict lookups did); a repeated key overrides
// the earlier value; null resets a field to absent.
type envelope struct {
	cmdPresent      bool
	cmdValid        bool
	cmdType         int
	protocolVersion string
	msgID           string
	appCmdType      int
	amsCmdType      int
	data            string
	typeErr         string // first field with a wrong type, "" if none
}

func (p *envParser) field(key []byte, w *envelope) *syntaxError {
	switch string(key) {
	case "iCmdType":
		start := p.i
		if err := p.skipValue(1); err != nil {
			return err
		}
		w.cmdPresent = true
		w.cmdType, w.cmdValid = parseCmdType(p.b[start:p.i])
		return nil
	case "sProtocolVersion":
		return p.stringField("sProtocolVersion", &w.protocolVersion)
	case "sMsgId":
		return p.stringField("sMsgId", &w.msgID)
	case "sData":
		return p.stringField("sData", &w.data)
	case "iAppCmdType":
		return p.intField("iAppCmdType", &w.appCmdType)
	case "iAmsCmdType":
		return p.intField("iAmsCmdType", &w.amsCmdType)
	}
	return p.skipValue(1)
}

// parseCmdType accepts only a plain integer literal in 0..MaxCmdType.
func parseCmdType(raw []byte) (int, bool) {
	if len(raw) == 0 || len(raw) > 2 {
		return 0, false
	}
	v := 0
	for _, d := range raw {
		if d < '0' || d > '9' {
			return 0, false
		}
		v = v*10 + int(d-'0')
	}
	if v > MaxCmdType {
		return 0, false
	}
	return v, true
}

func (p *envParser) typeError(name string) {
	if p.typeErr == "" {
		p.typeErr = name
	}
}

func (p *envParser) stringField(name string, dst *string) *syntaxError {
	if p.i < len(p.b) {
		switch p.b[p.i] {
		case '"':
			s, err := p.str()
			if err != nil {
				return err
			}
			*dst = string(s)
			return nil
		case 'n':
			if err := p.literal("null"); err != nil {
				return err
			}
			*dst = ""
			return nil
		}
	}
	p.typeError(name)
	return p.skipValue(1)
}

func (p *envParser) intField(name string, dst *int) *syntaxError {
	if p.i < len(p.b) {
		c := p.b[p.i]
		switch {
		case c == 'n':
			if err := p.literal("null"); err != nil {
				return err
			}
			*dst = 0
			return nil
		case c == '-' || ('0' <= c && c <= '9'):
			start := p.i
			isInt, err := p.number()
			if err != nil {
				return err
			}
			v, ok := parseIntBits(p.b[start:p.i], strconv.IntSize)
			if !isInt || !ok {
				p.typeError(name)
				return nil
			}
			*dst = int(v)
			return nil
		}
	}
	p.typeError(name)
	return p.skipValue(1)
}

// parseIntBits parses a JSON integer literal (already validated) that must
// fit a signed integer of the given bit size, as strconv.ParseInt does.
func parseIntBits(b []byte, bits int) (int64, bool) {
	neg := false
	if len(b) > 0 && b[0] == '-' {
		neg = true
		b = b[1:]
	}
	if len(b) == 0 {
		return 0, false
	}
	maxPos := uint64(1)<<(bits-1) - 1
	limit := maxPos
	if neg {
		limit = maxPos + 1
	}
	var v uint64
	for _, d := range b {
		if d < '0' || d > '9' {
			return 0, false
		}
		dv := uint64(d - '0')
		if v > (limit-dv)/10 {
			return 0, false
		}
		v = v*10 + dv
	}
	if neg {
		return -int64(v), true // for v = 1<<63, -int64(v) wraps to MinInt64: correct
	}
	return int64(v), true
}

func (p *envParser) literal(lit string) *syntaxError {
	if len(p.b)-p.i < len(lit) || string(p.b[p.i:p.i+len(lit)]) != lit {
		return p.fail("invalid literal")
	}
	p.i += len(lit)
	return nil
}

// number scans a JSON number; isInt is false if it has a fraction or an
// exponent.
func (p *envParser) number() (isInt bool, err *syntaxError) {
	b := p.b
	isInt = true
	if p.i < len(b) && b[p.i] == '-' {
		p.i++
	}
	switch {
	case p.i < len(b) && b[p.i] == '0':
		p.i++
	case p.i < len(b) && '1' <= b[p.i] && b[p.i] <= '9':
		for p.i < len(b) && '0' <= b[p.i] && b[p.i] <= '9' {
			p.i++
		}
	default:
		return false, p.fail("invalid number")
	}
	if p.i < len(b) && b[p.i] == '.' {
		isInt = false
		p.i++
		if p.i >= len(b) || b[p.i] < '0' || b[p.i] > '9' {
			return false, p.fail("invalid number fraction")
		}
		for p.i < len(b) && '0' <= b[p.i] && b[p.i] <= '9' {
			p.i++
		}
	}
	if p.i < len(b) && (b[p.i] == 'e' || b[p.i] == 'E') {
		isInt = false
		p.i++
		if p.i < len(b) && (b[p.i] == '+' || b[p.i] == '-') {
			p.i++
		}
		if p.i >= len(b) || b[p.i] < '0' || b[p.i] > '9' {
			return false, p.fail("invalid number exponent")
		}
		for p.i < len(b) && '0' <= b[p.i] && b[p.i] <= '9' {
			p.i++
		}
	}
	return isInt, nil
}

// str parses a JSON string at p.i and returns its decoded bytes: a slice of
// the input when it has no escapes, else a new buffer.
func (p *envParser) str() ([]byte, *syntaxError) {
	b := p.b
	if p.i >= len(b) || b[p.i] != '"' {
		return nil, p.fail("expected string")
	}
	p.i++
	start := p.i
	for p.i < len(b) {
		c := b[p.i]
		switch {
		case c == '"':
			s := b[start:p.i]
			p.i++
			return s, nil
		case c == '\\':
			return p.strSlow(start)
		case c < 0x20:
			return nil, p.fail("control character in string")
		}
		p.i++
	}
	return nil, p.fail("unterminated string")
}

// strSlow decodes a string with escapes, starting over at start (just after
// the opening quote). Lone or invalid surrogates become U+FFFD, as in
// encoding/json.
func (p *envParser) strSlow(start int) ([]byte, *syntaxError) {
	b := p.b
	out := make([]byte, 0, p.i-start+16)
	out = append(out, b[start:p.i]...)
	for p.i < len(b) {
		c := b[p.i]
		switch {
		case c == '"':
			p.i++
			return out, nil
		case c < 0x20:
			return nil, p.fail("control character in string")
		case c != '\\':
			out = append(out, c)
			p.i++
			continue
		}
		// escape
		if p.i+1 >= len(b) {
			return nil, p.fail("unterminated string")
		}
		e := b[p.i+1]
		p.i += 2
		switch e {
		case '"', '\\', '/':
			out = append(out, e)
		case 'b':
			out = append(out, '\b')
		case 'f':
			out = append(out, '\f')
		case 'n':
			out = append(out, '\n')
		case 'r':
			out = append(out, '\r')
		case 't':
			out = append(out, '\t')
		case 'u':
			r, ok := hex4(b, p.i)
			if !ok {
				return nil, p.fail("invalid \\u escape")
			}
			p.i += 4
			if utf16.IsSurrogate(r) {
				r2, ok2 := rune(-1), false
				if p.i+1 < len(b) && b[p.i] == '\\' && b[p.i+1] == 'u' {
					r2, ok2 = hex4(b, p.i+2)
				}
				if dec := utf16.DecodeRune(r, r2); ok2 && dec != unicode.ReplacementChar {
					p.i += 6
					r = dec
				} else {
					r = unicode.ReplacementChar
				}
			}
			out = utf8.AppendRune(out, r)
		default:
			return nil, p.fail("invalid escape")
		}
	}
	return nil, p.fail("unterminated string")
}

func hex4(b []byte, i int) (rune, bool) {
	if len(b)-i < 4 {
		return 0, false
	}
	var r rune
	for _, c := range b[i : i+4] {
		d, ok := fromHexChar(c)
		if !ok {
			return 0, false
		}
		r = r<<4 | rune(d)
	}
	return r, true
}

// skipValue validates and skips one JSON value nested in depth containers
// (0 at the top level, 1 for the envelope's field values).
func (p *envParser) skipValue(depth int) *syntaxError {
	b := p.b
	if p.i >= len(b) {
		return p.fail("unexpected end of input")
	}
	switch c := b[p.i]; {
	case c == '"':
		return p.skipString()
	case c == '{':
		if depth >= maxJSONDepth {
			return p.fail("nesting too deep")
		}
		p.i++
		p.ws()
		if p.i < len(b) && b[p.i] == '}' {
			p.i++
			return nil
		}
		for {
			p.ws()
			if err := p.skipString(); err != nil {
				return err
			}
			p.ws()
			if p.i >= len(b) || b[p.i] != ':' {
				return p.fail("expected ':' after object key")
			}
			p.i++
			p.ws()
			if err := p.skipValue(depth + 1); err != nil {
				return err
			}
			p.ws()
			if p.i >= len(b) {
				return p.fail("unterminated object")
			}
			if b[p.i] == ',' {
				p.i++
				continue
			}
			if b[p.i] == '}' {
				p.i++
				return nil
			}
			return p.fail("expected ',' or '}' in object")
		}
	case c == '[':
		if depth >= maxJSONDepth {
			return p.fail("nesting too deep")
		}
		p.i++
		p.ws()
		if p.i < len(b) && b[p.i] == ']' {
			p.i++
			return nil
		}
		for {
			p.ws()
			if err := p.skipValue(depth + 1); err != nil {
				return err
			}
			p.ws()
			if p.i >= len(b) {
				return p.fail("unterminated array")
			}
			if b[p.i] == ',' {
				p.i++
				continue
			}
			if b[p.i] == ']' {
				p.i++
				return nil
			}
			return p.fail("expected ',' or ']' in array")
		}
	case c == 't':
		return p.literal("true")
	case c == 'f':
		return p.literal("false")
	case c == 'n':
		return p.literal("null")
	case c == '-' || ('0' <= c && c <= '9'):
		_, err := p.number()
		return err
	}
	return p.fail("invalid character at the start of a value")
}

// skipString validates and skips a JSON string without decoding it.
func (p *envParser) skipString() *syntaxError {
	b := p.b
	if p.i >= len(b) || b[p.i] != '"' {
		return p.fail("expected string")
	}
	p.i++
	for p.i < len(b) {
		c := b[p.i]
		switch {
		case c == '"':
			p.i++
			return nil
		case c < 0x20:
			return p.fail("control character in string")
		case c == '\\':
			if p.i+1 >= len(b) {
				return p.fail("unterminated string")
			}
			switch b[p.i+1] {
			case '"', '\\', '/', 'b', 'f', 'n', 'r', 't':
				p.i += 2
			case 'u':
				if _, ok := hex4(b, p.i+2); !ok {
					return p.fail("invalid \\u escape")
				}
				p.i += 6
			default:
				return p.fail("invalid escape")
			}
			continue
		}
		p.i++
	}
	return p.fail("unterminated string")
}

package protocol

import (
	"bytes"
	"strconv"
	"strings"
)

// A fast path for the hot uplink bodies (Configuration, ConfigurationSN,
// Heartbeat, SNBody): a
// single-pass decoder that gives exactly the result encoding/json would, and
// gives up (so that encoding/json decodes the body, and reports the error)
// on anything it does not handle the same way: a key that matches a field
// only case-insensitively, a value of the wrong type, a number that does not
// fit, invalid JSON. The body is decoded into a copy that is assigned only on
// success, so a fallback starts from the caller's original value.

type fieldStatus uint8

const (
	fieldUnknown fieldStatus = iota // not a field of the body: skip the value
	fieldDone                       // decoded
	fieldBail                       // let encoding/json decode the body
)

// flatBody is a body of string and integer fields the fast path can decode.
type flatBody interface {
	// decodeField decodes the value at p for key.
	decodeField(key []byte, p *envParser) fieldStatus
	// fieldNames lists the JSON names of the fields, comma-separated.
	fieldNames() string
}

// decodeFlat decodes b into body; false means "use encoding/json" (body may
// then be partly written).
func decodeFlat(b []byte, body flatBody) bool {
	p := envParser{b: b}
	p.ws()
	if p.i >= len(b) || b[p.i] != '{' {
		return false
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
				return false
			}
			p.ws()
			if p.i >= len(b) || b[p.i] != ':' {
				return false
			}
			p.i++
			p.ws()
			switch decodeField(body, key, &p) {
			case fieldDone:
			case fieldUnknown:
				if foldMatchesAny(key, body.fieldNames()) {
					return false
				}
				if p.skipValue(1) != nil {
					return false
				}
			default:
				return false
			}
			p.ws()
			if p.i >= len(b) {
				return false
			}
			if b[p.i] == ',' {
				p.i++
				continue
			}
			if b[p.i] == '}' {
				p.i++
				break
			}
			return false
		}
	}
	p.ws()
	return p.i == len(b)
}

// decodeField dispatches on the concrete type so that the parser does not
// escape to the heap (as it would through an interface method call).
func decodeField(body flatBody, key []byte, p *envParser) fieldStatus {
	switch b := body.(type) {
	case *Configuration:
		return b.decodeField(key, p)
	case *ConfigurationSN:
		return b.decodeField(key, p)
	case *Heartbeat:
		return b.decodeField(key, p)
	case *SNBody:
		return b.decodeField(key, p)
	}
	return fieldBail
}

// foldMatchesAny reports whether key equals one of the comma-separated names
// under Unicode case folding, as encoding/json matches field names.
func foldMatchesAny(key []byte, names string) bool {
	for names != "" {
		var name string
		name, names, _ = strings.Cut(names, ",")
		if bytes.EqualFold(key, []byte(name)) {
			return true
		}
	}
	return false
}

// decodeFast decodes pt into *v with the fast path; false means that *v is
// unchanged and encoding/json must decode pt.
func decodeFast[T any, PT interface {
	*T
	flatBody
}](pt []byte, v PT) bool {
	if v == nil {
		return false
	}
	orig := *v
	if decodeFlat(pt, v) {
		return true
	}
	*v = orig
	return false
}

// fastStr reads a JSON string (its decoded bytes) or null (null true) at
// p.i; anything else bails.
func (p *envParser) fastStr() (s []byte, null bool, st fieldStatus) {
	if p.i >= len(p.b) {
		return nil, false, fieldBail
	}
	switch p.b[p.i] {
	case '"':
		s, err := p.str()
		if err != nil {
			return nil, false, fieldBail
		}
		return s, false, fieldDone
	case 'n':
		if p.literal("null") != nil {
			return nil, false, fieldBail
		}
		return nil, true, fieldDone
	}
	return nil, false, fieldBail
}

// fastString decodes a JSON string into dst; null leaves dst unchanged (as
// encoding/json does); anything else bails.
func (p *envParser) fastString(dst *string) fieldStatus {
	s, null, st := p.fastStr()
	if st == fieldDone && !null {
		*dst = string(s)
	}
	return st
}

// fastStringPtr decodes a JSON string into a new string and points *dst at
// it; null sets *dst to nil; anything else bails. encoding/json writes
// through a pointer already set instead: the value is the same, and the
// caller's string is never changed by a decode that then bails.
func (p *envParser) fastStringPtr(dst **string) fieldStatus {
	s, null, st := p.fastStr()
	switch {
	case st != fieldDone:
	case null:
		*dst = nil
	default:
		v := string(s)
		*dst = &v
	}
	return st
}

// fastInt decodes a JSON integer that fits bits into dst; null leaves dst
// unchanged; anything else (a fraction, an exponent, overflow, another
// type) bails.
func (p *envParser) fastInt(dst *int64, bits int) fieldStatus {
	if p.i >= len(p.b) {
		return fieldBail
	}
	c := p.b[p.i]
	if c == 'n' {
		if p.literal("null") != nil {
			return fieldBail
		}
		return fieldDone
	}
	if c != '-' && (c < '0' || c > '9') {
		return fieldBail
	}
	start := p.i
	isInt, err := p.number()
	if err != nil || !isInt {
		return fieldBail
	}
	v, ok := parseIntBits(p.b[start:p.i], bits)
	if !ok {
		return fieldBail
	}
	*dst = v
	return fieldDone
}

func (p *envParser) fastIntField(dst *int) fieldStatus {
	v := int64(*dst)
	st := p.fastInt(&v, strconv.IntSize)
	if st == fieldDone {
		*dst = int(v)
	}
	return st
}

func (p *envParser) fastInt64Field(dst *int64) fieldStatus {
	return p.fastInt(dst, 64)
}

const configurationNames = "sDeviceSn,sHwVersion,sModelName,sIpAddr,sMacAddr,sVPNIpAddr,sFwVersion," +
	"sAlphaVer,sAiModelVer,sIEVer,iChnCnt,iAlarmIn,iAlarmOut,iNetMethod,iTFCardState," +
	"iTFCardCapacitySize,iTFCardUseSize,sSSID,iWifiStrength"

func (c *Configuration) fieldNames() string { return configurationNames }

func (c *Configuration) decodeField(key []byte, p *envParser) fieldStatus {
	switch string(key) {
	case "sDeviceSn":
		return p.fastString(&c.DeviceSn)
	case "sHwVersion":
		return p.fastString(&c.HwVersion)
	case "sModelName":
		return p.fastString(&c.ModelName)
	case "sIpAddr":
		return p.fastString(&c.IPAddr)
	case "sMacAddr":
		return p.fastString(&c.MacAddr)
	case "sVPNIpAddr":
		return p.fastString(&c.VPNIPAddr)
	case "sFwVersion":
		return p.fastString(&c.FwVersion)
	case "sAlphaVer":
		return p.fastString(&c.AlphaVer)
	case "sAiModelVer":
		return p.fastString(&c.AiModelVer)
	case "sIEVer":
		return p.fastString(&c.IEVer)
	case "iChnCnt":
		return p.fastIntField(&c.ChnCnt)
	case "iAlarmIn":
		return p.fastIntField(&c.AlarmIn)
	case "iAlarmOut":
		return p.fastIntField(&c.AlarmOut)
	case "iNetMethod":
		return p.fastIntField(&c.NetMethod)
	case "iTFCardState":
		return p.fastIntField(&c.TFCardState)
	case "iTFCardCapacitySize":
		return p.fastInt64Field(&c.TFCardCapacitySize)
	case "iTFCardUseSize":
		return p.fastInt64Field(&c.TFCardUseSize)
	case "sSSID":
		return p.fastString(&c.SSID)
	case "iWifiStrength":
		return p.fastIntField(&c.WifiStrength)
	}
	return fieldUnknown
}

func (h *Heartbeat) fieldNames() string { return "sDeviceSn,iHeartBeat" }

func (h *Heartbeat) decodeField(key []byte, p *envParser) fieldStatus {
	switch string(key) {
	case "sDeviceSn":
		return p.fastString(&h.DeviceSn)
	case "iHeartBeat":
		return p.fastIntField(&h.HeartBeat)
	}
	return fieldUnknown
}

func (c *ConfigurationSN) fieldNames() string { return configurationNames }

func (c *ConfigurationSN) decodeField(key []byte, p *envParser) fieldStatus {
	if string(key) == "sDeviceSn" {
		return p.fastStringPtr(&c.DeviceSn)
	}
	return c.Configuration.decodeField(key, p)
}

func (b *SNBody) fieldNames() string { return "sDeviceSn" }

func (b *SNBody) decodeField(key []byte, p *envParser) fieldStatus {
	if string(key) == "sDeviceSn" {
		return p.fastStringPtr(&b.DeviceSn)
	}
	return fieldUnknown
}

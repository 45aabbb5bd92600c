package rabbit

import (
	"bytes"
	"encoding/json"
	"strconv"
	"unicode/utf8"
)

// This file reads the top level of oslo messages without reflection:
// every message is a JSON object (twice, with the 2.0 envelope) whose
// values the driver reads as strings, numbers, booleans or keeps raw.
// Profiles of the call path showed encoding/json's reflective decoding of
// map[string]json.RawMessage and of single strings as a large share of the
// driver's CPU time. Each function gives exactly what encoding/json would
// (the differential tests in fastjson_test.go check it), falling back to
// encoding/json for what it does not handle itself.

// parseObject splits a JSON object into its keys and raw values, as
// json.Unmarshal into map[string]json.RawMessage does (the last of
// duplicate keys wins). ok is false when raw is not valid JSON or not an
// object; null gives (nil, true), like json.Unmarshal.
func parseObject(raw []byte) (m message, ok bool) {
	if !json.Valid(raw) {
		return nil, false
	}
	return splitObject(raw)
}

// splitObject is parseObject for raw already known to be valid JSON.
func splitObject(raw []byte) (m message, ok bool) {
	m = make(message, 8)
	ok = eachMember(raw, func(key string, val []byte) { m[key] = json.RawMessage(val) })
	if !ok {
		return nil, false
	}
	if raw[skipSpace(raw, 0)] == 'n' {
		return nil, true
	}
	return m, true
}

// eachMember calls f for every member of the object in raw (valid JSON),
// in order. It reports false when raw is not an object (null included,
// which callers tell apart).
func eachMember(raw []byte, f func(key string, val []byte)) bool {
	i := skipSpace(raw, 0)
	if raw[i] == 'n' { // null
		return true
	}
	if raw[i] != '{' {
		return false
	}
	i = skipSpace(raw, i+1)
	if raw[i] == '}' {
		return true
	}
	for {
		end := scanString(raw, i)
		key, ok := unquoteKey(raw[i:end])
		if !ok {
			return false
		}
		i = skipSpace(raw, end)
		i = skipSpace(raw, i+1) // ':'
		vend := skipValue(raw, i)
		f(key, raw[i:vend:vend])
		i = skipSpace(raw, vend)
		if raw[i] == '}' {
			return true
		}
		i = skipSpace(raw, i+1) // ','
	}
}

// wellKnownKeys are the keys oslo messages carry, so that reading them
// allocates nothing.
var wellKnownKeys = func() map[string]string {
	m := map[string]string{}
	for _, k := range []string{"oslo.version", "oslo.message", "method", "args", "namespace", "version",
		"_msg_id", "_reply_q", "_timeout", "_unique_id", "result", "failure", "ending",
		"message_id", "publisher_id", "event_type", "priority", "payload", "timestamp"} {
		m[k] = k
	}
	return m
}()

func unquoteKey(lit []byte) (string, bool) {
	if len(lit) >= 2 {
		if k, ok := wellKnownKeys[string(lit[1:len(lit)-1])]; ok { // no allocation for the lookup
			return k, true
		}
	}
	return unquote(lit)
}

func skipSpace(raw []byte, i int) int {
	for i < len(raw) {
		switch raw[i] {
		case ' ', '\t', '\n', '\r':
			i++
		default:
			return i
		}
	}
	return i
}

// skipValue returns the index just past the JSON value at raw[i] (raw is
// valid JSON).
func skipValue(raw []byte, i int) int {
	switch raw[i] {
	case '"':
		return scanString(raw, i)
	case '{', '[':
		depth := 0
		for j := i; j < len(raw); j++ {
			switch raw[j] {
			case '"':
				j = scanString(raw, j) - 1
			case '{', '[':
				depth++
			case '}', ']':
				depth--
				if depth == 0 {
					return j + 1
				}
			}
		}
		return len(raw)
	default: // number, true, false, null
		j := i
		for j < len(raw) {
			switch raw[j] {
			case ',', '}', ']', ' ', '\t', '\n', '\r':
				return j
			}
			j++
		}
		return j
	}
}

// unquote decodes a JSON string literal as json.Unmarshal into a string
// does. Literals with \u escapes or bytes that are not valid UTF-8 (which
// encoding/json replaces with U+FFFD) go through encoding/json.
func unquote(lit []byte) (string, bool) {
	b, ok, fresh := unquoteBytes(lit)
	if !ok {
		return "", false
	}
	if fresh == nil {
		return string(b), true
	}
	return *fresh, true
}

// unquoteBytes is unquote returning bytes; when it had to go through
// encoding/json it also returns the string it got (fresh), so unquote
// does not copy it again.
func unquoteBytes(lit []byte) (b []byte, ok bool, fresh *string) {
	if len(lit) < 2 || lit[0] != '"' || lit[len(lit)-1] != '"' {
		return nil, false, nil
	}
	body := lit[1 : len(lit)-1]
	esc := bytes.IndexByte(body, '\\')
	if esc < 0 {
		for _, c := range body {
			if c < 0x20 {
				return nil, false, nil
			}
		}
		if !utf8.Valid(body) {
			return slowUnquote(lit)
		}
		return body, true, nil
	}
	out := make([]byte, 0, len(body))
	out = append(out, body[:esc]...)
	for i := esc; i < len(body); i++ {
		c := body[i]
		if c < 0x20 {
			return nil, false, nil
		}
		if c != '\\' {
			out = append(out, c)
			continue
		}
		i++
		if i >= len(body) {
			return nil, false, nil
		}
		switch body[i] {
		case '"', '\\', '/':
			out = append(out, body[i])
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
		default: // \uXXXX: surrogate pairs and their errors are encoding/json's business
			return slowUnquote(lit)
		}
	}
	if !utf8.Valid(out) {
		return slowUnquote(lit)
	}
	return out, true, nil
}

func slowUnquote(lit []byte) ([]byte, bool, *string) {
	var s string
	if err := json.Unmarshal(lit, &s); err != nil {
		return nil, false, nil
	}
	return []byte(s), true, &s
}

// rawString reads a raw JSON value as a string: ok is false for anything
// but a string literal.
func rawString(raw json.RawMessage) (string, bool) {
	raw = bytes.TrimSpace(raw)
	if len(raw) == 0 || raw[0] != '"' {
		return "", false
	}
	return unquote(raw)
}

// rawStringBytes is rawString without the copy into a string.
func rawStringBytes(raw []byte) ([]byte, bool) {
	raw = bytes.TrimSpace(raw)
	if len(raw) == 0 || raw[0] != '"' {
		return nil, false
	}
	b, ok, _ := unquoteBytes(raw)
	return b, ok
}

// rawBool reads a raw JSON true or false.
func rawBool(raw json.RawMessage) (v, ok bool) {
	switch string(bytes.TrimSpace(raw)) {
	case "true":
		return true, true
	case "false":
		return false, true
	}
	return false, false
}

// rawNumber reads a raw JSON number as json.Unmarshal into float64 does.
func rawNumber(raw json.RawMessage) (float64, bool) {
	raw = bytes.TrimSpace(raw)
	if len(raw) == 0 || !(raw[0] == '-' || raw[0] >= '0' && raw[0] <= '9') || !json.Valid(raw) {
		return 0, false
	}
	f, err := strconv.ParseFloat(string(raw), 64)
	return f, err == nil
}

// rawAny reads a raw JSON value as json.Unmarshal into any does, with
// scalars read directly.
func rawAny(raw json.RawMessage) (any, error) {
	t := bytes.TrimSpace(raw)
	if len(t) > 0 {
		switch t[0] {
		case 'n':
			if string(t) == "null" {
				return nil, nil
			}
		case 't', 'f':
			if b, ok := rawBool(t); ok {
				return b, nil
			}
		case '"':
			if s, ok := unquote(t); ok {
				return s, nil
			}
		default:
			if f, ok := rawNumber(t); ok {
				return f, nil
			}
		}
	}
	var v any
	err := json.Unmarshal(raw, &v)
	return v, err
}

package rabbit

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"unicode/utf16"
	"unicode/utf8"
)

// This file writes JSON the way Python's json.dumps does with its defaults
// (oslo_serialization.jsonutils.dumps): ", " and ": " separators, every
// non-ASCII character escaped as \uXXXX (surrogate pairs above the BMP),
// and '<', '>', '&' written as is. Python peers accept any valid JSON, but
// writing the same bytes keeps the wire identical to a Python sender.

const hexDigits = "0123456789abcdef"

// appendPyString appends s as a Python-style JSON string literal. It takes
// bytes as well, so that envelope need not copy the inner message into a
// string first.
func appendPyString[S string | []byte](dst []byte, s S) []byte {
	dst = append(dst, '"')
	start := 0
	for i := 0; i < len(s); {
		c := s[i]
		if c >= 0x20 && c < 0x7f && c != '"' && c != '\\' {
			i++
			continue
		}
		dst = append(dst, s[start:i]...)
		if c < utf8.RuneSelf {
			switch c {
			case '"':
				dst = append(dst, '\\', '"')
			case '\\':
				dst = append(dst, '\\', '\\')
			case '\n':
				dst = append(dst, '\\', 'n')
			case '\r':
				dst = append(dst, '\\', 'r')
			case '\t':
				dst = append(dst, '\\', 't')
			case '\b':
				dst = append(dst, '\\', 'b')
			case '\f':
				dst = append(dst, '\\', 'f')
			default: // other control characters and DEL
				dst = appendU(dst, rune(c))
			}
			i++
			start = i
			continue
		}
		// At most 4 bytes: the conversion stays on the stack.
		r, size := utf8.DecodeRuneInString(string(s[i:min(i+utf8.UTFMax, len(s))]))
		if r >= 0x10000 {
			r1, r2 := utf16.EncodeRune(r)
			dst = appendU(appendU(dst, r1), r2)
		} else {
			// An invalid byte decodes as U+FFFD, as Python's surrogateescape-free
			// utf-8 decoding of a Go string would replace it.
			dst = appendU(dst, r)
		}
		i += size
		start = i
	}
	dst = append(dst, s[start:]...)
	return append(dst, '"')
}

func appendU(dst []byte, r rune) []byte {
	return append(dst, '\\', 'u', hexDigits[r>>12&0xf], hexDigits[r>>8&0xf], hexDigits[r>>4&0xf], hexDigits[r&0xf])
}

// appendPyJSON re-writes the valid JSON document raw in Python's style.
// Key order and number spelling are kept.
func appendPyJSON(dst, raw []byte) ([]byte, error) {
	raw = bytes.TrimSpace(raw)
	if len(raw) == 0 {
		return append(dst, "null"...), nil
	}
	if !json.Valid(raw) {
		return dst, errors.New("rabbit: invalid JSON value")
	}
	var scratch []byte
	for i := 0; i < len(raw); {
		c := raw[i]
		switch c {
		case ' ', '\t', '\n', '\r':
			i++
		case ',':
			dst = append(dst, ',', ' ')
			i++
		case ':':
			dst = append(dst, ':', ' ')
			i++
		case '"':
			end := scanString(raw, i)
			lit := raw[i:end]
			if isPlainASCII(lit) {
				dst = append(dst, lit...)
			} else {
				var s string
				if err := json.Unmarshal(lit, &s); err != nil {
					return dst, fmt.Errorf("rabbit: invalid JSON string: %w", err)
				}
				scratch = appendPyString(scratch[:0], s)
				dst = append(dst, scratch...)
			}
			i = end
		default:
			dst = append(dst, c)
			i++
		}
	}
	return dst, nil
}

// scanString returns the index just past the string literal starting at
// raw[i] (raw is valid JSON).
func scanString(raw []byte, i int) int {
	for j := i + 1; j < len(raw); j++ {
		switch raw[j] {
		case '\\':
			j++
		case '"':
			return j + 1
		}
	}
	return len(raw)
}

// isPlainASCII reports whether a string literal is already in Python's
// spelling: printable ASCII with only the short escapes Python uses.
func isPlainASCII(lit []byte) bool {
	for j := 1; j < len(lit)-1; j++ {
		c := lit[j]
		if c < 0x20 || c >= 0x7f {
			return false
		}
		if c == '\\' {
			j++
			switch lit[j] {
			case '"', '\\', 'n', 'r', 't', 'b', 'f':
			default: // \/ and \uXXXX may spell characters Python writes plainly
				return false
			}
		}
	}
	return true
}

// pyMarshal encodes v with encoding/json, then re-writes it in Python's
// style. The values request contexts are mostly made of (strings, booleans,
// null, integers, lists of strings) are written directly, with the same
// bytes.
func pyMarshal(v any) ([]byte, error) {
	if b, ok := appendPyScalar(nil, v); ok {
		return b, nil
	}
	return pyMarshalSlow(v)
}

// appendPyScalar writes v when it is one of the common context value
// types; ok is false for anything else.
func appendPyScalar(dst []byte, v any) ([]byte, bool) {
	switch x := v.(type) {
	case nil:
		return append(dst, "null"...), true
	case string:
		return appendPyString(dst, x), true
	case bool:
		return strconv.AppendBool(dst, x), true
	case int:
		return strconv.AppendInt(dst, int64(x), 10), true
	case int64:
		return strconv.AppendInt(dst, x, 10), true
	case []string:
		if x == nil {
			return append(dst, "null"...), true
		}
		dst = append(dst, '[')
		for i, e := range x {
			if i > 0 {
				dst = append(dst, ',', ' ')
			}
			dst = appendPyString(dst, e)
		}
		return append(dst, ']'), true
	case []any:
		if x == nil {
			return append(dst, "null"...), true
		}
		start := len(dst)
		dst = append(dst, '[')
		for i, e := range x {
			if i > 0 {
				dst = append(dst, ',', ' ')
			}
			var ok bool
			if _, isList := e.([]any); isList {
				return dst[:start], false // nested lists: the general path
			}
			if dst, ok = appendPyScalar(dst, e); !ok {
				return dst[:start], false
			}
		}
		return append(dst, ']'), true
	}
	return dst, false
}

// pyMarshalSlow is pyMarshal through encoding/json.
func pyMarshalSlow(v any) ([]byte, error) {
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(v); err != nil {
		return nil, err
	}
	return appendPyJSON(nil, buf.Bytes())
}

// tolerantJSON replaces Python's non-standard NaN, Infinity and -Infinity
// tokens (outside strings) with null so that encoding/json can read a
// message a Python peer wrote from float('nan'). It returns raw unchanged
// when there is nothing to replace.
func tolerantJSON(raw []byte) []byte {
	if !bytes.Contains(raw, []byte("NaN")) && !bytes.Contains(raw, []byte("Infinity")) {
		return raw
	}
	out := make([]byte, 0, len(raw))
	for i := 0; i < len(raw); {
		c := raw[i]
		switch {
		case c == '"':
			end := scanString(raw, i)
			out = append(out, raw[i:end]...)
			i = end
		case bytes.HasPrefix(raw[i:], []byte("NaN")):
			out = append(out, "null"...)
			i += 3
		case bytes.HasPrefix(raw[i:], []byte("-Infinity")):
			out = append(out, "null"...)
			i += 9
		case bytes.HasPrefix(raw[i:], []byte("Infinity")):
			out = append(out, "null"...)
			i += 8
		default:
			out = append(out, c)
			i++
		}
	}
	return out
}

// pyFloatSeconds writes a duration in seconds as Python would print the
// number given by the user: an integer when whole, else a float.
func pyFloatSeconds(secs float64) []byte {
	if secs == float64(int64(secs)) {
		return strconv.AppendInt(nil, int64(secs), 10)
	}
	return strconv.AppendFloat(nil, secs, 'g', -1, 64)
}

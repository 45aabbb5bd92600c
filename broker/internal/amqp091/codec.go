package amqp091

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"time"
)

// ErrMalformed reports a frame, method or table that cannot be decoded.
var ErrMalformed = errors.New("amqp091: malformed data")

// Method is one decoded AMQP method.
type Method interface {
	ClassID() uint16
	MethodID() uint16
	Name() string
	HasContent() bool
	Synchronous() bool
	Read(r *Reader) error
	Append(buf []byte) []byte
}

// UnknownMethodError reports a class/method pair the spec does not define.
type UnknownMethodError struct {
	ClassID, MethodID uint16
}

func (e *UnknownMethodError) Error() string {
	return fmt.Sprintf("amqp091: unknown method %d.%d", e.ClassID, e.MethodID)
}

// Table is an AMQP field table. Values have the Go types listed at
// ReadTable.
type Table map[string]any

// Decimal is the AMQP decimal value: Value / 10^Scale.
type Decimal struct {
	Scale uint8
	Value int32
}

// Reader decodes AMQP primitive types from a byte slice. The first error
// sticks; later reads return zero values.
type Reader struct {
	buf []byte
	pos int
	err error
}

// NewReader returns a Reader over b.
func NewReader(b []byte) *Reader { return &Reader{buf: b} }

// Err returns the first decoding error.
func (r *Reader) Err() error { return r.err }

// Remaining returns the unread bytes.
func (r *Reader) Remaining() []byte { return r.buf[r.pos:] }

func (r *Reader) need(n int) bool {
	if r.err != nil {
		return false
	}
	if n < 0 || len(r.buf)-r.pos < n {
		r.err = fmt.Errorf("%w: need %d bytes, have %d", ErrMalformed, n, len(r.buf)-r.pos)
		return false
	}
	return true
}

// ReadOctet reads one byte.
func (r *Reader) ReadOctet() uint8 {
	if !r.need(1) {
		return 0
	}
	v := r.buf[r.pos]
	r.pos++
	return v
}

// ReadShort reads a big-endian uint16.
func (r *Reader) ReadShort() uint16 {
	if !r.need(2) {
		return 0
	}
	v := binary.BigEndian.Uint16(r.buf[r.pos:])
	r.pos += 2
	return v
}

// ReadLong reads a big-endian uint32.
func (r *Reader) ReadLong() uint32 {
	if !r.need(4) {
		return 0
	}
	v := binary.BigEndian.Uint32(r.buf[r.pos:])
	r.pos += 4
	return v
}

// ReadLonglong reads a big-endian uint64.
func (r *Reader) ReadLonglong() uint64 {
	if !r.need(8) {
		return 0
	}
	v := binary.BigEndian.Uint64(r.buf[r.pos:])
	r.pos += 8
	return v
}

// ReadShortstr reads a string with a one-byte length.
func (r *Reader) ReadShortstr() string {
	n := int(r.ReadOctet())
	if !r.need(n) {
		return ""
	}
	s := string(r.buf[r.pos : r.pos+n])
	r.pos += n
	return s
}

// ReadLongBytes reads bytes with a four-byte length, without copying.
func (r *Reader) ReadLongBytes() []byte {
	n := int(r.ReadLong())
	if !r.need(n) {
		return nil
	}
	b := r.buf[r.pos : r.pos+n : r.pos+n]
	r.pos += n
	return b
}

// ReadLongstr reads a string with a four-byte length.
func (r *Reader) ReadLongstr() string { return string(r.ReadLongBytes()) }

// maxDepth bounds nested tables and arrays so hostile input cannot exhaust
// the stack.
const maxDepth = 32

// ReadTable reads a field table. Value types: bool (t), int8 (b), uint8
// (B), int16 (s, as RabbitMQ uses it), uint16 (u), int32 (I), uint32 (i),
// int64 (l), float32 (f), float64 (d), Decimal (D), string (S), []byte (x),
// []any (A), time.Time (T), Table (F), nil (V).
func (r *Reader) ReadTable() Table { return r.readTable(0) }

func (r *Reader) readTable(depth int) Table {
	b := r.ReadLongBytes()
	if r.err != nil {
		return nil
	}
	if depth > maxDepth {
		r.err = fmt.Errorf("%w: tables nested too deep", ErrMalformed)
		return nil
	}
	t := Table{}
	sub := Reader{buf: b}
	for sub.pos < len(sub.buf) && sub.err == nil {
		k := sub.ReadShortstr()
		v := sub.readValue(depth + 1)
		if sub.err == nil {
			t[k] = v
		}
	}
	if sub.err != nil {
		r.err = sub.err
		return nil
	}
	return t
}

func (r *Reader) readValue(depth int) any {
	switch c := r.ReadOctet(); c {
	case 't':
		return r.ReadOctet() != 0
	case 'b':
		return int8(r.ReadOctet())
	case 'B':
		return r.ReadOctet()
	case 's':
		return int16(r.ReadShort())
	case 'u':
		return r.ReadShort()
	case 'I':
		return int32(r.ReadLong())
	case 'i':
		return r.ReadLong()
	case 'l':
		return int64(r.ReadLonglong())
	case 'f':
		return math.Float32frombits(r.ReadLong())
	case 'd':
		return math.Float64frombits(r.ReadLonglong())
	case 'D':
		s := r.ReadOctet()
		return Decimal{Scale: s, Value: int32(r.ReadLong())}
	case 'S':
		return r.ReadLongstr()
	case 'x':
		return append([]byte(nil), r.ReadLongBytes()...)
	case 'T':
		return time.Unix(int64(r.ReadLonglong()), 0).UTC()
	case 'F':
		return r.readTable(depth)
	case 'A':
		b := r.ReadLongBytes()
		if r.err != nil {
			return nil
		}
		if depth > maxDepth {
			r.err = fmt.Errorf("%w: arrays nested too deep", ErrMalformed)
			return nil
		}
		arr := []any{}
		sub := Reader{buf: b}
		for sub.pos < len(sub.buf) && sub.err == nil {
			v := sub.readValue(depth + 1)
			if sub.err == nil {
				arr = append(arr, v)
			}
		}
		if sub.err != nil {
			r.err = sub.err
			return nil
		}
		return arr
	case 'V':
		return nil
	default:
		if r.err == nil {
			r.err = fmt.Errorf("%w: unknown field type %q", ErrMalformed, c)
		}
		return nil
	}
}

// AppendOctet appends one byte.
func AppendOctet(b []byte, v uint8) []byte { return append(b, v) }

// AppendShort appends a big-endian uint16.
func AppendShort(b []byte, v uint16) []byte { return binary.BigEndian.AppendUint16(b, v) }

// AppendLong appends a big-endian uint32.
func AppendLong(b []byte, v uint32) []byte { return binary.BigEndian.AppendUint32(b, v) }

// AppendLonglong appends a big-endian uint64.
func AppendLonglong(b []byte, v uint64) []byte { return binary.BigEndian.AppendUint64(b, v) }

// AppendShortstr appends a short string, truncated to 255 bytes.
func AppendShortstr(b []byte, s string) []byte {
	if len(s) > 255 {
		s = s[:255]
	}
	b = append(b, byte(len(s)))
	return append(b, s...)
}

// AppendLongstr appends a long string.
func AppendLongstr(b []byte, s string) []byte {
	b = AppendLong(b, uint32(len(s)))
	return append(b, s...)
}

// AppendTable appends a field table. Keys are written in map order, which
// AMQP allows.
func AppendTable(b []byte, t Table) []byte {
	start := len(b)
	b = append(b, 0, 0, 0, 0)
	for k, v := range t {
		b = AppendShortstr(b, k)
		b = appendValue(b, v)
	}
	binary.BigEndian.PutUint32(b[start:], uint32(len(b)-start-4))
	return b
}

func appendValue(b []byte, v any) []byte {
	switch v := v.(type) {
	case bool:
		if v {
			return append(b, 't', 1)
		}
		return append(b, 't', 0)
	case int8:
		return append(b, 'b', byte(v))
	case uint8:
		return append(b, 'B', v)
	case int16:
		return AppendShort(append(b, 's'), uint16(v))
	case uint16:
		return AppendShort(append(b, 'u'), v)
	case int32:
		return AppendLong(append(b, 'I'), uint32(v))
	case uint32:
		return AppendLong(append(b, 'i'), v)
	case int64:
		return AppendLonglong(append(b, 'l'), uint64(v))
	case int:
		return AppendLonglong(append(b, 'l'), uint64(v))
	case uint64:
		return AppendLonglong(append(b, 'l'), v)
	case float32:
		return AppendLong(append(b, 'f'), math.Float32bits(v))
	case float64:
		return AppendLonglong(append(b, 'd'), math.Float64bits(v))
	case Decimal:
		return AppendLong(append(b, 'D', v.Scale), uint32(v.Value))
	case string:
		return AppendLongstr(append(b, 'S'), v)
	case []byte:
		b = AppendLong(append(b, 'x'), uint32(len(v)))
		return append(b, v...)
	case time.Time:
		return AppendLonglong(append(b, 'T'), uint64(v.Unix()))
	case Table:
		return AppendTable(append(b, 'F'), v)
	case map[string]any:
		return AppendTable(append(b, 'F'), Table(v))
	case []any:
		b = append(b, 'A')
		start := len(b)
		b = append(b, 0, 0, 0, 0)
		for _, e := range v {
			b = appendValue(b, e)
		}
		binary.BigEndian.PutUint32(b[start:], uint32(len(b)-start-4))
		return b
	case nil:
		return append(b, 'V')
	default:
		// Unknown Go types are encoded as void rather than corrupting the table.
		return append(b, 'V')
	}
}

package broker

import (
	"encoding/binary"
	"strconv"
	"sync/atomic"

	"github.com/oslogo/oslogo/broker/internal/amqp091"
)

// message is one published message, shared (read-only) by every queue it
// was routed to.
type message struct {
	exchange   string
	routingKey string
	// props is the raw content-header property list (flags first), passed
	// through to consumers unchanged.
	props      []byte
	body       []byte
	persistent bool
	priority   uint8
	// ttl is the per-message expiration in ms, -1 when absent.
	ttl int64
	// refs counts the holders keeping it in memory (see mem.go).
	refs atomic.Int32
}

func (m *message) size() int64 { return int64(len(m.body)) }

// headers decodes the headers table; only headers exchanges and
// dead-lettering need it, so it is not kept.
func (m *message) headers() amqp091.Table {
	var p amqp091.BasicProperties
	if p.Read(amqp091.NewReader(m.props)) != nil {
		return nil
	}
	return p.Headers
}

// scanProps reads the fields the broker acts on straight from the raw
// property bytes, without allocating.
func scanProps(p []byte) (persistent bool, priority uint8, ttl int64, ok bool) {
	ttl = -1
	if len(p) < 2 {
		return false, 0, -1, false
	}
	flags := binary.BigEndian.Uint16(p)
	pos := 2
	if flags&1 != 0 {
		return false, 0, -1, false
	}
	shortstr := func() (string, bool) {
		if pos >= len(p) {
			return "", false
		}
		n := int(p[pos])
		if pos+1+n > len(p) {
			return "", false
		}
		s := p[pos+1 : pos+1+n]
		pos += 1 + n
		return string(s), true
	}
	skipShort := func() bool { _, ok := shortstrNoAlloc(p, &pos); return ok }
	if flags&amqp091.FlagContentType != 0 && !skipShort() {
		return
	}
	if flags&amqp091.FlagContentEncoding != 0 && !skipShort() {
		return
	}
	if flags&amqp091.FlagHeaders != 0 {
		if pos+4 > len(p) {
			return
		}
		n := int(binary.BigEndian.Uint32(p[pos:]))
		if n < 0 || pos+4+n > len(p) {
			return
		}
		pos += 4 + n
	}
	if flags&amqp091.FlagDeliveryMode != 0 {
		if pos >= len(p) {
			return
		}
		persistent = p[pos] == 2
		pos++
	}
	if flags&amqp091.FlagPriority != 0 {
		if pos >= len(p) {
			return
		}
		priority = p[pos]
		pos++
	}
	if flags&amqp091.FlagCorrelationId != 0 && !skipShort() {
		return
	}
	if flags&amqp091.FlagReplyTo != 0 && !skipShort() {
		return
	}
	if flags&amqp091.FlagExpiration != 0 {
		s, ok2 := shortstr()
		if !ok2 {
			return
		}
		v, err := strconv.ParseInt(s, 10, 64)
		if err != nil || v < 0 {
			return persistent, priority, -2, true
		}
		ttl = v
	}
	return persistent, priority, ttl, true
}

func shortstrNoAlloc(p []byte, pos *int) ([]byte, bool) {
	if *pos >= len(p) {
		return nil, false
	}
	n := int(p[*pos])
	if *pos+1+n > len(p) {
		return nil, false
	}
	s := p[*pos+1 : *pos+1+n]
	*pos += 1 + n
	return s, true
}

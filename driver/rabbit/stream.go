package rabbit

import (
	"sync"

	amqp "github.com/rabbitmq/amqp091-go"
)

// streamCursor is where a stream consumer (rabbit_stream_fanout) reads
// from: "last" (the last chunk of the stream) until a message is handed
// over, then the offset after the last one handed over, so that a
// consumer that reconnects reads every message it had not handed over
// and none twice. A basic.cancel from the broker puts it back to "last",
// as 18.1's reset_stream_offset does.
type streamCursor struct {
	mu   sync.Mutex
	next int64 // -1: "last"
}

func newStreamCursor() *streamCursor { return &streamCursor{next: -1} }

// offsetArg is the x-stream-offset of the next basic.consume.
func (s *streamCursor) offsetArg() any {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.next < 0 {
		return "last"
	}
	return s.next
}

// take records that the message at off, received on ch, is handed over,
// and reports whether to hand it over: false when ch has closed meanwhile
// (the consumer reading the stream again may already have asked for off:
// the message comes again there), or when off comes before the next
// offset expected (handed over already; "last" after a reset takes
// anything). Checked under the cursor's lock, which offsetArg takes after
// the old channel closed, so each offset is handed over once.
func (s *streamCursor) take(ch *amqp.Channel, off int64) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if ch.IsClosed() || (s.next >= 0 && off < s.next) {
		return false
	}
	s.next = off + 1
	return true
}

func (s *streamCursor) reset() {
	s.mu.Lock()
	s.next = -1
	s.mu.Unlock()
}

// streamOffset reads the x-stream-offset header RabbitMQ puts on each
// message a stream delivers; -1 when there is none.
func streamOffset(h amqp.Table) int64 {
	switch v := h["x-stream-offset"].(type) {
	case int64:
		return v
	case int32:
		return int64(v)
	case int16:
		return int64(v)
	case int8:
		return int64(v)
	case int:
		return int64(v)
	case uint64:
		return int64(v)
	case uint32:
		return int64(v)
	case uint16:
		return int64(v)
	case uint8:
		return int64(v)
	}
	return -1
}

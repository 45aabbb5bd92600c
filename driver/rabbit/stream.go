package rabbit

import (
	"sync"

	amqp "github.com/rabbitmq/amqp091-go"
)

// streamCursor is where a stream consumer (rabbit_stream_fanout) reads
// from, so that a server hands each message of the stream over once,
// across reconnects, while several goroutines take messages from the
// listener at once (so that they are handed over out of order).
//
// A new consumer reads from "last" (the stream's last chunk), as 18.1.
// Messages are admitted in delivery order (admit, by the consumer's
// goroutine) and handed over in any order (take). When the consumer
// subscribes again, it reads from the lowest offset admitted and not yet
// handed over (those were lost with the channel), or from the one after
// the highest handed over; RabbitMQ starts at the beginning of the chunk
// holding that offset, so what comes before it is dropped, and so is what
// was handed over at or after it. A basic.cancel from the broker puts the
// cursor back to "last" (18.1's reset_stream_offset: the stream may have
// been deleted and its offsets started over).
//
// Every set is bounded by the messages in flight: the prefetch count plus
// the listener's buffer.
type streamCursor struct {
	mu      sync.Mutex
	max     int64              // highest offset handed over; -1: none yet (read from "last")
	pending map[int64]struct{} // admitted on the current subscription, not yet handed over
	handed  map[int64]struct{} // handed over while a lower offset was pending
	start   int64              // the current subscription's first offset; -1: from "last"
	skip    map[int64]struct{} // handed over before the current subscription, at or after start
}

func newStreamCursor() *streamCursor {
	return &streamCursor{max: -1, start: -1, pending: map[int64]struct{}{}, handed: map[int64]struct{}{}, skip: map[int64]struct{}{}}
}

// offsetArg is the x-stream-offset of a new subscription; it starts the
// subscription.
func (s *streamCursor) offsetArg() any {
	s.mu.Lock()
	defer s.mu.Unlock()
	from := int64(-1)
	if lo, ok := s.lowestPending(); ok {
		from = lo
	} else if s.max >= 0 {
		from = s.max + 1
	}
	clear(s.skip)
	for o := range s.handed {
		if o >= from {
			s.skip[o] = struct{}{}
		}
	}
	clear(s.pending)
	clear(s.handed)
	s.start = from
	if from < 0 {
		return "last"
	}
	return from
}

func (s *streamCursor) lowestPending() (int64, bool) {
	lo, ok := int64(0), false
	for o := range s.pending {
		if !ok || o < lo {
			lo, ok = o, true
		}
	}
	return lo, ok
}

// admit reports whether the message at off, just delivered on the current
// subscription, is to be handed over: false for what the subscription
// reads again before its start, or what was handed over already.
func (s *streamCursor) admit(off int64) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.start >= 0 && off < s.start {
		return false
	}
	if _, ok := s.skip[off]; ok {
		delete(s.skip, off)
		return false
	}
	s.pending[off] = struct{}{}
	return true
}

// take records that the message at off, received on ch, is handed over;
// false when ch has closed meanwhile: the subscription that replaces it
// reads the message again (offsetArg runs after the old channel closed,
// under the same lock).
func (s *streamCursor) take(ch *amqp.Channel, off int64) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if ch.IsClosed() {
		return false
	}
	delete(s.pending, off)
	if off > s.max {
		s.max = off
	}
	lo, ok := s.lowestPending()
	if ok && lo < off {
		s.handed[off] = struct{}{}
	}
	for o := range s.handed {
		if !ok || o < lo {
			delete(s.handed, o) // below every future start
		}
	}
	return true
}

// reset reads the stream from "last" again.
func (s *streamCursor) reset() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.max, s.start = -1, -1
	clear(s.pending)
	clear(s.handed)
	clear(s.skip)
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

package broker

import "unsafe"

// Memory accounting. The counter behind the high watermark (Server.addQueued)
// holds every byte the broker keeps for messages, not only queued bodies:
//
//   - a message, once, while any queue entry (ready or unacknowledged) or an
//     open transaction holds it: msgOverhead plus its property and body bytes;
//   - a paged-out entry's index: pageIndexCost;
//   - a content body being assembled: the capacity allocated so far, which
//     grows with the body frames received, never the announced size;
//   - each paging queue's write and read-ahead buffers.
//
// Holds are reference counts, so a message routed to several queues costs
// its bytes once.

// msgOverhead is what a message costs beyond its property and body bytes:
// the message struct, the rounding of its buffer's allocation, its queue
// entry (ring slot with growth slack) and its unacknowledged-delivery
// record. TestMessageOverheadMatchesHeap measures it.
const msgOverhead = 256

// pageIndexCost is what a paged-out entry keeps in memory: its ring slot
// (rings grow a block at a time; a sixteenth covers the partly filled
// blocks and the block list).
const pageIndexCost = int64(unsafe.Sizeof(qentry{})) * 17 / 16

// cost adds a sixteenth to the buffer for the allocator's size classes
// (up to an eighth more than asked for).
func (m *message) cost() int64 {
	n := int64(len(m.props) + len(m.body))
	return msgOverhead + n + n/16
}

// hold counts m as kept in memory by one more holder.
func (m *message) hold(s *Server) {
	if m.refs.Add(1) == 1 {
		s.addQueued(m.cost())
	}
}

// release drops one holder; the last one uncounts the message.
func (m *message) release(s *Server) {
	if m.refs.Add(-1) == 0 {
		s.addQueued(-m.cost())
	}
}

// unackedShare is what a consumer without a prefetch limit may hold
// unacknowledged, in counted bytes, while counted memory is past the paging
// ratio of the watermark: an eighth of the room between the paging ratio
// and the watermark, at least 1 MiB (64 MiB for the default 1 GiB
// watermark). Beyond it the consumer receives a message for each one it
// acknowledges, and the queue pages the rest (TestSlowConsumerMemoryBounded);
// a consumer holding nothing always gets one message. Consumers with a
// prefetch limit are bounded by it, as the client chose.
func (s *Server) unackedShare() int64 {
	hw := float64(s.highWatermark())
	return max(1<<20, int64(hw*(1-s.opts.PagingRatio)/8))
}

// memoryUsed reports the counted memory (tests and docs use it).
func (s *Server) memoryUsed() int64 { return s.queuedBytes.Load() }

// underPressure reports whether counted memory passed the paging ratio of
// the high watermark: then every queue with waiting messages pages.
func (s *Server) underPressure() bool {
	hw := s.highWatermark()
	return hw > 0 && float64(s.queuedBytes.Load()) > float64(hw)*s.opts.PagingRatio
}

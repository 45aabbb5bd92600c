package broker

import (
	"math"
	"sync"
	"time"

	"github.com/oslogo/oslogo/broker/internal/amqp091"
)

// qentry is a message's place in one queue. An entry with m set holds the
// message in memory (see mem.go); a paged-out entry has m nil and points at
// its record in the queue's page file.
type qentry struct {
	m *message
	// id is the message's record in the store; 0 when not persisted.
	id uint64
	// expireAt is the unix-ms deadline; 0 means never.
	expireAt int64
	page     *pageSeg
	pageOff  int64
	pageLen  uint32
	// bodyLen is the body size of a paged-out message (x-max-length-bytes).
	bodyLen uint32
	// deliveries counts returns to the queue (quorum x-delivery-count).
	deliveries  uint32
	redelivered bool
}

func (e *qentry) bodySize() int64 {
	if e.m != nil {
		return int64(len(e.m.body))
	}
	return int64(e.bodyLen)
}

const (
	overflowDropHead     = "drop-head"
	overflowRejectPub    = "reject-publish"
	overflowRejectPubDLX = "reject-publish-dlx"
)

type queue struct {
	vh         *vhost
	name       string
	key        string // vhost + "\x00" + name, the store's name for it
	durable    bool
	exclusive  bool
	autoDelete bool
	owner      *conn
	args       amqp091.Table
	// stream is the log of a stream queue (stream.go); nil for others.
	stream *streamLog

	quorum        bool
	maxLen        int64
	maxBytes      int64
	overflow      string
	dlx           string
	dlrk          string
	hasDLRK       bool
	msgTTL        int64
	expires       time.Duration
	maxPriority   int
	sac           bool
	deliveryLimit int64

	mu         sync.Mutex
	ready      []ring[qentry] // one per priority level
	readyCount int
	readyBytes int64
	// memBytes is the counted cost of ready messages held in memory;
	// paged counts ready entries paged out to pg.
	memBytes  int64
	paged     int
	pg        *pager
	unacked   int
	consumers []*consumer
	// mixedPriority: consumers do not all have the same x-priority.
	mixedPriority bool
	rr            int
	hadConsumer   bool
	deleted       bool
	ttlTimer      *time.Timer
	ttlAt         int64
	expTimer      *time.Timer
	useGen        uint64
}

type consumer struct {
	// soff is a stream consumer's next offset, guarded by q.mu.
	soff      int64
	tag       string
	ch        *channel
	q         *queue
	noAck     bool
	exclusive bool
	prefetch  int
	priority  int64 // x-priority: higher receives first while it has capacity
	// unacked is guarded by ch.mu.
	unacked int
}

func nowMS() int64 { return time.Now().UnixMilli() }

// deadLetter is a message leaving a queue for its dead-letter exchange,
// routed after the queue's lock is released.
type deadLetter struct {
	e      qentry
	reason string
}

func (q *queue) levelOf(m *message) int {
	if q.maxPriority == 0 {
		return 0
	}
	return min(int(m.priority), q.maxPriority)
}

// pushLocked adds e, whose message is in memory, to the ready list; at the
// back it may go to the page file instead.
func (q *queue) pushLocked(e qentry, front bool) {
	lv := &q.ready[q.levelOf(e.m)]
	if !front && q.shouldPageLocked(e.m) {
		// Well above one read-ahead run, so a run just read back is not
		// written out again at once.
		if q.memBytes > 4*pageReadAhead && q.vh.srv.underPressure() {
			q.pageOutReadyLocked()
		}
		q.pageOutLocked(&e)
	}
	if front {
		lv.PushFront(e)
	} else {
		lv.PushBack(e)
	}
	q.readyCount++
	q.readyBytes += e.bodySize()
	if e.m != nil {
		q.memBytes += e.m.cost()
	}
}

// shouldPageLocked decides whether a message joining the back of the queue
// goes to the page file: once the queue pages, while its messages in memory
// pass QueueMemoryLimit, or, when counted memory is past the paging ratio
// of the watermark, whenever messages are already waiting.
func (q *queue) shouldPageLocked(m *message) bool {
	o := &q.vh.srv.opts
	if o.QueueMemoryLimit < 0 || len(m.body) > math.MaxInt32 {
		return false
	}
	if q.pg != nil && q.pg.failed && nowMS()-q.pg.failedAt < 1000 {
		return false // retried a second after a failed write
	}
	if q.paged > 0 || q.memBytes+m.cost() > o.QueueMemoryLimit {
		return true
	}
	return q.readyCount > 0 && q.vh.srv.underPressure()
}

// pageOutLocked writes e's message to the page file and releases it; e
// must not be in a ready ring (its cost is not in memBytes). On a write
// error e is left in memory.
func (q *queue) pageOutLocked(e *qentry) {
	if q.pg == nil {
		q.pg = &pager{srv: q.vh.srv}
	}
	seg, off, n, ok := q.pg.write(e.m)
	if !ok {
		return
	}
	m := e.m
	e.m, e.page, e.pageOff, e.pageLen, e.bodyLen = nil, seg, off, n, uint32(len(m.body))
	m.release(q.vh.srv)
	q.paged++
	q.vh.srv.addQueued(pageIndexCost)
}

// pageOutReadyLocked pages out the ready messages held in memory, but the
// head of each priority level, in queue order.
func (q *queue) pageOutReadyLocked() {
	for lv := range q.ready {
		r := &q.ready[lv]
		for i := 1; i < r.Len(); i++ {
			e := r.At(i)
			if e.m == nil {
				continue
			}
			c := e.m.cost()
			q.pageOutLocked(e)
			if e.m != nil {
				return
			}
			q.memBytes -= c
		}
	}
}

// pageInLocked reads back the paged-out head of level lv together with the
// neighbouring records that follow it, up to pageReadAhead bytes and
// pageReadAheadCount records. An
// unreadable record is dropped and logged: the head then moves on.
func (q *queue) pageInLocked(lv int) {
	r := &q.ready[lv]
	if q.pg == nil {
		// The files were closed (queue deleted or broker stopped).
		q.forgetLocked(q.popLocked(lv))
		return
	}
	first := r.Front()
	seg, start := first.page, first.pageOff
	end := start + int64(first.pageLen)
	n := 1
	for n < r.Len() && n < pageReadAheadCount {
		e := r.At(n)
		if e.m != nil || e.page != seg || e.pageOff != end || end-start+int64(e.pageLen) > pageReadAhead {
			break
		}
		end += int64(e.pageLen)
		n++
	}
	var data []byte
	own := n == 1
	if own {
		data = make([]byte, end-start)
	} else {
		if q.pg.scratch == nil {
			q.pg.scratch = make([]byte, pageReadAhead)
			q.vh.srv.addQueued(pageReadAhead)
		}
		data = q.pg.scratch[:end-start]
	}
	err := q.pg.read(seg, start, data)
	for i := 0; i < n; i++ {
		e := r.At(i)
		var m *message
		if err == nil {
			rec := data[e.pageOff-start : e.pageOff-start+int64(e.pageLen)]
			m, err = q.pg.decode(rec, own)
		}
		if err != nil {
			if i == 0 {
				q.vh.srv.log.Error("cannot read a paged message back; dropping it", "vhost", q.vh.name, "queue", q.name, "err", err)
				q.forgetLocked(q.popLocked(lv))
			}
			// A later record is retried alone once it is the head.
			return
		}
		q.pg.free(e.page)
		e.m, e.page = m, nil
		m.hold(q.vh.srv)
		q.paged--
		q.vh.srv.addQueued(-pageIndexCost)
		q.memBytes += m.cost()
	}
}

// headLocked returns the level holding the next message, or -1. The head
// message is in memory when it returns.
func (q *queue) headLocked() int {
	for {
		lv := -1
		for i := len(q.ready) - 1; i >= 0; i-- {
			if q.ready[i].Len() > 0 {
				lv = i
				break
			}
		}
		if lv < 0 || q.ready[lv].Front().m != nil {
			return lv
		}
		q.pageInLocked(lv)
	}
}

// popLocked takes the head of level lv off the ready list; the entry keeps
// its hold on the message (or its page record) until forgetLocked.
func (q *queue) popLocked(level int) qentry {
	e := q.ready[level].PopFront()
	q.readyCount--
	q.readyBytes -= e.bodySize()
	if e.m != nil {
		q.memBytes -= e.m.cost()
	} else {
		q.paged--
		q.vh.srv.addQueued(-pageIndexCost)
	}
	return e
}

// forgetLocked releases what an entry holds once it has left the queue for
// good: its store record and its message (or page record).
func (q *queue) forgetLocked(e qentry) {
	if e.id != 0 {
		q.vh.srv.store.remove(q, e.id)
	}
	if e.m != nil {
		e.m.release(q.vh.srv)
	} else if e.page != nil && q.pg != nil {
		q.pg.free(e.page)
	}
}

// publish enqueues m. It reports whether the queue accepted the message
// (reject-publish overflow refuses) and whether it was written to the store.
func (q *queue) publish(m *message, now int64, via *conn) (accepted, stored bool) {
	if q.stream != nil {
		return q.streamPublish(m, via), false
	}
	var dls []deadLetter
	q.mu.Lock()
	if q.deleted {
		q.mu.Unlock()
		return true, false
	}
	if q.full(m) {
		switch q.overflow {
		case overflowRejectPub, overflowRejectPubDLX:
			q.mu.Unlock()
			if q.overflow == overflowRejectPubDLX {
				q.vh.deadLetter(q, []deadLetter{{e: qentry{m: m}, reason: "maxlen"}})
			}
			return false, false
		default:
			for q.readyCount > 0 && q.full(m) {
				e := q.popLocked(q.headLocked())
				q.forgetLocked(e)
				dls = append(dls, deadLetter{e: e, reason: "maxlen"})
			}
		}
	}
	e := qentry{m: m}
	ttl := q.msgTTL
	if m.ttl >= 0 && (ttl < 0 || m.ttl < ttl) {
		ttl = m.ttl
	}
	if ttl >= 0 {
		if now == 0 {
			now = nowMS()
		}
		e.expireAt = now + ttl
		if ttl == 0 {
			e.expireAt = now // expires unless a consumer takes it at once
		}
	}
	if q.maxLen == 0 || (q.maxBytes == 0 && m.size() > 0) {
		// A zero-length queue keeps nothing; drop-head drops the new message.
		q.mu.Unlock()
		if q.overflow == overflowDropHead || q.overflow == "" {
			q.vh.deadLetter(q, []deadLetter{{e: e, reason: "maxlen"}})
		}
		return q.overflow == overflowDropHead || q.overflow == "", false
	}
	if q.durable && m.persistent && q.vh.srv.store != nil {
		e.id = q.vh.srv.store.enqueue(q, m)
		stored = true
	}
	m.hold(q.vh.srv)
	if q.readyCount == 0 && len(q.consumers) > 0 {
		if q.deliverLocked(&e, &dls, via) {
			q.mu.Unlock()
			q.vh.deadLetter(q, dls)
			return true, stored
		}
	}
	if ttl == 0 {
		q.forgetLocked(e)
		dls = append(dls, deadLetter{e: e, reason: "expired"})
	} else {
		q.pushLocked(e, false)
		if e.expireAt != 0 {
			q.armTTLLocked()
		}
	}
	q.mu.Unlock()
	q.vh.deadLetter(q, dls)
	return true, stored
}

func (q *queue) full(m *message) bool {
	return (q.maxLen >= 0 && int64(q.readyCount) >= q.maxLen && q.maxLen > 0) ||
		(q.maxBytes > 0 && q.readyBytes+m.size() > q.maxBytes)
}

// deliverLocked hands e to a consumer with capacity; it reports whether
// one took it.
// via is the connection whose reader is delivering (nil for others); it
// flushes consumers' output at the end of its batch.
func (q *queue) deliverLocked(e *qentry, dls *[]deadLetter, via *conn) bool {
	n := len(q.consumers)
	if n == 0 {
		return false
	}
	if q.sac {
		// Single active consumer: only the first registered receives.
		c := q.consumers[0]
		return q.handTo(c, e, via)
	}
	// Consumers are kept highest x-priority first: the message goes to the
	// first priority group with capacity, round-robin within the group.
	// When all share one priority the whole list is one group, found
	// without scanning it.
	for lo := 0; lo < n; {
		hi := n
		if q.mixedPriority {
			hi = lo + 1
			for hi < n && q.consumers[hi].priority == q.consumers[lo].priority {
				hi++
			}
		}
		size := hi - lo
		start := 0
		if q.rr >= lo && q.rr < hi {
			start = q.rr - lo
		}
		for i := 0; i < size; i++ {
			idx := lo + (start+i)%size
			if q.handTo(q.consumers[idx], e, via) {
				q.rr = lo + (idx-lo+1)%size
				return true
			}
		}
		lo = hi
	}
	return false
}

// addConsumerLocked registers c in priority order (after its equals, so
// equals keep their registration order); single-active-consumer queues keep
// registration order, the first being the active one.
func (q *queue) addConsumerLocked(c *consumer) {
	i := len(q.consumers)
	if !q.sac {
		for i > 0 && q.consumers[i-1].priority < c.priority {
			i--
		}
	}
	q.consumers = append(q.consumers, nil)
	copy(q.consumers[i+1:], q.consumers[i:])
	q.consumers[i] = c
	q.updateMixedPriorityLocked()
}

func (q *queue) updateMixedPriorityLocked() {
	q.mixedPriority = false
	for _, o := range q.consumers {
		if o.priority != q.consumers[0].priority {
			q.mixedPriority = true
			return
		}
	}
}

func (q *queue) handTo(c *consumer, e *qentry, via *conn) bool {
	ok, noAck := c.ch.deliver(c, q, e, via)
	if !ok {
		return false
	}
	if noAck {
		q.forgetLocked(*e)
	} else {
		q.unacked++
	}
	return true
}

// dispatchLocked delivers ready messages while consumers have capacity.
func (q *queue) dispatchLocked(dls *[]deadLetter, via *conn) {
	if q.stream != nil {
		q.streamDispatchLocked(via)
		return
	}
	if len(q.consumers) == 0 || q.readyCount == 0 {
		return
	}
	var now int64
	for q.readyCount > 0 {
		lv := q.headLocked()
		e := q.ready[lv].Front()
		if e.expireAt != 0 {
			if now == 0 {
				now = nowMS()
			}
			if e.expireAt <= now {
				x := q.popLocked(lv)
				q.forgetLocked(x)
				*dls = append(*dls, deadLetter{e: x, reason: "expired"})
				continue
			}
		}
		if !q.deliverLocked(e, dls, via) {
			return
		}
		q.popLocked(lv)
	}
}

// dispatch runs dispatchLocked and routes what it dead-letters.
func (q *queue) dispatch(via *conn) {
	var dls []deadLetter
	q.mu.Lock()
	if !q.deleted {
		q.dispatchLocked(&dls, via)
	}
	q.mu.Unlock()
	q.vh.deadLetter(q, dls)
}

// expireLocked drops expired messages at the head of each level.
func (q *queue) expireLocked(now int64, dls *[]deadLetter) {
	for lv := range q.ready {
		for q.ready[lv].Len() > 0 {
			e := q.ready[lv].Front()
			if e.expireAt == 0 || e.expireAt > now {
				break
			}
			if e.m == nil && q.dlx != "" {
				q.pageInLocked(lv) // dead-lettering needs the message
				continue
			}
			x := q.popLocked(lv)
			q.forgetLocked(x)
			*dls = append(*dls, deadLetter{e: x, reason: "expired"})
		}
	}
}

// armTTLLocked schedules expiry of the earliest head message.
func (q *queue) armTTLLocked() {
	var at int64
	for lv := range q.ready {
		if q.ready[lv].Len() > 0 {
			if x := q.ready[lv].Front().expireAt; x != 0 && (at == 0 || x < at) {
				at = x
			}
		}
	}
	if at == 0 || (q.ttlTimer != nil && q.ttlAt != 0 && q.ttlAt <= at) {
		return
	}
	q.ttlAt = at
	d := time.Duration(at-nowMS()) * time.Millisecond
	if q.ttlTimer == nil {
		q.ttlTimer = time.AfterFunc(max(d, 0), q.onTTL)
	} else {
		q.ttlTimer.Reset(max(d, 0))
	}
}

func (q *queue) onTTL() {
	var dls []deadLetter
	q.mu.Lock()
	if q.deleted {
		q.mu.Unlock()
		return
	}
	q.ttlAt = 0
	q.expireLocked(nowMS(), &dls)
	q.armTTLLocked()
	q.mu.Unlock()
	q.vh.deadLetter(q, dls)
}

// touchLocked records use for x-expires and rearms its timer when idle.
func (q *queue) touchLocked() {
	if q.expires <= 0 || q.deleted {
		return
	}
	q.useGen++
	if q.expTimer != nil {
		q.expTimer.Stop()
		q.expTimer = nil
	}
	if len(q.consumers) > 0 {
		return
	}
	gen := q.useGen
	q.expTimer = time.AfterFunc(q.expires, func() { q.onExpire(gen) })
}

func (q *queue) onExpire(gen uint64) {
	q.mu.Lock()
	stale := gen != q.useGen || len(q.consumers) > 0 || q.deleted
	q.mu.Unlock()
	if !stale {
		q.vh.deleteQueue(q, "expired")
	}
}

// requeue returns unacknowledged entries to the head of the queue in their
// original order, counting quorum delivery attempts.
func (q *queue) requeue(es []qentry, via *conn) {
	if q.stream != nil {
		q.streamSettle(es, via)
		return
	}
	var dls []deadLetter
	q.mu.Lock()
	for i := len(es) - 1; i >= 0; i-- {
		e := es[i]
		q.unacked--
		if q.deleted {
			q.forgetLocked(e)
			continue
		}
		e.redelivered = true
		if q.quorum {
			e.deliveries++
			if q.deliveryLimit >= 0 && int64(e.deliveries) > q.deliveryLimit {
				q.forgetLocked(e)
				dls = append(dls, deadLetter{e: e, reason: "delivery_limit"})
				continue
			}
		}
		q.pushLocked(e, true)
	}
	q.dispatchLocked(&dls, via)
	if q.readyCount > 0 {
		q.armTTLLocked()
	}
	q.mu.Unlock()
	q.vh.deadLetter(q, dls)
}

// settle removes acknowledged (or rejected without requeue) entries.
func (q *queue) settle(es []qentry, reject bool, via *conn) {
	if q.stream != nil {
		q.streamSettle(es, via)
		return
	}
	var dls []deadLetter
	q.mu.Lock()
	for _, e := range es {
		q.unacked--
		q.forgetLocked(e)
		if reject {
			dls = append(dls, deadLetter{e: e, reason: "rejected"})
		}
	}
	if !q.deleted {
		q.dispatchLocked(&dls, via)
	}
	q.mu.Unlock()
	q.vh.deadLetter(q, dls)
}

func (q *queue) purge() int {
	q.mu.Lock()
	n := q.readyCount
	q.dropReadyLocked()
	q.mu.Unlock()
	return n
}

func (q *queue) dropReadyLocked() {
	for lv := range q.ready {
		for q.ready[lv].Len() > 0 {
			q.forgetLocked(q.popLocked(lv))
		}
		q.ready[lv].Clear()
	}
}

func (q *queue) consumerCount() int {
	q.mu.Lock()
	defer q.mu.Unlock()
	return len(q.consumers)
}

func (q *queue) messageCount() int {
	q.mu.Lock()
	defer q.mu.Unlock()
	return q.countLocked()
}

// countLocked is the message count of queue.declare-ok: the ready
// messages, or a stream's records.
func (q *queue) countLocked() int {
	if q.stream != nil {
		return int(q.stream.count())
	}
	return q.readyCount
}

// removeConsumer detaches c; it reports whether the queue should now be
// auto-deleted.
func (q *queue) removeConsumer(c *consumer) bool {
	q.mu.Lock()
	defer q.mu.Unlock()
	for i, o := range q.consumers {
		if o == c {
			q.consumers = append(q.consumers[:i:i], q.consumers[i+1:]...)
			break
		}
	}
	q.updateMixedPriorityLocked()
	if q.rr >= len(q.consumers) {
		q.rr = 0
	}
	q.touchLocked()
	if q.sac && len(q.consumers) > 0 && !q.deleted {
		var dls []deadLetter
		q.dispatchLocked(&dls, nil)
		defer q.vh.deadLetter(q, dls)
	}
	return q.autoDelete && q.hadConsumer && len(q.consumers) == 0 && !q.deleted
}

// stopTimersLocked stops TTL and expiry timers and closes the page files
// (on delete and shutdown).
func (q *queue) stopTimersLocked() {
	if q.pg != nil {
		q.pg.close()
		q.pg = nil
	}
	if q.stream != nil {
		q.stream.close()
	}
	if q.ttlTimer != nil {
		q.ttlTimer.Stop()
	}
	if q.expTimer != nil {
		q.expTimer.Stop()
	}
	q.useGen++
}

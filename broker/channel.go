package broker

import (
	"sort"
	"strconv"
	"sync"

	"github.com/oslogo/oslogo/broker/internal/amqp091"
)

type unackedRec struct {
	tag  uint64
	q    *queue
	c    *consumer
	e    qentry
	done bool
}

// txOp is one buffered operation of a transactional channel.
type txOp struct {
	msg       *message
	mandatory bool
	// ack fields
	isAck    bool
	tag      uint64
	multiple bool
	kind     int // 0 ack, 1 reject/nack no requeue, 2 nack/reject requeue
}

const (
	ackOK = iota
	ackDrop
	ackRequeue
)

type channel struct {
	id   uint16
	conn *conn
	vh   *vhost

	// Reader-goroutine state.
	closing      bool
	expecting    int // 0 method, 1 content header, 2 body
	pubExchange  string
	pubRK        string
	pubMandatory bool
	pubEx        *exchange
	pubBodySize  uint64
	pubBuf       []byte // properties and body, grown as body frames arrive
	pubCounted   int64  // capacity of pubBuf counted as memory
	pubPropsLen  int
	prefetch     int
	tx           bool
	txOps        []txOp
	scratch      []qentry
	route        routeCache
	permOK       map[string]bool
	lastQueue    string

	mu             sync.Mutex
	closed         bool
	flowActive     bool
	nextTag        uint64
	unacked        ring[unackedRec]
	unackedCount   int
	globalPrefetch int
	consumers      map[string]*consumer

	confirm    bool
	confirmMu  sync.Mutex
	pubSeq     uint64
	confirmed  uint64
	pending    []uint8
	pendingOff int
	lastAcked  uint64
	// confirmsOff: the channel is closed. Confirms the store still owes
	// it are dropped: sent, they would reach a channel reopened with the
	// same number and confirm that channel's publishes early.
	confirmsOff bool

	mon chanMonitor // reader-owned settings the management API reads
}

// routeCache remembers the last routing decision; topology changes bump
// the vhost version and invalidate it.
type routeCache struct {
	version  uint64
	exchange string
	rk       string
	queues   []*queue
	valid    bool
}

func newChannel(c *conn, id uint16) *channel {
	return &channel{id: id, conn: c, vh: c.vh, flowActive: true, consumers: map[string]*consumer{}}
}

func (ch *channel) handleFrame(f amqp091.Frame) *amqpError {
	if ch.closing {
		// After a channel error everything but close/close-ok is discarded,
		// including the rest of a message's content frames.
		if f.Type == amqp091.FrameMethod {
			cid, mid, _, err := amqp091.ParseMethodFrame(f.Payload)
			if err == nil && cid == amqp091.ClassChannel && (mid == 41 || mid == 40) {
				if mid == 40 {
					ch.conn.send(ch.id, &amqp091.ChannelCloseOk{})
				}
				delete(ch.conn.channels, ch.id)
			}
		}
		return nil
	}
	switch f.Type {
	case amqp091.FrameHeader:
		if ch.expecting != 1 {
			return errf(amqp091.UnexpectedFrame, "unexpected content header frame on channel %d", ch.id)
		}
		return ch.onHeader(f.Payload)
	case amqp091.FrameBody:
		if ch.expecting != 2 {
			return errf(amqp091.UnexpectedFrame, "unexpected content body frame on channel %d", ch.id)
		}
		return ch.onBody(f.Payload)
	}
	if ch.expecting != 0 {
		return errf(amqp091.UnexpectedFrame, "expected content frame on channel %d, got a method", ch.id)
	}
	cid, mid, args, err := amqp091.ParseMethodFrame(f.Payload)
	if err != nil {
		return errf(amqp091.FrameError, "%v", err)
	}
	if cid == amqp091.ClassBasic && mid == 40 {
		if e := ch.onPublishFast(args); e != nil {
			e.classID, e.methodID = cid, mid
			return e
		}
		return nil
	}
	m, err := ch.conn.dec.Decode(cid, mid, args)
	if err != nil {
		return &amqpError{code: amqp091.SyntaxError, text: "SYNTAX_ERROR - " + err.Error(), classID: cid, methodID: mid}
	}
	if e := ch.handleMethod(m); e != nil {
		e.classID, e.methodID = cid, mid
		return e
	}
	return nil
}

// channelError closes the channel with a soft error and releases what it
// holds at once, as RabbitMQ does.
func (ch *channel) channelError(e *amqpError) {
	ch.conn.log.Debug("channel error", "channel", ch.id, "code", e.code, "text", e.text)
	ch.closing = true
	ch.expecting = 0
	ch.dropPubBuf()
	ch.flushConfirms()
	ch.release()
	ch.conn.send(ch.id, &amqp091.ChannelClose{ReplyCode: e.code, ReplyText: e.text, ClassId: e.classID, MethodId: e.methodID})
}

// release cancels consumers and requeues unacknowledged messages.
func (ch *channel) release() {
	ch.confirmMu.Lock()
	ch.confirmsOff = true
	ch.confirmMu.Unlock()
	ch.mu.Lock()
	ch.closed = true
	consumers := ch.consumers
	ch.consumers = map[string]*consumer{}
	var recs []unackedRec
	for ch.unacked.Len() > 0 {
		r := ch.unacked.PopFront()
		if !r.done {
			recs = append(recs, r)
		}
	}
	ch.unackedCount = 0
	ch.mu.Unlock()
	for _, c := range consumers {
		if c.q.removeConsumer(c) {
			c.q.vh.deleteQueue(c.q, "auto-delete")
		}
	}
	ch.settleRecs(recs, ackRequeue)
	ch.dropPubBuf()
	ch.releaseTx(ch.txOps)
	ch.txOps = nil
}

// releaseTx drops the holds a transaction's buffered publishes keep on
// their messages (after commit routed them, or on rollback and close).
func (ch *channel) releaseTx(ops []txOp) {
	for _, op := range ops {
		if op.msg != nil {
			op.msg.release(ch.conn.srv)
		}
	}
}

// setPubBuf replaces the assembly buffer, counting its capacity.
func (ch *channel) setPubBuf(b []byte) {
	ch.conn.srv.addQueued(int64(cap(b)) - ch.pubCounted)
	ch.pubCounted = int64(cap(b))
	ch.pubBuf = b
}

func (ch *channel) dropPubBuf() { ch.setPubBuf(nil) }

func (ch *channel) shutdown() { ch.release() }

// settleRecs acks, drops or requeues records, one queue lock per run of
// records from the same queue.
func (ch *channel) settleRecs(recs []unackedRec, kind int) {
	for i := 0; i < len(recs); {
		q := recs[i].q
		es := ch.scratch[:0]
		for ; i < len(recs) && recs[i].q == q; i++ {
			es = append(es, recs[i].e)
		}
		switch kind {
		case ackOK:
			q.settle(es, false, ch.conn)
		case ackDrop:
			q.settle(es, true, ch.conn)
		default:
			q.requeue(es, ch.conn)
		}
		clear(es)
		ch.scratch = es[:0]
	}
}

// deliver is called by a queue holding its lock: it records the delivery
// and writes it to the connection. ok is false when the consumer has no
// capacity now.
func (ch *channel) deliver(c *consumer, q *queue, e *qentry, via *conn) (ok, noAck bool) {
	conn := ch.conn
	if conn.outLen.Load() > outHighWater {
		conn.stall(q)
		return false, false
	}
	ch.mu.Lock()
	if ch.closed || !ch.flowActive {
		ch.mu.Unlock()
		return false, false
	}
	if !c.noAck && ((c.prefetch > 0 && c.unacked >= c.prefetch) || (ch.globalPrefetch > 0 && ch.unackedCount >= ch.globalPrefetch)) {
		ch.mu.Unlock()
		return false, false
	}
	ch.nextTag++
	tag := ch.nextTag
	if !c.noAck {
		ch.unacked.PushBack(unackedRec{tag: tag, q: q, c: c, e: *e})
		c.unacked++
		ch.unackedCount++
	}
	props := deliveryProps(q, e)
	conn.outMu.Lock()
	if !conn.flushDone {
		d := &conn.deliverM
		d.ConsumerTag, d.DeliveryTag, d.Redelivered, d.Exchange, d.RoutingKey = c.tag, tag, e.redelivered, e.m.exchange, e.m.routingKey
		conn.out = amqp091.AppendMethodFrame(conn.out, ch.id, d)
		conn.out = amqp091.AppendHeaderFrame(conn.out, ch.id, amqp091.ClassBasic, uint64(len(e.m.body)), props)
		conn.out = amqp091.AppendBodyFrames(conn.out, ch.id, e.m.body, conn.frameMax)
		conn.outLen.Store(int64(len(conn.out)))
	}
	conn.outMu.Unlock()
	ch.mu.Unlock()
	conn.kick(via)
	return true, c.noAck
}

// deliveryProps adds x-delivery-count to quorum redeliveries.
func deliveryProps(q *queue, e *qentry) []byte {
	if q.stream != nil {
		return streamHeaders(e)
	}
	if !q.quorum || e.deliveries == 0 {
		return e.m.props
	}
	var p amqp091.BasicProperties
	if p.Read(amqp091.NewReader(e.m.props)) != nil {
		return e.m.props
	}
	h := amqp091.Table{}
	for k, v := range p.Headers {
		h[k] = v
	}
	h["x-delivery-count"] = int64(e.deliveries)
	p.Headers = h
	p.Flags |= amqp091.FlagHeaders
	return p.Append(nil)
}

// consumerGone handles a consumer whose queue was deleted.
func (ch *channel) consumerGone(c *consumer) {
	ch.mu.Lock()
	_, ok := ch.consumers[c.tag]
	if ok && ch.consumers[c.tag] == c {
		delete(ch.consumers, c.tag)
	}
	closed := ch.closed
	ch.mu.Unlock()
	if ok && !closed && ch.conn.capCancel {
		ch.conn.send(ch.id, &amqp091.BasicCancel{ConsumerTag: c.tag, NoWait: true})
	}
}

// checkPerm runs a permission regex once per name and channel.
func (ch *channel) checkPerm(kind permKind, resType, name string) *amqpError {
	u := ch.conn.user
	if u.allowsAll(ch.vh.name) {
		return nil
	}
	key := strconv.Itoa(int(kind)) + resType + "\x00" + name
	if ch.permOK[key] {
		return nil
	}
	if e := u.check(ch.vh.name, kind, resType, name); e != nil {
		return e
	}
	if ch.permOK == nil {
		ch.permOK = map[string]bool{}
	}
	ch.permOK[key] = true
	return nil
}

// onPublishFast decodes basic.publish without allocating when the exchange
// and routing key repeat.
func (ch *channel) onPublishFast(args []byte) *amqpError {
	if len(args) < 4 {
		return errf(amqp091.SyntaxError, "short basic.publish")
	}
	pos := 2
	ex, ok := shortstrNoAlloc(args, &pos)
	if !ok {
		return errf(amqp091.SyntaxError, "malformed basic.publish")
	}
	rk, ok := shortstrNoAlloc(args, &pos)
	if !ok || pos >= len(args) {
		return errf(amqp091.SyntaxError, "malformed basic.publish")
	}
	bits := args[pos]
	if string(ex) != ch.pubExchange {
		ch.pubExchange = string(ex)
		ch.pubEx = nil
	}
	if string(rk) != ch.pubRK {
		ch.pubRK = string(rk)
	}
	ch.pubMandatory = bits&1 != 0
	if bits&2 != 0 {
		return errf(amqp091.NotImplemented, "immediate=true")
	}
	ch.conn.waitUnblocked()
	if e := ch.checkPerm(permWrite, "exchange", ch.pubExchange); e != nil {
		return e
	}
	v := ch.vh.version.Load()
	if ch.pubEx == nil || ch.route.version != v {
		ch.vh.mu.RLock()
		ch.pubEx = ch.vh.exchanges[ch.pubExchange]
		ch.vh.mu.RUnlock()
	}
	if ch.pubEx == nil {
		return errf(amqp091.NotFound, "no exchange '%s' in vhost '%s'", ch.pubExchange, ch.vh.name)
	}
	if ch.pubEx.internal {
		return errf(amqp091.AccessRefused, "cannot publish to internal exchange '%s' in vhost '%s'", ch.pubExchange, ch.vh.name)
	}
	ch.expecting = 1
	return nil
}

func (ch *channel) onHeader(p []byte) *amqpError {
	h, err := amqp091.ParseContentHeader(p)
	if err != nil {
		return errf(amqp091.FrameError, "%v", err)
	}
	if h.ClassID != amqp091.ClassBasic {
		return errf(amqp091.FrameError, "content header for class %d", h.ClassID)
	}
	if h.BodySize > uint64(ch.conn.srv.opts.MaxMessageSize) {
		ch.expecting = 0
		return errf(amqp091.PreconditionFailed, "message size %d is larger than configured max size %d", h.BodySize, ch.conn.srv.opts.MaxMessageSize)
	}
	// Properties and body share one buffer, grown as body frames arrive:
	// an announced size costs nothing until its bytes are sent. A small
	// body gets its room at once (one allocation on the hot path).
	room := len(h.Properties)
	if h.BodySize <= smallBody {
		room += int(h.BodySize)
	}
	ch.setPubBuf(append(make([]byte, 0, room), h.Properties...))
	ch.pubPropsLen = len(h.Properties)
	ch.pubBodySize = h.BodySize
	if h.BodySize == 0 {
		ch.expecting = 0
		return ch.finishPublish()
	}
	ch.expecting = 2
	return nil
}

// smallBody is the largest body allocated in full when its header arrives
// (at most 8 MiB over a connection's 2047 channels).
const smallBody = 4096

func (ch *channel) onBody(p []byte) *amqpError {
	filled := len(ch.pubBuf) - ch.pubPropsLen
	if uint64(filled+len(p)) > ch.pubBodySize {
		return errf(amqp091.FrameError, "content body larger than announced")
	}
	if need := len(ch.pubBuf) + len(p); need > cap(ch.pubBuf) {
		// Doubling bounds the copying; the announced total bounds the
		// capacity, so a complete body ends in a buffer of exactly its size.
		total := ch.pubPropsLen + int(ch.pubBodySize)
		nb := make([]byte, len(ch.pubBuf), min(total, max(need, 2*cap(ch.pubBuf))))
		copy(nb, ch.pubBuf)
		ch.setPubBuf(nb)
	}
	ch.pubBuf = append(ch.pubBuf, p...)
	if uint64(len(ch.pubBuf)-ch.pubPropsLen) < ch.pubBodySize {
		return nil
	}
	ch.expecting = 0
	return ch.finishPublish()
}

func (ch *channel) finishPublish() *amqpError {
	buf := ch.pubBuf
	// From here the message's holders count it.
	ch.dropPubBuf()
	m := &message{exchange: ch.pubExchange, routingKey: ch.pubRK, props: buf[:ch.pubPropsLen:ch.pubPropsLen], body: buf[ch.pubPropsLen:]}
	persistent, prio, ttl, ok := scanProps(m.props)
	if !ok {
		return errf(amqp091.FrameError, "malformed content header properties")
	}
	if ttl == -2 {
		return errf(amqp091.PreconditionFailed, "invalid expiration")
	}
	m.persistent, m.priority, m.ttl = persistent, prio, ttl
	var seq uint64
	if ch.confirm {
		ch.confirmMu.Lock()
		ch.pubSeq++
		seq = ch.pubSeq
		ch.pending = append(ch.pending, 0)
		ch.confirmMu.Unlock()
	}
	if ch.tx {
		m.hold(ch.conn.srv)
		ch.txOps = append(ch.txOps, txOp{msg: m, mandatory: ch.pubMandatory})
		return nil
	}
	return ch.routeAndEnqueue(m, ch.pubEx, ch.pubMandatory, seq)
}

// routeAndEnqueue routes m, returns it when unroutable and mandatory, and
// records its confirm state. A persistent message for a durable queue
// while the store cannot write is refused: nacked in confirm mode,
// otherwise 506 RESOURCE_ERROR (a connection error), so the publisher
// learns it was not kept.
func (ch *channel) routeAndEnqueue(m *message, ex *exchange, mandatory bool, seq uint64) *amqpError {
	vh := ch.vh
	var queues []*queue
	v := vh.version.Load()
	rc := &ch.route
	if ex.kind != kindHeaders && ex.altName == "" && rc.valid && rc.version == v && rc.exchange == m.exchange && rc.rk == m.routingKey {
		queues = rc.queues
	} else {
		var res routeResult
		res.queues = rc.queues[:0]
		vh.mu.RLock()
		v = vh.version.Load()
		if ex.name == "" {
			if q := vh.queues[m.routingKey]; q != nil {
				res.add(q)
			}
		} else {
			ex.routeInto(m.routingKey, m.headers, &res)
		}
		vh.mu.RUnlock()
		queues = res.queues
		*rc = routeCache{version: v, exchange: m.exchange, rk: m.routingKey, queues: queues, valid: !res.usedHeaders}
	}
	if len(queues) == 0 {
		if mandatory {
			ch.conn.sendContent(ch.id, &amqp091.BasicReturn{ReplyCode: 312, ReplyText: "NO_ROUTE", Exchange: m.exchange, RoutingKey: m.routingKey}, m, nil)
		}
		if seq != 0 {
			ch.setConfirm(seq, 1)
		}
		return nil
	}
	if st := ch.conn.srv.store; m.persistent && st != nil && st.refusing() && anyDurable(queues) {
		if seq == 0 {
			return errf(amqp091.ResourceError, "message store cannot write: persistent message not accepted")
		}
		ch.setConfirm(seq, 2)
		return nil
	}
	var now int64
	stored := false
	rejected := false
	for _, q := range queues {
		if now == 0 && (q.msgTTL >= 0 || m.ttl >= 0) {
			now = nowMS()
		}
		acc, st := q.publish(m, now, ch.conn)
		stored = stored || st
		rejected = rejected || !acc
	}
	if seq == 0 {
		return nil
	}
	switch {
	case rejected:
		ch.setConfirm(seq, 2)
	case stored:
		ch.conn.srv.store.afterSync(ch, seq)
	default:
		ch.setConfirm(seq, 1)
	}
	return nil
}

func anyDurable(queues []*queue) bool {
	for _, q := range queues {
		if q.durable {
			return true
		}
	}
	return false
}

// onSynced is called by the store once a persisted message is on disk
// (ok), or when writing it failed.
func (ch *channel) onSynced(seq uint64, ok bool) {
	state := uint8(1)
	if !ok {
		state = 2
	}
	ch.setConfirm(seq, state)
	ch.flushConfirms()
}

func (ch *channel) setConfirm(seq uint64, state uint8) {
	ch.confirmMu.Lock()
	if ch.confirmsOff {
		ch.confirmMu.Unlock()
		return
	}
	if i := int(seq-ch.confirmed) - 1 + ch.pendingOff; i >= ch.pendingOff && i < len(ch.pending) {
		ch.pending[i] = state
	}
	ch.confirmMu.Unlock()
}

// flushConfirms sends basic.ack (multiple where possible) and basic.nack
// for the decided prefix of outstanding publishes, in order.
func (ch *channel) flushConfirms() {
	ch.confirmMu.Lock()
	defer ch.confirmMu.Unlock()
	if ch.confirmsOff {
		return
	}
	var ackUpTo uint64
	for ch.pendingOff < len(ch.pending) {
		st := ch.pending[ch.pendingOff]
		if st == 0 {
			break
		}
		ch.pendingOff++
		ch.confirmed++
		if st == 1 {
			ackUpTo = ch.confirmed
			continue
		}
		if ackUpTo != 0 {
			ch.sendAck(ackUpTo)
			ackUpTo = 0
		}
		ch.conn.send(ch.id, &amqp091.BasicNack{DeliveryTag: ch.confirmed})
	}
	if ackUpTo != 0 {
		ch.sendAck(ackUpTo)
	}
	if ch.pendingOff == len(ch.pending) {
		ch.pending = ch.pending[:0]
		ch.pendingOff = 0
	} else if ch.pendingOff > 4096 {
		ch.pending = append(ch.pending[:0], ch.pending[ch.pendingOff:]...)
		ch.pendingOff = 0
	}
}

func (ch *channel) sendAck(upTo uint64) {
	c := ch.conn
	c.outMu.Lock()
	if !c.flushDone {
		a := &c.ackM
		a.DeliveryTag, a.Multiple = upTo, upTo > ch.lastAcked+1
		c.out = amqp091.AppendMethodFrame(c.out, ch.id, a)
		c.outLen.Store(int64(len(c.out)))
	}
	ch.lastAcked = upTo
	c.outMu.Unlock()
	c.signal()
}

// takeAcked removes acknowledged records: one tag, or every tag up to it
// when multiple (tag 0 with multiple means all).
func (ch *channel) takeAcked(tag uint64, multiple bool) ([]unackedRec, *amqpError) {
	ch.mu.Lock()
	defer ch.mu.Unlock()
	if tag > ch.nextTag {
		return nil, errf(amqp091.PreconditionFailed, "unknown delivery tag %d", tag)
	}
	var recs []unackedRec
	if multiple && tag != 0 {
		// Like RabbitMQ, the tag itself must be outstanding.
		n := ch.unacked.Len()
		i := sort.Search(n, func(i int) bool { return ch.unacked.At(i).tag >= tag })
		if i == n || ch.unacked.At(i).tag != tag || ch.unacked.At(i).done {
			return nil, errf(amqp091.PreconditionFailed, "unknown delivery tag %d", tag)
		}
	}
	if multiple {
		for ch.unacked.Len() > 0 {
			r := ch.unacked.Front()
			if tag != 0 && r.tag > tag {
				break
			}
			x := ch.unacked.PopFront()
			if !x.done {
				recs = append(recs, x)
			}
		}
	} else {
		n := ch.unacked.Len()
		i := sort.Search(n, func(i int) bool { return ch.unacked.At(i).tag >= tag })
		if i == n || ch.unacked.At(i).tag != tag || ch.unacked.At(i).done {
			return nil, errf(amqp091.PreconditionFailed, "unknown delivery tag %d", tag)
		}
		if i == 0 {
			recs = append(recs, ch.unacked.PopFront())
		} else {
			r := ch.unacked.At(i)
			recs = append(recs, *r)
			r.done = true
			r.e = qentry{}
		}
		for ch.unacked.Len() > 0 && ch.unacked.Front().done {
			ch.unacked.PopFront()
		}
	}
	for _, r := range recs {
		r.c.unacked--
		ch.unackedCount--
	}
	return recs, nil
}

// doAck applies an ack, nack or reject.
func (ch *channel) doAck(tag uint64, multiple bool, kind int) *amqpError {
	recs, err := ch.takeAcked(tag, multiple)
	if err != nil {
		return err
	}
	ch.settleRecs(recs, kind)
	if ch.globalPrefetch > 0 || kind == ackRequeue {
		// Capacity freed on the channel may unblock consumers of other queues.
		ch.mu.Lock()
		var qs []*queue
		for _, c := range ch.consumers {
			qs = append(qs, c.q)
		}
		ch.mu.Unlock()
		for _, q := range qs {
			q.dispatch(ch.conn)
		}
	}
	return nil
}

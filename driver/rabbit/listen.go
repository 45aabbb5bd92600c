package rabbit

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"reflect"
	"runtime"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"

	"oslogo/driver"
)

// inboxSize bounds the requests or notifications a listener holds for its
// reader; the broker keeps the rest (unacked notifications) or amqp091-go
// buffers them (RPC, already acked).
const inboxSize = 64

// maxBatch bounds the deliveries taken from a consumer in one go (and the
// replies acknowledged together).
const maxBatch = 64

// replyAckDelay is how long a handled reply may stay unacknowledged before
// the reply consumer acknowledges everything it handled with one
// basic.ack(multiple).
const replyAckDelay = 25 * time.Millisecond

// consumerHandle is one basic.consume: its channel, tag and deliveries.
type consumerHandle struct {
	ch      *amqp.Channel
	tag     string
	dels    <-chan amqp.Delivery
	autoAck bool // no_ack consumer: the broker counts a delivery as acknowledged once sent
}

// consumeSession is one listening connection with its consumers. ch is
// the channel setup declared on; consumers may have channels of their own.
type consumeSession struct {
	conn *amqp.Connection
	ch   *amqp.Channel
	cons []*consumerHandle
}

func (s *consumeSession) close() {
	if s != nil {
		_ = s.conn.Close()
	}
}

// consumer is the reconnecting core shared by the reply waiter, RPC
// listeners and notification listeners: setup declares and consumes,
// handle processes the deliveries of one consumer, in order, up to
// maxBatch at a time.
type consumer struct {
	d     *Driver
	name  string
	log   *slog.Logger
	setup func(ctx context.Context, conn *amqp.Connection, ch *amqp.Channel) ([]*consumerHandle, error)

	// flushC, when set, is polled by run along with the deliveries, and
	// flush is called when it fires (deferred acknowledgements).
	flushC func() <-chan time.Time
	flush  func()

	ctx    context.Context // cancelled by stop, so a reconnect never outlives it
	cancel context.CancelFunc

	mu      sync.Mutex
	cur     *consumeSession
	stopCh  chan struct{}
	stopped bool
	tagSeq  int
}

func newConsumer(d *Driver, name string) *consumer {
	ctx, cancel := context.WithCancel(context.Background())
	return &consumer{d: d, name: name, log: d.log.With("consumer", name), stopCh: make(chan struct{}), ctx: ctx, cancel: cancel}
}

// nextTag returns consumer tags "1", "2", ... as kombu numbers them.
func (c *consumer) nextTag() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.tagSeq++
	return strconv.Itoa(c.tagSeq)
}

// connect opens a connection and runs setup on it.
func (c *consumer) connect(ctx context.Context) (*consumeSession, error) {
	conn, err := c.d.dialer.dial(ctx, c.name)
	if err != nil {
		return nil, err
	}
	ch, err := c.openChannel(conn)
	if err != nil {
		_ = conn.Close()
		return nil, err
	}
	cons, err := c.setup(ctx, conn, ch)
	if err != nil {
		_ = conn.Close()
		return nil, err
	}
	s := &consumeSession{conn: conn, ch: ch, cons: cons}
	c.mu.Lock()
	if c.stopped {
		c.mu.Unlock()
		s.close()
		return nil, driver.ErrClosed
	}
	c.cur = s
	c.mu.Unlock()
	return s, nil
}

// openChannel opens a listening channel, with basic.qos when
// rabbit_qos_prefetch_count is set.
func (c *consumer) openChannel(conn *amqp.Connection) (*amqp.Channel, error) {
	ch, err := conn.Channel()
	if err == nil && c.d.cfg.Prefetch > 0 {
		err = ch.Qos(c.d.cfg.Prefetch, 0, false)
	}
	return ch, err
}

// consume starts one consumer on ch with the next tag; autoAck consumes
// with no_ack.
func (c *consumer) consume(ch *amqp.Channel, queue string, autoAck bool) (*consumerHandle, error) {
	tag := c.nextTag()
	dels, err := ch.Consume(queue, tag, autoAck, false, false, false, c.d.cfg.consumerArgs())
	if err != nil {
		return nil, err
	}
	return &consumerHandle{ch: ch, tag: tag, dels: dels, autoAck: autoAck}, nil
}

// ackOnReceipt reports whether consumers that oslo acknowledges on receipt
// (RPC servers before dispatch, the reply waiter) can consume with no_ack.
// Without rabbit_qos_prefetch_count the broker pushes everything at once
// either way and the message is gone from the queue as soon as the client
// holds it, so no_ack is observably the same (at-most-once) and spares an
// ack per message on both sides. With a prefetch limit the acks are what
// paces the broker, so they stay.
func (c Config) ackOnReceipt() bool { return c.Prefetch <= 0 }

// reconnect retries connect with backoff until it works or the consumer
// stops; nil means stopped.
func (c *consumer) reconnect() *consumeSession {
	for attempt := 1; ; attempt++ {
		if !sleepCtx(c.ctx, c.stopCh, c.d.cfg.backoff(attempt)) {
			return nil
		}
		s, err := c.connect(c.ctx)
		if err == nil {
			c.log.Info("consumer reconnected", "attempt", attempt)
			return s
		}
		if errors.Is(err, driver.ErrClosed) {
			return nil
		}
		c.log.Warn("consumer reconnect failed", "attempt", attempt, "err", err)
	}
}

// stop cancels the consumers; deliveries already received drain.
func (c *consumer) stop() {
	c.mu.Lock()
	if c.stopped {
		c.mu.Unlock()
		return
	}
	c.stopped = true
	close(c.stopCh)
	c.cancel()
	s := c.cur
	c.mu.Unlock()
	if s != nil {
		for _, h := range s.cons {
			_ = h.ch.Cancel(h.tag, false)
		}
	}
}

func (c *consumer) isStopped() bool {
	select {
	case <-c.stopCh:
		return true
	default:
		return false
	}
}

func (c *consumer) session() *consumeSession {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.cur
}

// run consumes s and every reconnected session until the consumer stops,
// calling handle with the deliveries of one consumer in order (a batch is
// what that consumer had already received, at most maxBatch). After a
// stop, deliveries already received are still handled.
func (c *consumer) run(s *consumeSession, handle func(h *consumerHandle, batch []amqp.Delivery)) {
	batch := make([]amqp.Delivery, 0, maxBatch)
	for s != nil {
		open := make([]*consumerHandle, len(s.cons))
		copy(open, s.cons)
		for len(open) > 0 {
			var flushC <-chan time.Time
			if c.flushC != nil {
				flushC = c.flushC()
			}
			i, d, ok, flushed := c.next(open, flushC)
			if flushed {
				c.flush()
				continue
			}
			if !ok {
				open = append(open[:i], open[i+1:]...)
				if !c.isStopped() {
					// A consumer cancelled by the broker (queue deleted) or a
					// lost connection: start over on a fresh connection.
					break
				}
				continue
			}
			h := open[i]
			batch = append(batch[:0], d)
			// amqp091-go hands deliveries over one at a time from a
			// goroutine of its own, through an unbuffered channel: yielding
			// once lets it offer the next one it already holds, so that
			// more deliveries share one ack. A no_ack consumer has no acks
			// to share and does not wait.
			yielded := h.autoAck
		more:
			for len(batch) < maxBatch {
				select {
				case d, ok := <-h.dels:
					if !ok {
						break more // seen closed on the next receive
					}
					batch = append(batch, d)
					yielded = false
				default:
					if yielded {
						break more
					}
					runtime.Gosched()
					yielded = true
				}
			}
			handle(h, batch)
			clear(batch) // drop the bodies
		}
		if c.flush != nil {
			c.flush()
		}
		if c.isStopped() {
			return
		}
		c.log.Warn("connection lost, reconnecting")
		s.close()
		s = c.reconnect()
	}
}

// next receives from the first ready consumer of open (or flushC). Up to
// three consumers (the RPC listener's) use a plain select; more fall back
// to reflect.Select.
func (c *consumer) next(open []*consumerHandle, flushC <-chan time.Time) (i int, d amqp.Delivery, ok, flushed bool) {
	var chs [3]<-chan amqp.Delivery
	if len(open) <= len(chs) {
		for j, h := range open {
			chs[j] = h.dels
		}
		select {
		case d, ok = <-chs[0]:
			return 0, d, ok, false
		case d, ok = <-chs[1]:
			return 1, d, ok, false
		case d, ok = <-chs[2]:
			return 2, d, ok, false
		case <-flushC:
			return 0, d, false, true
		}
	}
	cases := make([]reflect.SelectCase, 0, len(open)+1)
	for _, h := range open {
		cases = append(cases, reflect.SelectCase{Dir: reflect.SelectRecv, Chan: reflect.ValueOf(h.dels)})
	}
	if flushC != nil {
		cases = append(cases, reflect.SelectCase{Dir: reflect.SelectRecv, Chan: reflect.ValueOf(flushC)})
	}
	j, v, ok := reflect.Select(cases)
	if j == len(open) {
		return 0, d, false, true
	}
	if ok {
		d = v.Interface().(amqp.Delivery)
	}
	return j, d, ok, false
}

// replyWaiter owns the driver's reply queue and hands replies to the
// calls waiting for them, by _msg_id.
type replyWaiter struct {
	d       *Driver
	c       *consumer
	once    sync.Once
	readyCh chan struct{}

	mu    sync.Mutex
	calls map[string]*pendingCall

	// Connection attempts made before the reply queue was first ready,
	// so that a call with a retry limit fails once they are used up.
	smu      sync.Mutex
	lastErr  error
	failures int
	failedCh chan struct{} // closed (and replaced) at each failed attempt

	// Deferred acknowledgement state, used by the consumer goroutine only:
	// handled replies are acknowledged together (basic.ack multiple) once
	// maxBatch accumulate or replyAckDelay after the first, instead of one
	// ack frame per reply. The reply queue is this driver's own, so nobody
	// else can observe the difference; a reply redelivered after a
	// reconnect finds no waiting call and is dropped, as late replies are.
	ackCh    *amqp.Channel
	ackTag   uint64
	unacked  int
	ackTimer *time.Timer
	armed    bool

	ackRounds atomic.Int64 // basic.ack frames sent, for tests
	lateAcks  atomic.Int64 // of which sent by the timer or at a session's end
}

// pendingCall is one call waiting for replies.
type pendingCall struct {
	final    chan *driver.Reply // one slot: the final reply
	beat     chan struct{}      // one slot: a heartbeat or partial reply came
	returned chan struct{}      // one slot: the mandatory request came back
	partial  *driver.Reply      // last non-null result or failure (guarded by replyWaiter.mu)
}

func newReplyWaiter(d *Driver) *replyWaiter {
	w := &replyWaiter{d: d, readyCh: make(chan struct{}), calls: map[string]*pendingCall{}, failedCh: make(chan struct{})}
	w.ackTimer = time.NewTimer(time.Hour)
	w.ackTimer.Stop()
	w.c = newConsumer(d, "reply")
	w.c.setup = func(_ context.Context, _ *amqp.Connection, ch *amqp.Channel) ([]*consumerHandle, error) {
		if _, err := ch.QueueDeclare(d.replyQ, false, false, false, false, d.cfg.transientQueueArgs()); err != nil {
			return nil, fmt.Errorf("rabbit: declare reply queue: %w", err)
		}
		h, err := w.c.consume(ch, d.replyQ, d.cfg.ackOnReceipt())
		if err != nil {
			return nil, err
		}
		return []*consumerHandle{h}, nil
	}
	w.c.flushC = func() <-chan time.Time {
		if w.armed {
			return w.ackTimer.C
		}
		return nil
	}
	w.c.flush = func() {
		if w.unacked > 0 {
			w.lateAcks.Add(1)
		}
		w.flushAcks()
	}
	return w
}

// flushAcks acknowledges every handled reply at once.
func (w *replyWaiter) flushAcks() {
	if w.armed {
		w.ackTimer.Stop()
		w.armed = false
	}
	if w.unacked == 0 {
		return
	}
	if err := w.ackCh.Ack(w.ackTag, true); err != nil {
		w.c.log.Debug("reply ack failed", "err", err)
	}
	w.unacked = 0
	w.ackRounds.Add(1)
}

// noteFailure records a failed attempt to set up the reply queue.
func (w *replyWaiter) noteFailure(err error) {
	w.smu.Lock()
	w.lastErr = err
	w.failures++
	close(w.failedCh)
	w.failedCh = make(chan struct{})
	w.smu.Unlock()
}

// ready starts the reply consumer on first use and waits until the reply
// queue exists. With retry >= 0 it gives up with ErrDeliveryFailure
// (wrapping the last connection error) once retry+1 attempts failed; an
// attempt that had already failed when it was called counts as the first.
// A context that ends first gives its error, with the last connection
// error in the message.
func (w *replyWaiter) ready(ctx context.Context, retry int) error {
	select {
	case <-w.readyCh:
		return nil
	default:
	}
	w.start()
	w.smu.Lock()
	base := w.failures
	if w.lastErr != nil {
		base--
	}
	w.smu.Unlock()
	for {
		w.smu.Lock()
		failed, n, last := w.failedCh, w.failures-base, w.lastErr
		w.smu.Unlock()
		if retry >= 0 && n > retry && last != nil {
			return fmt.Errorf("%w: reply queue: %w", driver.ErrDeliveryFailure, last)
		}
		select {
		case <-w.readyCh:
			return nil
		case <-failed:
		case <-ctx.Done():
			if last != nil {
				return fmt.Errorf("%w (reply queue not ready, last connection error: %v)", ctx.Err(), last)
			}
			return ctx.Err()
		case <-w.d.closing:
			return driver.ErrClosed
		}
	}
}

// start runs the reply consumer, once.
func (w *replyWaiter) start() {
	w.once.Do(func() {
		w.d.track(func() {
			var s *consumeSession
			for attempt := 1; s == nil; attempt++ {
				var err error
				if s, err = w.c.connect(w.c.ctx); err != nil {
					if errors.Is(err, driver.ErrClosed) {
						return
					}
					w.c.log.Warn("reply queue setup failed", "attempt", attempt, "err", err)
					w.noteFailure(err)
					if !sleepCtx(w.c.ctx, w.c.stopCh, w.d.cfg.backoff(attempt)) {
						return
					}
				}
			}
			close(w.readyCh)
			w.c.run(s, w.handle)
			w.c.session().close()
		})
	})
}

func (w *replyWaiter) close() {
	w.c.stop()
	if s := w.c.session(); s != nil {
		s.close()
	}
}

// pendingCalls recycles pendingCall values and their channels.
var pendingCalls = sync.Pool{New: func() any {
	return &pendingCall{final: make(chan *driver.Reply, 1), beat: make(chan struct{}, 1), returned: make(chan struct{}, 1)}
}}

func (w *replyWaiter) register(msgID string) *pendingCall {
	pc := pendingCalls.Get().(*pendingCall)
	w.mu.Lock()
	w.calls[msgID] = pc
	w.mu.Unlock()
	return pc
}

// unregister removes the call; pc must not be used afterwards. Replies are
// only handed over under w.mu while pc is registered, so once it is gone
// nothing writes to its channels and it can be emptied and reused.
func (w *replyWaiter) unregister(msgID string, pc *pendingCall) {
	w.mu.Lock()
	delete(w.calls, msgID)
	pc.partial = nil
	w.mu.Unlock()
	select {
	case <-pc.final:
	default:
	}
	select {
	case <-pc.beat:
	default:
	}
	select {
	case <-pc.returned:
	default:
	}
	pendingCalls.Put(pc)
}

func (w *replyWaiter) handle(h *consumerHandle, batch []amqp.Delivery) {
	if w.ackCh != h.ch { // a new session: the old tags are gone with it
		w.ackCh, w.unacked = h.ch, 0
	}
	for _, dl := range batch {
		if w.deliver(dl, h.autoAck) && !h.autoAck {
			w.ackTag = dl.DeliveryTag
			w.unacked++
		}
	}
	switch {
	case w.unacked >= w.ackBatch():
		w.flushAcks()
	case w.unacked > 0 && !w.armed:
		w.ackTimer.Reset(replyAckDelay)
		w.armed = true
	}
}

// ackBatch is how many handled replies are acknowledged together: with a
// prefetch limit the broker stops delivering once that many are
// unacknowledged, so they are acknowledged before it is reached.
func (w *replyWaiter) ackBatch() int {
	if p := w.d.cfg.Prefetch; p > 0 && p < maxBatch {
		return p
	}
	return maxBatch
}

// deliver hands one reply to its call; it reports false for a malformed
// reply, which it rejects (or drops, consumed with no_ack).
func (w *replyWaiter) deliver(dl amqp.Delivery, autoAck bool) bool {
	m, err := decodeBody(dl.ContentType, dl.Headers, dl.Body)
	var r *incomingReply
	if err == nil {
		r, err = decodeReply(m)
	}
	if err != nil {
		if !autoAck {
			_ = dl.Reject(false)
		}
		w.c.log.Warn("malformed reply dropped", "err", err)
		return false
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	pc := w.calls[r.msgID]
	if pc == nil {
		w.c.log.Info("no calling threads waiting for msg_id", "msg_id", r.msgID)
		return true
	}
	if r.failure != nil || r.result != nil {
		pc.partial = &driver.Reply{Result: r.result, Failure: r.failure}
	}
	if r.ending {
		final := pc.partial
		if final == nil {
			final = &driver.Reply{}
		}
		select {
		case pc.final <- final:
		default:
		}
		return true
	}
	select {
	case pc.beat <- struct{}{}:
	default:
	}
	return true
}

// Listen consumes RPC requests for target: the shared topic queue T, the
// server queue T.S and a fanout queue T_fanout_<hex>.
func (d *Driver) Listen(ctx context.Context, target driver.Target) (driver.RPCListener, error) {
	if target.Topic == "" || target.Server == "" {
		return nil, errors.New("rabbit: invalid target: a server listens on a topic and a server name")
	}
	l := &rpcListener{
		d:       d,
		target:  target,
		fanoutQ: target.Topic + "_fanout_" + newHexID(),
		out:     make(chan *rpcIncoming, inboxSize),
		closeCh: make(chan struct{}),
		done:    make(chan struct{}),
		dedup:   newDedup(),
	}
	l.c = newConsumer(d, "rpc-"+target.Topic)
	l.c.setup = l.setup
	s, err := l.c.connect(ctx)
	if err != nil {
		return nil, fmt.Errorf("rabbit: listen on %s: %w", target, err)
	}
	if !d.addListener(l) {
		s.close()
		return nil, driver.ErrClosed
	}
	if !d.track(func() { l.run(s) }) {
		s.close()
		return nil, driver.ErrClosed
	}
	return l, nil
}

// rpcListener is an RPC server's consumer.
type rpcListener struct {
	d       *Driver
	c       *consumer
	target  driver.Target
	fanoutQ string
	out     chan *rpcIncoming
	closeCh chan struct{}
	closeMu sync.Mutex
	closed  bool
	done    chan struct{}
	dedup   *dedup // used by the run goroutine only
}

func (l *rpcListener) setup(_ context.Context, conn *amqp.Connection, ch *amqp.Channel) ([]*consumerHandle, error) {
	cfg := l.d.cfg
	t := l.target
	if err := ch.ExchangeDeclare(t.Exchange, amqp.ExchangeTopic, cfg.durable(), cfg.AutoDelete, false, false, nil); err != nil {
		return nil, err
	}
	fanoutX := t.Topic + "_fanout"
	if err := ch.ExchangeDeclare(fanoutX, amqp.ExchangeFanout, false, true, false, false, nil); err != nil {
		return nil, err
	}
	type q struct {
		name, exchange, key string
		durable, autoDelete bool
		args                amqp.Table
	}
	qs := []q{
		{t.Topic, t.Exchange, t.Topic, cfg.durable(), cfg.AutoDelete, cfg.topicQueueArgs()},
		{t.Topic + "." + t.Server, t.Exchange, t.Topic + "." + t.Server, cfg.durable(), cfg.AutoDelete, cfg.topicQueueArgs()},
		{l.fanoutQ, fanoutX, t.Topic, false, false, cfg.transientQueueArgs()},
	}
	var cons []*consumerHandle
	for _, q := range qs {
		if _, err := ch.QueueDeclare(q.name, q.durable, q.autoDelete, false, false, q.args); err != nil {
			return nil, err
		}
		if err := ch.QueueBind(q.name, q.key, q.exchange, false, nil); err != nil {
			return nil, err
		}
		// One channel per queue: delivery tags are per channel, so a
		// basic.ack(multiple) covers exactly the requests of that queue
		// that were already taken.
		qch, err := l.c.openChannel(conn)
		if err != nil {
			return nil, err
		}
		h, err := l.c.consume(qch, q.name, cfg.ackOnReceipt())
		if err != nil {
			return nil, err
		}
		cons = append(cons, h)
	}
	return cons, nil
}

func (l *rpcListener) run(s *consumeSession) {
	defer close(l.done)
	l.c.run(s, l.handle)
	close(l.out)
	<-l.closeCh
	if cur := l.c.session(); cur != nil {
		if !cur.conn.IsClosed() {
			// oslo deletes the fanout queue when the server stops.
			if _, err := cur.ch.QueueDelete(l.fanoutQ, false, false, false); err != nil {
				l.c.log.Debug("fanout queue delete failed", "queue", l.fanoutQ, "err", err)
			}
		}
		cur.close()
	}
}

// handle acknowledges a batch of requests before any of them is
// dispatched (at-most-once, as oslo) with one basic.ack(multiple), then
// queues them. Malformed requests are rejected on their own first. On a
// no_ack consumer the broker already counts them as acknowledged and
// malformed ones are dropped.
func (l *rpcListener) handle(h *consumerHandle, batch []amqp.Delivery) {
	ins := make([]*incomingRequest, 0, len(batch))
	var last uint64
	for _, dl := range batch {
		m, err := decodeBody(dl.ContentType, dl.Headers, dl.Body)
		var in *incomingRequest
		if err == nil {
			in, err = decodeRequest(m)
		}
		if err != nil {
			if !h.autoAck {
				_ = dl.Reject(false)
			}
			l.c.log.Warn("malformed request dropped", "err", err, "routing_key", dl.RoutingKey)
			continue
		}
		ins = append(ins, in)
		last = dl.DeliveryTag
	}
	if len(ins) == 0 {
		return
	}
	if !h.autoAck {
		if err := h.ch.Ack(last, true); err != nil {
			l.c.log.Warn("ack failed, requests discarded", "err", err, "count", len(ins))
			return
		}
	}
	for _, in := range ins {
		if in.uniqueID != "" {
			if l.dedup.seen(in.uniqueID) {
				l.c.log.Info("duplicate message dropped", "unique_id", in.uniqueID)
				continue
			}
			l.dedup.add(in.uniqueID)
		}
		select {
		case l.out <- &rpcIncoming{l: l, in: in}:
		case <-l.closeCh:
		}
	}
}

// Receive returns the next request; driver.ErrClosed once stopped and
// drained.
func (l *rpcListener) Receive(ctx context.Context) (driver.IncomingRequest, error) {
	select {
	case r, ok := <-l.out:
		if !ok {
			return nil, driver.ErrClosed
		}
		return r, nil
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

// Stop cancels the consumers; requests already received stay readable.
func (l *rpcListener) Stop() { l.c.stop() }

// Close stops, deletes the fanout queue and closes the connection.
func (l *rpcListener) Close() error {
	l.c.stop()
	l.closeMu.Lock()
	if !l.closed {
		l.closed = true
		close(l.closeCh)
	}
	l.closeMu.Unlock()
	<-l.done
	l.d.removeListener(l)
	return nil
}

// rpcIncoming is one received request.
type rpcIncoming struct {
	l  *rpcListener
	in *incomingRequest
}

func (r *rpcIncoming) Request() *driver.Request     { return &r.in.req }
func (r *rpcIncoming) ClientTimeout() time.Duration { return r.in.monitor }
func (r *rpcIncoming) IsCall() bool                 { return r.in.msgID != "" }

// Heartbeat sends a call-monitor heartbeat, only when the caller asked for
// them (_timeout set): a 14.0.3 client without call monitoring fails on one.
func (r *rpcIncoming) Heartbeat(ctx context.Context) error {
	if !r.IsCall() || r.in.monitor <= 0 || r.in.replyQ == "" {
		return nil
	}
	return r.l.d.sendReply(ctx, r.in.replyQ, r.in.msgID, nil, false)
}

// Reply sends the final reply; nothing for casts.
func (r *rpcIncoming) Reply(ctx context.Context, rep *driver.Reply) error {
	if !r.IsCall() || r.in.replyQ == "" {
		return nil
	}
	if rep == nil {
		rep = &driver.Reply{}
	}
	return r.l.d.sendReply(ctx, r.in.replyQ, r.in.msgID, rep, true)
}

// ListenNotifications consumes notifications for every (target, priority):
// queue "<topic>.<priority>", or one queue named pool bound to all of them.
func (d *Driver) ListenNotifications(ctx context.Context, targets []driver.NotificationTarget, pool string) (driver.NotificationListener, error) {
	if len(targets) == 0 {
		return nil, errors.New("rabbit: no notification targets")
	}
	for _, t := range targets {
		if t.Topic == "" || t.Priority == "" {
			return nil, errors.New("rabbit: notification target needs a topic and a priority")
		}
	}
	l := &notifyListener{
		d:       d,
		targets: append([]driver.NotificationTarget(nil), targets...),
		pool:    pool,
		out:     make(chan *notifyIncoming, inboxSize),
		closeCh: make(chan struct{}),
		done:    make(chan struct{}),
		dedup:   newDedup(),
	}
	l.c = newConsumer(d, "notify")
	l.c.setup = l.setup
	s, err := l.c.connect(ctx)
	if err != nil {
		return nil, fmt.Errorf("rabbit: listen for notifications: %w", err)
	}
	if !d.addListener(l) {
		s.close()
		return nil, driver.ErrClosed
	}
	if !d.track(func() { l.run(s) }) {
		s.close()
		return nil, driver.ErrClosed
	}
	return l, nil
}

// notifyListener is a notification listener's consumer.
type notifyListener struct {
	d       *Driver
	c       *consumer
	targets []driver.NotificationTarget
	pool    string
	out     chan *notifyIncoming
	closeCh chan struct{}
	closeMu sync.Mutex
	closed  bool
	done    chan struct{}

	dmu   sync.Mutex
	dedup *dedup
}

func (l *notifyListener) setup(_ context.Context, _ *amqp.Connection, ch *amqp.Channel) ([]*consumerHandle, error) {
	cfg := l.d.cfg
	seen := map[string]bool{}
	var cons []*consumerHandle
	for _, t := range l.targets {
		key := t.Topic + "." + t.Priority
		queue := key
		if l.pool != "" {
			queue = l.pool
		}
		if err := ch.ExchangeDeclare(t.Exchange, amqp.ExchangeTopic, cfg.durable(), cfg.AutoDelete, false, false, nil); err != nil {
			return nil, err
		}
		if _, err := ch.QueueDeclare(queue, cfg.durable(), cfg.AutoDelete, false, false, cfg.topicQueueArgs()); err != nil {
			return nil, err
		}
		if err := ch.QueueBind(queue, key, t.Exchange, false, nil); err != nil {
			return nil, err
		}
		if seen[queue] {
			continue
		}
		seen[queue] = true
		h, err := l.c.consume(ch, queue, false)
		if err != nil {
			return nil, err
		}
		cons = append(cons, h)
	}
	return cons, nil
}

func (l *notifyListener) run(s *consumeSession) {
	defer close(l.done)
	l.c.run(s, l.handle)
	close(l.out)
	<-l.closeCh
	l.c.session().close()
}

// handle queues each notification of a batch; the handler acks them.
func (l *notifyListener) handle(_ *consumerHandle, batch []amqp.Delivery) {
	for _, dl := range batch {
		l.handleOne(dl)
	}
}

func (l *notifyListener) handleOne(dl amqp.Delivery) {
	m, err := decodeBody(dl.ContentType, dl.Headers, dl.Body)
	var n *driver.Notification
	var uid string
	if err == nil {
		n, uid, err = decodeNotification(m)
	}
	if err != nil {
		_ = dl.Reject(false)
		l.c.log.Warn("malformed notification rejected", "err", err, "routing_key", dl.RoutingKey)
		return
	}
	l.dmu.Lock()
	dup := uid != "" && l.dedup.seen(uid)
	l.dmu.Unlock()
	if dup {
		_ = dl.Ack(false)
		l.c.log.Info("duplicate notification dropped", "unique_id", uid)
		return
	}
	select {
	case l.out <- &notifyIncoming{l: l, n: n, uid: uid, dl: dl}:
	case <-l.closeCh:
	}
}

// Receive returns the next notification; driver.ErrClosed once stopped and
// drained.
func (l *notifyListener) Receive(ctx context.Context) (driver.IncomingNotification, error) {
	select {
	case n, ok := <-l.out:
		if !ok {
			return nil, driver.ErrClosed
		}
		return n, nil
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

// Stop cancels the consumers; notifications already received stay
// readable.
func (l *notifyListener) Stop() { l.c.stop() }

// Close stops and closes the connection; unacknowledged notifications go
// back to their queues.
func (l *notifyListener) Close() error {
	l.c.stop()
	l.closeMu.Lock()
	if !l.closed {
		l.closed = true
		close(l.closeCh)
	}
	l.closeMu.Unlock()
	<-l.done
	l.d.removeListener(l)
	return nil
}

// notifyIncoming is one notification awaiting Ack or Requeue.
type notifyIncoming struct {
	l   *notifyListener
	n   *driver.Notification
	uid string
	dl  amqp.Delivery
}

func (n *notifyIncoming) Notification() *driver.Notification { return n.n }

// Ack acknowledges and records the _unique_id (oslo de-duplicates
// notifications on ack).
func (n *notifyIncoming) Ack() error {
	if err := n.dl.Ack(false); err != nil {
		return fmt.Errorf("rabbit: ack: %w", err)
	}
	n.l.dmu.Lock()
	n.l.dedup.add(n.uid)
	n.l.dmu.Unlock()
	return nil
}

// Requeue rejects with requeue so the broker delivers it again.
func (n *notifyIncoming) Requeue() error {
	if err := n.dl.Reject(true); err != nil {
		return fmt.Errorf("rabbit: requeue: %w", err)
	}
	return nil
}

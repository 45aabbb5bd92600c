package rabbit

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"reflect"
	"strconv"
	"sync"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"

	"oslogo/driver"
)

// inboxSize bounds the requests or notifications a listener holds for its
// reader; the broker keeps the rest (unacked notifications) or amqp091-go
// buffers them (RPC, already acked).
const inboxSize = 64

// consumeSession is one listening connection with its consumers.
type consumeSession struct {
	conn *amqp.Connection
	ch   *amqp.Channel
	tags []string
	dels []<-chan amqp.Delivery
}

func (s *consumeSession) close() {
	if s != nil {
		_ = s.conn.Close()
	}
}

// consumer is the reconnecting core shared by the reply waiter, RPC
// listeners and notification listeners: setup declares and consumes,
// handle processes each delivery (it returns false to stop early).
type consumer struct {
	d     *Driver
	name  string
	log   *slog.Logger
	setup func(ctx context.Context, conn *amqp.Connection, ch *amqp.Channel) ([]string, []<-chan amqp.Delivery, error)

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
	ch, err := conn.Channel()
	if err == nil && c.d.cfg.Prefetch > 0 {
		err = ch.Qos(c.d.cfg.Prefetch, 0, false)
	}
	if err != nil {
		_ = conn.Close()
		return nil, err
	}
	tags, dels, err := c.setup(ctx, conn, ch)
	if err != nil {
		_ = conn.Close()
		return nil, err
	}
	s := &consumeSession{conn: conn, ch: ch, tags: tags, dels: dels}
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
		for _, t := range s.tags {
			_ = s.ch.Cancel(t, false)
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
// calling handle for each delivery. After a stop, deliveries already
// received are still handled.
func (c *consumer) run(s *consumeSession, handle func(d amqp.Delivery)) {
	for s != nil {
		cases := make([]reflect.SelectCase, len(s.dels))
		for i, ch := range s.dels {
			cases[i] = reflect.SelectCase{Dir: reflect.SelectRecv, Chan: reflect.ValueOf(ch)}
		}
		open := len(cases)
		for open > 0 {
			i, v, ok := reflect.Select(cases)
			if !ok {
				cases[i].Chan = reflect.Value{}
				open--
				if !c.isStopped() {
					// A consumer cancelled by the broker (queue deleted) or a
					// lost connection: start over on a fresh connection.
					break
				}
				continue
			}
			handle(v.Interface().(amqp.Delivery))
		}
		if c.isStopped() {
			return
		}
		c.log.Warn("connection lost, reconnecting")
		s.close()
		s = c.reconnect()
	}
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
}

// pendingCall is one call waiting for replies.
type pendingCall struct {
	final   chan *driver.Reply // one slot: the final reply
	beat    chan struct{}      // one slot: a heartbeat or partial reply came
	partial *driver.Reply      // last non-null result or failure (guarded by replyWaiter.mu)
}

func newReplyWaiter(d *Driver) *replyWaiter {
	w := &replyWaiter{d: d, readyCh: make(chan struct{}), calls: map[string]*pendingCall{}}
	w.c = newConsumer(d, "reply")
	w.c.setup = func(_ context.Context, _ *amqp.Connection, ch *amqp.Channel) ([]string, []<-chan amqp.Delivery, error) {
		if _, err := ch.QueueDeclare(d.replyQ, false, false, false, false, d.cfg.transientQueueArgs()); err != nil {
			return nil, nil, fmt.Errorf("rabbit: declare reply queue: %w", err)
		}
		tag := w.c.nextTag()
		dels, err := ch.Consume(d.replyQ, tag, false, false, false, false, d.cfg.consumerArgs())
		if err != nil {
			return nil, nil, err
		}
		return []string{tag}, []<-chan amqp.Delivery{dels}, nil
	}
	return w
}

// ready starts the reply consumer on first use and waits until the reply
// queue exists.
func (w *replyWaiter) ready(ctx context.Context) error {
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
	select {
	case <-w.readyCh:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	case <-w.d.closing:
		return driver.ErrClosed
	}
}

func (w *replyWaiter) close() {
	w.c.stop()
	if s := w.c.session(); s != nil {
		s.close()
	}
}

func (w *replyWaiter) register(msgID string) *pendingCall {
	pc := &pendingCall{final: make(chan *driver.Reply, 1), beat: make(chan struct{}, 1)}
	w.mu.Lock()
	w.calls[msgID] = pc
	w.mu.Unlock()
	return pc
}

func (w *replyWaiter) unregister(msgID string) {
	w.mu.Lock()
	delete(w.calls, msgID)
	w.mu.Unlock()
}

func (w *replyWaiter) handle(dl amqp.Delivery) {
	m, err := decodeBody(dl.ContentType, dl.Headers, dl.Body)
	var r *incomingReply
	if err == nil {
		r, err = decodeReply(m)
	}
	if err != nil {
		_ = dl.Reject(false)
		w.c.log.Warn("malformed reply rejected", "err", err)
		return
	}
	_ = dl.Ack(false)
	w.mu.Lock()
	defer w.mu.Unlock()
	pc := w.calls[r.msgID]
	if pc == nil {
		w.c.log.Info("no calling threads waiting for msg_id", "msg_id", r.msgID)
		return
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
		return
	}
	select {
	case pc.beat <- struct{}{}:
	default:
	}
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

func (l *rpcListener) setup(_ context.Context, _ *amqp.Connection, ch *amqp.Channel) ([]string, []<-chan amqp.Delivery, error) {
	cfg := l.d.cfg
	t := l.target
	if err := ch.ExchangeDeclare(t.Exchange, amqp.ExchangeTopic, cfg.durable(), cfg.AutoDelete, false, false, nil); err != nil {
		return nil, nil, err
	}
	fanoutX := t.Topic + "_fanout"
	if err := ch.ExchangeDeclare(fanoutX, amqp.ExchangeFanout, false, true, false, false, nil); err != nil {
		return nil, nil, err
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
	var tags []string
	var dels []<-chan amqp.Delivery
	for _, q := range qs {
		if _, err := ch.QueueDeclare(q.name, q.durable, q.autoDelete, false, false, q.args); err != nil {
			return nil, nil, err
		}
		if err := ch.QueueBind(q.name, q.key, q.exchange, false, nil); err != nil {
			return nil, nil, err
		}
		tag := l.c.nextTag()
		dl, err := ch.Consume(q.name, tag, false, false, false, false, cfg.consumerArgs())
		if err != nil {
			return nil, nil, err
		}
		tags = append(tags, tag)
		dels = append(dels, dl)
	}
	return tags, dels, nil
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

// handle acks (at-most-once, as oslo) and queues one request.
func (l *rpcListener) handle(dl amqp.Delivery) {
	m, err := decodeBody(dl.ContentType, dl.Headers, dl.Body)
	var in *incomingRequest
	if err == nil {
		in, err = decodeRequest(m)
	}
	if err != nil {
		_ = dl.Reject(false)
		l.c.log.Warn("malformed request rejected", "err", err, "routing_key", dl.RoutingKey)
		return
	}
	if err := dl.Ack(false); err != nil {
		l.c.log.Warn("ack failed, request discarded", "err", err)
		return
	}
	if in.uniqueID != "" {
		if l.dedup.seen(in.uniqueID) {
			l.c.log.Info("duplicate message dropped", "unique_id", in.uniqueID)
			return
		}
		l.dedup.add(in.uniqueID)
	}
	select {
	case l.out <- &rpcIncoming{l: l, in: in}:
	case <-l.closeCh:
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

func (l *notifyListener) setup(_ context.Context, _ *amqp.Connection, ch *amqp.Channel) ([]string, []<-chan amqp.Delivery, error) {
	cfg := l.d.cfg
	seen := map[string]bool{}
	var tags []string
	var dels []<-chan amqp.Delivery
	for _, t := range l.targets {
		key := t.Topic + "." + t.Priority
		queue := key
		if l.pool != "" {
			queue = l.pool
		}
		if err := ch.ExchangeDeclare(t.Exchange, amqp.ExchangeTopic, cfg.durable(), cfg.AutoDelete, false, false, nil); err != nil {
			return nil, nil, err
		}
		if _, err := ch.QueueDeclare(queue, cfg.durable(), cfg.AutoDelete, false, false, cfg.topicQueueArgs()); err != nil {
			return nil, nil, err
		}
		if err := ch.QueueBind(queue, key, t.Exchange, false, nil); err != nil {
			return nil, nil, err
		}
		if seen[queue] {
			continue
		}
		seen[queue] = true
		tag := l.c.nextTag()
		dl, err := ch.Consume(queue, tag, false, false, false, false, cfg.consumerArgs())
		if err != nil {
			return nil, nil, err
		}
		tags = append(tags, tag)
		dels = append(dels, dl)
	}
	return tags, dels, nil
}

func (l *notifyListener) run(s *consumeSession) {
	defer close(l.done)
	l.c.run(s, l.handle)
	close(l.out)
	<-l.closeCh
	l.c.session().close()
}

func (l *notifyListener) handle(dl amqp.Delivery) {
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

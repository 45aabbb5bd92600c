package rabbit

import (
	"context"
	"errors"
	"log/slog"
	"math/rand/v2"
	"reflect"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/oslogo/oslogo/driver"
)

// inboxSize bounds the requests or notifications a listener holds for its
// reader. They are not acknowledged yet: if the connection drops, the
// broker delivers them again and the stale copies are skipped.
const inboxSize = 64

// maxBatch bounds the deliveries taken from a consumer in one go (and the
// replies acknowledged together).
const maxBatch = 64

// defaultPrefetch is the basic.qos prefetch count of every listening
// consumer when rabbit_qos_prefetch_count is 0 (oslo's "no limit"). Every
// consumer acknowledges manually, so the broker, not this process, holds
// the backlog, and whatever the client library holds when a connection
// drops is delivered again.
const defaultPrefetch = 64

// listenPrefetch is the prefetch count of a listening consumer.
func (c Config) listenPrefetch() int {
	if c.Prefetch > 0 {
		return c.Prefetch
	}
	return defaultPrefetch
}

// queueSpec is one queue a consumer reads: declare (re)creates it with its
// exchanges and bindings, on the channel that then consumes from it.
type queueSpec struct {
	queue   string
	declare func(ch *amqp.Channel) error // may return an againError (see runDeclare)
	// stream is the read position of a stream queue (rabbit_stream_fanout),
	// nil for other queues: it gives the consumer's x-stream-offset.
	stream *streamCursor
}

// consumerArgs are the basic.consume arguments of q: x-stream-offset alone
// for a stream (as 18.1), else the configured ones.
func (q *queueSpec) consumerArgs(cfg Config) amqp.Table {
	if q.stream != nil {
		return amqp.Table{"x-stream-offset": q.stream.offsetArg()}
	}
	return cfg.consumerArgs()
}

// listenChannel is a channel with one consumer at a time. acked is the
// highest delivery tag acknowledged with basic.ack(multiple) by the
// listener that owns it (guarded by that listener's lock).
type listenChannel struct {
	ch    *amqp.Channel
	acked uint64
}

// consumerHandle is one basic.consume: its queue, channel, tag and
// deliveries.
type consumerHandle struct {
	spec *queueSpec
	lc   *listenChannel
	ch   *amqp.Channel // lc.ch
	tag  string
	dels <-chan amqp.Delivery
}

// consumeSession is one listening connection with its consumers, one
// channel each; ch is a spare channel for declarations and the owner's
// own use (deleting a fanout queue on close), reopened after a channel
// error.
type consumeSession struct {
	conn *amqp.Connection
	ch   *amqp.Channel
	cons []*consumerHandle // guarded by consumer.mu once the session runs
}

func (s *consumeSession) close() {
	if s != nil {
		_ = s.conn.Close()
	}
}

// consumer is the reconnecting core shared by the reply waiter, RPC
// listeners and notification listeners: it consumes every queue of
// queues on a channel of its own, and handle processes the deliveries of
// one consumer, in order, up to maxBatch at a time. A consumer the broker
// cancels (its queue deleted, an HA failover) is subscribed again on its
// own; only a lost connection starts a new session.
type consumer struct {
	d      *Driver
	name   string
	log    *slog.Logger
	queues []*queueSpec
	// sharedChannel consumes every queue on one channel (a notification
	// listener may have many queues; a connection has at most 16
	// channels). Otherwise each queue has a channel of its own.
	sharedChannel bool
	// reopened maps a closed channel to the one that replaced it, so that
	// the consumers of a shared channel move to one new channel (used by
	// the run goroutine only).
	reopened map[*listenChannel]*listenChannel

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

	resubscribed atomic.Int64 // consumers subscribed again without a new session, for tests
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

// connect opens a connection and subscribes to every queue.
func (c *consumer) connect(ctx context.Context) (*consumeSession, error) {
	conn, err := c.d.dialer.dial(ctx, c.name)
	if err != nil {
		return nil, err
	}
	ch, err := conn.Channel()
	if err != nil {
		_ = conn.Close()
		return nil, err
	}
	s := &consumeSession{conn: conn, ch: ch}
	var lc *listenChannel
	for _, q := range c.queues {
		if lc == nil || !c.sharedChannel {
			if lc, err = c.openChannel(conn); err != nil {
				_ = conn.Close()
				return nil, err
			}
		}
		h, err := c.subscribe(s, lc, q)
		if err != nil {
			_ = conn.Close()
			return nil, err
		}
		s.cons = append(s.cons, h)
	}
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

// openChannel opens a listening channel with its prefetch limit.
func (c *consumer) openChannel(conn *amqp.Connection) (*listenChannel, error) {
	ch, err := conn.Channel()
	if err != nil {
		return nil, err
	}
	if err := ch.Qos(c.d.cfg.listenPrefetch(), 0, false); err != nil {
		return nil, err
	}
	return &listenChannel{ch: ch}, nil
}

// subscribe declares q (on the session's declaration channel, so that a
// declaration the broker refuses closes no consumer's channel and can be
// recovered from, see queuePlan) and consumes from it on lc with the next
// tag, with manual acknowledgements.
func (c *consumer) subscribe(s *consumeSession, lc *listenChannel, q *queueSpec) (*consumerHandle, error) {
	if err := runDeclare(&s.ch, s.conn.Channel, q.declare); err != nil {
		return nil, err
	}
	tag := c.nextTag()
	dels, err := lc.ch.Consume(q.queue, tag, false, false, false, false, q.consumerArgs(c.d.cfg))
	if err != nil {
		return nil, err
	}
	return &consumerHandle{spec: q, lc: lc, ch: lc.ch, tag: tag, dels: dels}, nil
}

// resubscribe replaces h, whose deliveries ended while the connection is
// alive: cancelled by the broker (its channel is still open and keeps
// the deliveries not yet acknowledged, so it is reused) or its channel
// closed by an error (a new one is opened; the broker requeued what the
// old one had not acknowledged).
func (c *consumer) resubscribe(s *consumeSession, h *consumerHandle) (*consumerHandle, error) {
	if h.spec.stream != nil && !h.ch.IsClosed() {
		// A basic.cancel from the broker (the channel is open): 18.1 reads
		// the stream from "last" again, as it may have been deleted and its
		// offsets started over.
		h.spec.stream.reset()
		c.log.Warn("stream consumer cancelled by the broker, reading from the last chunk again", "queue", h.spec.queue)
	}
	if !h.ch.IsClosed() {
		nh, err := c.subscribe(s, h.lc, h.spec)
		if err == nil || s.conn.IsClosed() {
			return nh, err
		}
		c.log.Info("consumer not resubscribed on its channel, opening another", "queue", h.spec.queue, "err", err)
	}
	lc := c.reopened[h.lc]
	if lc == nil || lc.ch.IsClosed() {
		var err error
		if lc, err = c.openChannel(s.conn); err != nil {
			return nil, err
		}
		if c.reopened == nil {
			c.reopened = map[*listenChannel]*listenChannel{}
		}
		clear(c.reopened) // only the latest replacement is of use
		c.reopened[h.lc] = lc
	}
	nh, err := c.subscribe(s, lc, h.spec)
	if err != nil {
		_ = lc.ch.Close()
	}
	return nh, err
}

// firstReconnectSplay bounds the random wait before a consumer's first
// reconnect attempt.
const firstReconnectSplay = 800 * time.Millisecond

// reconnect retries connect until it works or the consumer stops; nil
// means stopped. The first attempt comes after a random splay below
// firstReconnectSplay (one pass over the hosts, failing over at once, so a
// dead node costs a server well under a second; the splay spreads the
// clients a broker dropped together), later ones after the backoff.
func (c *consumer) reconnect() *consumeSession {
	for attempt := 1; ; attempt++ {
		wait := c.d.cfg.backoff(attempt - 1)
		if attempt == 1 {
			wait = rand.N(firstReconnectSplay)
		}
		if !sleepCtx(c.ctx, c.stopCh, wait) {
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
	var cons []*consumerHandle
	if c.cur != nil {
		cons = append(cons, c.cur.cons...)
	}
	c.mu.Unlock()
	for _, h := range cons {
		_ = h.ch.Cancel(h.tag, false)
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
		c.mu.Lock()
		open := append([]*consumerHandle(nil), s.cons...)
		c.mu.Unlock()
		stopC := c.stopCh
		for len(open) > 0 {
			var flushC <-chan time.Time
			if c.flushC != nil {
				flushC = c.flushC()
			}
			i, d, ok, woke := c.next(open, flushC, stopC)
			switch woke {
			case wakeFlush:
				c.flush()
				continue
			case wakeStop:
				// stop cancels the consumers it sees; these are the ones
				// this goroutine owns now (one resubscribed meanwhile
				// included). A second basic.cancel is harmless.
				stopC = nil
				for _, h := range open {
					if err := h.ch.Cancel(h.tag, false); err != nil {
						_ = h.ch.Close() // ends its deliveries all the same
					}
				}
				continue
			}
			if !ok {
				if c.isStopped() {
					open = append(open[:i], open[i+1:]...)
					continue
				}
				if s.conn.IsClosed() {
					break
				}
				nh, err := c.resubscribe(s, open[i])
				if err != nil {
					c.log.Warn("consumer cancelled and not resubscribed, reconnecting", "queue", open[i].spec.queue, "err", err)
					break
				}
				c.log.Info("consumer cancelled by the broker, resubscribed", "queue", nh.spec.queue)
				c.resubscribed.Add(1)
				c.mu.Lock()
				for j, h := range s.cons {
					if h == open[i] {
						s.cons[j] = nh
					}
				}
				stopped := c.stopped
				c.mu.Unlock()
				if stopped { // stop did not see it
					_ = nh.ch.Cancel(nh.tag, false)
				}
				open[i] = nh
				continue
			}
			h := open[i]
			// Take what this consumer already received, without waiting.
			batch = append(batch[:0], d)
		more:
			for len(batch) < maxBatch {
				select {
				case d, ok := <-h.dels:
					if !ok {
						break more // seen closed on the next receive
					}
					batch = append(batch, d)
				default:
					break more
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

// wake is what next returned for.
type wake int

const (
	wakeDelivery wake = iota // a delivery, or a consumer's deliveries ended (!ok)
	wakeFlush                // flushC fired
	wakeStop                 // stopC closed
)

// next receives from the first ready consumer of open (or flushC, or
// stopC). Up to three consumers (the RPC listener's) use a plain select;
// more fall back to reflect.Select.
func (c *consumer) next(open []*consumerHandle, flushC <-chan time.Time, stopC <-chan struct{}) (i int, d amqp.Delivery, ok bool, w wake) {
	var chs [3]<-chan amqp.Delivery
	if len(open) <= len(chs) {
		for j, h := range open {
			chs[j] = h.dels
		}
		select {
		case d, ok = <-chs[0]:
			return 0, d, ok, wakeDelivery
		case d, ok = <-chs[1]:
			return 1, d, ok, wakeDelivery
		case d, ok = <-chs[2]:
			return 2, d, ok, wakeDelivery
		case <-flushC:
			return 0, d, false, wakeFlush
		case <-stopC:
			return 0, d, false, wakeStop
		}
	}
	cases := make([]reflect.SelectCase, 0, len(open)+2)
	for _, h := range open {
		cases = append(cases, reflect.SelectCase{Dir: reflect.SelectRecv, Chan: reflect.ValueOf(h.dels)})
	}
	cases = append(cases, reflect.SelectCase{Dir: reflect.SelectRecv, Chan: reflect.ValueOf(flushC)})
	cases = append(cases, reflect.SelectCase{Dir: reflect.SelectRecv, Chan: reflect.ValueOf(stopC)})
	j, v, ok := reflect.Select(cases)
	switch j {
	case len(open):
		return 0, d, false, wakeFlush
	case len(open) + 1:
		return 0, d, false, wakeStop
	}
	if ok {
		d = v.Interface().(amqp.Delivery)
	}
	return j, d, ok, wakeDelivery
}

package rabbit

import (
	"context"
	"errors"
	"log/slog"
	"reflect"
	"runtime"
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

// maxBatch bounds the deliveries taken from a consumer in one go (and the
// replies acknowledged together).
const maxBatch = 64

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

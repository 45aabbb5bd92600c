package rabbit

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/oslogo/oslogo/driver"
)

// replyAckDelay is how long a handled reply may stay unacknowledged before
// the reply consumer acknowledges everything it handled with one
// basic.ack(multiple).
const replyAckDelay = 25 * time.Millisecond

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
	// ackBatch accumulate or replyAckDelay after the first, instead of one
	// ack frame per reply. The reply queue is this driver's own, so nobody
	// else can observe the difference; a reply redelivered after a
	// reconnect finds no waiting call and is dropped, as late replies are,
	// and one still in the client library when the connection dropped is
	// delivered again.
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
	final   chan *driver.Reply // one slot: the final reply
	beat    chan struct{}      // one slot: a heartbeat or partial reply came
	partial *driver.Reply      // last non-null result or failure (guarded by replyWaiter.mu)
}

func newReplyWaiter(d *Driver) *replyWaiter {
	w := &replyWaiter{d: d, readyCh: make(chan struct{}), calls: map[string]*pendingCall{}, failedCh: make(chan struct{})}
	w.ackTimer = time.NewTimer(time.Hour)
	w.ackTimer.Stop()
	w.c = newConsumer(d, "reply")
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

// queue is the reply queue's spec, as 18.1's declare_direct_consumer
// declares it (replyQueuePlan).
func (w *replyWaiter) queue(name string) *queueSpec {
	plan := replyQueuePlan(w.d.cfg, name, w.d.log)
	return &queueSpec{queue: name, declare: func(ch *amqp.Channel) error {
		if err := plan.declare(ch); err != nil {
			var again *againError
			if errors.As(err, &again) {
				return err
			}
			return fmt.Errorf("rabbit: declare reply queue: %w", err)
		}
		return nil
	}}
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
			// The reply consumer has no connection yet: the caller could
			// not reach the broker in time.
			if last != nil {
				return fmt.Errorf("%w: %w (reply queue not ready, last connection error: %w)", ctx.Err(), driver.ErrUnreachable, last)
			}
			return fmt.Errorf("%w: %w (reply queue not ready)", ctx.Err(), driver.ErrUnreachable)
		case <-w.d.closing:
			return driver.ErrClosed
		}
	}
}

// start runs the reply consumer, once.
func (w *replyWaiter) start() {
	w.once.Do(func() {
		name, err := w.d.replyQueue()
		if err != nil {
			w.c.log.Error("reply queue not named", "err", err)
			w.noteFailure(err)
			return
		}
		w.c.queues = []*queueSpec{w.queue(name)}
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
	return &pendingCall{final: make(chan *driver.Reply, 1), beat: make(chan struct{}, 1)}
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
	pendingCalls.Put(pc)
}

func (w *replyWaiter) handle(h *consumerHandle, batch []amqp.Delivery) {
	if w.ackCh != h.ch { // a new channel: the old tags are gone with it
		w.ackCh, w.unacked = h.ch, 0
	}
	for _, dl := range batch {
		if w.deliver(dl) {
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

// ackBatch is how many handled replies are acknowledged together: the
// broker stops delivering once the prefetch limit is unacknowledged, so
// they are acknowledged at half of it, and the broker keeps sending while
// the ack is on its way.
func (w *replyWaiter) ackBatch() int {
	return max(1, min(w.d.cfg.listenPrefetch()/2, maxBatch))
}

// deliver hands one reply to its call; it reports false for a malformed
// reply, which it rejects.
func (w *replyWaiter) deliver(dl amqp.Delivery) bool {
	m, err := decodeBody(dl.ContentType, dl.Headers, dl.Body)
	var r *incomingReply
	if err == nil {
		r, err = decodeReply(m)
	}
	if err != nil {
		_ = dl.Reject(false)
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

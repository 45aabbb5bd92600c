package rabbit

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"

	amqp "github.com/rabbitmq/amqp091-go"

	"oslogo/driver"
)

// pubResult is the broker's answer to one publish.
type pubResult int

const (
	pubAck      pubResult = iota
	pubNack               // basic.nack: the broker could not take it
	pubReturned           // basic.return before the ack: unroutable mandatory message
	pubLost               // the channel closed before the confirm
)

// pubWaiter waits for the confirm of one publish.
type pubWaiter struct {
	uid  string
	done chan pubResult // one slot; written once
}

// session is one send connection with one channel in confirm mode. Any
// number of goroutines publish on it at once; confirms are pipelined.
// Lock order: pubMu before mu.
type session struct {
	conn *amqp.Connection
	ch   *amqp.Channel

	pubMu    sync.Mutex // serialises sequence number + publish
	mu       sync.Mutex // guards the fields below
	pending  map[uint64]*pubWaiter
	declared map[string]bool // exchanges and queues declared on this channel
	dead     bool
}

// loop matches confirms with publishers. A basic.return is sent by the
// broker just before the ack of the same message and amqp091-go hands both
// over from its reader in that order, so draining the returns channel
// before resolving each confirm attributes every return to its publish.
func (s *session) loop(confirms <-chan amqp.Confirmation, returns <-chan amqp.Return) {
	returned := map[string]bool{}
	drain := func() {
		for {
			select {
			case r, ok := <-returns:
				if !ok {
					returns = nil
					return
				}
				returned[uniqueIDOf(r.Body)] = true
			default:
				return
			}
		}
	}
	for {
		select {
		case r, ok := <-returns:
			if !ok {
				returns = nil
				continue
			}
			returned[uniqueIDOf(r.Body)] = true
		case c, ok := <-confirms:
			if !ok {
				s.mu.Lock()
				s.dead = true
				for tag, w := range s.pending {
					w.done <- pubLost
					delete(s.pending, tag)
				}
				s.mu.Unlock()
				return
			}
			drain()
			s.mu.Lock()
			w := s.pending[c.DeliveryTag]
			delete(s.pending, c.DeliveryTag)
			s.mu.Unlock()
			if w == nil {
				continue
			}
			res := pubAck
			switch {
			case !c.Ack:
				res = pubNack
			case returned[w.uid]:
				res = pubReturned
			}
			delete(returned, w.uid)
			if len(returned) > 1024 { // returns nobody waits for; keep the map bounded
				clear(returned)
			}
			w.done <- res
		}
	}
}

// publish sends one message and registers its confirm waiter.
func (s *session) publish(exchange, key string, mandatory bool, msg amqp.Publishing, uid string) (*pubWaiter, error) {
	w := &pubWaiter{uid: uid, done: make(chan pubResult, 1)}
	s.pubMu.Lock()
	defer s.pubMu.Unlock()
	tag := s.ch.GetNextPublishSeqNo()
	s.mu.Lock()
	if s.dead {
		s.mu.Unlock()
		return nil, amqp.ErrClosed
	}
	s.pending[tag] = w
	s.mu.Unlock()
	if err := s.ch.Publish(exchange, key, mandatory, false, msg); err != nil {
		s.mu.Lock()
		delete(s.pending, tag)
		s.mu.Unlock()
		return nil, err
	}
	return w, nil
}

// declareOnce runs decl the first time key is seen on this channel.
func (s *session) declareOnce(key string, decl func(ch *amqp.Channel) error) error {
	s.mu.Lock()
	done := s.declared[key]
	s.mu.Unlock()
	if done {
		return nil
	}
	if err := decl(s.ch); err != nil {
		return err
	}
	s.mu.Lock()
	s.declared[key] = true
	s.mu.Unlock()
	return nil
}

func (s *session) alive() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return !s.dead && !s.conn.IsClosed()
}

// sender owns one send connection slot of the pool and reconnects it on
// demand, in the publishing goroutine (never holding a lock while it
// waits).
type sender struct {
	d    *Driver
	id   int
	mu   sync.Mutex
	cur  *session
	dial sync.Mutex // one dial at a time per slot
}

// session returns the live session, dialing a new one when needed.
func (p *sender) session(ctx context.Context) (*session, error) {
	p.mu.Lock()
	s := p.cur
	p.mu.Unlock()
	if s != nil && s.alive() {
		return s, nil
	}
	p.dial.Lock()
	defer p.dial.Unlock()
	p.mu.Lock()
	s = p.cur
	p.mu.Unlock()
	if s != nil && s.alive() {
		return s, nil
	}
	if s != nil {
		_ = s.conn.Close()
	}
	if p.d.isClosed() {
		return nil, driver.ErrClosed
	}
	conn, err := p.d.dialer.dial(ctx, fmt.Sprintf("send-%d", p.id))
	if err != nil {
		return nil, err
	}
	ch, err := conn.Channel()
	if err == nil {
		err = ch.Confirm(false)
	}
	if err != nil {
		_ = conn.Close()
		return nil, err
	}
	s = &session{conn: conn, ch: ch, pending: map[uint64]*pubWaiter{}, declared: map[string]bool{}}
	confirms := ch.NotifyPublish(make(chan amqp.Confirmation, 256))
	returns := ch.NotifyReturn(make(chan amqp.Return, 64))
	if !p.d.track(func() { s.loop(confirms, returns) }) {
		_ = conn.Close()
		return nil, driver.ErrClosed
	}
	p.mu.Lock()
	p.cur = s
	p.mu.Unlock()
	return s, nil
}

func (p *sender) close() {
	p.mu.Lock()
	s := p.cur
	p.mu.Unlock()
	if s != nil {
		_ = s.conn.Close()
	}
}

// pool is the set of send connections (rpc_conn_pool_size bounds it).
type pool struct {
	senders []*sender
	next    atomic.Uint64
}

func (p *pool) get() *sender {
	return p.senders[p.next.Add(1)%uint64(len(p.senders))]
}

// outgoing is one message to publish.
type outgoing struct {
	exchange  string
	key       string
	mandatory bool
	body      []byte
	uid       string
	headers   amqp.Table
	expire    string
	declKey   string                       // "" when nothing needs declaring
	declare   func(ch *amqp.Channel) error // run once per channel
	retry     int                          // -1 forever, 0 none, N at most N
}

// send publishes msg with oslo's retry policy and returns the confirm
// waiter. Connection errors are retried (with backoff) up to msg.retry
// times; channel errors on declaration are returned at once.
func (d *Driver) send(ctx context.Context, msg *outgoing) (*pubWaiter, error) {
	pub := amqp.Publishing{
		ContentType:     contentType,
		ContentEncoding: contentEncoding,
		DeliveryMode:    amqp.Persistent,
		Priority:        0,
		Headers:         amqp.Table{},
		Expiration:      msg.expire,
		Body:            msg.body,
	}
	if msg.headers != nil {
		pub.Headers = msg.headers
	}
	snd := d.pool.get()
	for attempt := 0; ; attempt++ {
		if d.isClosed() {
			return nil, driver.ErrClosed
		}
		s, err := snd.session(ctx)
		if err == nil && msg.declare != nil {
			err = s.declareOnce(msg.declKey, msg.declare)
		}
		if err == nil {
			var w *pubWaiter
			if w, err = s.publish(msg.exchange, msg.key, msg.mandatory, pub, msg.uid); err == nil {
				return w, nil
			}
		}
		if errors.Is(err, driver.ErrClosed) || d.isClosed() {
			return nil, driver.ErrClosed
		}
		if permanent(err) {
			return nil, fmt.Errorf("rabbit: publish to %q/%q: %w", msg.exchange, msg.key, err)
		}
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		if msg.retry >= 0 && attempt >= msg.retry {
			return nil, fmt.Errorf("%w: %v", driver.ErrDeliveryFailure, err)
		}
		d.log.Info("publish failed, retrying", "attempt", attempt+1, "err", err)
		if !sleepCtx(ctx, d.closing, d.cfg.backoff(attempt+1)) {
			if ctx.Err() != nil {
				return nil, ctx.Err()
			}
			return nil, driver.ErrClosed
		}
	}
}

// sendAndConfirm publishes and waits for the broker's confirm, re-sending
// when the connection dropped before the confirm came.
func (d *Driver) sendAndConfirm(ctx context.Context, msg *outgoing) error {
	for lost := 0; ; lost++ {
		w, err := d.send(ctx, msg)
		if err != nil {
			return err
		}
		select {
		case res := <-w.done:
			switch res {
			case pubAck:
				return nil
			case pubNack:
				return fmt.Errorf("%w: broker refused the message (basic.nack)", driver.ErrDeliveryFailure)
			case pubReturned:
				return fmt.Errorf("%w: exchange %q, routing key %q", driver.ErrUndeliverable, msg.exchange, msg.key)
			}
			if msg.retry >= 0 && lost >= msg.retry {
				return fmt.Errorf("%w: connection lost before the broker confirmed", driver.ErrDeliveryFailure)
			}
		case <-ctx.Done():
			return ctx.Err()
		case <-d.closing:
			return driver.ErrClosed
		}
	}
}

// logger returns a child logger for a component.
func childLogger(l *slog.Logger, component string) *slog.Logger {
	return l.With("component", component)
}

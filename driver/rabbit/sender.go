package rabbit

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/oslogo/oslogo/driver"
)

// pubResult is the broker's answer to one publish.
type pubResult int

const (
	pubAck      pubResult = iota
	pubNack               // basic.nack: the broker could not take it
	pubReturned           // basic.return before the ack: unroutable mandatory message
	pubLost               // the channel closed before the confirm
)

// pubChannel is a confirm-mode channel with its basic.return channel.
type pubChannel struct {
	ch      *amqp.Channel
	returns chan amqp.Return
	closed  chan *amqp.Error                          // the reason it closed (one slot)
	last    atomic.Pointer[amqp.DeferredConfirmation] // latest publish (noteLast)
	retired atomic.Bool                               // closed by retire, not by an error

	reasonOnce sync.Once
	reason     *amqp.Error
}

// openPubChannel opens a channel in confirm mode.
func openPubChannel(conn *amqp.Connection) (*pubChannel, error) {
	ch, err := conn.Channel()
	if err != nil {
		return nil, err
	}
	if err := ch.Confirm(false); err != nil {
		_ = ch.Close()
		return nil, err
	}
	pc := &pubChannel{ch: ch, returns: make(chan amqp.Return, returnsBuffer), closed: make(chan *amqp.Error, 1)}
	ch.NotifyReturn(pc.returns)
	ch.NotifyClose(pc.closed)
	return pc, nil
}

// closeReason is the error that closed the channel, once it is closed
// (nil for a clean close).
func (pc *pubChannel) closeReason() *amqp.Error {
	pc.reasonOnce.Do(func() {
		select {
		case pc.reason = <-pc.closed:
		default:
		}
	})
	return pc.reason
}

// pubWaiter waits for the confirm of one publish. amqp091-go resolves the
// deferred confirmation in its reader goroutine, so a publisher wakes
// straight from the broker's basic.ack with no goroutine in between.
type pubWaiter struct {
	s         *session
	pc        *pubChannel
	dc        *amqp.DeferredConfirmation
	uid       string
	mandatory bool
}

// result classifies a resolved confirm; call it once done is closed.
func (w *pubWaiter) result() pubResult {
	if !w.dc.Acked() {
		// amqp091-go nacks every pending confirm when the channel closes
		// (and marks it closed first): that is a lost publish, not a
		// refusal.
		if w.pc.ch.IsClosed() {
			return pubLost
		}
		return pubNack
	}
	if w.mandatory && w.s.takeReturned(w.pc, w.uid) {
		return pubReturned
	}
	return pubAck
}

// wait blocks for the result, ctx or the driver closing.
func (w *pubWaiter) wait(ctx context.Context, closing <-chan struct{}) (pubResult, error) {
	select {
	case <-w.dc.Done():
		return w.result(), nil
	case <-ctx.Done():
		return 0, ctx.Err()
	case <-closing:
		return 0, driver.ErrClosed
	}
}

// returnsBuffer is the capacity of a channel's basic.return channel.
const returnsBuffer = 1024

// maxReturned bounds the returns kept for publishers that stopped waiting.
const maxReturned = 4096

// session is one send connection. Every publish (casts, notifications,
// call requests, replies) goes out on one confirm-mode channel, pub, that
// any number of goroutines use at once; confirms are pipelined.
//
// A publish the broker refuses with a channel error (404, 403, 406)
// closes pub and loses every publish not yet confirmed on it, whichever
// goroutine sent it. Each of those is then published again alone, on the
// channel solo, one at a time: there, an error belongs to the publish
// that caused it. pub is reopened on the same connection.
//
// Declarations go to a third channel, one at a time: amqp091-go sends a
// synchronous method without the lock its publishes hold, so on a
// publishing channel a declaration can land between a publish's method
// and content frames, and two declarations in flight on one channel take
// each other's replies ("503 unexpected command received").
type session struct {
	conn *amqp.Connection
	sock *coalescingConn // conn's socket and publish gate

	pub     atomic.Pointer[pubChannel] // replaced after a channel error or a nack
	pubMu   sync.Mutex                 // one reopening of pub at a time
	retired atomic.Int32               // retired channels not yet closed (retire)

	soloMu sync.Mutex  // held from a solo publish until its confirm
	solo   *pubChannel // opened on first use, again after a channel error

	declMu sync.Mutex    // one declaration at a time, on declCh
	declCh *amqp.Channel // opened on first use, again after a channel error

	mu       sync.Mutex      // guards the fields below
	declared map[string]bool // exchanges and queues declared on this connection
	returned map[string]struct{}
}

// pubChannel returns the shared confirm channel, reopened if a channel
// error closed it.
func (s *session) pubChannel() (*pubChannel, error) {
	if pc := s.pub.Load(); pc != nil && !pc.ch.IsClosed() {
		return pc, nil
	}
	s.pubMu.Lock()
	defer s.pubMu.Unlock()
	if pc := s.pub.Load(); pc != nil && !pc.ch.IsClosed() {
		return pc, nil
	}
	pc, err := openPubChannel(s.conn)
	if err != nil {
		return nil, err
	}
	s.pub.Store(pc)
	return pc, nil
}

// drainLocked moves the returns amqp091-go queued for pc into the map.
// Every mandatory publisher drains once its confirm came, and publishes
// drain too, so the channel (sized well above the publishes a session
// has in flight) never fills and the connection's reader never waits on
// it.
func (s *session) drainLocked(pc *pubChannel) {
	for {
		select {
		case r, ok := <-pc.returns:
			if !ok {
				return
			}
			if len(s.returned) >= maxReturned { // returns nobody waits for any more
				clear(s.returned)
			}
			s.returned[uniqueIDOf(r.Body)] = struct{}{}
		default:
			return
		}
	}
}

// takeReturned reports whether the message uid came back as unroutable.
// The broker sends basic.return before the basic.ack of the same message
// and amqp091-go hands the return over (into pc.returns) before it
// resolves the confirm, so once the confirm is done the return is either
// in the map or still in the channel.
func (s *session) takeReturned(pc *pubChannel, uid string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.drainLocked(pc)
	_, ok := s.returned[uid]
	delete(s.returned, uid)
	return ok
}

// publish sends one message on the shared channel and returns its
// confirm waiter.
func (s *session) publish(exchange, key string, mandatory bool, msg amqp.Publishing, uid string) (*pubWaiter, error) {
	pc, err := s.pubChannel()
	if err != nil {
		return nil, err
	}
	if len(pc.returns) > 0 {
		s.mu.Lock()
		s.drainLocked(pc)
		s.mu.Unlock()
	}
	dc, err := pc.ch.PublishWithDeferredConfirm(exchange, key, mandatory, false, msg)
	if err != nil {
		return nil, err
	}
	if dc == nil { // not in confirm mode: cannot happen on a send session
		return nil, errors.New("rabbit: send channel is not in confirm mode")
	}
	pc.noteLast(dc)
	return &pubWaiter{s: s, pc: pc, dc: dc, uid: uid, mandatory: mandatory}, nil
}

// publishAlone sends one message on the solo channel and waits for its
// confirm with nothing else in flight there, so that a channel error is
// this message's own: it is returned as refused. lost reports the
// channel or connection closing for another reason.
func (s *session) publishAlone(ctx context.Context, closing <-chan struct{}, exchange, key string, mandatory bool, msg amqp.Publishing, uid string) (res pubResult, refused *amqp.Error, err error) {
	s.soloMu.Lock()
	defer s.soloMu.Unlock()
	if s.solo == nil || s.solo.ch.IsClosed() {
		pc, err := openPubChannel(s.conn)
		if err != nil {
			return 0, nil, err
		}
		s.solo = pc
	}
	pc := s.solo
	dc, err := pc.ch.PublishWithDeferredConfirm(exchange, key, mandatory, false, msg)
	if err != nil {
		return 0, nil, err
	}
	w := &pubWaiter{s: s, pc: pc, dc: dc, uid: uid, mandatory: mandatory}
	if res, err = w.wait(ctx, closing); err != nil {
		// Gone without its confirm: later publishes must not be
		// blamed for what this one may still cause.
		_ = pc.ch.Close()
		return 0, nil, err
	}
	if res == pubLost && !s.conn.IsClosed() {
		if e := pc.closeReason(); e != nil && e.Recover { // a soft (channel) error
			return res, e, nil
		}
	}
	if res == pubNack {
		_ = pc.ch.Close() // the next solo publish takes a new channel (nack.go)
	}
	return res, nil, nil
}

// declareOnce runs decl the first time key is seen on this connection.
func (s *session) declareOnce(key string, decl func(ch *amqp.Channel) error) error {
	if s.isDeclared(key) {
		return nil
	}
	s.declMu.Lock()
	defer s.declMu.Unlock()
	if s.isDeclared(key) { // declared while this one waited
		return nil
	}
	if err := runDeclare(&s.declCh, s.conn.Channel, decl); err != nil {
		return err
	}
	s.mu.Lock()
	s.declared[key] = true
	s.mu.Unlock()
	return nil
}

// forget drops key from the declarations, so that the next publish
// declares it again (an exchange deleted since, e.g. auto-deleted).
func (s *session) forget(key string) {
	s.mu.Lock()
	delete(s.declared, key)
	s.mu.Unlock()
}

func (s *session) isDeclared(key string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.declared[key]
}

func (s *session) alive() bool { return !s.conn.IsClosed() }

// sender owns one send connection slot of the pool and reconnects it on
// demand. One dial runs at a time per slot, in a goroutine of its own;
// publishers wait for it with their context, so none waits past its
// deadline and Close interrupts the dial.
type sender struct {
	d       *Driver
	id      int
	busy    atomic.Int32 // publishes in progress (dialing included)
	mu      sync.Mutex   // guards the fields below; never held while waiting
	cur     *session
	dialing *dialFlight // the dial in progress, nil if none
	lastErr error       // why the last dial failed (nil once one worked)
	// failures counts dials failed in a row; the next starts no earlier
	// than retryAt, however many publishers need the slot meanwhile.
	failures int
	retryAt  time.Time
}

// dialFlight is one dial of a sender slot, shared by every publisher that
// needs the slot meanwhile.
type dialFlight struct {
	done chan struct{} // closed once s or err is set
	s    *session
	err  error
}

// session returns a live session once it may publish: connected (dialing
// when needed) and neither blocked by the broker nor holding maxPending
// unwritten bytes. It waits at most until ctx ends or the driver closes.
func (p *sender) session(ctx context.Context) (*session, error) {
	s, err := p.connected(ctx)
	if err != nil {
		return nil, err
	}
	if err := s.sock.admit(ctx, p.d.closing); err != nil {
		if errors.Is(err, errStopped) {
			return nil, driver.ErrClosed
		}
		return nil, err
	}
	return s, nil
}

// connected returns the live session, starting a dial or joining the one
// in progress.
func (p *sender) connected(ctx context.Context) (*session, error) {
	for {
		p.mu.Lock()
		s := p.cur
		if s != nil && s.alive() {
			p.mu.Unlock()
			return s, nil
		}
		last := p.lastErr
		f := p.dialing
		if f == nil {
			if p.d.isClosed() {
				p.mu.Unlock()
				return nil, driver.ErrClosed
			}
			// After a failed dial the next waits for the backoff, so a
			// down broker sees one attempt per interval from this slot,
			// not one per publish.
			if wait := time.Until(p.retryAt); last != nil && wait > 0 {
				p.mu.Unlock()
				if !sleepCtx(ctx, p.d.closing, wait) {
					if ctx.Err() != nil {
						return nil, fmt.Errorf("%w: waiting to reconnect (previous attempt: %w)", driver.ErrUnreachable, last)
					}
					return nil, driver.ErrClosed
				}
				continue
			}
			f = &dialFlight{done: make(chan struct{})}
			old := p.cur
			p.cur, p.dialing = nil, f
			if !p.d.track(func() { p.dial(f, old) }) {
				p.dialing = nil
				p.mu.Unlock()
				return nil, driver.ErrClosed
			}
		}
		p.mu.Unlock()
		select {
		case <-f.done:
			return f.s, f.err
		case <-ctx.Done():
			if last != nil {
				return nil, fmt.Errorf("%w: still connecting (previous attempt: %w)", driver.ErrUnreachable, last)
			}
			return nil, fmt.Errorf("%w: still connecting", driver.ErrUnreachable)
		case <-p.d.closing:
			return nil, driver.ErrClosed
		}
	}
}

// dial runs flight f: it closes the dead session old, opens a new one and
// installs it, unless the driver closed meanwhile.
func (p *sender) dial(f *dialFlight, old *session) {
	if old != nil {
		old.close(p.d.log, p.d.cfg.ConnectTimeout)
	}
	ctx, stop := p.d.closingContext()
	s, err := p.open(ctx)
	stop()
	var orphan *session
	p.mu.Lock()
	if err == nil && p.d.isClosed() {
		// Close has read (or is about to read) p.cur; it would miss s.
		orphan, s, err = s, nil, driver.ErrClosed
	}
	if err == nil {
		p.cur = s
		p.failures = 0
	} else if !errors.Is(err, driver.ErrClosed) {
		p.failures++
		p.retryAt = time.Now().Add(p.d.cfg.backoff(p.failures))
	}
	p.dialing, p.lastErr = nil, err
	f.s, f.err = s, err
	close(f.done)
	p.mu.Unlock()
	if orphan != nil {
		orphan.close(p.d.log, p.d.cfg.ConnectTimeout)
	}
}

// closingContext returns a context cancelled when the driver closes, and
// the function that releases it (and the goroutine that watches).
func (d *Driver) closingContext() (context.Context, func()) {
	ctx, cancel := context.WithCancel(context.Background())
	watched := make(chan struct{})
	go func() {
		defer close(watched)
		select {
		case <-d.closing:
			cancel()
		case <-ctx.Done():
		}
	}()
	return ctx, func() { cancel(); <-watched }
}

// open dials a send connection and sets up its session.
func (p *sender) open(ctx context.Context) (*session, error) {
	var s *session
	setup := func(conn *amqp.Connection) error {
		pc, err := openPubChannel(conn)
		if err != nil {
			return err
		}
		s = &session{conn: conn, declared: map[string]bool{}, returned: map[string]struct{}{}}
		s.pub.Store(pc)
		return nil
	}
	conn, sock, err := p.d.dialer.dialSession(ctx, fmt.Sprintf("send-%d", p.id), setup)
	if err != nil {
		return nil, err
	}
	s.sock = sock
	blocks := conn.NotifyBlocked(make(chan amqp.Blocking, 2))
	log := p.d.log.With("conn", fmt.Sprintf("send-%d", p.id))
	if !p.d.track(func() { watchBlocked(blocks, sock, log) }) {
		s.close(p.d.log, p.d.cfg.ConnectTimeout)
		return nil, driver.ErrClosed
	}
	return s, nil
}

// watchBlocked applies connection.blocked and connection.unblocked to the
// connection's publish gate until the connection closes.
func watchBlocked(blocks <-chan amqp.Blocking, sock *coalescingConn, log *slog.Logger) {
	for b := range blocks {
		sock.setBlocked(b.Active, b.Reason)
		if b.Active {
			log.Warn("the broker blocks publishes on this connection", "reason", b.Reason)
		} else {
			log.Info("the broker unblocked publishes on this connection")
		}
	}
}

// close closes the session's connection within timeout. The broker reads
// nothing from a connection it blocks, so connection.close would wait for
// the alarm to clear: that socket is closed outright, and what it still
// held for the broker is reported.
func (s *session) close(log *slog.Logger, timeout time.Duration) {
	if reason, blocked := s.sock.blockedBy(); blocked {
		if n := s.sock.unsent(); n > 0 {
			log.Warn("closing a connection the broker blocks: publishes not written are dropped", "bytes", n, "reason", reason)
		}
		_ = s.sock.Close()
	}
	_ = s.conn.CloseDeadline(time.Now().Add(timeout))
}

func (p *sender) close() {
	p.mu.Lock()
	s := p.cur
	p.mu.Unlock()
	if s != nil {
		s.close(p.d.log, p.d.cfg.ConnectTimeout)
	}
}

// pool is the set of send connections (rpc_conn_pool_size bounds it).
//
// Publishes multiplex on a connection, so the first one carries them all
// while it keeps up: on one connection concurrent publishes share socket
// writes and the broker acknowledges them with fewer basic.ack(multiple)
// frames (measured with 8 casters: about 25% less CPU per cast than
// spreading them over two). A publisher goes to the next connection only
// when spillAt publishes are already under way on one (a slow or
// reconnecting connection).
type pool struct {
	senders []*sender
	next    atomic.Uint64
}

// spillAt is how many publishes in progress on a send connection make the
// next publisher try another.
const spillAt = 16

func (p *pool) get() *sender {
	for _, s := range p.senders {
		if s.busy.Load() < spillAt {
			return s
		}
	}
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

// publishing is msg's AMQP message.
func (msg *outgoing) publishing() amqp.Publishing {
	pub := amqp.Publishing{
		ContentType:     contentType,
		ContentEncoding: contentEncoding,
		DeliveryMode:    amqp.Persistent,
		Priority:        0,
		// No headers: amqp091-go leaves an empty table off the wire either
		// way (kombu reads a missing table as {}), and nil spares a map.
		Expiration: msg.expire,
		Body:       msg.body,
	}
	if msg.headers != nil {
		pub.Headers = msg.headers
	}
	return pub
}

// outcome is the error of a confirmed publish's result.
func (msg *outgoing) outcome(res pubResult) error {
	switch res {
	case pubNack:
		return fmt.Errorf("%w: broker refused the message (basic.nack)", driver.ErrDeliveryFailure)
	case pubReturned:
		return fmt.Errorf("%w: exchange %q, routing key %q", driver.ErrUndeliverable, msg.exchange, msg.key)
	case pubLost:
		return fmt.Errorf("%w: connection lost before the broker confirmed", driver.ErrDeliveryFailure)
	}
	return nil
}

// maxReopen bounds the publishes retried at once, without counting as an
// attempt, because another publish's channel error closed the channel
// under them.
const maxReopen = 8

// publishWith runs publish on a live session of the pool, after msg's
// declaration, with oslo's retry policy: connection errors are retried
// (with backoff) up to msg.retry times; channel errors on declaration
// are returned at once.
func (d *Driver) publishWith(ctx context.Context, msg *outgoing, publish func(s *session) error) error {
	snd := d.pool.get()
	snd.busy.Add(1)
	defer snd.busy.Add(-1)
	reopened := 0
	for attempt := 0; ; attempt++ {
		if d.isClosed() {
			return driver.ErrClosed
		}
		s, err := snd.session(ctx)
		if err == nil && msg.declare != nil {
			err = s.declareOnce(msg.declKey, msg.declare)
		}
		if err == nil {
			if err = publish(s); err == nil {
				return nil
			}
			if errors.Is(err, amqp.ErrClosed) && !s.conn.IsClosed() && reopened < maxReopen {
				reopened++ // the channel closed under it; the next try reopens it
				attempt--
				continue
			}
		}
		if errors.Is(err, driver.ErrClosed) || d.isClosed() {
			return driver.ErrClosed
		}
		if permanent(err) {
			return fmt.Errorf("rabbit: publish to %q/%q: %w", msg.exchange, msg.key, err)
		}
		if ctx.Err() != nil {
			return fmt.Errorf("%w (last error: %w)", ctx.Err(), err)
		}
		if msg.retry >= 0 && attempt >= msg.retry {
			return fmt.Errorf("%w: %w", driver.ErrDeliveryFailure, err)
		}
		d.log.Info("publish failed, retrying", "attempt", attempt+1, "err", err)
		if !sleepCtx(ctx, d.closing, d.cfg.backoff(attempt+1)) {
			if ctx.Err() != nil {
				return fmt.Errorf("%w (last error: %w)", ctx.Err(), err)
			}
			return driver.ErrClosed
		}
	}
}

// send publishes msg on the shared confirm channel of a send connection
// and returns the confirm waiter.
func (d *Driver) send(ctx context.Context, msg *outgoing) (*pubWaiter, error) {
	pub := msg.publishing()
	var w *pubWaiter
	err := d.publishWith(ctx, msg, func(s *session) (err error) {
		w, err = s.publish(msg.exchange, msg.key, msg.mandatory, pub, msg.uid)
		return err
	})
	return w, err
}

// sendAlone publishes msg on its own (session.publishAlone) until the
// broker confirms it, and returns the broker's error if it refuses this
// message with a channel error. A 404 on a message whose exchange this
// connection had declared declares it again first, once: it may have been
// deleted since (an auto-deleted exchange).
func (d *Driver) sendAlone(ctx context.Context, msg *outgoing) error {
	pub := msg.publishing()
	redeclared, nacks, firstNack := false, 0, time.Time{}
	for lost := 0; ; {
		var res pubResult
		var refused *amqp.Error
		var sess *session
		err := d.publishWith(ctx, msg, func(s *session) (err error) {
			sess = s
			res, refused, err = s.publishAlone(ctx, d.closing, msg.exchange, msg.key, msg.mandatory, pub, msg.uid)
			return err
		})
		if err != nil {
			return err
		}
		if refused != nil {
			if refused.Code == amqp.NotFound && msg.declare != nil && !redeclared {
				redeclared = true
				sess.forget(msg.declKey)
				continue
			}
			return fmt.Errorf("rabbit: publish to %q/%q refused: %w", msg.exchange, msg.key, refused)
		}
		if res == pubNack {
			if nacks++; nacks == 1 {
				firstNack = time.Now()
			}
			if err := d.againAfterNack(ctx, msg, nacks, lost, firstNack); err != nil {
				return err
			}
			lost++
			continue
		}
		if res != pubLost {
			return msg.outcome(res)
		}
		if msg.retry >= 0 && lost >= msg.retry {
			return msg.outcome(pubLost)
		}
		lost++
	}
}

// settle waits for the confirm of w, msg's publish. A publish lost with
// its connection is published again (msg.retry times at most); one lost
// because a channel error closed the shared channel, whichever publish
// caused it, is published again alone (sendAlone), so that only the
// publish that caused it gets the error. A nacked publish retires its
// channel and is published again after a backoff, within msg.retry and
// ctx (nack.go).
func (d *Driver) settle(ctx context.Context, msg *outgoing, w *pubWaiter) error {
	nacks, firstNack := 0, time.Time{}
	for again := 0; ; again++ {
		res, err := w.wait(ctx, d.closing)
		if err != nil {
			return err
		}
		switch res {
		case pubNack:
			d.retire(w.s, w.pc)
			if nacks++; nacks == 1 {
				firstNack = time.Now()
			}
			if err := d.againAfterNack(ctx, msg, nacks, again, firstNack); err != nil {
				return err
			}
		case pubLost:
			if w.pc.retired.Load() && !w.s.conn.IsClosed() {
				// Closed by retire: nobody's error, published again
				// on the current channel without counting.
				again--
				break
			}
			if !w.s.conn.IsClosed() {
				return d.sendAlone(ctx, msg)
			}
			if msg.retry >= 0 && again >= msg.retry {
				return msg.outcome(pubLost)
			}
		default:
			return msg.outcome(res)
		}
		if w, err = d.send(ctx, msg); err != nil {
			return err
		}
	}
}

// sendAndConfirm publishes and waits for the broker's confirm (settle).
func (d *Driver) sendAndConfirm(ctx context.Context, msg *outgoing) error {
	w, err := d.send(ctx, msg)
	if err != nil {
		return err
	}
	return d.settle(ctx, msg, w)
}

// logger returns a child logger for a component.
func childLogger(l *slog.Logger, component string) *slog.Logger {
	return l.With("component", component)
}

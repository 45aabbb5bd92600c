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

// pubWaiter waits for the confirm of one publish. amqp091-go resolves the
// deferred confirmation in its reader goroutine, so a publisher wakes
// straight from the broker's basic.ack with no goroutine in between.
type pubWaiter struct {
	s         *session
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
		if w.s.ch.IsClosed() {
			return pubLost
		}
		return pubNack
	}
	if w.mandatory && w.s.takeReturned(w.uid) {
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

// returnsBuffer is the capacity of a session's basic.return channel.
const returnsBuffer = 1024

// maxReturned bounds the returns kept for publishers that stopped waiting.
const maxReturned = 4096

// session is one send connection with two channels: ch, in confirm mode,
// for what must block until the broker has it (casts, notifications), and
// fast, without confirms, for call requests and replies, whose delivery the
// other side proves (a reply, a caller that stops waiting). Any number of
// goroutines publish on either at once; confirms are pipelined.
//
// Declarations go to a third channel, one at a time: amqp091-go sends a
// synchronous method without the lock its publishes hold, so on a
// publishing channel a declaration can land between a publish's method
// and content frames, and two declarations in flight on one channel take
// each other's replies ("503 unexpected command received").
type session struct {
	conn    *amqp.Connection
	sock    *coalescingConn // conn's socket and publish gate
	ch      *amqp.Channel
	returns chan amqp.Return

	fast        *amqp.Channel
	fastReturns chan amqp.Return
	lost        chan struct{} // closed once fast is closed (with its connection)

	declMu sync.Mutex    // one declaration at a time, on declCh
	declCh *amqp.Channel // opened on first use, again after a channel error

	mu       sync.Mutex      // guards the fields below
	declared map[string]bool // exchanges and queues declared on this connection
	returned map[string]struct{}

	wmu   sync.Mutex        // guards watch, ring and rpos
	watch map[string]func() // mandatory publishes on fast, by _unique_id
	ring  []string          // the order they were watched in, to bound watch
	rpos  int
}

// maxWatched bounds the mandatory publishes on a fast channel still
// watched for a basic.return. The broker sends a return while it routes
// the message, a few milliseconds at most, so only a publish that many
// publishes old is forgotten.
const maxWatched = 4096

// watchReturn arranges for onReturn to run (in the session's return
// goroutine, so it must not block) if the publish uid on fast comes back.
func (s *session) watchReturn(uid string, onReturn func()) {
	s.wmu.Lock()
	if s.ring == nil {
		s.ring = make([]string, maxWatched)
	}
	if old := s.ring[s.rpos]; old != "" {
		delete(s.watch, old)
	}
	s.ring[s.rpos] = uid
	s.rpos = (s.rpos + 1) % maxWatched
	s.watch[uid] = onReturn
	s.wmu.Unlock()
}

// unwatch forgets uid once its publisher no longer cares.
func (s *session) unwatch(uid string) {
	s.wmu.Lock()
	delete(s.watch, uid)
	s.wmu.Unlock()
}

// serveReturns hands the returns of fast to their watchers until the
// channel closes, then closes lost.
func (s *session) serveReturns(log *slog.Logger) {
	defer close(s.lost)
	for r := range s.fastReturns {
		uid := uniqueIDOf(r.Body)
		// f runs under wmu so that once unwatch returns it never runs.
		s.wmu.Lock()
		f := s.watch[uid]
		delete(s.watch, uid)
		if f != nil {
			f()
		}
		s.wmu.Unlock()
		if f == nil {
			log.Info("returned message nobody waits for", "routing_key", r.RoutingKey, "reply_text", r.ReplyText)
		}
	}
}

// drainLocked moves the returns amqp091-go queued into the map. Every
// publish and every mandatory publisher drains, so the channel (sized well
// above the publishes a session has in flight) never fills and the
// connection's reader never waits on it.
func (s *session) drainLocked() {
	for {
		select {
		case r, ok := <-s.returns:
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
// and amqp091-go hands the return over (into s.returns) before it resolves
// the confirm, so once the confirm is done the return is either in the map
// or still in the channel.
func (s *session) takeReturned(uid string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.drainLocked()
	_, ok := s.returned[uid]
	delete(s.returned, uid)
	return ok
}

// publishFast sends one message on the channel without confirms; a
// mandatory one is watched for its return (onReturn) from before it leaves.
func (s *session) publishFast(exchange, key string, mandatory bool, msg amqp.Publishing, uid string, onReturn func()) (*pubWaiter, error) {
	if mandatory && onReturn != nil {
		s.watchReturn(uid, onReturn)
	}
	if err := s.fast.Publish(exchange, key, mandatory, false, msg); err != nil {
		if mandatory && onReturn != nil {
			s.unwatch(uid)
		}
		return nil, err
	}
	return &pubWaiter{s: s, uid: uid, mandatory: mandatory}, nil
}

// publish sends one message and returns its confirm waiter.
func (s *session) publish(exchange, key string, mandatory bool, msg amqp.Publishing, uid string) (*pubWaiter, error) {
	if len(s.returns) > 0 {
		s.mu.Lock()
		s.drainLocked()
		s.mu.Unlock()
	}
	dc, err := s.ch.PublishWithDeferredConfirm(exchange, key, mandatory, false, msg)
	if err != nil {
		return nil, err
	}
	if dc == nil { // not in confirm mode: cannot happen on a send session
		return nil, errors.New("rabbit: send channel is not in confirm mode")
	}
	return &pubWaiter{s: s, dc: dc, uid: uid, mandatory: mandatory}, nil
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
	if s.declCh == nil || s.declCh.IsClosed() {
		ch, err := s.conn.Channel()
		if err != nil {
			return err
		}
		s.declCh = ch
	}
	if err := decl(s.declCh); err != nil {
		return err
	}
	s.mu.Lock()
	s.declared[key] = true
	s.mu.Unlock()
	return nil
}

func (s *session) isDeclared(key string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.declared[key]
}

func (s *session) alive() bool {
	return !s.ch.IsClosed() && !s.fast.IsClosed() && !s.conn.IsClosed()
}

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
	p.mu.Lock()
	s := p.cur
	if s != nil && s.alive() {
		p.mu.Unlock()
		return s, nil
	}
	f := p.dialing
	if f == nil {
		if p.d.isClosed() {
			p.mu.Unlock()
			return nil, driver.ErrClosed
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
	last := p.lastErr
	p.mu.Unlock()
	select {
	case <-f.done:
		return f.s, f.err
	case <-ctx.Done():
		if last != nil {
			return nil, fmt.Errorf("rabbit: still connecting (previous attempt: %w)", last)
		}
		return nil, errors.New("rabbit: still connecting")
	case <-p.d.closing:
		return nil, driver.ErrClosed
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
		ch, err := conn.Channel()
		if err == nil {
			err = ch.Confirm(false)
		}
		var fast *amqp.Channel
		if err == nil {
			fast, err = conn.Channel()
		}
		if err != nil {
			return err
		}
		s = &session{conn: conn, ch: ch, returns: make(chan amqp.Return, returnsBuffer), declared: map[string]bool{}, returned: map[string]struct{}{},
			fast: fast, fastReturns: make(chan amqp.Return, returnsBuffer), lost: make(chan struct{}), watch: map[string]func(){}}
		ch.NotifyReturn(s.returns)
		fast.NotifyReturn(s.fastReturns)
		return nil
	}
	conn, sock, err := p.d.dialer.dialSession(ctx, fmt.Sprintf("send-%d", p.id), setup)
	if err != nil {
		return nil, err
	}
	s.sock = sock
	blocks := conn.NotifyBlocked(make(chan amqp.Blocking, 2))
	log := p.d.log.With("conn", fmt.Sprintf("send-%d", p.id))
	if !p.d.track(func() { s.serveReturns(p.d.log) }) || !p.d.track(func() { watchBlocked(blocks, sock, log) }) {
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
	fast      bool                         // publish without a confirm (call requests, replies)
	onReturn  func()                       // with fast and mandatory: runs if the message comes back
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
		// No headers: amqp091-go leaves an empty table off the wire either
		// way (kombu reads a missing table as {}), and nil spares a map.
		Expiration: msg.expire,
		Body:       msg.body,
	}
	if msg.headers != nil {
		pub.Headers = msg.headers
	}
	snd := d.pool.get()
	snd.busy.Add(1)
	defer snd.busy.Add(-1)
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
			if msg.fast {
				w, err = s.publishFast(msg.exchange, msg.key, msg.mandatory, pub, msg.uid, msg.onReturn)
			} else {
				w, err = s.publish(msg.exchange, msg.key, msg.mandatory, pub, msg.uid)
			}
			if err == nil {
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
			return nil, fmt.Errorf("%w (last error: %v)", ctx.Err(), err)
		}
		if msg.retry >= 0 && attempt >= msg.retry {
			return nil, fmt.Errorf("%w: %w", driver.ErrDeliveryFailure, err)
		}
		d.log.Info("publish failed, retrying", "attempt", attempt+1, "err", err)
		if !sleepCtx(ctx, d.closing, d.cfg.backoff(attempt+1)) {
			if ctx.Err() != nil {
				return nil, fmt.Errorf("%w (last error: %v)", ctx.Err(), err)
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
		res, err := w.wait(ctx, d.closing)
		if err != nil {
			return err
		}
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
	}
}

// logger returns a child logger for a component.
func childLogger(l *slog.Logger, component string) *slog.Logger {
	return l.With("component", component)
}

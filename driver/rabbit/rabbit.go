package rabbit

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/oslogo/oslogo/driver"
)

func init() {
	driver.Register("rabbit", Open)
	driver.Register("kombu", Open)
}

// Driver is the rabbit:// transport. It is safe for concurrent use.
type Driver struct {
	cfg    Config
	dialer *dialer
	log    *slog.Logger
	pool   *pool

	qm *queueManager // use_queue_manager's counter, nil without it

	// replyQ is the reply queue, reply_<hex> (reply_<host>:<proc>:<n> with
	// use_queue_manager), one per driver, named by replyQueue when the
	// first call starts the reply waiter (as 18.1 names it on the first
	// call, so a driver that never calls takes no number of the counter).
	replyQ    string
	replyErr  error
	replyOnce sync.Once
	waiter    *replyWaiter
	obsolet   *obsoleteQueues

	replyRetries atomic.Int32 // returned replies being retried

	nackPatience time.Duration // 0: nackPatienceDefault (see nack.go); tests shorten it

	mu        sync.Mutex
	closed    bool
	closing   chan struct{}
	wg        sync.WaitGroup
	listeners map[closer]struct{}
}

type closer interface{ Close() error }

// Open is the driver.Opener of rabbit:// and kombu://. It validates the URL
// and options and connects lazily.
func Open(_ context.Context, u *url.URL, opts driver.Options) (driver.Driver, error) {
	return OpenURL(u, opts)
}

// OpenURL is Open with its concrete type. When opts.RawURL is set it is
// parsed instead of u, so per-host credentials stay exact (a ',' or '@'
// in a percent-encoded password included); without it the credentials are
// recovered from u's folded userinfo.
func OpenURL(u *url.URL, opts driver.Options) (*Driver, error) {
	if opts.RawURL != "" {
		return OpenString(opts.RawURL, opts)
	}
	tu, err := fromURL(u)
	if err != nil {
		return nil, err
	}
	return newDriver(tu, opts)
}

// OpenString opens a driver from the raw text of a transport URL, which
// keeps per-host credentials exact even when they hold ',' or '@'.
func OpenString(raw string, opts driver.Options) (*Driver, error) {
	tu, err := ParseURL(raw)
	if err != nil {
		return nil, err
	}
	return newDriver(tu, opts)
}

func newDriver(tu *TransportURL, opts driver.Options) (*Driver, error) {
	cfg := DefaultConfig()
	warnings, err := cfg.apply(opts.Config, false)
	if err != nil {
		return nil, err
	}
	if _, err := cfg.apply(tu.Query, true); err != nil { // URL query overrides the file
		return nil, err
	}
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("rabbit: %w", err)
	}
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	log = childLogger(log, "rabbit")
	for _, w := range append(warnings, cfg.ignoredWarnings()...) {
		log.Warn(w)
	}
	dl, err := newDialer(cfg, tu, log)
	if err != nil {
		return nil, err
	}
	var qm *queueManager
	if cfg.UseQueueManager {
		if qm, err = newQueueManager(cfg.Hostname, cfg.Processname, lockPath(opts)); err != nil {
			return nil, err
		}
	}
	d := &Driver{
		cfg:       cfg,
		dialer:    dl,
		log:       log,
		qm:        qm,
		closing:   make(chan struct{}),
		listeners: map[closer]struct{}{},
		obsolet:   &obsoleteQueues{m: map[string]time.Time{}},
	}
	n := min(cfg.RPCConnPoolSize, max(cfg.ConnPoolMinSize, 1))
	d.pool = &pool{}
	for i := range n {
		d.pool.senders = append(d.pool.senders, &sender{d: d, id: i})
	}
	d.waiter = newReplyWaiter(d)
	return d, nil
}

// replyQueue names the reply queue, once; Call reads d.replyQ after the
// reply waiter, which calls this first, is ready.
func (d *Driver) replyQueue() (string, error) {
	d.replyOnce.Do(func() {
		if d.qm == nil {
			d.replyQ = "reply_" + newHexID()
			return
		}
		n, err := d.qm.get()
		if err != nil {
			d.replyErr = err
			return
		}
		d.replyQ = "reply_" + n
	})
	return d.replyQ, d.replyErr
}

// Config returns the effective options.
func (d *Driver) Config() Config { return d.cfg }

// track runs f in a goroutine that Close waits for; it reports false once
// the driver is closed.
func (d *Driver) track(f func()) bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.closed {
		return false
	}
	d.wg.Add(1)
	go func() {
		defer d.wg.Done()
		f()
	}()
	return true
}

func (d *Driver) isClosed() bool {
	select {
	case <-d.closing:
		return true
	default:
		return false
	}
}

func (d *Driver) addListener(l closer) bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.closed {
		return false
	}
	d.listeners[l] = struct{}{}
	return true
}

func (d *Driver) removeListener(l closer) {
	d.mu.Lock()
	delete(d.listeners, l)
	d.mu.Unlock()
}

// Close closes listeners, fails calls in flight with driver.ErrClosed and
// releases every connection.
func (d *Driver) Close() error {
	d.mu.Lock()
	if d.closed {
		d.mu.Unlock()
		return nil
	}
	d.closed = true
	close(d.closing)
	ls := make([]closer, 0, len(d.listeners))
	for l := range d.listeners {
		ls = append(ls, l)
	}
	d.mu.Unlock()
	for _, l := range ls {
		_ = l.Close()
	}
	d.waiter.close()
	for _, s := range d.pool.senders {
		s.close()
	}
	d.wg.Wait()
	return nil
}

// expiration is the AMQP expiration of a call: the timeout in milliseconds.
func expiration(t time.Duration) string {
	ms := t.Milliseconds()
	if ms < 1 {
		ms = 1
	}
	return strconv.FormatInt(ms, 10)
}

// topicExchangeDecl declares the exchange of a cast or call as 18.1's
// topic_send does (falling back to non-durable on a durability mismatch,
// see exchangePlan).
func (d *Driver) topicExchangeDecl(name string) (string, func(ch *amqp.Channel) error) {
	p := d.topicExchangePlan(name)
	return "x:" + name, func(ch *amqp.Channel) error { return p.declare(ch) }
}

func (d *Driver) topicExchangePlan(name string) *exchangePlan {
	return &exchangePlan{x: exchangeSpec{name: name, kind: amqp.ExchangeTopic, durable: d.cfg.durable(), autoDelete: d.cfg.AutoDelete}, log: d.log}
}

// fanoutExchangeDecl declares T_fanout as 18.1's fanout_send does:
// auto-delete, durable with rabbit_transient_quorum_queue.
func (d *Driver) fanoutExchangeDecl(topic string) (string, func(ch *amqp.Channel) error) {
	p := d.fanoutExchangePlan(topic)
	return "f:" + p.x.name, func(ch *amqp.Channel) error { return p.declare(ch) }
}

func (d *Driver) fanoutExchangePlan(topic string) *exchangePlan {
	return &exchangePlan{x: exchangeSpec{name: topic + "_fanout", kind: amqp.ExchangeFanout, durable: d.cfg.transientDurable(), autoDelete: true}, log: d.log}
}

func checkTarget(t driver.Target) error {
	if t.Topic == "" {
		return errors.New("rabbit: invalid target: a topic is required")
	}
	return nil
}

// requestMessage builds the outgoing message of a call or cast.
func (d *Driver) requestMessage(target driver.Target, body []byte, uid string, opts driver.SendOptions) *outgoing {
	msg := &outgoing{body: body, uid: uid, retry: opts.Retry}
	if target.Fanout {
		msg.exchange, msg.key = target.Topic+"_fanout", ""
		msg.declKey, msg.declare = d.fanoutExchangeDecl(target.Topic)
		return msg
	}
	msg.exchange, msg.key = target.Exchange, target.String()
	msg.mandatory = opts.Mandatory
	msg.declKey, msg.declare = d.topicExchangeDecl(target.Exchange)
	return msg
}

// Cast publishes a request nobody answers and waits for the broker's
// confirm.
func (d *Driver) Cast(ctx context.Context, target driver.Target, req *driver.Request, opts driver.SendOptions) error {
	if err := checkTarget(target); err != nil {
		return err
	}
	uid := newHexID()
	body, err := encodeRequest(req, nil, uid)
	if err != nil {
		return err
	}
	msg := d.requestMessage(target, body, uid, opts)
	if msg.body, msg.headers, err = compressBody(d.cfg.Compression, msg.body); err != nil {
		return err
	}
	return d.sendAndConfirm(ctx, msg)
}

// Call publishes a request and waits for its final reply on the driver's
// reply queue.
func (d *Driver) Call(ctx context.Context, target driver.Target, req *driver.Request, opts driver.SendOptions) (*driver.Reply, error) {
	if err := checkTarget(target); err != nil {
		return nil, err
	}
	if target.Fanout {
		return nil, errors.New("rabbit: invalid target: a call cannot be fanout")
	}
	timeout := opts.Timeout
	if dl, ok := ctx.Deadline(); ok {
		if rem := time.Until(dl); timeout <= 0 || rem < timeout {
			timeout = rem
		}
	}
	if timeout <= 0 && ctx.Err() != nil {
		return nil, timeoutErr(ctx.Err())
	}
	if dl, ok := ctx.Deadline(); opts.Timeout > 0 && (!ok || time.Until(dl) > opts.Timeout) {
		// The call's own timeout bounds every wait, connecting included.
		// (The messaging layer always sets a deadline that comes first.)
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, opts.Timeout)
		defer cancel()
	}
	if err := d.waiter.ready(ctx, opts.Retry); err != nil {
		if errors.Is(err, context.DeadlineExceeded) {
			return nil, timeoutErr(err)
		}
		return nil, err
	}
	msgID := newHexID()
	uid := newHexID()
	body, err := encodeRequest(req, &callInfo{msgID: msgID, replyQ: d.replyQ, monitor: opts.CallMonitorTimeout}, uid)
	if err != nil {
		return nil, err
	}
	msg := d.requestMessage(target, body, uid, opts)
	if timeout > 0 {
		msg.expire = expiration(timeout)
	}
	if msg.body, msg.headers, err = compressBody(d.cfg.Compression, msg.body); err != nil {
		return nil, err
	}

	// Register before publishing so that a fast reply is never lost.
	pc := d.waiter.register(msgID)
	defer d.waiter.unregister(msgID, pc)

	var monitor *time.Timer
	var monitorC <-chan time.Time
	if opts.CallMonitorTimeout > 0 {
		monitor = time.NewTimer(opts.CallMonitorTimeout)
		defer monitor.Stop()
		monitorC = monitor.C
	}

	fail := func(err error) (*driver.Reply, error) {
		if errors.Is(err, context.DeadlineExceeded) {
			return nil, timeoutErr(err)
		}
		return nil, err
	}
	// The request is confirmed like any publish, the confirm awaited
	// alongside the reply (which usually comes after it): a request the
	// broker refuses fails the call at once with the broker's error, a
	// mandatory one that no queue takes comes back (driver.ErrUndeliverable),
	// and one lost with its connection or channel is published again
	// (settle), as oslo's confirmed publish is.
	w, err := d.send(ctx, msg)
	if err != nil {
		return fail(err)
	}
	confirmed := w.dc.Done()
	for {
		select {
		case r := <-pc.final:
			return r, nil
		case <-confirmed:
			confirmed = nil
			if err := d.settle(ctx, msg, w); err != nil {
				return fail(err)
			}
		case <-pc.beat:
			if monitor != nil {
				monitor.Reset(opts.CallMonitorTimeout)
			}
		case <-monitorC:
			return nil, fmt.Errorf("%w: no heartbeat from the server within %s (call_monitor_timeout)", driver.ErrTimeout, opts.CallMonitorTimeout)
		case <-ctx.Done():
			return fail(ctx.Err())
		case <-d.closing:
			return nil, driver.ErrClosed
		}
	}
}

// timeoutErr is ErrTimeout caused by cause (a context deadline, possibly
// with the last connection error in its message).
func timeoutErr(cause error) error {
	return fmt.Errorf("%w: %w", driver.ErrTimeout, cause)
}

// Notify publishes one notification; the publisher declares the
// "<topic>.<priority>" queue, as oslo does, so that nothing is lost before
// a listener exists.
func (d *Driver) Notify(ctx context.Context, target driver.Target, n *driver.Notification, opts driver.NotifyOptions) error {
	if err := checkTarget(target); err != nil {
		return err
	}
	if n.Priority == "" {
		return errors.New("rabbit: notification without priority")
	}
	uid := newHexID()
	body, err := encodeNotification(n, opts.Envelope, uid)
	if err != nil {
		return err
	}
	key := target.Topic + "." + strings.ToLower(n.Priority)
	exchange := target.Exchange
	msg := &outgoing{exchange: exchange, key: key, body: body, uid: uid, retry: opts.Retry}
	msg.declKey = "n:" + exchange + "/" + key
	msg.declare = func(ch *amqp.Channel) error {
		if err := ch.ExchangeDeclare(exchange, amqp.ExchangeTopic, d.cfg.durable(), d.cfg.AutoDelete, false, false, nil); err != nil {
			return err
		}
		if _, err := ch.QueueDeclare(key, d.cfg.durable(), d.cfg.AutoDelete, false, false, d.cfg.topicQueueArgs()); err != nil {
			return err
		}
		return ch.QueueBind(key, key, exchange, false, nil)
	}
	if msg.body, msg.headers, err = compressBody(d.cfg.Compression, msg.body); err != nil {
		return err
	}
	return d.sendAndConfirm(ctx, msg)
}

// obsoleteQueues remembers reply queues found missing (200 entries, 60 s),
// so further replies to them are dropped at once, as oslo does.
type obsoleteQueues struct {
	mu sync.Mutex
	m  map[string]time.Time
}

func (o *obsoleteQueues) has(q string) bool {
	o.mu.Lock()
	defer o.mu.Unlock()
	t, ok := o.m[q]
	if ok && time.Since(t) > time.Minute {
		delete(o.m, q)
		return false
	}
	return ok
}

func (o *obsoleteQueues) add(q string) {
	o.mu.Lock()
	defer o.mu.Unlock()
	if len(o.m) >= 200 {
		for k, t := range o.m {
			if time.Since(t) > time.Minute || len(o.m) >= 200 {
				delete(o.m, k)
			}
		}
	}
	o.m[q] = time.Now()
}

// maxReplyRetries bounds the returned replies retried at once; past it a
// returned reply is dropped and its queue marked obsolete.
const maxReplyRetries = 1024

// sendReply publishes a reply or heartbeat to the caller's reply queue
// through the default exchange with mandatory set and waits for the
// broker's confirm, so that a reply the broker refuses is reported here
// and one lost with its connection or channel is published again
// (settle). A missing reply queue is reported by basic.return and handled
// in the background: a returned reply is retried every 0.25 s for
// kombu_missing_consumer_retry_timeout (each retry confirmed), then
// dropped and its queue marked obsolete; a returned heartbeat marks it at
// once.
func (d *Driver) sendReply(ctx context.Context, replyQ, msgID string, r *driver.Reply, ending bool) error {
	if d.obsolet.has(replyQ) {
		return fmt.Errorf("%w: reply queue %s is gone", driver.ErrUndeliverable, replyQ)
	}
	uid := newHexID()
	body, err := encodeReply(r, ending, msgID, uid)
	if err != nil {
		return err
	}
	msg := &outgoing{exchange: "", key: replyQ, mandatory: d.cfg.DirectMandatory, body: body, uid: uid, retry: -1}
	if msg.body, msg.headers, err = compressBody(d.cfg.Compression, msg.body); err != nil {
		return err
	}
	err = d.sendAndConfirm(ctx, msg)
	if msg.mandatory && errors.Is(err, driver.ErrUndeliverable) {
		d.replyReturned(msg, msgID, ending)
		return nil
	}
	return err
}

// replyReturned starts the background retry of a reply that came back
// unroutable.
func (d *Driver) replyReturned(msg *outgoing, msgID string, ending bool) {
	if !ending {
		d.obsolet.add(msg.key) // a heartbeat stops quietly
		return
	}
	if d.replyRetries.Add(1) > maxReplyRetries {
		d.replyRetries.Add(-1)
		d.obsolet.add(msg.key)
		d.log.Error("reply queue missing, too many replies retried at once, reply dropped", "reply_q", msg.key, "msg_id", msgID)
		return
	}
	retry := *msg
	deadline := time.Now().Add(d.cfg.MissingConsumer)
	if !d.track(func() {
		defer d.replyRetries.Add(-1)
		if err := d.retryReply(context.Background(), &retry, msgID, deadline); err != nil && !errors.Is(err, driver.ErrClosed) {
			d.log.Warn("reply not delivered", "reply_q", msg.key, "msg_id", msgID, "err", err)
		}
	}) {
		d.replyRetries.Add(-1)
	}
}

// retryReply re-sends a returned final reply every 0.25 s until it is
// delivered or the deadline passes.
func (d *Driver) retryReply(ctx context.Context, msg *outgoing, msgID string, deadline time.Time) error {
	for {
		if !sleepCtx(ctx, d.closing, 250*time.Millisecond) {
			return driver.ErrClosed
		}
		if d.obsolet.has(msg.key) {
			return fmt.Errorf("%w: reply queue %s is gone", driver.ErrUndeliverable, msg.key)
		}
		err := d.sendAndConfirm(ctx, msg)
		if !errors.Is(err, driver.ErrUndeliverable) {
			return err
		}
		if time.Now().After(deadline) {
			d.obsolet.add(msg.key)
			d.log.Error("reply queue missing, reply dropped", "reply_q", msg.key, "msg_id", msgID)
			return err
		}
	}
}

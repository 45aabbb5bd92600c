// Package memory is the in-process transport, memory:// (alias fake://).
//
// It models the broker the rabbit:// driver talks to, so both behave alike
// in the conformance suite: topic exchanges route by exact routing key,
// "<topic>_fanout" exchanges copy to every bound queue, queues share their
// messages round-robin among consumers, notifications wait in queues until
// acknowledged, and calls time out when nothing serves them. Every
// transport opened with the same URL host shares one set of exchanges and
// queues ("memory://" is the default one), as oslo's fake driver shares its
// exchanges within a process. Messages are copied through JSON, so what a
// receiver sees is what would cross a wire.
package memory

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"maps"
	"net/url"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/oslogo/oslogo/driver"
)

func init() {
	driver.Register("memory", open)
	driver.Register("fake", open)
}

var (
	worldsMu sync.Mutex
	worlds   = map[string]*world{}
)

func open(_ context.Context, u *url.URL, opts driver.Options) (driver.Driver, error) {
	if q := u.Query(); len(q) > 0 {
		// The first in sorted order, so the same URL gives the same error.
		keys := slices.Sorted(maps.Keys(q))
		return nil, fmt.Errorf("memory: unknown option %q in transport_url", keys[0])
	}
	worldsMu.Lock()
	defer worldsMu.Unlock()
	w := worlds[u.Host]
	if w == nil {
		w = &world{exchanges: map[string]*exchange{}, queues: map[string]*queue{}}
		worlds[u.Host] = w
	}
	return &Driver{w: w, closed: make(chan struct{})}, nil
}

// world is one in-process broker: exchanges and queues by name.
// Lock order: world.mu, then queue.mu.
type world struct {
	mu        sync.Mutex
	exchanges map[string]*exchange
	queues    map[string]*queue
}

type exchange struct {
	fanout   bool
	bindings map[string]map[*queue]struct{} // routing key -> queues; fanout ignores keys
}

// message is one delivery: a request (with the caller's reply slot for
// calls) or a notification.
type message struct {
	req           *driver.Request
	call          *pendingCall
	clientTimeout time.Duration
	expires       time.Time // zero: never
	notif         *driver.Notification
}

func (w *world) declareExchange(name string, fanout bool) *exchange {
	ex := w.exchanges[name]
	if ex == nil {
		ex = &exchange{fanout: fanout, bindings: map[string]map[*queue]struct{}{}}
		w.exchanges[name] = ex
	}
	return ex
}

func (w *world) declareQueue(name string) *queue {
	q := w.queues[name]
	if q == nil {
		q = &queue{name: name}
		w.queues[name] = q
	}
	return q
}

func (w *world) bind(ex *exchange, key string, q *queue) {
	set := ex.bindings[key]
	if set == nil {
		set = map[*queue]struct{}{}
		ex.bindings[key] = set
	}
	set[q] = struct{}{}
}

// route returns the queues a message published to exchange/key reaches.
func (w *world) route(exName, key string) []*queue {
	ex := w.exchanges[exName]
	if ex == nil {
		return nil
	}
	var out []*queue
	if ex.fanout {
		seen := map[*queue]bool{}
		for _, set := range ex.bindings {
			for q := range set {
				if !seen[q] {
					seen[q] = true
					out = append(out, q)
				}
			}
		}
		return out
	}
	for q := range ex.bindings[key] {
		out = append(out, q)
	}
	return out
}

// deleteQueue removes a queue and its bindings; its consumers see it end.
func (w *world) deleteQueue(q *queue) {
	delete(w.queues, q.name)
	for _, ex := range w.exchanges {
		for key, set := range ex.bindings {
			delete(set, q)
			if len(set) == 0 {
				delete(ex.bindings, key)
			}
		}
	}
}

// publish routes m; it reports whether any queue took it.
func (w *world) publish(exName, key string, m *message) bool {
	w.mu.Lock()
	qs := w.route(exName, key)
	w.mu.Unlock()
	for _, q := range qs {
		q.put(m)
	}
	return len(qs) > 0
}

// queue holds messages and hands them round-robin to its consumers, each of
// which has a bounded inbox (its prefetch).
type queue struct {
	name string

	mu        sync.Mutex
	backlog   []*message
	consumers []*consumer
	next      int // round-robin position
}

// consumer is one listener's subscription; several queues may feed one inbox.
type consumer struct {
	inbox chan delivery
}

type delivery struct {
	q *queue
	m *message
}

func (q *queue) put(m *message) {
	q.mu.Lock()
	defer q.mu.Unlock()
	if !q.offerLocked(m) {
		q.backlog = append(q.backlog, m)
	}
}

// offerLocked tries the consumers in round-robin order without blocking.
func (q *queue) offerLocked(m *message) bool {
	for i := 0; i < len(q.consumers); i++ {
		c := q.consumers[(q.next+i)%len(q.consumers)]
		select {
		case c.inbox <- delivery{q: q, m: m}:
			q.next = (q.next + i + 1) % len(q.consumers)
			return true
		default:
		}
	}
	return false
}

// pump moves backlog to consumers with room; consumers call it after
// taking a delivery.
func (q *queue) pump() {
	q.mu.Lock()
	defer q.mu.Unlock()
	for len(q.backlog) > 0 {
		m := q.backlog[0]
		if !m.expires.IsZero() && time.Now().After(m.expires) {
			q.backlog = q.backlog[1:]
			continue
		}
		if !q.offerLocked(m) {
			return
		}
		q.backlog[0] = nil
		q.backlog = q.backlog[1:]
	}
}

func (q *queue) subscribe(c *consumer) {
	q.mu.Lock()
	q.consumers = append(q.consumers, c)
	q.mu.Unlock()
	q.pump()
}

func (q *queue) unsubscribe(c *consumer) {
	q.mu.Lock()
	defer q.mu.Unlock()
	for i, x := range q.consumers {
		if x == c {
			q.consumers = append(q.consumers[:i], q.consumers[i+1:]...)
			break
		}
	}
	if len(q.consumers) > 0 {
		q.next %= len(q.consumers)
	} else {
		q.next = 0
	}
}

// requeue puts an unacknowledged message back at the head of the queue.
func (q *queue) requeue(m *message) {
	q.mu.Lock()
	q.backlog = append([]*message{m}, q.backlog...)
	q.mu.Unlock()
	q.pump()
}

// Driver is a memory:// transport.
type Driver struct {
	w *world

	mu        sync.Mutex
	closed    chan struct{}
	isClosed  bool
	listeners map[*listener]struct{}
}

var _ driver.Driver = (*Driver)(nil)

func (d *Driver) checkOpen() error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.isClosed {
		return driver.ErrClosed
	}
	return nil
}

// pendingCall is the caller's side of a call: a slot for the final reply,
// room for heartbeats, and done closed when the caller gave up.
type pendingCall struct {
	replies chan *driver.Reply // nil reply: heartbeat
	done    chan struct{}
}

// Call implements driver.Driver.
func (d *Driver) Call(ctx context.Context, t driver.Target, req *driver.Request, opts driver.SendOptions) (*driver.Reply, error) {
	if err := d.checkOpen(); err != nil {
		return nil, err
	}
	cp, err := copyRequest(req)
	if err != nil {
		return nil, err
	}
	pc := &pendingCall{replies: make(chan *driver.Reply, 4), done: make(chan struct{})}
	defer close(pc.done)
	m := &message{req: cp, call: pc, clientTimeout: opts.CallMonitorTimeout}
	if opts.Timeout > 0 {
		m.expires = time.Now().Add(opts.Timeout)
	}
	d.declareTopicExchange(t.Exchange)
	if !d.w.publish(t.Exchange, t.String(), m) && opts.Mandatory {
		return nil, fmt.Errorf("%w: no queue bound to %q on exchange %q", driver.ErrUndeliverable, t.String(), t.Exchange)
	}
	var monitor <-chan time.Time
	var timer *time.Timer
	if opts.CallMonitorTimeout > 0 {
		timer = time.NewTimer(opts.CallMonitorTimeout)
		defer timer.Stop()
		monitor = timer.C
	}
	for {
		select {
		case r := <-pc.replies:
			if r != nil {
				return r, nil
			}
			if timer != nil {
				timer.Reset(opts.CallMonitorTimeout)
			}
		case <-monitor:
			return nil, fmt.Errorf("%w: no heartbeat within the call monitor timeout %v", driver.ErrTimeout, opts.CallMonitorTimeout)
		case <-ctx.Done():
			if ctx.Err() == context.DeadlineExceeded {
				return nil, fmt.Errorf("%w: %w", driver.ErrTimeout, ctx.Err())
			}
			return nil, ctx.Err()
		case <-d.closed:
			return nil, driver.ErrClosed
		}
	}
}

// Cast implements driver.Driver.
func (d *Driver) Cast(_ context.Context, t driver.Target, req *driver.Request, opts driver.SendOptions) error {
	if err := d.checkOpen(); err != nil {
		return err
	}
	cp, err := copyRequest(req)
	if err != nil {
		return err
	}
	m := &message{req: cp}
	if t.Fanout {
		d.w.publish(t.Topic+"_fanout", t.Topic, m)
		return nil
	}
	d.declareTopicExchange(t.Exchange)
	if !d.w.publish(t.Exchange, t.String(), m) && opts.Mandatory {
		return fmt.Errorf("%w: no queue bound to %q on exchange %q", driver.ErrUndeliverable, t.String(), t.Exchange)
	}
	return nil
}

func (d *Driver) declareTopicExchange(name string) {
	d.w.mu.Lock()
	d.w.declareExchange(name, false)
	d.w.mu.Unlock()
}

// Listen implements driver.Driver: the shared topic queue, the server's own
// queue and a private queue on the topic's fanout exchange.
func (d *Driver) Listen(_ context.Context, t driver.Target) (driver.RPCListener, error) {
	if err := d.checkOpen(); err != nil {
		return nil, err
	}
	if t.Topic == "" || t.Server == "" {
		return nil, fmt.Errorf("memory: listen needs a topic and a server")
	}
	w := d.w
	w.mu.Lock()
	ex := w.declareExchange(t.Exchange, false)
	topicQ := w.declareQueue(t.Topic)
	w.bind(ex, t.Topic, topicQ)
	serverQ := w.declareQueue(t.Topic + "." + t.Server)
	w.bind(ex, t.Topic+"."+t.Server, serverQ)
	fex := w.declareExchange(t.Topic+"_fanout", true)
	fanoutQ := w.declareQueue(t.Topic + "_fanout_" + newID())
	w.bind(fex, t.Topic, fanoutQ)
	w.mu.Unlock()
	l := d.newListener([]*queue{topicQ, serverQ, fanoutQ}, []*queue{fanoutQ})
	return &rpcListener{l}, nil
}

// Notify implements driver.Driver. Like oslo's publisher it declares the
// "<topic>.<priority>" queue, so notifications wait for a listener.
func (d *Driver) Notify(_ context.Context, t driver.Target, n *driver.Notification, _ driver.NotifyOptions) error {
	if err := d.checkOpen(); err != nil {
		return err
	}
	cp, err := copyNotification(n)
	if err != nil {
		return err
	}
	key := t.Topic + "." + strings.ToLower(n.Priority)
	w := d.w
	w.mu.Lock()
	ex := w.declareExchange(t.Exchange, false)
	w.bind(ex, key, w.declareQueue(key))
	w.mu.Unlock()
	w.publish(t.Exchange, key, &message{notif: cp})
	return nil
}

// ListenNotifications implements driver.Driver.
func (d *Driver) ListenNotifications(_ context.Context, targets []driver.NotificationTarget, pool string) (driver.NotificationListener, error) {
	if err := d.checkOpen(); err != nil {
		return nil, err
	}
	w := d.w
	w.mu.Lock()
	var qs []*queue
	seen := map[*queue]bool{}
	for _, t := range targets {
		key := t.Topic + "." + strings.ToLower(t.Priority)
		name := key
		if pool != "" {
			name = pool
		}
		q := w.declareQueue(name)
		w.bind(w.declareExchange(t.Exchange, false), key, q)
		if !seen[q] {
			seen[q] = true
			qs = append(qs, q)
		}
	}
	w.mu.Unlock()
	return &notificationListener{d.newListener(qs, nil)}, nil
}

// Close implements driver.Driver.
func (d *Driver) Close() error {
	d.mu.Lock()
	if d.isClosed {
		d.mu.Unlock()
		return nil
	}
	d.isClosed = true
	close(d.closed)
	ls := d.listeners
	d.listeners = nil
	d.mu.Unlock()
	for l := range ls {
		l.close()
	}
	return nil
}

// listener is the consumer side shared by RPC and notification listeners.
type listener struct {
	d         *Driver
	queues    []*queue
	temporary []*queue // deleted on close (fanout queues)
	c         *consumer

	mu       sync.Mutex
	stopped  chan struct{}
	isStop   bool
	isClosed bool
	unacked  map[*delivery]struct{}
}

// inboxSize is each listener's prefetch: small, so that a busy listener
// leaves messages to the others.
const inboxSize = 1

func (d *Driver) newListener(qs, temporary []*queue) *listener {
	l := &listener{d: d, queues: qs, temporary: temporary, c: &consumer{inbox: make(chan delivery, inboxSize)},
		stopped: make(chan struct{}), unacked: map[*delivery]struct{}{}}
	d.mu.Lock()
	if d.listeners == nil {
		d.listeners = map[*listener]struct{}{}
	}
	d.listeners[l] = struct{}{}
	d.mu.Unlock()
	for _, q := range qs {
		q.subscribe(l.c)
	}
	return l
}

func (l *listener) receive(ctx context.Context) (delivery, error) {
	for {
		// Deliveries already in the inbox are handed out even after Stop.
		select {
		case dl := <-l.c.inbox:
			if l.take(dl) {
				return dl, nil
			}
			continue
		default:
		}
		select {
		case dl := <-l.c.inbox:
			if l.take(dl) {
				return dl, nil
			}
		case <-l.stopped:
			select {
			case dl := <-l.c.inbox:
				if l.take(dl) {
					return dl, nil
				}
				continue
			default:
			}
			return delivery{}, driver.ErrClosed
		case <-ctx.Done():
			return delivery{}, ctx.Err()
		}
	}
}

// take refills the inbox from the queue and drops expired requests (the
// AMQP expiration of a call whose caller gave up).
func (l *listener) take(dl delivery) bool {
	for _, q := range l.queues {
		q.pump()
	}
	m := dl.m
	return m.expires.IsZero() || time.Now().Before(m.expires)
}

func (l *listener) stop() {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.isStop {
		return
	}
	l.isStop = true
	for _, q := range l.queues {
		q.unsubscribe(l.c)
	}
	close(l.stopped)
}

// close stops, returns unacknowledged notifications and undelivered inbox
// contents to their queues, and deletes temporary queues.
func (l *listener) close() {
	l.stop()
	l.mu.Lock()
	if l.isClosed {
		l.mu.Unlock()
		return
	}
	l.isClosed = true
	unacked := l.unacked
	l.unacked = map[*delivery]struct{}{}
	l.mu.Unlock()
	for dl := range unacked {
		dl.q.requeue(dl.m)
	}
	for {
		select {
		case dl := <-l.c.inbox:
			dl.q.requeue(dl.m)
			continue
		default:
		}
		break
	}
	l.d.w.mu.Lock()
	for _, q := range l.temporary {
		l.d.w.deleteQueue(q)
	}
	l.d.w.mu.Unlock()
	l.d.mu.Lock()
	delete(l.d.listeners, l)
	l.d.mu.Unlock()
}

type rpcListener struct{ *listener }

func (l *rpcListener) Receive(ctx context.Context) (driver.IncomingRequest, error) {
	dl, err := l.receive(ctx)
	if err != nil {
		return nil, err
	}
	return &incomingRequest{m: dl.m, closed: l.d.closed}, nil
}

func (l *rpcListener) Stop() { l.stop() }

func (l *rpcListener) Close() error { l.close(); return nil }

type incomingRequest struct {
	m      *message
	closed <-chan struct{}
}

func (r *incomingRequest) Request() *driver.Request     { return r.m.req }
func (r *incomingRequest) ClientTimeout() time.Duration { return r.m.clientTimeout }
func (r *incomingRequest) IsCall() bool                 { return r.m.call != nil }

func (r *incomingRequest) Heartbeat(context.Context) error {
	if r.m.call == nil {
		return nil
	}
	select {
	case r.m.call.replies <- nil:
		return nil
	case <-r.m.call.done:
		return fmt.Errorf("%w: the caller is gone", driver.ErrUndeliverable)
	default:
		return nil // the caller has heartbeats pending already
	}
}

func (r *incomingRequest) Reply(ctx context.Context, reply *driver.Reply) error {
	if r.m.call == nil {
		return nil
	}
	cp, err := copyReply(reply)
	if err != nil {
		return err
	}
	select {
	case r.m.call.replies <- cp:
		return nil
	case <-r.m.call.done:
		return fmt.Errorf("%w: the caller is gone", driver.ErrUndeliverable)
	case <-r.closed:
		return driver.ErrClosed
	case <-ctx.Done():
		return ctx.Err()
	}
}

type notificationListener struct{ *listener }

func (l *notificationListener) Receive(ctx context.Context) (driver.IncomingNotification, error) {
	dl, err := l.receive(ctx)
	if err != nil {
		return nil, err
	}
	p := &dl
	l.mu.Lock()
	l.unacked[p] = struct{}{}
	l.mu.Unlock()
	return &incomingNotification{l: l.listener, dl: p}, nil
}

func (l *notificationListener) Stop() { l.stop() }

func (l *notificationListener) Close() error { l.close(); return nil }

type incomingNotification struct {
	l  *listener
	dl *delivery
}

func (n *incomingNotification) Notification() *driver.Notification { return n.dl.m.notif }

func (n *incomingNotification) settle() bool {
	n.l.mu.Lock()
	defer n.l.mu.Unlock()
	if _, ok := n.l.unacked[n.dl]; !ok {
		return false
	}
	delete(n.l.unacked, n.dl)
	return true
}

func (n *incomingNotification) Ack() error {
	if !n.settle() {
		return fmt.Errorf("memory: notification already settled or listener closed")
	}
	return nil
}

func (n *incomingNotification) Requeue() error {
	if !n.settle() {
		return fmt.Errorf("memory: notification already settled or listener closed")
	}
	n.dl.q.requeue(n.dl.m)
	return nil
}

func newID() string {
	var b [16]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// roundTrip copies v through JSON, proving it would cross a wire and
// keeping sender and receiver from sharing maps.
func roundTrip[T any](v T) (T, error) {
	var out T
	b, err := json.Marshal(v)
	if err != nil {
		return out, fmt.Errorf("memory: message is not JSON serializable: %w", err)
	}
	err = json.Unmarshal(b, &out)
	return out, err
}

func copyRequest(r *driver.Request) (*driver.Request, error) {
	ctxCopy, err := roundTrip(r.Context)
	if err != nil {
		return nil, err
	}
	cp := *r
	cp.Context = ctxCopy
	cp.Args = append(json.RawMessage(nil), r.Args...)
	if len(cp.Args) > 0 && !json.Valid(cp.Args) {
		return nil, fmt.Errorf("memory: arguments are not valid JSON")
	}
	return &cp, nil
}

func copyNotification(n *driver.Notification) (*driver.Notification, error) {
	ctxCopy, err := roundTrip(n.Context)
	if err != nil {
		return nil, err
	}
	cp := *n
	cp.Context = ctxCopy
	cp.Payload = append(json.RawMessage(nil), n.Payload...)
	return &cp, nil
}

func copyReply(r *driver.Reply) (*driver.Reply, error) {
	cp := &driver.Reply{Result: append(json.RawMessage(nil), r.Result...)}
	if r.Failure != nil {
		f, err := roundTrip(*r.Failure)
		if err != nil {
			return nil, err
		}
		cp.Failure = &f
	}
	return cp, nil
}

// Open opens a memory driver for rawURL ("memory://" or "memory://name").
func Open(rawURL string) (*Driver, error) {
	u, err := url.Parse(rawURL)
	if err != nil {
		return nil, err
	}
	d, err := open(context.Background(), u, driver.Options{})
	if err != nil {
		return nil, err
	}
	return d.(*Driver), nil
}

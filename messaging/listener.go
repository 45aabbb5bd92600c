package messaging

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"regexp"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/oslogo/oslogo/driver"
)

// NotificationResult is what a notification handler decides.
type NotificationResult int

const (
	// Handled acknowledges the notification.
	Handled NotificationResult = iota
	// Requeue returns it to the queue for redelivery, when the listener
	// allows requeue (WithAllowRequeue); otherwise it is acknowledged.
	Requeue
)

// NotificationHandler handles one notification of one priority.
type NotificationHandler func(ctx context.Context, n *Notification) NotificationResult

// BatchNotificationHandler handles a batch of notifications of one priority.
type BatchNotificationHandler func(ctx context.Context, batch []*Notification) NotificationResult

// NotificationFilter selects the notifications an endpoint sees, as oslo's
// NotificationFilter: every field set is a regular expression matched at the
// start of the value (Python's re.match). For Context, Metadata and Payload,
// each key's value must be a string that matches; a missing key is a
// mismatch. Metadata holds message_id and timestamp.
type NotificationFilter struct {
	PublisherID string
	EventType   string
	Context     map[string]string
	Metadata    map[string]string
	Payload     map[string]string
}

type compiledFilter struct {
	publisherID, eventType     *regexp.Regexp
	context, metadata, payload map[string]*regexp.Regexp
}

func compileFilter(f *NotificationFilter) (*compiledFilter, error) {
	if f == nil {
		return nil, nil
	}
	one := func(expr string) (*regexp.Regexp, error) {
		if expr == "" {
			return nil, nil
		}
		// re.match anchors at the start only.
		return regexp.Compile(`^(?:` + expr + `)`)
	}
	many := func(m map[string]string) (map[string]*regexp.Regexp, error) {
		out := map[string]*regexp.Regexp{}
		for k, expr := range m {
			re, err := regexp.Compile(`^(?:` + expr + `)`)
			if err != nil {
				return nil, err
			}
			out[k] = re
		}
		return out, nil
	}
	var cf compiledFilter
	var err error
	if cf.publisherID, err = one(f.PublisherID); err != nil {
		return nil, fmt.Errorf("messaging: filter publisher_id: %w", err)
	}
	if cf.eventType, err = one(f.EventType); err != nil {
		return nil, fmt.Errorf("messaging: filter event_type: %w", err)
	}
	if cf.context, err = many(f.Context); err != nil {
		return nil, fmt.Errorf("messaging: filter context: %w", err)
	}
	if cf.metadata, err = many(f.Metadata); err != nil {
		return nil, fmt.Errorf("messaging: filter metadata: %w", err)
	}
	if cf.payload, err = many(f.Payload); err != nil {
		return nil, fmt.Errorf("messaging: filter payload: %w", err)
	}
	return &cf, nil
}

func (cf *compiledFilter) match(n *Notification) bool {
	if cf == nil {
		return true
	}
	if cf.publisherID != nil && !cf.publisherID.MatchString(n.PublisherID) {
		return false
	}
	if cf.eventType != nil && !cf.eventType.MatchString(n.EventType) {
		return false
	}
	dictMatch := func(res map[string]*regexp.Regexp, values map[string]any) bool {
		for k, re := range res {
			s, ok := values[k].(string)
			if !ok || !re.MatchString(s) {
				return false
			}
		}
		return true
	}
	if !dictMatch(cf.context, n.Context) {
		return false
	}
	if !dictMatch(cf.metadata, map[string]any{"message_id": n.MessageID, "timestamp": n.Timestamp}) {
		return false
	}
	if len(cf.payload) > 0 {
		var payload map[string]any
		if json.Unmarshal(n.Payload, &payload) != nil {
			return false
		}
		return dictMatch(cf.payload, payload)
	}
	return true
}

// NotificationEndpoint receives notifications: one handler per priority it
// supports (it only consumes those), optionally behind a filter.
type NotificationEndpoint struct {
	Filter   *NotificationFilter
	Handlers map[Priority]NotificationHandler
}

// BatchNotificationEndpoint is the batch form of NotificationEndpoint.
type BatchNotificationEndpoint struct {
	Filter   *NotificationFilter
	Handlers map[Priority]BatchNotificationHandler
}

// ListenerOption configures a notification listener.
type ListenerOption func(*listenerSettings)

type listenerSettings struct {
	pool         string
	allowRequeue bool
	poolSize     int
}

// WithPool makes the listener one of a pool: each pool gets every
// notification once, and the listeners of a pool share its copy.
func WithPool(name string) ListenerOption { return func(s *listenerSettings) { s.pool = name } }

// WithAllowRequeue lets handlers return Requeue (oslo's allow_requeue).
func WithAllowRequeue(allow bool) ListenerOption {
	return func(s *listenerSettings) { s.allowRequeue = allow }
}

// WithListenerPoolSize bounds how many handlers run at once (default: the
// transport's executor_thread_pool_size).
func WithListenerPoolSize(n int) ListenerOption { return func(s *listenerSettings) { s.poolSize = n } }

type endpointEntry struct {
	filter  *compiledFilter
	single  map[Priority]NotificationHandler
	batched map[Priority]BatchNotificationHandler
}

// NotificationListener consumes notifications for a set of targets and
// dispatches them to endpoints: oslo's NotificationServer, or its batch
// form from NewBatchNotificationListener.
type NotificationListener struct {
	tr           *Transport
	targets      []Target
	endpoints    []endpointEntry
	settings     listenerSettings
	batchSize    int
	batchTimeout time.Duration
	logger       *slog.Logger

	mu       sync.Mutex
	listener driver.NotificationListener
	done     chan struct{}
}

// NewNotificationListener returns a listener for targets (Topic, optional
// Exchange) with the given endpoints. It does no I/O; Start does.
func NewNotificationListener(tr *Transport, targets []Target, endpoints []NotificationEndpoint, opts ...ListenerOption) (*NotificationListener, error) {
	entries := make([]endpointEntry, 0, len(endpoints))
	for i, ep := range endpoints {
		cf, err := compileFilter(ep.Filter)
		if err != nil {
			return nil, fmt.Errorf("endpoint %d: %w", i, err)
		}
		entries = append(entries, endpointEntry{filter: cf, single: ep.Handlers})
	}
	return newListener(tr, targets, entries, 0, 0, opts)
}

// NewBatchNotificationListener returns a listener that hands notifications
// to endpoints in batches of up to batchSize, or fewer once batchTimeout
// has passed since the batch's first notification.
func NewBatchNotificationListener(tr *Transport, targets []Target, endpoints []BatchNotificationEndpoint, batchSize int, batchTimeout time.Duration, opts ...ListenerOption) (*NotificationListener, error) {
	if batchSize < 1 {
		return nil, fmt.Errorf("messaging: batch size must be at least 1, got %d", batchSize)
	}
	if batchTimeout <= 0 {
		return nil, fmt.Errorf("messaging: batch timeout must be positive, got %v", batchTimeout)
	}
	entries := make([]endpointEntry, 0, len(endpoints))
	for i, ep := range endpoints {
		cf, err := compileFilter(ep.Filter)
		if err != nil {
			return nil, fmt.Errorf("endpoint %d: %w", i, err)
		}
		entries = append(entries, endpointEntry{filter: cf, batched: ep.Handlers})
	}
	return newListener(tr, targets, entries, batchSize, batchTimeout, opts)
}

func newListener(tr *Transport, targets []Target, entries []endpointEntry, batchSize int, batchTimeout time.Duration, opts []ListenerOption) (*NotificationListener, error) {
	if len(targets) == 0 {
		return nil, fmt.Errorf("%w: a notification listener needs at least one target", ErrInvalidTarget)
	}
	for _, t := range targets {
		if t.Topic == "" {
			return nil, fmt.Errorf("%w: notification target without a topic (%s)", ErrInvalidTarget, t)
		}
	}
	s := listenerSettings{poolSize: tr.cfg.ExecutorThreadPoolSize}
	for _, o := range opts {
		o(&s)
	}
	if s.poolSize < 1 {
		return nil, fmt.Errorf("messaging: listener pool size must be at least 1, got %d", s.poolSize)
	}
	return &NotificationListener{
		tr: tr, targets: targets, endpoints: entries, settings: s,
		batchSize: batchSize, batchTimeout: batchTimeout,
		logger: tr.logger.With("component", "notification-listener", "pool", s.pool),
	}, nil
}

// priorities lists the priorities some endpoint handles: only those are
// consumed, as oslo binds only the methods endpoints define.
func (l *NotificationListener) priorities() []Priority {
	seen := map[Priority]bool{}
	for _, ep := range l.endpoints {
		for p := range ep.single {
			seen[p] = true
		}
		for p := range ep.batched {
			seen[p] = true
		}
	}
	out := make([]Priority, 0, len(seen))
	for _, p := range Priorities {
		if seen[p] {
			out = append(out, p)
		}
	}
	return out
}

// Start declares the queues and starts consuming. Calling it on a running
// listener does nothing.
func (l *NotificationListener) Start(ctx context.Context) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.listener != nil {
		return nil
	}
	var nts []driver.NotificationTarget
	for _, t := range l.targets {
		for _, p := range l.priorities() {
			nts = append(nts, driver.NotificationTarget{Exchange: l.tr.exchange(t.Exchange), Topic: t.Topic, Priority: string(p)})
		}
	}
	if len(nts) == 0 {
		return errors.New("messaging: no endpoint handles any priority")
	}
	dl, err := l.tr.drv.ListenNotifications(ctx, nts, l.settings.pool)
	if err != nil {
		return fmt.Errorf("messaging: notification listener cannot listen (ServerListenError): %w", translate(err))
	}
	l.listener = dl
	l.done = make(chan struct{})
	if l.batchSize > 0 {
		go l.pollBatches(dl, l.done)
	} else {
		go l.poll(dl, l.done)
	}
	return nil
}

func (l *NotificationListener) poll(dl driver.NotificationListener, done chan struct{}) {
	var wg sync.WaitGroup
	slots := make(chan struct{}, l.settings.poolSize)
	for {
		in, err := dl.Receive(context.Background())
		if err != nil {
			l.logReceiveError(err)
			break
		}
		slots <- struct{}{}
		wg.Add(1)
		go func() {
			defer func() { <-slots; wg.Done() }()
			l.finish(in, l.dispatch(in))
		}()
	}
	wg.Wait()
	l.closeDriverListener(dl)
	close(done)
}

func (l *NotificationListener) logReceiveError(err error) {
	if !errors.Is(err, driver.ErrClosed) {
		l.logger.Error("receive failed; listener stops", "err", err)
	}
}

func (l *NotificationListener) closeDriverListener(dl driver.NotificationListener) {
	if err := dl.Close(); err != nil && !errors.Is(err, driver.ErrClosed) {
		l.logger.Warn("closing listener", "err", err)
	}
}

// finish acknowledges or requeues, after the handlers ran (at-least-once).
func (l *NotificationListener) finish(in driver.IncomingNotification, res NotificationResult) {
	var err error
	if res == Requeue && l.settings.allowRequeue {
		err = in.Requeue()
	} else {
		err = in.Ack()
	}
	if err != nil {
		l.logger.Warn("ack/requeue failed", "err", err)
	}
}

func toNotification(dn *driver.Notification) (*Notification, error) {
	p, err := ParsePriority(dn.Priority)
	if err != nil {
		return nil, err
	}
	return &Notification{
		Priority: p, PublisherID: dn.PublisherID, EventType: dn.EventType, Payload: dn.Payload,
		Context: RequestContext(dn.Context), MessageID: dn.MessageID, Timestamp: dn.Timestamp,
	}, nil
}

func (l *NotificationListener) dispatch(in driver.IncomingNotification) NotificationResult {
	n, err := toNotification(in.Notification())
	if err != nil {
		l.logger.Warn("notification with an unknown priority; dropped", "err", err)
		return Handled
	}
	if obs := l.tr.cfg.Observer; obs != nil {
		obs.NotificationReceived(n.Priority, n.EventType)
	}
	ctx := WithRequestContext(context.Background(), n.Context)
	for _, ep := range l.endpoints {
		h := ep.single[n.Priority]
		if h == nil || !ep.filter.match(n) {
			continue
		}
		if l.call(func() NotificationResult { return h(ctx, n) }) == Requeue {
			return Requeue
		}
	}
	return Handled
}

// call runs a handler; a panic counts as Requeue, as an exception does in oslo.
func (l *NotificationListener) call(fn func() NotificationResult) (res NotificationResult) {
	defer func() {
		if p := recover(); p != nil {
			l.logger.Error("notification handler panicked", "panic", p)
			res = Requeue
		}
	}()
	return fn()
}

type received struct {
	in driver.IncomingNotification
	n  *Notification
}

// pollBatches gathers batches by size or timeout on one goroutine (the
// receive loop) and dispatches each batch before taking the next.
func (l *NotificationListener) pollBatches(dl driver.NotificationListener, done chan struct{}) {
	defer close(done)
	defer l.closeDriverListener(dl)
	for {
		first, err := dl.Receive(context.Background())
		if err != nil {
			l.logReceiveError(err)
			return
		}
		batch := []driver.IncomingNotification{first}
		ctx, cancel := context.WithTimeout(context.Background(), l.batchTimeout)
		for len(batch) < l.batchSize {
			in, err := dl.Receive(ctx)
			if err != nil {
				break
			}
			batch = append(batch, in)
		}
		cancel()
		l.dispatchBatch(batch)
	}
}

func (l *NotificationListener) dispatchBatch(batch []driver.IncomingNotification) {
	byPriority := map[Priority][]received{}
	for _, in := range batch {
		n, err := toNotification(in.Notification())
		if err != nil {
			l.logger.Warn("notification with an unknown priority; dropped", "err", err)
			l.finish(in, Handled)
			continue
		}
		if obs := l.tr.cfg.Observer; obs != nil {
			obs.NotificationReceived(n.Priority, n.EventType)
		}
		byPriority[n.Priority] = append(byPriority[n.Priority], received{in: in, n: n})
	}
	keys := make([]string, 0, len(byPriority))
	for p := range byPriority {
		keys = append(keys, string(p))
	}
	sort.Strings(keys)
	for _, k := range keys {
		group := byPriority[Priority(k)]
		res := Handled
		for _, ep := range l.endpoints {
			h := ep.batched[Priority(k)]
			if h == nil {
				continue
			}
			var selected []*Notification
			for _, r := range group {
				if ep.filter.match(r.n) {
					selected = append(selected, r.n)
				}
			}
			if len(selected) == 0 {
				continue
			}
			if l.call(func() NotificationResult { return h(context.Background(), selected) }) == Requeue {
				res = Requeue
				break
			}
		}
		for _, r := range group {
			l.finish(r.in, res)
		}
	}
}

// Stop stops consuming, lets the notifications already received be handled
// (until ctx ends) and releases the listener.
func (l *NotificationListener) Stop(ctx context.Context) error {
	l.mu.Lock()
	dl, done := l.listener, l.done
	l.listener = nil
	l.mu.Unlock()
	if dl == nil {
		return nil
	}
	dl.Stop()
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// Wait blocks until a stopped listener has finished.
func (l *NotificationListener) Wait() {
	l.mu.Lock()
	done := l.done
	l.mu.Unlock()
	if done != nil {
		<-done
	}
}

// String describes the listener's targets.
func (l *NotificationListener) String() string {
	var parts []string
	for _, t := range l.targets {
		parts = append(parts, t.String())
	}
	return "NotificationListener(" + strings.Join(parts, ", ") + ")"
}

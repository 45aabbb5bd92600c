package rabbit

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"

	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/oslogo/oslogo/driver"
)

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
	l.c.queues = l.queues()
	l.c.sharedChannel = true
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
	d         *Driver
	c         *consumer
	targets   []driver.NotificationTarget
	pool      string
	out       chan *notifyIncoming
	closeCh   chan struct{}
	closeOnce sync.Once
	done      chan struct{}

	dmu   sync.Mutex
	dedup *dedup
}

// queues are the notification queues, each declared with its exchanges
// and bindings and consumed on a channel of its own.
func (l *notifyListener) queues() []*queueSpec {
	cfg := l.d.cfg
	var specs []*queueSpec
	bound := map[string][]driver.NotificationTarget{}
	for _, t := range l.targets {
		queue := t.Topic + "." + t.Priority
		if l.pool != "" {
			queue = l.pool
		}
		if bound[queue] == nil {
			specs = append(specs, &queueSpec{queue: queue})
		}
		bound[queue] = append(bound[queue], t)
	}
	for _, q := range specs {
		p := notifyQueuePlan(cfg, q.queue, bound[q.queue], l.d.log)
		q.declare = func(ch *amqp.Channel) error { return p.declare(ch) }
	}
	return specs
}

// notifyQueuePlan is a notification queue bound to each of its targets'
// "<topic>.<priority>" on their exchanges, as 18.1's
// declare_topic_consumer declares it (durable = amqp_durable_queues or
// rabbit_quorum_queue, topic queue arguments).
func notifyQueuePlan(cfg Config, queue string, targets []driver.NotificationTarget, log *slog.Logger) *queuePlan {
	p := &queuePlan{name: queue, durable: cfg.durable(), autoDelete: cfg.AutoDelete, args: cfg.topicQueueArgs(), log: log}
	for _, t := range targets {
		x := exchangeSpec{name: t.Exchange, kind: amqp.ExchangeTopic, durable: cfg.durable(), autoDelete: cfg.AutoDelete}
		p.binds = append(p.binds, bindingSpec{x, t.Topic + "." + t.Priority})
	}
	return p
}

func (l *notifyListener) run(s *consumeSession) {
	defer close(l.done)
	l.c.run(s, l.handle)
	close(l.out)
	<-l.closeCh
	l.c.session().close()
}

// handle queues each notification of a batch; the handler acks them.
func (l *notifyListener) handle(h *consumerHandle, batch []amqp.Delivery) {
	for _, dl := range batch {
		l.handleOne(h, dl)
	}
}

func (l *notifyListener) handleOne(h *consumerHandle, dl amqp.Delivery) {
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
	case l.out <- &notifyIncoming{l: l, n: n, uid: uid, dl: dl, ch: h.ch}:
	case <-l.closeCh:
	}
}

// Receive returns the next notification; driver.ErrClosed once stopped and
// drained. A notification whose channel closed before it was handed over
// is skipped: the broker took it back and delivers it again.
func (l *notifyListener) Receive(ctx context.Context) (driver.IncomingNotification, error) {
	for {
		select {
		case n, ok := <-l.out:
			if !ok {
				return nil, driver.ErrClosed
			}
			if !n.ch.IsClosed() {
				return n, nil
			}
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
}

// Stop cancels the consumers; notifications already received stay
// readable.
func (l *notifyListener) Stop() { l.c.stop() }

// Close stops and closes the connection; unacknowledged notifications go
// back to their queues.
func (l *notifyListener) Close() error {
	l.c.stop()
	l.closeOnce.Do(func() { close(l.closeCh) })
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
	ch  *amqp.Channel // the channel it came on
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

package rabbit

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/oslogo/oslogo/driver"
)

// Listen consumes RPC requests for target: the shared topic queue T, the
// server queue T.S and a fanout queue T_fanout_<hex>.
func (d *Driver) Listen(ctx context.Context, target driver.Target) (driver.RPCListener, error) {
	if target.Topic == "" || target.Server == "" {
		return nil, errors.New("rabbit: invalid target: a server listens on a topic and a server name")
	}
	fanoutQ, err := d.fanoutQueueName(target.Topic)
	if err != nil {
		return nil, err
	}
	l := &rpcListener{
		d:       d,
		target:  target,
		fanoutQ: fanoutQ,
		out:     make(chan *rpcIncoming, inboxSize),
		closeCh: make(chan struct{}),
		done:    make(chan struct{}),
		dedup:   newDedup(),
		pending: map[*listenChannel]uint64{},
	}
	l.c = newConsumer(d, "rpc-"+target.Topic)
	l.c.queues = l.queues()
	s, err := l.c.connect(ctx)
	if err != nil {
		return nil, fmt.Errorf("rabbit: listen on %s: %w", target, err)
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

// rpcListener is an RPC server's consumer. Requests are acknowledged when
// Receive hands them to the server, as oslo's server acknowledges a
// request when it takes it for dispatch: until then the broker still
// owns them, and delivers them again if the connection drops.
type rpcListener struct {
	d         *Driver
	c         *consumer
	target    driver.Target
	fanoutQ   string
	out       chan *rpcIncoming
	closeCh   chan struct{}
	closeOnce sync.Once
	done      chan struct{}

	amu     sync.Mutex                // held while a request is acknowledged and handed over
	dedup   *dedup                    // guarded by amu
	pending map[*listenChannel]uint64 // handed over, not yet acknowledged: the last tag per channel (amu)
	handed  int                       // requests handed over since the last acknowledgement (amu)
}

// requestAckEvery is how many requests are handed over before they are
// acknowledged together (one basic.ack(multiple) per channel). Fewer
// acknowledgements cost the broker less per request; the few handed over
// and not yet acknowledged when a connection drops come again and are
// dropped as duplicates (they are among the last 16 _unique_ids handed
// over). Half the prefetch limit at most, so the broker never waits.
func (c Config) requestAckEvery() int { return max(1, min(4, c.listenPrefetch()/2)) }

// fanoutQueueName is the fanout queue of a server of topic: T_fanout, the
// one stream all servers share (rabbit_stream_fanout), T_fanout_<host>:
// <proc>:<n> (use_queue_manager) or T_fanout_<hex>, as 18.1 names them.
func (d *Driver) fanoutQueueName(topic string) (string, error) {
	switch {
	case d.cfg.StreamFanout:
		return topic + "_fanout", nil
	case d.qm != nil:
		n, err := d.qm.get()
		if err != nil {
			return "", err
		}
		return topic + "_fanout_" + n, nil
	}
	return topic + "_fanout_" + newHexID(), nil
}

// queues are T, T.S and the fanout queue, each with its exchange and
// binding, each consumed on a channel of its own: delivery tags are per
// channel, so one basic.ack(multiple) covers exactly the requests of that
// queue handed over before. See rpcQueuePlans for what is declared.
func (l *rpcListener) queues() []*queueSpec {
	var specs []*queueSpec
	for _, p := range rpcQueuePlans(l.d.cfg, l.target, l.fanoutQ, l.d.log) {
		q := &queueSpec{queue: p.name, declare: func(ch *amqp.Channel) error { return p.declare(ch) }}
		if l.d.cfg.StreamFanout && p.name == l.fanoutQ {
			q.stream = newStreamCursor()
		}
		specs = append(specs, q)
	}
	return specs
}

// replyQueuePlan is the reply queue, as 18.1's declare_direct_consumer
// declares it: on the default exchange (nothing bound), durable and quorum
// with rabbit_transient_quorum_queue, x-expires = rabbit_transient_queues_ttl.
func replyQueuePlan(cfg Config, name string, log *slog.Logger) *queuePlan {
	return &queuePlan{name: name, durable: cfg.transientDurable(), args: cfg.transientQueueArgs(), log: log}
}

// rpcQueuePlans are the declarations of an RPC server, as 18.1's
// declare_topic_consumer and declare_fanout_consumer make them: T and T.S
// on the control exchange (topic, durable = amqp_durable_queues or
// rabbit_quorum_queue), and the fanout queue on exchange T_fanout (fanout,
// auto-delete, durable with rabbit_transient_quorum_queue or
// rabbit_stream_fanout), bound with key T.
func rpcQueuePlans(cfg Config, t driver.Target, fanoutQ string, log *slog.Logger) []*queuePlan {
	topicX := exchangeSpec{name: t.Exchange, kind: amqp.ExchangeTopic, durable: cfg.durable(), autoDelete: cfg.AutoDelete}
	fanoutX := exchangeSpec{name: t.Topic + "_fanout", kind: amqp.ExchangeFanout, durable: cfg.fanoutQueueDurable(), autoDelete: true}
	return []*queuePlan{
		{name: t.Topic, durable: cfg.durable(), autoDelete: cfg.AutoDelete, args: cfg.topicQueueArgs(),
			binds: []bindingSpec{{topicX, t.Topic}}, log: log},
		{name: t.Topic + "." + t.Server, durable: cfg.durable(), autoDelete: cfg.AutoDelete, args: cfg.topicQueueArgs(),
			binds: []bindingSpec{{topicX, t.Topic + "." + t.Server}}, log: log},
		{name: fanoutQ, durable: cfg.fanoutQueueDurable(), autoDelete: false, args: cfg.fanoutQueueArgs(),
			binds: []bindingSpec{{fanoutX, t.Topic}}, log: log},
	}
}

func (l *rpcListener) run(s *consumeSession) {
	defer close(l.done)
	l.c.run(s, l.handle)
	close(l.out)
	<-l.closeCh
	l.amu.Lock()
	l.flushAcksLocked() // before the connection closes, or they go back to the queue
	l.amu.Unlock()
	if cur := l.c.session(); cur != nil {
		if !cur.conn.IsClosed() && l.d.cfg.deleteFanoutOnClose() {
			// oslo deletes the fanout queue when the server stops, unless
			// it is the shared stream or has the queue manager's stable
			// name (x-expires removes it then).
			if _, err := cur.ch.QueueDelete(l.fanoutQ, false, false, false); err != nil {
				l.c.log.Debug("fanout queue delete failed", "queue", l.fanoutQ, "err", err)
			}
		}
		cur.close()
	}
}

// handle queues a batch of requests for Receive, unacknowledged;
// malformed requests are rejected without requeue. A stream's messages
// are admitted by its cursor first (see streamCursor).
func (l *rpcListener) handle(h *consumerHandle, batch []amqp.Delivery) {
	for _, dl := range batch {
		off := int64(-1)
		if s := h.spec.stream; s != nil {
			if off = streamOffset(dl.Headers); off >= 0 && !s.admit(off) {
				_ = h.ch.Ack(dl.DeliveryTag, false) // read again or handed over before
				continue
			}
		}
		m, err := decodeBody(dl.ContentType, dl.Headers, dl.Body)
		var in *incomingRequest
		if err == nil {
			in, err = decodeRequest(m)
		}
		if err != nil {
			if s := h.spec.stream; s != nil {
				// A stream refuses basic.reject (540 NOT_IMPLEMENTED,
				// closing the channel): it is passed over instead.
				if off >= 0 {
					s.take(h.ch, off)
				}
				_ = h.ch.Ack(dl.DeliveryTag, false)
			} else {
				_ = dl.Reject(false)
			}
			l.c.log.Warn("malformed request dropped", "err", err, "routing_key", dl.RoutingKey)
			continue
		}
		r := &rpcIncoming{l: l, in: in, h: h, tag: dl.DeliveryTag, off: off}
		select {
		case l.out <- r:
		case <-l.closeCh:
			return
		}
	}
}

// Receive returns the next request, acknowledged; driver.ErrClosed once
// stopped and drained.
func (l *rpcListener) Receive(ctx context.Context) (driver.IncomingRequest, error) {
	for {
		select {
		case r, ok := <-l.out:
			if !ok {
				return nil, driver.ErrClosed
			}
			if l.accept(r) {
				return r, nil
			}
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
}

// accept reports whether to hand r over, and acknowledges it (with
// every request handed over before it) once requestAckEvery are pending.
// A request whose channel is gone is skipped: the broker took it back and
// delivers it again. A duplicate _unique_id is skipped (and acknowledged
// with the next ones), as oslo drops one on receipt.
func (l *rpcListener) accept(r *rpcIncoming) bool {
	l.amu.Lock()
	defer l.amu.Unlock()
	lc := r.h.lc
	if lc.ch.IsClosed() {
		return false
	}
	if s := r.h.spec.stream; s != nil {
		// A stream's position is its cursor's, not the broker's: each
		// message is acknowledged alone (credit for the next one, as
		// kombu acknowledges), none waits for others handed over later.
		if r.off >= 0 && !s.take(lc.ch, r.off) {
			return false // its channel just closed: it comes again
		}
		_ = lc.ch.Ack(r.tag, false)
	} else if r.tag > lc.acked && r.tag > l.pending[lc] {
		l.pending[lc] = r.tag
	}
	dup := false
	if uid := r.in.uniqueID; uid != "" {
		if dup = l.dedup.seen(uid); dup {
			l.c.log.Info("duplicate message dropped", "unique_id", uid)
		} else {
			l.dedup.add(uid)
		}
	}
	if l.handed++; l.handed >= l.d.cfg.requestAckEvery() || l.isClosing() {
		l.flushAcksLocked()
	}
	return !dup
}

// isClosing reports whether Close was called: from then on each request
// is acknowledged at once, the connection is about to close.
func (l *rpcListener) isClosing() bool {
	select {
	case <-l.closeCh:
		return true
	default:
		return false
	}
}

// flushAcksLocked acknowledges every request handed over; l.amu is held.
func (l *rpcListener) flushAcksLocked() {
	for lc, tag := range l.pending {
		if err := lc.ch.Ack(tag, true); err != nil {
			l.c.log.Debug("requests not acknowledged, the broker delivers them again", "err", err)
		} else {
			lc.acked = tag
		}
	}
	clear(l.pending)
	l.handed = 0
}

// Stop cancels the consumers; requests already received stay readable.
func (l *rpcListener) Stop() { l.c.stop() }

// Close stops, deletes the fanout queue and closes the connection.
func (l *rpcListener) Close() error {
	l.c.stop()
	l.closeOnce.Do(func() { close(l.closeCh) })
	<-l.done
	l.d.removeListener(l)
	return nil
}

// rpcIncoming is one received request.
type rpcIncoming struct {
	l   *rpcListener
	in  *incomingRequest
	h   *consumerHandle // the consumer it came from
	tag uint64          // its delivery tag on h's channel
	off int64           // its stream offset (rabbit_stream_fanout), else -1
}

func (r *rpcIncoming) Request() *driver.Request     { return &r.in.req }
func (r *rpcIncoming) ClientTimeout() time.Duration { return r.in.monitor }
func (r *rpcIncoming) IsCall() bool                 { return r.in.msgID != "" }

// Heartbeat sends a call-monitor heartbeat, only when the caller asked for
// them (_timeout set): a 14.0.3 client without call monitoring fails on one.
func (r *rpcIncoming) Heartbeat(ctx context.Context) error {
	if !r.IsCall() || r.in.monitor <= 0 || r.in.replyQ == "" {
		return nil
	}
	return r.l.d.sendReply(ctx, r.in.replyQ, r.in.msgID, nil, false)
}

// Reply sends the final reply; nothing for casts.
func (r *rpcIncoming) Reply(ctx context.Context, rep *driver.Reply) error {
	if !r.IsCall() || r.in.replyQ == "" {
		return nil
	}
	if rep == nil {
		rep = &driver.Reply{}
	}
	return r.l.d.sendReply(ctx, r.in.replyQ, r.in.msgID, rep, true)
}

package rabbit

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"

	"oslogo/driver"
)

// Listen consumes RPC requests for target: the shared topic queue T, the
// server queue T.S and a fanout queue T_fanout_<hex>.
func (d *Driver) Listen(ctx context.Context, target driver.Target) (driver.RPCListener, error) {
	if target.Topic == "" || target.Server == "" {
		return nil, errors.New("rabbit: invalid target: a server listens on a topic and a server name")
	}
	l := &rpcListener{
		d:       d,
		target:  target,
		fanoutQ: target.Topic + "_fanout_" + newHexID(),
		out:     make(chan *rpcIncoming, inboxSize),
		closeCh: make(chan struct{}),
		done:    make(chan struct{}),
		dedup:   newDedup(),
	}
	l.c = newConsumer(d, "rpc-"+target.Topic)
	l.c.setup = l.setup
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

// rpcListener is an RPC server's consumer.
type rpcListener struct {
	d       *Driver
	c       *consumer
	target  driver.Target
	fanoutQ string
	out     chan *rpcIncoming
	closeCh chan struct{}
	closeMu sync.Mutex
	closed  bool
	done    chan struct{}
	dedup   *dedup // used by the run goroutine only
}

func (l *rpcListener) setup(_ context.Context, conn *amqp.Connection, ch *amqp.Channel) ([]*consumerHandle, error) {
	cfg := l.d.cfg
	t := l.target
	if err := ch.ExchangeDeclare(t.Exchange, amqp.ExchangeTopic, cfg.durable(), cfg.AutoDelete, false, false, nil); err != nil {
		return nil, err
	}
	fanoutX := t.Topic + "_fanout"
	if err := ch.ExchangeDeclare(fanoutX, amqp.ExchangeFanout, false, true, false, false, nil); err != nil {
		return nil, err
	}
	type q struct {
		name, exchange, key string
		durable, autoDelete bool
		args                amqp.Table
	}
	qs := []q{
		{t.Topic, t.Exchange, t.Topic, cfg.durable(), cfg.AutoDelete, cfg.topicQueueArgs()},
		{t.Topic + "." + t.Server, t.Exchange, t.Topic + "." + t.Server, cfg.durable(), cfg.AutoDelete, cfg.topicQueueArgs()},
		{l.fanoutQ, fanoutX, t.Topic, false, false, cfg.transientQueueArgs()},
	}
	var cons []*consumerHandle
	for _, q := range qs {
		if _, err := ch.QueueDeclare(q.name, q.durable, q.autoDelete, false, false, q.args); err != nil {
			return nil, err
		}
		if err := ch.QueueBind(q.name, q.key, q.exchange, false, nil); err != nil {
			return nil, err
		}
		// One channel per queue: delivery tags are per channel, so a
		// basic.ack(multiple) covers exactly the requests of that queue
		// that were already taken.
		qch, err := l.c.openChannel(conn)
		if err != nil {
			return nil, err
		}
		h, err := l.c.consume(qch, q.name, cfg.ackOnReceipt())
		if err != nil {
			return nil, err
		}
		cons = append(cons, h)
	}
	return cons, nil
}

func (l *rpcListener) run(s *consumeSession) {
	defer close(l.done)
	l.c.run(s, l.handle)
	close(l.out)
	<-l.closeCh
	if cur := l.c.session(); cur != nil {
		if !cur.conn.IsClosed() {
			// oslo deletes the fanout queue when the server stops.
			if _, err := cur.ch.QueueDelete(l.fanoutQ, false, false, false); err != nil {
				l.c.log.Debug("fanout queue delete failed", "queue", l.fanoutQ, "err", err)
			}
		}
		cur.close()
	}
}

// handle acknowledges a batch of requests before any of them is
// dispatched (at-most-once, as oslo) with one basic.ack(multiple), then
// queues them. Malformed requests are rejected on their own first. On a
// no_ack consumer the broker already counts them as acknowledged and
// malformed ones are dropped.
func (l *rpcListener) handle(h *consumerHandle, batch []amqp.Delivery) {
	ins := make([]*incomingRequest, 0, len(batch))
	var last uint64
	for _, dl := range batch {
		m, err := decodeBody(dl.ContentType, dl.Headers, dl.Body)
		var in *incomingRequest
		if err == nil {
			in, err = decodeRequest(m)
		}
		if err != nil {
			if !h.autoAck {
				_ = dl.Reject(false)
			}
			l.c.log.Warn("malformed request dropped", "err", err, "routing_key", dl.RoutingKey)
			continue
		}
		ins = append(ins, in)
		last = dl.DeliveryTag
	}
	if len(ins) == 0 {
		return
	}
	if !h.autoAck {
		if err := h.ch.Ack(last, true); err != nil {
			l.c.log.Warn("ack failed, requests discarded", "err", err, "count", len(ins))
			return
		}
	}
	for _, in := range ins {
		if in.uniqueID != "" {
			if l.dedup.seen(in.uniqueID) {
				l.c.log.Info("duplicate message dropped", "unique_id", in.uniqueID)
				continue
			}
			l.dedup.add(in.uniqueID)
		}
		select {
		case l.out <- &rpcIncoming{l: l, in: in}:
		case <-l.closeCh:
		}
	}
}

// Receive returns the next request; driver.ErrClosed once stopped and
// drained.
func (l *rpcListener) Receive(ctx context.Context) (driver.IncomingRequest, error) {
	select {
	case r, ok := <-l.out:
		if !ok {
			return nil, driver.ErrClosed
		}
		return r, nil
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

// Stop cancels the consumers; requests already received stay readable.
func (l *rpcListener) Stop() { l.c.stop() }

// Close stops, deletes the fanout queue and closes the connection.
func (l *rpcListener) Close() error {
	l.c.stop()
	l.closeMu.Lock()
	if !l.closed {
		l.closed = true
		close(l.closeCh)
	}
	l.closeMu.Unlock()
	<-l.done
	l.d.removeListener(l)
	return nil
}

// rpcIncoming is one received request.
type rpcIncoming struct {
	l  *rpcListener
	in *incomingRequest
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

package broker

import (
	"strings"

	"github.com/oslogo/oslogo/broker/internal/amqp091"
)

func (ch *channel) handleMethod(m amqp091.Method) *amqpError {
	switch m := m.(type) {
	case *amqp091.ChannelClose:
		ch.flushConfirms()
		ch.release()
		ch.conn.send(ch.id, &amqp091.ChannelCloseOk{})
		delete(ch.conn.channels, ch.id)
		return nil
	case *amqp091.ChannelCloseOk:
		return nil
	case *amqp091.ChannelOpen:
		return errf(amqp091.ChannelError, "second 'channel.open' seen")
	case *amqp091.ChannelFlow:
		if !m.Active {
			// RabbitMQ refuses client-initiated flow stops; clients test for it.
			return errf(amqp091.NotImplemented, "active=false")
		}
		ch.mu.Lock()
		ch.flowActive = m.Active
		var qs []*queue
		for _, c := range ch.consumers {
			qs = append(qs, c.q)
		}
		ch.mu.Unlock()
		ch.conn.send(ch.id, &amqp091.ChannelFlowOk{Active: m.Active})
		if m.Active {
			for _, q := range qs {
				q.dispatch(ch.conn)
			}
		}
		return nil
	case *amqp091.ChannelFlowOk:
		return nil
	case *amqp091.ExchangeDeclare:
		return ch.exchangeDeclare(m)
	case *amqp091.ExchangeDelete:
		return ch.exchangeDelete(m)
	case *amqp091.ExchangeBind:
		return ch.exchangeBind(m.Destination, m.Source, m.RoutingKey, m.Arguments, m.NoWait, true)
	case *amqp091.ExchangeUnbind:
		return ch.exchangeBind(m.Destination, m.Source, m.RoutingKey, m.Arguments, m.NoWait, false)
	case *amqp091.QueueDeclare:
		return ch.queueDeclare(m)
	case *amqp091.QueueBind:
		return ch.queueBind(m.Queue, m.Exchange, m.RoutingKey, m.Arguments, m.NoWait, true)
	case *amqp091.QueueUnbind:
		return ch.queueBind(m.Queue, m.Exchange, m.RoutingKey, m.Arguments, false, false)
	case *amqp091.QueuePurge:
		q, err := ch.findQueue(m.Queue, true)
		if err != nil {
			return err
		}
		if err := ch.checkPerm(permRead, "queue", q.name); err != nil {
			return err
		}
		if q.stream != nil {
			return errf(amqp091.NotImplemented, "queue.purge not supported by stream queues %s", q.rs())
		}
		n := q.purge()
		if !m.NoWait {
			ch.conn.send(ch.id, &amqp091.QueuePurgeOk{MessageCount: uint32(n)})
		}
		return nil
	case *amqp091.QueueDelete:
		return ch.queueDelete(m)
	case *amqp091.BasicQos:
		if m.PrefetchSize != 0 {
			return errf(amqp091.NotImplemented, "prefetch_size!=0 (%d)", m.PrefetchSize)
		}
		if m.Global {
			ch.mu.Lock()
			ch.globalPrefetch = int(m.PrefetchCount)
			var qs []*queue
			for _, c := range ch.consumers {
				qs = append(qs, c.q)
			}
			ch.mu.Unlock()
			ch.conn.send(ch.id, &amqp091.BasicQosOk{})
			for _, q := range qs {
				q.dispatch(ch.conn)
			}
			return nil
		}
		ch.prefetch = int(m.PrefetchCount)
		ch.mon.prefetch.Store(int64(m.PrefetchCount))
		ch.conn.send(ch.id, &amqp091.BasicQosOk{})
		return nil
	case *amqp091.BasicConsume:
		return ch.basicConsume(m)
	case *amqp091.BasicCancel:
		return ch.basicCancel(m.ConsumerTag, m.NoWait)
	case *amqp091.BasicGet:
		return ch.basicGet(m)
	case *amqp091.BasicAck:
		return ch.ackOrTx(m.DeliveryTag, m.Multiple, ackOK)
	case *amqp091.BasicReject:
		k := ackDrop
		if m.Requeue {
			k = ackRequeue
		}
		return ch.ackOrTx(m.DeliveryTag, false, k)
	case *amqp091.BasicNack:
		k := ackDrop
		if m.Requeue {
			k = ackRequeue
		}
		return ch.ackOrTx(m.DeliveryTag, m.Multiple, k)
	case *amqp091.BasicRecover:
		if !m.Requeue {
			return errf(amqp091.NotImplemented, "requeue=false")
		}
		if err := ch.doAck(0, true, ackRequeue); err != nil {
			return err
		}
		ch.conn.send(ch.id, &amqp091.BasicRecoverOk{})
		return nil
	case *amqp091.BasicRecoverAsync:
		if !m.Requeue {
			return errf(amqp091.NotImplemented, "requeue=false")
		}
		return ch.doAck(0, true, ackRequeue)
	case *amqp091.TxSelect:
		if ch.confirm {
			return errf(amqp091.PreconditionFailed, "cannot switch from confirm to tx mode")
		}
		ch.tx = true
		ch.mon.tx.Store(true)
		ch.conn.send(ch.id, &amqp091.TxSelectOk{})
		return nil
	case *amqp091.TxCommit:
		if !ch.tx {
			return errf(amqp091.PreconditionFailed, "channel is not transactional")
		}
		ops := ch.txOps
		ch.txOps = nil
		defer ch.releaseTx(ops)
		for _, op := range ops {
			if op.isAck {
				if err := ch.doAck(op.tag, op.multiple, op.kind); err != nil {
					return err
				}
				continue
			}
			ex := ch.lookupExchange(op.msg.exchange)
			if ex == nil {
				continue
			}
			if err := ch.routeAndEnqueue(op.msg, ex, op.mandatory, 0); err != nil {
				return err
			}
		}
		if st := ch.conn.srv.store; st != nil {
			if err := st.syncNow(); err != nil {
				ch.conn.log.Error("tx.commit failed: message store cannot write", "err", err)
				return errf(amqp091.InternalError, "message store cannot write: transaction not committed")
			}
		}
		ch.conn.send(ch.id, &amqp091.TxCommitOk{})
		return nil
	case *amqp091.TxRollback:
		if !ch.tx {
			return errf(amqp091.PreconditionFailed, "channel is not transactional")
		}
		ch.releaseTx(ch.txOps)
		ch.txOps = nil
		ch.conn.send(ch.id, &amqp091.TxRollbackOk{})
		return nil
	case *amqp091.ConfirmSelect:
		if ch.tx {
			return errf(amqp091.PreconditionFailed, "cannot switch from tx to confirm mode")
		}
		ch.confirm = true
		ch.mon.confirm.Store(true)
		if !m.Nowait {
			ch.conn.send(ch.id, &amqp091.ConfirmSelectOk{})
		}
		return nil
	}
	return errf(amqp091.CommandInvalid, "unexpected method %s from client", m.Name())
}

func (ch *channel) ackOrTx(tag uint64, multiple bool, kind int) *amqpError {
	if ch.tx {
		ch.txOps = append(ch.txOps, txOp{isAck: true, tag: tag, multiple: multiple, kind: kind})
		return nil
	}
	return ch.doAck(tag, multiple, kind)
}

func (ch *channel) lookupExchange(name string) *exchange {
	ch.vh.mu.RLock()
	defer ch.vh.mu.RUnlock()
	return ch.vh.exchanges[name]
}

func validName(n string) bool {
	// RabbitMQ accepts any UTF-8 name up to 255 bytes, not just the
	// spec's character class; clients rely on that.
	return len(n) <= 255
}

func (ch *channel) exchangeDeclare(m *amqp091.ExchangeDeclare) *amqpError {
	vh := ch.vh
	if m.Exchange == "" {
		return errf(amqp091.AccessRefused, "operation not permitted on the default exchange")
	}
	if !validName(m.Exchange) {
		return errf(amqp091.PreconditionFailed, "invalid exchange name '%s'", m.Exchange)
	}
	if m.Passive {
		vh.mu.RLock()
		e := vh.exchanges[m.Exchange]
		vh.mu.RUnlock()
		if e == nil {
			return errf(amqp091.NotFound, "no exchange '%s' in vhost '%s'", m.Exchange, vh.name)
		}
		if !m.NoWait {
			ch.conn.send(ch.id, &amqp091.ExchangeDeclareOk{})
		}
		return nil
	}
	if err := ch.checkPerm(permConfigure, "exchange", m.Exchange); err != nil {
		return err
	}
	if ae, ok := m.Arguments["alternate-exchange"].(string); ok {
		// As RabbitMQ: the exchange passes messages on to its alternate.
		if err := ch.checkPerm(permRead, "exchange", m.Exchange); err != nil {
			return err
		}
		if err := ch.checkPerm(permWrite, "exchange", ae); err != nil {
			return err
		}
	}
	if !validKind(m.Type) {
		return errf(amqp091.CommandInvalid, "unknown exchange type '%s'", m.Type)
	}
	vh.mu.Lock()
	e := vh.exchanges[m.Exchange]
	if e != nil {
		vh.mu.Unlock()
		if e.kind != m.Type {
			return errf(amqp091.PreconditionFailed, "inequivalent arg 'type' for exchange '%s' in vhost '%s': received '%s' but current is '%s'", m.Exchange, vh.name, m.Type, e.kind)
		}
		if e.durable != m.Durable {
			return errf(amqp091.PreconditionFailed, "inequivalent arg 'durable' for exchange '%s' in vhost '%s': received '%v' but current is '%v'", m.Exchange, vh.name, m.Durable, e.durable)
		}
		if e.autoDelete != m.AutoDelete {
			return errf(amqp091.PreconditionFailed, "inequivalent arg 'auto_delete' for exchange '%s' in vhost '%s': received '%v' but current is '%v'", m.Exchange, vh.name, m.AutoDelete, e.autoDelete)
		}
		if e.durable {
			// An earlier declaration's definitions write may have failed.
			if err := vh.srv.syncDefinitions(false); err != nil {
				return err
			}
		}
		if !m.NoWait {
			ch.conn.send(ch.id, &amqp091.ExchangeDeclareOk{})
		}
		return nil
	}
	if reservedName(m.Exchange) {
		vh.mu.Unlock()
		return errf(amqp091.AccessRefused, "exchange name '%s' contains reserved prefix 'amq.*'", m.Exchange)
	}
	e = newExchange(vh, m.Exchange, m.Type, m.Durable, m.AutoDelete, m.Internal, m.Arguments)
	vh.exchanges[m.Exchange] = e
	vh.bump()
	vh.mu.Unlock()
	if e.durable {
		if err := vh.srv.syncDefinitions(true); err != nil {
			return err
		}
	}
	if !m.NoWait {
		ch.conn.send(ch.id, &amqp091.ExchangeDeclareOk{})
	}
	return nil
}

func (ch *channel) exchangeDelete(m *amqp091.ExchangeDelete) *amqpError {
	vh := ch.vh
	if m.Exchange == "" || reservedName(m.Exchange) {
		return errf(amqp091.AccessRefused, "operation not permitted on the default exchange")
	}
	if err := ch.checkPerm(permConfigure, "exchange", m.Exchange); err != nil {
		return err
	}
	vh.mu.Lock()
	e := vh.exchanges[m.Exchange]
	if e == nil {
		vh.mu.Unlock()
		// Deleting a missing exchange succeeds, as in RabbitMQ 3.x.
		if !m.NoWait {
			ch.conn.send(ch.id, &amqp091.ExchangeDeleteOk{})
		}
		return nil
	}
	if m.IfUnused && (len(e.bindings) > 0 || vh.isBindingDest(e)) {
		vh.mu.Unlock()
		return errf(amqp091.PreconditionFailed, "exchange '%s' in vhost '%s' in use", m.Exchange, vh.name)
	}
	durableGone := vh.removeExchangeLocked(e)
	vh.mu.Unlock()
	if durableGone {
		if err := vh.srv.syncDefinitions(true); err != nil {
			return err
		}
	}
	if !m.NoWait {
		ch.conn.send(ch.id, &amqp091.ExchangeDeleteOk{})
	}
	return nil
}

func (vh *vhost) isBindingDest(e *exchange) bool {
	for _, o := range vh.exchanges {
		for _, b := range o.bindings {
			if b.dst == e {
				return true
			}
		}
	}
	return false
}

func (ch *channel) exchangeBind(dst, src, key string, args amqp091.Table, noWait, bind bool) *amqpError {
	vh := ch.vh
	if err := ch.checkPerm(permWrite, "exchange", dst); err != nil {
		return err
	}
	if err := ch.checkPerm(permRead, "exchange", src); err != nil {
		return err
	}
	if src == "" || dst == "" {
		return errf(amqp091.AccessRefused, "operation not permitted on the default exchange")
	}
	vh.mu.Lock()
	s, d := vh.exchanges[src], vh.exchanges[dst]
	if s == nil || d == nil {
		vh.mu.Unlock()
		if !bind {
			if !noWait {
				ch.conn.send(ch.id, &amqp091.ExchangeUnbindOk{})
			}
			return nil
		}
		missing := src
		if s != nil {
			missing = dst
		}
		return errf(amqp091.NotFound, "no exchange '%s' in vhost '%s'", missing, vh.name)
	}
	b := &binding{src: s, dst: d, key: key, args: args, argsKey: tableKey(args)}
	changed, durableGone := false, false
	if bind {
		changed = s.addBinding(b)
	} else {
		changed = s.removeBinding(b)
		if changed && s.autoDelete && len(s.bindings) == 0 {
			durableGone = vh.removeExchangeLocked(s)
		}
	}
	vh.bump()
	vh.mu.Unlock()
	if (s.durable && d.durable) || durableGone {
		if err := vh.srv.syncDefinitions(changed); err != nil {
			return err
		}
	}
	if !noWait {
		if bind {
			ch.conn.send(ch.id, &amqp091.ExchangeBindOk{})
		} else {
			ch.conn.send(ch.id, &amqp091.ExchangeUnbindOk{})
		}
	}
	return nil
}

// findQueue looks a queue up, enforcing exclusivity.
func (ch *channel) findQueue(name string, useLast bool) (*queue, *amqpError) {
	if name == "" && useLast {
		name = ch.lastQueue
	}
	ch.vh.mu.RLock()
	q := ch.vh.queues[name]
	ch.vh.mu.RUnlock()
	if q == nil {
		return nil, errf(amqp091.NotFound, "no queue '%s' in vhost '%s'", name, ch.vh.name)
	}
	if q.exclusive && q.owner != ch.conn {
		return nil, errf(amqp091.ResourceLocked, "cannot obtain exclusive access to locked queue '%s' in vhost '%s'. It could be originally declared on another connection or the exclusive property value does not match that of the original declaration.", name, ch.vh.name)
	}
	return q, nil
}

func (ch *channel) queueDeclare(m *amqp091.QueueDeclare) *amqpError {
	vh := ch.vh
	name := m.Queue
	if name != "" && !validName(name) {
		return errf(amqp091.PreconditionFailed, "invalid queue name '%s'", name)
	}
	if m.Passive {
		if name == "" {
			name = ch.lastQueue
		}
		q, err := ch.findQueue(name, false)
		if err != nil {
			return err
		}
		q.mu.Lock()
		q.touchLocked()
		q.mu.Unlock()
		ch.lastQueue = q.name
		if !m.NoWait {
			ch.conn.send(ch.id, &amqp091.QueueDeclareOk{Queue: q.name, MessageCount: uint32(q.messageCount()), ConsumerCount: uint32(q.consumerCount())})
		}
		return nil
	}
	if name == "" {
		name = serverNamedQueue()
	} else if reservedName(name) {
		return errf(amqp091.AccessRefused, "queue name '%s' contains reserved prefix 'amq.*'", name)
	}
	if err := ch.checkPerm(permConfigure, "queue", name); err != nil {
		return err
	}
	if dlx, ok := m.Arguments["x-dead-letter-exchange"].(string); ok {
		// As RabbitMQ: dead letters are read from the queue and written
		// to the exchange.
		if err := ch.checkPerm(permRead, "queue", name); err != nil {
			return err
		}
		if err := ch.checkPerm(permWrite, "exchange", dlx); err != nil {
			return err
		}
	}
	spec := queueSpec{name: name, durable: m.Durable, exclusive: m.Exclusive, autoDelet: m.AutoDelete, args: m.Arguments}
	vh.mu.Lock()
	q := vh.queues[name]
	if q != nil {
		vh.mu.Unlock()
		if q.exclusive && q.owner != ch.conn {
			return errf(amqp091.ResourceLocked, "cannot obtain exclusive access to locked queue '%s' in vhost '%s'. It could be originally declared on another connection or the exclusive property value does not match that of the original declaration.", name, vh.name)
		}
		if err := q.equivalent(spec); err != nil {
			return err
		}
		if q.durable {
			// An earlier declaration's definitions write may have failed.
			if err := vh.srv.syncDefinitions(false); err != nil {
				return err
			}
		}
	} else {
		var err *amqpError
		q, err = vh.newQueue(spec, ch.conn)
		if err != nil {
			vh.mu.Unlock()
			return err
		}
		vh.queues[name] = q
		vh.bump()
		vh.mu.Unlock()
		if q.exclusive {
			ch.conn.exclusive = append(ch.conn.exclusive, q)
		}
		if q.durable {
			if err := vh.srv.syncDefinitions(true); err != nil {
				return err
			}
		}
	}
	q.mu.Lock()
	q.touchLocked()
	mc, cc := q.countLocked(), len(q.consumers)
	q.mu.Unlock()
	ch.lastQueue = name
	if !m.NoWait {
		ch.conn.send(ch.id, &amqp091.QueueDeclareOk{Queue: name, MessageCount: uint32(mc), ConsumerCount: uint32(cc)})
	}
	return nil
}

func (ch *channel) queueBind(qname, exname, key string, args amqp091.Table, noWait, bind bool) *amqpError {
	vh := ch.vh
	q, err := ch.findQueue(qname, true)
	if err != nil {
		if !bind && err.code == amqp091.NotFound {
			ch.conn.send(ch.id, &amqp091.QueueUnbindOk{})
			return nil
		}
		return err
	}
	if qname == "" && key == "" {
		key = q.name
	}
	if err := ch.checkPerm(permWrite, "queue", q.name); err != nil {
		return err
	}
	if err := ch.checkPerm(permRead, "exchange", exname); err != nil {
		return err
	}
	if exname == "" {
		return errf(amqp091.AccessRefused, "operation not permitted on the default exchange")
	}
	vh.mu.Lock()
	e := vh.exchanges[exname]
	if e == nil {
		vh.mu.Unlock()
		if !bind {
			ch.conn.send(ch.id, &amqp091.QueueUnbindOk{})
			return nil
		}
		return errf(amqp091.NotFound, "no exchange '%s' in vhost '%s'", exname, vh.name)
	}
	b := &binding{src: e, q: q, key: key, args: args, argsKey: tableKey(args)}
	var changed, durableGone bool
	if bind {
		changed = e.addBinding(b)
	} else {
		changed = e.removeBinding(b)
		if changed && e.autoDelete && len(e.bindings) == 0 {
			durableGone = vh.removeExchangeLocked(e)
		}
	}
	vh.bump()
	vh.mu.Unlock()
	if (q.durable && e.durable) || durableGone {
		if err := vh.srv.syncDefinitions(changed); err != nil {
			return err
		}
	}
	if bind {
		if !noWait {
			ch.conn.send(ch.id, &amqp091.QueueBindOk{})
		}
	} else {
		ch.conn.send(ch.id, &amqp091.QueueUnbindOk{})
	}
	return nil
}

func (ch *channel) queueDelete(m *amqp091.QueueDelete) *amqpError {
	name := m.Queue
	if name == "" {
		name = ch.lastQueue
	}
	// Checked before the lookup, as RabbitMQ does, so that deleting a
	// missing queue is refused too.
	if err := ch.checkPerm(permConfigure, "queue", name); err != nil {
		return err
	}
	q, err := ch.findQueue(name, false)
	if err != nil {
		if err.code == amqp091.NotFound {
			// Deleting a missing queue succeeds, as in RabbitMQ 3.x.
			if !m.NoWait {
				ch.conn.send(ch.id, &amqp091.QueueDeleteOk{})
			}
			return nil
		}
		return err
	}
	q.mu.Lock()
	inUse := len(q.consumers) > 0
	empty := q.readyCount == 0
	q.mu.Unlock()
	if m.IfUnused && inUse {
		return errf(amqp091.PreconditionFailed, "queue '%s' in vhost '%s' in use", q.name, ch.vh.name)
	}
	if m.IfEmpty && !empty {
		return errf(amqp091.PreconditionFailed, "queue '%s' in vhost '%s' is not empty", q.name, ch.vh.name)
	}
	n := ch.vh.deleteQueue(q, "deleted by client")
	if q.durable {
		if err := ch.vh.srv.syncDefinitions(false); err != nil {
			return err
		}
	}
	if !m.NoWait {
		ch.conn.send(ch.id, &amqp091.QueueDeleteOk{MessageCount: uint32(n)})
	}
	return nil
}

func (ch *channel) basicConsume(m *amqp091.BasicConsume) *amqpError {
	q, err := ch.findQueue(m.Queue, true)
	if err != nil {
		return err
	}
	if err := ch.checkPerm(permRead, "queue", q.name); err != nil {
		return err
	}
	tag := m.ConsumerTag
	if tag == "" {
		tag = "amq.ctag-" + strings.TrimPrefix(serverNamedQueue(), "amq.gen-")
	}
	ch.mu.Lock()
	_, dup := ch.consumers[tag]
	ch.mu.Unlock()
	if dup {
		return errf(amqp091.NotAllowed, "attempt to reuse consumer tag '%s'", tag)
	}
	c := &consumer{tag: tag, ch: ch, q: q, noAck: m.NoAck, exclusive: m.Exclusive, prefetch: ch.prefetch}
	if v, ok := m.Arguments["x-priority"]; ok {
		p, isInt := asInt(v)
		if !isInt {
			return errf(amqp091.PreconditionFailed, "invalid arg 'x-priority' for consumer: not an integer")
		}
		c.priority = p
	}
	var soff streamOffset
	if q.stream != nil {
		if soff, err = ch.streamConsumeCheck(q, m); err != nil {
			return err
		}
	}
	var dls []deadLetter
	q.mu.Lock()
	if q.deleted {
		q.mu.Unlock()
		return errf(amqp091.NotFound, "no queue '%s' in vhost '%s'", q.name, ch.vh.name)
	}
	if len(q.consumers) > 0 && (m.Exclusive || q.consumers[0].exclusive) {
		q.mu.Unlock()
		return errf(amqp091.AccessRefused, "queue '%s' in vhost '%s' in exclusive use", q.name, ch.vh.name)
	}
	if q.stream != nil {
		c.soff = q.stream.resolve(soff)
	}
	ch.mu.Lock()
	ch.consumers[tag] = c
	ch.mu.Unlock()
	q.addConsumerLocked(c)
	q.hadConsumer = true
	q.touchLocked()
	// consume-ok goes out before the first delivery: both happen under q.mu.
	if !m.NoWait {
		ch.conn.send(ch.id, &amqp091.BasicConsumeOk{ConsumerTag: tag})
	}
	q.dispatchLocked(&dls, ch.conn)
	q.mu.Unlock()
	q.vh.deadLetter(q, dls)
	return nil
}

func (ch *channel) basicCancel(tag string, noWait bool) *amqpError {
	ch.mu.Lock()
	c := ch.consumers[tag]
	delete(ch.consumers, tag)
	ch.mu.Unlock()
	if c != nil && c.q.removeConsumer(c) {
		ch.vh.deleteQueue(c.q, "auto-delete")
	}
	if !noWait {
		ch.conn.send(ch.id, &amqp091.BasicCancelOk{ConsumerTag: tag})
	}
	return nil
}

func (ch *channel) basicGet(m *amqp091.BasicGet) *amqpError {
	q, err := ch.findQueue(m.Queue, true)
	if err != nil {
		return err
	}
	if err := ch.checkPerm(permRead, "queue", q.name); err != nil {
		return err
	}
	if q.stream != nil {
		return errf(amqp091.NotImplemented, "basic.get not supported by stream queues %s", q.rs())
	}
	var dls []deadLetter
	q.mu.Lock()
	q.touchLocked()
	q.expireLocked(nowMS(), &dls)
	lv := q.headLocked()
	if lv < 0 {
		q.mu.Unlock()
		q.vh.deadLetter(q, dls)
		ch.conn.send(ch.id, &amqp091.BasicGetEmpty{})
		return nil
	}
	e := q.popLocked(lv)
	ch.mu.Lock()
	ch.nextTag++
	tag := ch.nextTag
	if !m.NoAck {
		ch.unacked.PushBack(unackedRec{tag: tag, q: q, c: &consumer{}, e: e})
		ch.unackedCount++
		q.unacked++
	} else {
		q.forgetLocked(e)
	}
	ch.conn.sendContent(ch.id, &amqp091.BasicGetOk{DeliveryTag: tag, Redelivered: e.redelivered, Exchange: e.m.exchange, RoutingKey: e.m.routingKey, MessageCount: uint32(q.readyCount)}, e.m, deliveryProps(q, &e))
	ch.mu.Unlock()
	q.mu.Unlock()
	q.vh.deadLetter(q, dls)
	return nil
}

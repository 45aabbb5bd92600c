package broker

import (
	"crypto/rand"
	"encoding/base64"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/oslogo/oslogo/broker/internal/amqp091"
)

type vhost struct {
	srv  *Server
	name string

	mu        sync.RWMutex
	exchanges map[string]*exchange
	queues    map[string]*queue
	// version changes with every topology change; channels cache routes
	// keyed by it.
	version atomic.Uint64
}

func newVhost(srv *Server, name string) *vhost {
	vh := &vhost{srv: srv, name: name, exchanges: map[string]*exchange{}, queues: map[string]*queue{}}
	for _, d := range []struct{ name, kind string }{
		{"", kindDirect}, {"amq.direct", kindDirect}, {"amq.fanout", kindFanout},
		{"amq.topic", kindTopic}, {"amq.headers", kindHeaders}, {"amq.match", kindHeaders},
		{"amq.rabbitmq.trace", kindTopic},
	} {
		e := newExchange(vh, d.name, d.kind, true, false, d.name == "amq.rabbitmq.trace", nil)
		vh.exchanges[d.name] = e
	}
	return vh
}

func (vh *vhost) bump() { vh.version.Add(1) }

func serverNamedQueue() string {
	var b [16]byte
	_, _ = rand.Read(b[:])
	return "amq.gen-" + base64.RawURLEncoding.EncodeToString(b[:])
}

// queueSpec is a validated queue.declare.
type queueSpec struct {
	name                          string
	durable, exclusive, autoDelet bool
	args                          amqp091.Table
}

func intArg(args amqp091.Table, k string) (int64, bool, *amqpError) {
	v, ok := args[k]
	if !ok {
		return 0, false, nil
	}
	i, isInt := asInt(v)
	if !isInt {
		return 0, false, errf(amqp091.PreconditionFailed, "invalid arg '%s' for queue: not an integer", k)
	}
	return i, true, nil
}

// newQueue validates arguments the way RabbitMQ does and builds a queue.
func (vh *vhost) newQueue(s queueSpec, owner *conn) (*queue, *amqpError) {
	q := &queue{vh: vh, name: s.name, key: vh.name + "\x00" + s.name, durable: s.durable, exclusive: s.exclusive,
		autoDelete: s.autoDelet, args: s.args, maxLen: -1, maxBytes: -1, msgTTL: -1, deliveryLimit: -1}
	if s.exclusive {
		q.owner = owner
	}
	args := s.args
	qtype, aerr := vh.queueTypeOf(s)
	if aerr != nil {
		return nil, aerr
	}
	if qtype == "quorum" {
		q.quorum = true
		q.deliveryLimit = defaultDeliveryLimit
	}
	var err *amqpError
	var v int64
	var ok bool
	if v, ok, err = intArg(args, "x-max-length"); err != nil {
		return nil, err
	} else if ok {
		if v < 0 {
			return nil, errf(amqp091.PreconditionFailed, "invalid arg 'x-max-length': negative")
		}
		q.maxLen = v
	}
	if v, ok, err = intArg(args, "x-max-length-bytes"); err != nil {
		return nil, err
	} else if ok {
		q.maxBytes = v
	}
	if v, ok, err = intArg(args, "x-message-ttl"); err != nil {
		return nil, err
	} else if ok {
		if v < 0 {
			return nil, errf(amqp091.PreconditionFailed, "invalid arg 'x-message-ttl' for queue '%s' in vhost '%s': negative", s.name, vh.name)
		}
		q.msgTTL = v
	}
	if v, ok, err = intArg(args, "x-expires"); err != nil {
		return nil, err
	} else if ok {
		if v <= 0 {
			return nil, errf(amqp091.PreconditionFailed, "invalid arg 'x-expires' for queue '%s' in vhost '%s': {value_zero,%d}", s.name, vh.name, v)
		}
		q.expires = time.Duration(v) * time.Millisecond
	}
	if v, ok, err = intArg(args, "x-max-priority"); err != nil {
		return nil, err
	} else if ok {
		if v < 0 || v > 255 {
			return nil, errf(amqp091.PreconditionFailed, "invalid arg 'x-max-priority': out of range")
		}
		q.maxPriority = int(v)
	}
	if v, ok, err = intArg(args, "x-delivery-limit"); err != nil {
		return nil, err
	} else if ok {
		q.deliveryLimit = v
	}
	if o, ok := args["x-overflow"]; ok {
		os, _ := o.(string)
		switch os {
		case overflowDropHead, overflowRejectPub, overflowRejectPubDLX:
			q.overflow = os
		default:
			return nil, errf(amqp091.PreconditionFailed, "invalid arg 'x-overflow' for queue '%s': %v", s.name, o)
		}
	}
	if d, ok := args["x-dead-letter-exchange"]; ok {
		ds, isStr := d.(string)
		if !isStr {
			return nil, errf(amqp091.PreconditionFailed, "invalid arg 'x-dead-letter-exchange': not a string")
		}
		q.dlx = ds
		// The empty name is the default exchange, a valid target.
		if ds == "" {
			q.dlx = "\x00default"
		}
	}
	if r, ok := args["x-dead-letter-routing-key"]; ok {
		rs, isStr := r.(string)
		if !isStr {
			return nil, errf(amqp091.PreconditionFailed, "invalid arg 'x-dead-letter-routing-key': not a string")
		}
		q.dlrk, q.hasDLRK = rs, true
	}
	if a, ok := args["x-single-active-consumer"]; ok {
		b, isBool := a.(bool)
		if !isBool {
			return nil, errf(amqp091.PreconditionFailed, "invalid arg 'x-single-active-consumer': not a boolean")
		}
		q.sac = b
	}
	if qtype == "stream" {
		if err := vh.openStream(q); err != nil {
			return nil, err
		}
	}
	q.ready = make([]ring[qentry], q.maxPriority+1)
	return q, nil
}

// equivalent checks a redeclaration against an existing queue.
func (q *queue) equivalent(s queueSpec) *amqpError {
	if q.durable != s.durable {
		return errf(amqp091.PreconditionFailed, "inequivalent arg 'durable' for queue '%s' in vhost '%s': received '%v' but current is '%v'", q.name, q.vh.name, s.durable, q.durable)
	}
	if q.autoDelete != s.autoDelet {
		return errf(amqp091.PreconditionFailed, "inequivalent arg 'auto_delete' for queue '%s' in vhost '%s': received '%v' but current is '%v'", q.name, q.vh.name, s.autoDelet, q.autoDelete)
	}
	if q.exclusive != s.exclusive {
		return errf(amqp091.PreconditionFailed, "inequivalent arg 'exclusive' for queue '%s' in vhost '%s': received '%v' but current is '%v'", q.name, q.vh.name, s.exclusive, q.exclusive)
	}
	if err := q.equivalentType(s); err != nil {
		return err
	}
	for _, k := range []string{"x-message-ttl", "x-expires", "x-max-length", "x-max-length-bytes", "x-dead-letter-exchange", "x-dead-letter-routing-key", "x-max-priority", "x-overflow", "x-single-active-consumer", "x-delivery-limit", "x-max-age", "x-stream-max-segment-size-bytes"} {
		a, aok := q.args[k]
		b, bok := s.args[k]
		if aok != bok || (aok && !valuesEqual(a, b)) {
			return q.ineqArg(k, a, aok, b, bok)
		}
	}
	return nil
}

// deleteQueue removes q, cancels its consumers (telling clients that asked
// for consumer_cancel_notify) and drops its bindings and messages.
func (vh *vhost) deleteQueue(q *queue, why string) int {
	vh.mu.Lock()
	if vh.queues[q.name] != q {
		vh.mu.Unlock()
		return 0
	}
	delete(vh.queues, q.name)
	var emptied []*exchange
	for _, e := range vh.exchanges {
		had := len(e.bindings)
		for i := 0; i < len(e.bindings); {
			if b := e.bindings[i]; b.q == q {
				e.removeBinding(b)
				continue
			}
			i++
		}
		if had > 0 && len(e.bindings) == 0 && e.autoDelete {
			emptied = append(emptied, e)
		}
	}
	durableGone := false
	for _, e := range emptied {
		durableGone = vh.removeExchangeLocked(e) || durableGone
	}
	vh.bump()
	q.mu.Lock()
	q.deleted = true
	n := q.readyCount
	q.dropReadyLocked()
	consumers := q.consumers
	q.consumers = nil
	q.stopTimersLocked()
	if q.stream != nil {
		q.stream.removeFiles()
	}
	q.mu.Unlock()
	vh.mu.Unlock()
	if q.durable || durableGone {
		vh.srv.saveDefinitions()
	}
	for _, c := range consumers {
		c.ch.consumerGone(c)
	}
	vh.srv.log.Debug("queue deleted", "vhost", vh.name, "queue", q.name, "reason", why)
	return n
}

// removeExchangeLocked deletes e and every binding to it. An auto-delete
// exchange that thereby loses its last binding goes too, and so on down
// the chain, as in RabbitMQ. It reports whether a durable exchange was
// removed (the definitions must be saved).
func (vh *vhost) removeExchangeLocked(e *exchange) (durableGone bool) {
	for gone := []*exchange{e}; len(gone) > 0; {
		e, gone = gone[0], gone[1:]
		if vh.exchanges[e.name] != e {
			continue // already removed through another path
		}
		delete(vh.exchanges, e.name)
		durableGone = durableGone || e.durable
		for _, o := range vh.exchanges {
			had := len(o.bindings)
			for i := 0; i < len(o.bindings); {
				if b := o.bindings[i]; b.dst == e {
					o.removeBinding(b)
					continue
				}
				i++
			}
			if o.autoDelete && had > 0 && len(o.bindings) == 0 {
				gone = append(gone, o)
			}
		}
	}
	vh.bump()
	return durableGone
}

// deadLetter republishes messages to their queue's dead-letter exchange
// with RabbitMQ's x-death headers; without one they are dropped.
func (vh *vhost) deadLetter(q *queue, dls []deadLetter) {
	if len(dls) == 0 || q.dlx == "" {
		return
	}
	dlx := q.dlx
	if dlx == "\x00default" {
		dlx = ""
	}
	now := time.Now().UTC().Truncate(time.Second)
	for _, dl := range dls {
		m := dl.e.m
		var p amqp091.BasicProperties
		if p.Read(amqp091.NewReader(m.props)) != nil {
			continue
		}
		h := amqp091.Table{}
		for k, v := range p.Headers {
			h[k] = v
		}
		rk := m.routingKey
		if q.hasDLRK {
			rk = q.dlrk
		}
		deaths, _ := h["x-death"].([]any)
		var found amqp091.Table
		rest := make([]any, 0, len(deaths)+1)
		for _, d := range deaths {
			t, ok := d.(amqp091.Table)
			if ok && found == nil && t["queue"] == q.name && t["reason"] == dl.reason {
				found = t
				continue
			}
			rest = append(rest, d)
		}
		if found == nil {
			found = amqp091.Table{"count": int64(0), "reason": dl.reason, "queue": q.name,
				"exchange": m.exchange, "routing-keys": []any{m.routingKey}}
			if p.Flags&amqp091.FlagExpiration != 0 {
				found["original-expiration"] = p.Expiration
			}
		}
		c, _ := asInt(found["count"])
		found["count"] = c + 1
		found["time"] = now
		h["x-death"] = append([]any{found}, rest...)
		if _, ok := h["x-first-death-reason"]; !ok {
			h["x-first-death-reason"] = dl.reason
			h["x-first-death-queue"] = q.name
			h["x-first-death-exchange"] = m.exchange
		}
		h["x-last-death-reason"] = dl.reason
		h["x-last-death-queue"] = q.name
		h["x-last-death-exchange"] = m.exchange
		p.Headers = h
		p.Flags |= amqp091.FlagHeaders
		p.Flags &^= amqp091.FlagExpiration
		p.Expiration = ""
		props := p.Append(nil)
		nm := &message{exchange: dlx, routingKey: rk, props: props, body: m.body, persistent: m.persistent, priority: m.priority, ttl: -1}

		var res routeResult
		vh.mu.RLock()
		if ex := vh.exchanges[dlx]; ex != nil {
			if dlx == "" {
				if tq := vh.queues[rk]; tq != nil {
					res.add(tq)
				}
			} else {
				ex.routeInto(rk, func() amqp091.Table { return h }, &res)
			}
		}
		vh.mu.RUnlock()
		for _, tq := range res.queues {
			if dl.reason == "expired" && diedIn(h, tq.name) {
				// A dead-letter cycle without rejections: RabbitMQ drops it.
				continue
			}
			if tq == q && dl.reason != "rejected" && dl.reason != "delivery_limit" {
				continue
			}
			tq.publish(nm, 0, nil)
		}
	}
}

func diedIn(h amqp091.Table, qname string) bool {
	deaths, _ := h["x-death"].([]any)
	for i, d := range deaths {
		if i == 0 {
			continue
		}
		if t, ok := d.(amqp091.Table); ok && t["queue"] == qname && t["reason"] == "expired" {
			return true
		}
	}
	return false
}

// reservedName reports names clients may not declare.
func reservedName(name string) bool { return strings.HasPrefix(name, "amq.") }

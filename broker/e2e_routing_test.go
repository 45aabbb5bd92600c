package broker

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/oslogo/oslogo/broker/internal/amqp091"
	amqp "github.com/rabbitmq/amqp091-go"
)

// queueDepth returns the number of ready messages in a queue.
func queueDepth(t *testing.T, ch *amqp.Channel, name string) int {
	t.Helper()
	q, err := ch.QueueDeclarePassive(name, false, false, false, false, nil)
	if err != nil {
		t.Fatal(err)
	}
	return q.Messages
}

// TestExchangeCycleRoutesOnce: two fanout exchanges bound to each other
// both ways with four binding keys each. A publish visits each exchange
// once and reaches each bound queue once, and it does not hold the vhost
// lock long enough to stall another connection (the deadlines below only
// detect a hang: a depth-limited walk of this topology takes minutes).
func TestExchangeCycleRoutesOnce(t *testing.T) {
	_, url := startBroker(t, nil)
	ch := openCh(t, dial(t, url))
	for _, x := range []string{"cyc.a", "cyc.b"} {
		if err := ch.ExchangeDeclare(x, "fanout", false, false, false, false, nil); err != nil {
			t.Fatal(err)
		}
	}
	for i := range 4 {
		k := fmt.Sprintf("k%d", i)
		if err := ch.ExchangeBind("cyc.b", k, "cyc.a", false, nil); err != nil {
			t.Fatal(err)
		}
		if err := ch.ExchangeBind("cyc.a", k, "cyc.b", false, nil); err != nil {
			t.Fatal(err)
		}
	}
	for _, q := range []struct{ name, ex string }{{"cyc.qa", "cyc.a"}, {"cyc.qb", "cyc.b"}} {
		if _, err := ch.QueueDeclare(q.name, false, false, false, false, nil); err != nil {
			t.Fatal(err)
		}
		// Two bindings to the same queue: it still gets one copy.
		for _, k := range []string{"x", "y"} {
			if err := ch.QueueBind(q.name, k, q.ex, false, nil); err != nil {
				t.Fatal(err)
			}
		}
	}
	if err := ch.Confirm(false); err != nil {
		t.Fatal(err)
	}
	confirms := ch.NotifyPublish(make(chan amqp.Confirmation, 1))
	if err := ch.PublishWithContext(context.Background(), "cyc.a", "", false, false, amqp.Publishing{Body: []byte("once")}); err != nil {
		t.Fatal(err)
	}
	// Another connection's declare must be answered while the publish is
	// routed (the routing holds the vhost lock).
	other := openCh(t, dial(t, url))
	declared := make(chan error, 1)
	go func() {
		_, err := other.QueueDeclare("cyc.other", false, false, true, false, nil)
		declared <- err
	}()
	hang := time.NewTimer(5 * time.Second)
	defer hang.Stop()
	select {
	case err := <-declared:
		if err != nil {
			t.Fatal(err)
		}
	case <-hang.C:
		t.Fatal("another connection's queue.declare not answered within 5 s of the publish")
	}
	waitAck(t, confirms)
	for _, q := range []string{"cyc.qa", "cyc.qb"} {
		if n := queueDepth(t, ch, q); n != 1 {
			t.Errorf("%s holds %d copies, want 1", q, n)
		}
	}
}

// TestRouteVisitsEachExchangeOnce counts exchange visits directly: cycles,
// a ring longer than the slice-searched set, and an alternate exchange that
// leads back to the origin.
func TestRouteVisitsEachExchangeOnce(t *testing.T) {
	vh := newVhost(nil, "visits")
	mk := func(name, kind string, args amqp091.Table) *exchange {
		e := newExchange(vh, name, kind, false, false, false, args)
		vh.exchanges[name] = e
		return e
	}
	e2e := func(src, dst *exchange, key string) {
		src.addBinding(&binding{src: src, dst: dst, key: key})
	}
	toQ := func(src *exchange, q *queue, key string) {
		src.addBinding(&binding{src: src, q: q, key: key})
	}
	route := func(e *exchange, rk string) routeResult {
		var res routeResult
		vh.mu.RLock()
		e.routeInto(rk, func() amqp091.Table { return nil }, &res)
		vh.mu.RUnlock()
		return res
	}

	// Two fanouts bound both ways with four keys, and a direct exchange
	// in the cycle too.
	a, b, d := mk("a", kindFanout, nil), mk("b", kindFanout, nil), mk("d", kindDirect, nil)
	qa, qb, qd := &queue{name: "qa"}, &queue{name: "qb"}, &queue{name: "qd"}
	for i := range 4 {
		k := fmt.Sprint(i)
		e2e(a, b, k)
		e2e(b, a, k)
	}
	e2e(b, d, "rk")
	e2e(d, a, "rk")
	toQ(a, qa, "1")
	toQ(a, qa, "2")
	toQ(b, qb, "1")
	toQ(d, qd, "rk")
	toQ(d, qa, "rk")
	res := route(a, "rk")
	if res.visits != 3 {
		t.Errorf("cycle of 3 exchanges: %d visits, want 3", res.visits)
	}
	if len(res.queues) != 3 {
		t.Errorf("queues %v, want qa, qb, qd once each", names(res.queues))
	}

	// A ring of 40 fanouts (past the 16 searched in a slice), each with
	// its queue and a chord back to the start.
	ring := make([]*exchange, 40)
	for i := range ring {
		ring[i] = mk(fmt.Sprintf("r%d", i), kindFanout, nil)
		toQ(ring[i], &queue{name: fmt.Sprintf("rq%d", i)}, "")
	}
	for i := range ring {
		e2e(ring[i], ring[(i+1)%len(ring)], "")
		e2e(ring[i], ring[0], "chord")
	}
	res = route(ring[7], "")
	if res.visits != 40 || len(res.queues) != 40 {
		t.Errorf("ring of 40: %d visits, %d queues, want 40 and 40", res.visits, len(res.queues))
	}

	// As in RabbitMQ, the alternate exchange is taken only when the
	// exchange's own bindings match nothing, and an alternate exchange
	// leading back to the origin ends there.
	alt := mk("alt", kindFanout, nil)
	src := mk("src", kindDirect, amqp091.Table{"alternate-exchange": "alt"})
	empty := mk("empty", kindDirect, nil)
	qalt := &queue{name: "qalt"}
	toQ(alt, qalt, "")
	e2e(alt, src, "")
	e2e(src, empty, "to-empty")
	if res := route(src, "unbound"); res.visits != 2 || len(res.queues) != 1 || res.queues[0] != qalt {
		t.Errorf("unmatched key: %d visits, queues %v, want 2 and [qalt]", res.visits, names(res.queues))
	}
	if res := route(src, "to-empty"); len(res.queues) != 0 {
		t.Errorf("matched a binding to an empty exchange: queues %v, want none (no alternate)", names(res.queues))
	}
}

func names(qs []*queue) []string {
	var s []string
	for _, q := range qs {
		s = append(s, q.name)
	}
	return s
}

// TestHeadersBehindFanoutNotCached: a channel's route cache must not keep
// the result of a headers exchange reached through another exchange; the
// second message, with other headers, goes to its own queue.
func TestHeadersBehindFanoutNotCached(t *testing.T) {
	_, url := startBroker(t, nil)
	ch := openCh(t, dial(t, url))
	if err := ch.ExchangeDeclare("hc.f", "fanout", false, false, false, false, nil); err != nil {
		t.Fatal(err)
	}
	if err := ch.ExchangeDeclare("hc.h", "headers", false, false, false, false, nil); err != nil {
		t.Fatal(err)
	}
	if err := ch.ExchangeBind("hc.h", "", "hc.f", false, nil); err != nil {
		t.Fatal(err)
	}
	for _, k := range []string{"1", "2"} {
		if _, err := ch.QueueDeclare("hc.q"+k, false, false, false, false, nil); err != nil {
			t.Fatal(err)
		}
		if err := ch.QueueBind("hc.q"+k, "", "hc.h", false, amqp.Table{"k": k}); err != nil {
			t.Fatal(err)
		}
	}
	if err := ch.Confirm(false); err != nil {
		t.Fatal(err)
	}
	confirms := ch.NotifyPublish(make(chan amqp.Confirmation, 2))
	for _, k := range []string{"1", "2"} {
		if err := ch.PublishWithContext(context.Background(), "hc.f", "", false, false, amqp.Publishing{Headers: amqp.Table{"k": k}, Body: []byte(k)}); err != nil {
			t.Fatal(err)
		}
	}
	for range 2 {
		waitAck(t, confirms)
	}
	for _, q := range []string{"hc.q1", "hc.q2"} {
		if n := queueDepth(t, ch, q); n != 1 {
			t.Errorf("%s holds %d messages, want 1", q, n)
		}
	}
}

// waitAck waits for one publisher confirm; the deadline only detects a
// hang.
func waitAck(t *testing.T, confirms <-chan amqp.Confirmation) {
	t.Helper()
	timer := time.NewTimer(5 * time.Second)
	defer timer.Stop()
	select {
	case c := <-confirms:
		if !c.Ack {
			t.Fatalf("publish nacked: %+v", c)
		}
	case <-timer.C:
		t.Fatal("publish not confirmed within 5 s")
	}
}

package broker

import (
	"strings"
	"testing"
	"time"

	"github.com/oslogo/oslogo/internal/testrabbit"

	amqp "github.com/rabbitmq/amqp091-go"
)

// TestQuorumDefaultDeliveryLimit: without x-delivery-limit a quorum queue
// has RabbitMQ 4's limit of 20: redeliveries carry x-delivery-count 1..20,
// and the 21st return dead-letters the message (reason delivery_limit).
func TestQuorumDefaultDeliveryLimit(t *testing.T) {
	_, url := startBroker(t, nil)
	ch := openCh(t, dial(t, url))
	if _, err := ch.QueueDeclare("dead", true, false, false, false, nil); err != nil {
		t.Fatal(err)
	}
	if _, err := ch.QueueDeclare("qq", true, false, false, false, amqp.Table{"x-queue-type": "quorum",
		"x-dead-letter-exchange": "", "x-dead-letter-routing-key": "dead"}); err != nil {
		t.Fatal(err)
	}
	// Without a dead-letter exchange the message is dropped.
	if _, err := ch.QueueDeclare("qq-drop", true, false, false, false, amqp.Table{"x-queue-type": "quorum"}); err != nil {
		t.Fatal(err)
	}
	for _, q := range []string{"qq", "qq-drop"} {
		publish(t, ch, "", q, amqp.Publishing{Body: []byte("p")})
		for i := 0; i <= defaultDeliveryLimit; i++ {
			m := getOne(t, ch, q)
			cnt, has := m.Headers["x-delivery-count"].(int64)
			if i == 0 && (has || m.Redelivered) || i > 0 && (int(cnt) != i || !m.Redelivered) {
				t.Fatalf("%s delivery %d: x-delivery-count %#v redelivered %v", q, i, m.Headers["x-delivery-count"], m.Redelivered)
			}
			if err := m.Nack(false, true); err != nil {
				t.Fatal(err)
			}
		}
		if m, ok, err := ch.Get(q, false); err != nil || ok {
			t.Fatalf("%s: message still there after %d returns: %q %v", q, defaultDeliveryLimit+1, m.Body, err)
		}
	}
	m := getOne(t, ch, "dead")
	if string(m.Body) != "p" || m.Headers["x-first-death-reason"] != "delivery_limit" || m.Headers["x-first-death-queue"] != "qq" {
		t.Fatalf("dead-lettered %q %v", m.Body, m.Headers)
	}
	if m, ok, _ := ch.Get("dead", false); ok {
		t.Fatalf("qq-drop's message was dead-lettered too: %v", m.Headers)
	}
	// x-delivery-limit -1 means no limit (RabbitMQ 4).
	if _, err := ch.QueueDeclare("qq-inf", true, false, false, false, amqp.Table{"x-queue-type": "quorum", "x-delivery-limit": int32(-1)}); err != nil {
		t.Fatal(err)
	}
	publish(t, ch, "", "qq-inf", amqp.Publishing{Body: []byte("p")})
	for range 30 {
		_ = getOne(t, ch, "qq-inf").Nack(false, true)
	}
	if m := getOne(t, ch, "qq-inf"); m.Headers["x-delivery-count"] != int64(30) {
		t.Fatalf("unlimited: %v", m.Headers)
	}
}

// TestQueueTypeReported: queue.declare-ok equivalence and the management
// API's type field follow x-queue-type.
func TestQueueTypeReported(t *testing.T) {
	s, url := startBroker(t, nil)
	c := dial(t, url)
	ch := openCh(t, c)
	for name, args := range map[string]amqp.Table{
		"c0": nil, "c1": {"x-queue-type": "classic"}, "q1": {"x-queue-type": "quorum"}, "s1": {"x-queue-type": "stream"},
	} {
		if _, err := ch.QueueDeclare(name, true, false, false, false, args); err != nil {
			t.Fatal(err)
		}
	}
	// classic and no x-queue-type are the same type (RabbitMQ 3.10).
	if _, err := ch.QueueDeclare("c0", true, false, false, false, amqp.Table{"x-queue-type": "classic"}); err != nil {
		t.Fatal(err)
	}
	if _, err := ch.QueueDeclare("c1", true, false, false, false, nil); err != nil {
		t.Fatal(err)
	}
	_, err := ch.QueueDeclare("c0", true, false, false, false, amqp.Table{"x-queue-type": "quorum"})
	var ae *amqp.Error
	if !asErr(err, &ae) || ae.Reason != "PRECONDITION_FAILED - inequivalent arg 'x-queue-type' for queue 'c0' in vhost '/': received the value 'quorum' of type 'longstr' but current is none" {
		t.Fatalf("classic redeclared as quorum: %v", err)
	}
	ch = openCh(t, c)
	_, err = ch.QueueDeclare("q1", true, false, false, false, nil)
	if !asErr(err, &ae) || ae.Reason != "PRECONDITION_FAILED - inequivalent arg 'x-queue-type' for queue 'q1' in vhost '/': received none but current is the value 'quorum' of type 'longstr'" {
		t.Fatalf("quorum redeclared without type: %v", err)
	}
	qs, err := s.Queues(QueuesOptions{VHost: "/"})
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]string{}
	for _, q := range qs {
		got[q.Name] = q.Type
	}
	if got["c0"] != "classic" || got["c1"] != "classic" || got["q1"] != "quorum" || got["s1"] != "stream" {
		t.Fatalf("types %v", got)
	}
}

// TestDenyTransientNonExclQueues: transient non-exclusive queues work by
// default; with Options.DenyTransientNonExclQueues they are refused with
// RabbitMQ 4.3's 541, which closes the connection.
func TestDenyTransientNonExclQueues(t *testing.T) {
	_, url := startBroker(t, nil)
	if _, err := openCh(t, dial(t, url)).QueueDeclare("tr", false, false, false, false, nil); err != nil {
		t.Fatalf("default: %v", err)
	}
	_, url = startBroker(t, func(o *Options) { o.DenyTransientNonExclQueues = true })
	c := dial(t, url)
	ch := openCh(t, c)
	for _, d := range []struct {
		name               string
		durable, exclusive bool
	}{{"d", true, false}, {"e", false, true}, {"de", true, true}, {"", false, true}} {
		if _, err := ch.QueueDeclare(d.name, d.durable, false, d.exclusive, false, nil); err != nil {
			t.Fatalf("durable %v exclusive %v: %v", d.durable, d.exclusive, err)
		}
	}
	closed := c.NotifyClose(make(chan *amqp.Error, 1))
	_, err := ch.QueueDeclare("tr", false, false, false, false, nil)
	var ae *amqp.Error
	if !asErr(err, &ae) || ae.Code != 541 || !strings.HasPrefix(ae.Reason, "INTERNAL_ERROR - Feature `transient_nonexcl_queues` is deprecated.\nBy default, this feature is not permitted anymore.\n") {
		t.Fatalf("transient non-exclusive: %v", err)
	}
	select {
	case <-closed:
	case <-time.After(5 * time.Second):
		t.Fatal("connection stayed open after 541")
	}
	// A transient quorum queue gets the 541 too (checked before the type's own checks).
	ch = openCh(t, dial(t, url))
	_, err = ch.QueueDeclare("trq", false, false, false, false, amqp.Table{"x-queue-type": "quorum"})
	if !asErr(err, &ae) || ae.Code != 541 {
		t.Fatalf("transient quorum: %v", err)
	}
}

// TestQueueTypeRefusalsMatchRabbitMQ runs the refusals of
// TestStreamRefusals against the system RabbitMQ 3.10 too: the codes and
// texts pinned there are RabbitMQ's.
func TestQueueTypeRefusalsMatchRabbitMQ(t *testing.T) {
	url := "amqp" + strings.TrimPrefix(testrabbit.URL(), "rabbit")
	c := dial(t, url)
	ch := openCh(t, c)
	declareStream(t, ch, "s1", amqp.Table{"x-max-age": "1800s"})
	t.Cleanup(func() {
		ch := openCh(t, dial(t, url))
		for _, q := range []string{"s1", "x1", "x2"} {
			_, _ = ch.QueueDelete(q, false, false, false)
		}
	})
	for _, tc := range streamRefusalCases(testrabbit.Vhost()) {
		t.Run(tc.name, func(t *testing.T) {
			code, text := tc.run(t, url)
			if code != tc.code || text != tc.text {
				t.Fatalf("RabbitMQ answered %d %q\nthe case says %d %q", code, text, tc.code, tc.text)
			}
		})
	}
}

package broker

import (
	"testing"
	"time"

	"github.com/oslogo/oslogo/broker/internal/amqp091"
)

// rawPublish sends a persistent message to queue through the default
// exchange.
func (r *rawConn) rawPublish(ch uint16, queue, body string) {
	props := (&amqp091.BasicProperties{Flags: amqp091.FlagDeliveryMode, DeliveryMode: 2}).Append(nil)
	b := amqp091.AppendMethodFrame(nil, ch, &amqp091.BasicPublish{RoutingKey: queue})
	b = amqp091.AppendHeaderFrame(b, ch, amqp091.ClassBasic, uint64(len(body)), props)
	b = amqp091.AppendBodyFrames(b, ch, []byte(body), 4096)
	r.write(b)
}

// nextHeld waits for the broker's next fsync to start and returns its
// release.
func nextHeld(t *testing.T, pl *faultPlan) chan struct{} {
	t.Helper()
	select {
	case rel := <-pl.held:
		return rel
	case <-time.After(10 * time.Second):
		t.Fatal("no fsync started")
		return nil
	}
}

// TestNoLateConfirmOnReusedChannel: a channel closed while its persistent
// publish waits for fsync must not have that publish confirmed later on
// the same channel number, where a reopened channel would take it for the
// confirm of its own publish before that is on disk. The reopened
// channel's first publish is confirmed with delivery tag 1, and only after
// its own fsync.
func TestNoLateConfirmOnReusedChannel(t *testing.T) {
	b := startFaulty(t, t.TempDir(), nil)
	r := rawDial(t, b.s)
	r.send(1, &amqp091.ChannelOpen{})
	r.expect(&amqp091.ChannelOpenOk{})
	r.send(1, &amqp091.QueueDeclare{Queue: "q", Durable: true})
	r.expect(&amqp091.QueueDeclareOk{})
	r.send(1, &amqp091.ConfirmSelect{})
	r.expect(&amqp091.ConfirmSelectOk{})

	b.plan.set(func(pl *faultPlan) { pl.hold = true })
	r.rawPublish(1, "q", "old")
	first := nextHeld(t, b.plan) // the fsync of "old" has started
	// Close the channel while "old" waits; nothing may come before close-ok.
	r.send(1, &amqp091.ChannelClose{ReplyCode: 200, ReplyText: "bye"})
	r.expect(&amqp091.ChannelCloseOk{})
	r.send(1, &amqp091.ChannelOpen{})
	r.expect(&amqp091.ChannelOpenOk{})
	r.send(1, &amqp091.ConfirmSelect{})
	r.expect(&amqp091.ConfirmSelectOk{})
	r.rawPublish(1, "q", "new")
	close(first)
	second := nextHeld(t, b.plan) // "old" is on disk; the fsync of "new" has started
	// A synchronous round trip: anything the broker sent before it arrives
	// first. The only confirm owed on this channel is for "new", whose
	// fsync has not finished.
	r.send(1, &amqp091.BasicQos{PrefetchCount: 10})
	if _, m := r.next(); m.ClassID() != amqp091.ClassBasic || m.MethodID() != (&amqp091.BasicQosOk{}).MethodID() {
		t.Fatalf("got %s %+v before the reopened channel's publish was fsynced", m.Name(), m)
	}
	close(second)
	if a := r.expect(&amqp091.BasicAck{}).(*amqp091.BasicAck); a.DeliveryTag != 1 || a.Multiple {
		t.Fatalf("confirm of the reopened channel's first publish: %+v, want tag 1", a)
	}
	b.plan.set(func(pl *faultPlan) { pl.hold = false })
	r.rawPublish(1, "q", "next")
	if a := r.expect(&amqp091.BasicAck{}).(*amqp091.BasicAck); a.DeliveryTag != 2 || a.Multiple {
		t.Fatalf("confirm of the second publish: %+v, want tag 2", a)
	}
}

package broker

import (
	"context"
	"runtime"
	"testing"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/oslogo/oslogo/broker/internal/amqp091"
)

func heapInuse() int64 {
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return int64(ms.HeapInuse)
}

// waitCounted polls the broker's counted memory until cond holds.
func waitCounted(t *testing.T, s *Server, what string, cond func(int64) bool) int64 {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		v := s.memoryUsed()
		if cond(v) {
			return v
		}
		if time.Now().After(deadline) {
			t.Fatalf("counted memory %d: never %s", v, what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// Bodies are assembled in buffers that grow with the frames received: nine
// channels announcing 128 MiB bodies and sending none cost nothing, and
// the bytes received of a body being assembled are counted.
func TestAnnouncedBodiesCostNothing(t *testing.T) {
	s, _ := startBroker(t, func(o *Options) { o.MemoryHighWatermark = 1 << 40 })
	r := rawDial(t, s)
	before := heapInuse()
	var b []byte
	for ch := uint16(1); ch <= 9; ch++ {
		b = amqp091.AppendMethodFrame(b, ch, &amqp091.ChannelOpen{})
		b = amqp091.AppendMethodFrame(b, ch, &amqp091.BasicPublish{RoutingKey: "nowhere"})
		b = amqp091.AppendHeaderFrame(b, ch, amqp091.ClassBasic, 128<<20, []byte{0, 0})
	}
	// One channel sends 1 MiB of its body.
	b = amqp091.AppendBodyFrames(b, 9, make([]byte, 1<<20), 4096)
	b = amqp091.AppendMethodFrame(b, 10, &amqp091.ChannelOpen{})
	r.write(b)
	for {
		// Frames are handled in order: channel 10's open-ok comes after the
		// headers and body frames were taken in.
		ch, m := r.next()
		if _, ok := m.(*amqp091.ChannelOpenOk); ok && ch == 10 {
			break
		}
	}
	grown := heapInuse() - before
	counted := s.memoryUsed()
	t.Logf("heap grew %d bytes, counted %d", grown, counted)
	if grown > 32<<20 {
		t.Errorf("heap grew by %d bytes for 9 announced bodies with 1 MiB sent", grown)
	}
	if counted < 1<<20 || counted > 4<<20 {
		t.Errorf("counted %d bytes, want the 1 MiB received (and not the announced sizes)", counted)
	}
	// The connection going away releases the partial body.
	_ = r.nc.Close()
	waitCounted(t, s, "back to zero", func(v int64) bool { return v == 0 })
}

// Messages delivered and not yet acknowledged are in memory too: with
// everything unacknowledged the alarm still blocks publishers, and acks
// clear it.
func TestUnackedCountsTowardWatermark(t *testing.T) {
	s, url := startBroker(t, func(o *Options) { o.MemoryHighWatermark = 1 << 20 })
	pc := dial(t, url)
	blocked := pc.NotifyBlocked(make(chan amqp.Blocking, 256))
	pch := openCh(t, pc)
	cch := openCh(t, dial(t, url))
	if _, err := cch.QueueDeclare("unacked", false, false, false, false, nil); err != nil {
		t.Fatal(err)
	}
	deliveries, err := cch.Consume("unacked", "", false, false, false, false, nil)
	if err != nil {
		t.Fatal(err)
	}
	// 2 MiB published: the alarm (1 MiB) must block the publisher while
	// every delivered message is still unacknowledged.
	body := make([]byte, 16<<10)
	for i := 0; i < 128; i++ {
		if err := pch.Publish("", "unacked", false, false, amqp.Publishing{Body: body}); err != nil {
			t.Fatal(err)
		}
	}
	var got []amqp.Delivery
	timeout := time.After(20 * time.Second)
wait:
	for {
		select {
		case d := <-deliveries:
			got = append(got, d)
		case b := <-blocked:
			if !b.Active {
				t.Fatalf("got %+v", b)
			}
			break wait
		case <-timeout:
			t.Fatalf("no connection.blocked with %d unacknowledged deliveries (counted %d)", len(got), s.memoryUsed())
		}
	}
	// The broker delivers what it read before the alarm.
	for len(got) < 40 {
		got = append(got, recv(t, deliveries))
	}
	t.Logf("blocked after %d unacknowledged deliveries of 16 KiB, counted %d", len(got), s.memoryUsed())
	if err := got[len(got)-1].Ack(true); err != nil {
		t.Fatal(err)
	}
	select {
	case b := <-blocked:
		if b.Active {
			t.Fatalf("got %+v", b)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("no connection.unblocked after the acks")
	}
	// The rest is delivered and acknowledged, so the publisher can finish
	// and both clients can close.
	last := ackAll(deliveries)
	if err := pch.Publish("", "unacked", false, false, amqp.Publishing{Body: []byte("last")}); err != nil {
		t.Fatal(err)
	}
	waitLast(t, s, last)
}

// connection.blocked reaches a publisher at once, not with its writer's
// next heartbeat (60 s negotiated here), and deliveries the publisher's
// batch made to a consumer are flushed before the publisher waits.
func TestBlockedSentAtOnce(t *testing.T) {
	s, url := startBroker(t, func(o *Options) { o.MemoryHighWatermark = 1 << 20 })
	pc, err := amqp.DialConfig(url, amqp.Config{Heartbeat: time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = pc.Close() })
	// Roomy: the alarm may go on and off once per publish, and a full
	// notification channel stalls the client's reader.
	blocked := pc.NotifyBlocked(make(chan amqp.Blocking, 256))
	pch := openCh(t, pc)
	cc, err := amqp.DialConfig(url, amqp.Config{Heartbeat: time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cc.Close() })
	cch := openCh(t, cc)
	if _, err := cch.QueueDeclare("b", false, false, false, false, nil); err != nil {
		t.Fatal(err)
	}
	deliveries, err := cch.Consume("b", "", false, false, false, false, nil)
	if err != nil {
		t.Fatal(err)
	}
	// The consumer acknowledges everything it gets: the alarm clears as
	// soon as deliveries reach it.
	last := ackAll(deliveries)
	body := make([]byte, 64<<10)
	for i := 0; i < 64; i++ {
		if err := pch.Publish("", "b", false, false, amqp.Publishing{Body: body}); err != nil {
			t.Fatal(err)
		}
	}
	if err := pch.Publish("", "b", false, false, amqp.Publishing{Body: []byte("last")}); err != nil {
		t.Fatal(err)
	}
	for _, active := range []bool{true, false} {
		select {
		case b := <-blocked:
			if b.Active != active {
				t.Fatalf("got %+v", b)
			}
		case <-time.After(10 * time.Second):
			stopBroker(t, s) // a blocked publisher could not close
			t.Fatalf("no connection.blocked active=%v within 10s (counted %d)", active, s.memoryUsed())
		}
	}
	waitLast(t, s, last)
}

// ackAll acknowledges every delivery; the returned channel closes when
// the message "last" arrives.
func ackAll(deliveries <-chan amqp.Delivery) <-chan struct{} {
	last := make(chan struct{})
	go func() {
		for d := range deliveries {
			_ = d.Ack(false)
			if string(d.Body) == "last" {
				close(last)
			}
		}
	}()
	return last
}

// waitLast waits until everything published is consumed, so that no
// publisher is blocked when the clients close.
func waitLast(t *testing.T, s *Server, last <-chan struct{}) {
	t.Helper()
	select {
	case <-last:
	case <-time.After(20 * time.Second):
		stopBroker(t, s)
		t.Fatalf("the last message never arrived (counted %d)", s.memoryUsed())
	}
	waitCounted(t, s, "back to zero", func(v int64) bool { return v == 0 })
}

func stopBroker(t *testing.T, s *Server) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := s.Shutdown(ctx); err != nil {
		t.Error(err)
	}
}

// msgOverhead is close to what a small message really costs the heap:
// 100,000 empty messages kept in memory (paging off).
func TestMessageOverheadMatchesHeap(t *testing.T) {
	s, url := startBroker(t, func(o *Options) { o.QueueMemoryLimit = -1 })
	ch := openCh(t, dial(t, url))
	if _, err := ch.QueueDeclare("small", false, false, false, false, nil); err != nil {
		t.Fatal(err)
	}
	const n = 100000
	before := heapInuse()
	for i := 0; i < n; i++ {
		if err := ch.Publish("", "small", false, false, amqp.Publishing{}); err != nil {
			t.Fatal(err)
		}
	}
	waitQueueLen(t, s, "small", n)
	perMsg := float64(heapInuse()-before) / n
	counted := float64(s.memoryUsed()) / n
	t.Logf("heap per message %.0f bytes, counted %.0f", perMsg, counted)
	if counted < perMsg/2 || counted > perMsg*2 {
		t.Errorf("counted %.0f bytes per message, the heap grew %.0f", counted, perMsg)
	}
}

func waitQueueLen(t *testing.T, s *Server, name string, n int) {
	t.Helper()
	vh := s.vhost("/")
	vh.mu.RLock()
	q := vh.queues[name]
	vh.mu.RUnlock()
	deadline := time.Now().Add(60 * time.Second)
	for q.messageCount() < n {
		if time.Now().After(deadline) {
			t.Fatalf("queue %s has %d messages, want %d", name, q.messageCount(), n)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// Messages published in an open transaction are in memory until commit or
// rollback.
func TestTxBufferCounted(t *testing.T) {
	s, url := startBroker(t, nil)
	ch := openCh(t, dial(t, url))
	if _, err := ch.QueueDeclare("tx", false, false, false, false, nil); err != nil {
		t.Fatal(err)
	}
	if err := ch.Tx(); err != nil {
		t.Fatal(err)
	}
	body := make([]byte, 16<<10)
	for i := 0; i < 128; i++ {
		if err := ch.Publish("", "tx", false, false, amqp.Publishing{Body: body}); err != nil {
			t.Fatal(err)
		}
	}
	v := waitCounted(t, s, "2 MiB for the uncommitted publishes", func(v int64) bool { return v >= 2<<20 })
	t.Logf("counted %d bytes for 128 uncommitted messages of 16 KiB", v)
	if err := ch.TxRollback(); err != nil {
		t.Fatal(err)
	}
	waitCounted(t, s, "back to zero after rollback", func(v int64) bool { return v == 0 })
}

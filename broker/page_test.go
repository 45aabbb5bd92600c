package broker

import (
	"context"
	"encoding/binary"
	"math/rand/v2"
	"os"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"
)

// pagedBody is message seq's body: seq, then bytes derived from it, so the
// consumer can check every byte.
func pagedBody(seq uint64, size int) []byte {
	b := make([]byte, size)
	binary.BigEndian.PutUint64(b, seq)
	var seed [32]byte
	binary.BigEndian.PutUint64(seed[:], seq)
	_, _ = rand.NewChaCha8(seed).Read(b[8:])
	return b
}

func vmRSS() int64 {
	data, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(data), "\n") {
		if f := strings.Fields(line); len(f) >= 2 && f[0] == "VmRSS:" {
			kb, _ := strconv.ParseInt(f[1], 10, 64)
			return kb << 10
		}
	}
	return 0
}

// memPeaks samples counted memory, Go heap in use and RSS until stopped.
type memPeaks struct {
	counted, heap, rss atomic.Int64
	stop               chan struct{}
	wg                 sync.WaitGroup
}

func sampleMemory(s *Server) *memPeaks {
	p := &memPeaks{stop: make(chan struct{})}
	p.wg.Add(1)
	go func() {
		defer p.wg.Done()
		t := time.NewTicker(50 * time.Millisecond)
		defer t.Stop()
		for {
			var ms runtime.MemStats
			runtime.ReadMemStats(&ms)
			for _, x := range []struct {
				peak *atomic.Int64
				v    int64
			}{{&p.counted, s.memoryUsed()}, {&p.heap, int64(ms.HeapInuse)}, {&p.rss, vmRSS()}} {
				if x.v > x.peak.Load() {
					x.peak.Store(x.v)
				}
			}
			select {
			case <-p.stop:
				return
			case <-t.C:
			}
		}
	}()
	return p
}

func (p *memPeaks) done() {
	close(p.stop)
	p.wg.Wait()
}

// A queue nobody consumes (notifications.info) receives far more than the
// high watermark: it pages to disk, the alarm never blocks, request/reply
// on other queues keeps working, and a consumer then gets every message
// intact and in order.
func TestLongQueuePagesToDisk(t *testing.T) {
	const watermark = 64 << 20
	total := 400 << 20
	if testing.Short() {
		total = 100 << 20
	}
	const size = 64 << 10
	n := total / size
	s, url := startBroker(t, func(o *Options) {
		o.MemoryHighWatermark = watermark
		o.DataDir = t.TempDir()
	})
	stopBroker := func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_ = s.Shutdown(ctx)
	}

	// Request/reply on their own queues, as oslo.messaging RPC does.
	sc := dial(t, url)
	sch := openCh(t, sc)
	if _, err := sch.QueueDeclare("rpc", false, false, false, false, nil); err != nil {
		t.Fatal(err)
	}
	reqs, err := sch.Consume("rpc", "", true, false, false, false, nil)
	if err != nil {
		t.Fatal(err)
	}
	go func() {
		for d := range reqs {
			_ = sch.Publish("", d.ReplyTo, false, false, amqp.Publishing{CorrelationId: d.CorrelationId, Body: d.Body})
		}
	}()
	cc := dial(t, url)
	rpcBlocked := cc.NotifyBlocked(make(chan amqp.Blocking, 1))
	cch := openCh(t, cc)
	rq, err := cch.QueueDeclare("", false, true, true, false, nil)
	if err != nil {
		t.Fatal(err)
	}
	replies, err := cch.Consume(rq.Name, "", true, true, false, false, nil)
	if err != nil {
		t.Fatal(err)
	}
	var calls atomic.Int64
	rpcErr := make(chan string, 1)
	rpcStop := make(chan struct{})
	var rpcWG sync.WaitGroup
	rpcWG.Add(1)
	go func() {
		defer rpcWG.Done()
		for i := 0; ; i++ {
			select {
			case <-rpcStop:
				return
			default:
			}
			id := strconv.Itoa(i)
			if err := cch.Publish("", "rpc", false, false, amqp.Publishing{CorrelationId: id, ReplyTo: rq.Name, Body: []byte(id)}); err != nil {
				rpcErr <- err.Error()
				return
			}
			select {
			case r := <-replies:
				if r.CorrelationId != id {
					rpcErr <- "reply " + r.CorrelationId + " for call " + id
					return
				}
				calls.Add(1)
			case <-time.After(10 * time.Second):
				rpcErr <- "call " + id + " got no reply within 10s"
				return
			}
		}
	}()

	pc := dial(t, url)
	pubBlocked := pc.NotifyBlocked(make(chan amqp.Blocking, 1))
	pch := openCh(t, pc)
	if _, err := pch.QueueDeclare("notifications.info", true, false, false, false, nil); err != nil {
		t.Fatal(err)
	}
	if err := pch.Confirm(false); err != nil {
		t.Fatal(err)
	}
	confirms := pch.NotifyPublish(make(chan amqp.Confirmation, 256))
	// A blocked publisher stops on a full socket; shutting the broker down
	// ends the test instead of hanging it.
	var blockedAt atomic.Int64
	watchDone := make(chan struct{})
	defer close(watchDone)
	go func() {
		select {
		case <-pubBlocked:
			blockedAt.Store(s.memoryUsed() + 1)
			stopBroker()
		case <-watchDone:
		}
	}()
	peaks := sampleMemory(s)
	start := time.Now()
	callsBefore := calls.Load()
	for i := 0; i < n; i++ {
		mode := amqp.Transient
		if i%2 == 1 {
			mode = amqp.Persistent
		}
		if err := pch.Publish("", "notifications.info", false, false, amqp.Publishing{DeliveryMode: mode, Body: pagedBody(uint64(i), size)}); err != nil {
			if v := blockedAt.Load(); v != 0 {
				t.Fatalf("publisher blocked after %d MiB, counted memory %d", i*size>>20, v-1)
			}
			t.Fatal(err)
		}
		if i%128 == 127 || i == n-1 {
			for j := i - i%128; j <= i; j++ {
				select {
				case c, ok := <-confirms:
					if !ok {
						t.Fatalf("publisher blocked after %d MiB, counted memory %d", i*size>>20, blockedAt.Load()-1)
					}
					if !c.Ack {
						t.Fatalf("publish %d nacked", c.DeliveryTag)
					}
				case <-time.After(20 * time.Second):
					stopBroker()
					t.Fatalf("no confirm within 20s after %d MiB, counted memory %d", i*size>>20, s.memoryUsed())
				}
			}
		}
	}
	pileUp := time.Since(start)
	callsDuring := calls.Load() - callsBefore
	close(rpcStop)
	rpcWG.Wait()
	select {
	case e := <-rpcErr:
		stopBroker()
		t.Fatalf("request/reply during the pile-up: %s", e)
	default:
	}
	if callsDuring == 0 {
		t.Error("no round trip completed during the pile-up")
	}
	select {
	case b := <-rpcBlocked:
		t.Errorf("request/reply connection blocked: %+v", b)
	default:
	}
	vh := s.vhost("/")
	vh.mu.RLock()
	q := vh.queues["notifications.info"]
	vh.mu.RUnlock()
	q.mu.Lock()
	ready, paged, pageFiles := q.readyCount, q.paged, 0
	if q.pg != nil {
		pageFiles = len(q.pg.segs)
	}
	q.mu.Unlock()
	t.Logf("%d MiB in %d messages queued in %v with %d round trips meanwhile; %d paged out in %d files; peaks: counted %d MiB, heap in use %d MiB, RSS %d MiB",
		total>>20, n, pileUp.Round(time.Millisecond), callsDuring, paged, pageFiles, peaks.counted.Load()>>20, peaks.heap.Load()>>20, peaks.rss.Load()>>20)
	if ready != n || paged < n*3/4 {
		t.Errorf("queue holds %d messages, %d paged out; want %d, most of them paged", ready, paged, n)
	}
	if peaks.counted.Load() >= watermark {
		t.Errorf("counted memory peaked at %d, above the watermark", peaks.counted.Load())
	}

	// Drain: every message, in order, byte for byte.
	dch := openCh(t, dial(t, url))
	if err := dch.Qos(64, 0, false); err != nil {
		t.Fatal(err)
	}
	msgs, err := dch.Consume("notifications.info", "", false, false, false, false, nil)
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i < n; i++ {
		d := recv(t, msgs)
		if len(d.Body) != size || binary.BigEndian.Uint64(d.Body) != uint64(i) {
			t.Fatalf("delivery %d: %d bytes, sequence %d", i, len(d.Body), binary.BigEndian.Uint64(d.Body))
		}
		if string(d.Body) != string(pagedBody(uint64(i), size)) {
			t.Fatalf("delivery %d: body differs from what was published", i)
		}
		if err := d.Ack(false); err != nil {
			t.Fatal(err)
		}
	}
	peaks.done()
	q.mu.Lock()
	ready, paged = q.readyCount, q.paged
	q.mu.Unlock()
	if ready != 0 || paged != 0 {
		t.Errorf("after draining: %d ready, %d paged", ready, paged)
	}
	t.Logf("drained; peaks over the whole run: counted %d MiB, heap in use %d MiB, RSS %d MiB", peaks.counted.Load()>>20, peaks.heap.Load()>>20, peaks.rss.Load()>>20)
}

// With a tiny per-queue limit every waiting message but the first is
// paged (here to the temp directory: no data directory). Priorities,
// basic.get, requeue, expiry with dead-lettering and purge work on paged
// messages, and the counted memory returns to zero.
func TestPagedQueueFeatures(t *testing.T) {
	s, url := startBroker(t, func(o *Options) { o.QueueMemoryLimit = 1 })
	ch := openCh(t, dial(t, url))
	if _, err := ch.QueueDeclare("prio", false, false, false, false, amqp.Table{"x-max-priority": int32(5)}); err != nil {
		t.Fatal(err)
	}
	type sent struct {
		prio uint8
		body string
	}
	var want []sent
	for i := 0; i < 60; i++ {
		p := sent{uint8(i % 7), strconv.Itoa(i)}
		publish(t, ch, "", "prio", amqp.Publishing{Priority: p.prio, Body: []byte(p.body)})
		want = append(want, sent{min(p.prio, 5), p.body})
	}
	waitQueueLen(t, s, "prio", 60)
	vh := s.vhost("/")
	vh.mu.RLock()
	pq := vh.queues["prio"]
	vh.mu.RUnlock()
	pq.mu.Lock()
	paged := pq.paged
	pq.mu.Unlock()
	if paged < 50 {
		t.Fatalf("%d of 60 messages paged, want nearly all", paged)
	}
	// Expected order: highest priority first, publication order within one.
	var order []string
	for p := 5; p >= 0; p-- {
		for _, w := range want {
			if int(w.prio) == p {
				order = append(order, w.body)
			}
		}
	}
	// The first delivery is rejected with requeue: it comes back first.
	d := getOne(t, ch, "prio")
	if string(d.Body) != order[0] {
		t.Fatalf("first get %q, want %q", d.Body, order[0])
	}
	if err := d.Nack(false, true); err != nil {
		t.Fatal(err)
	}
	for i, w := range order {
		d := getOne(t, ch, "prio")
		if string(d.Body) != w {
			t.Fatalf("get %d: %q, want %q", i, d.Body, w)
		}
		if err := d.Ack(false); err != nil {
			t.Fatal(err)
		}
	}

	// Paged messages that expire are read back to be dead-lettered.
	if _, err := ch.QueueDeclare("dlq", false, false, false, false, nil); err != nil {
		t.Fatal(err)
	}
	if _, err := ch.QueueDeclare("ttl", false, false, false, false, amqp.Table{
		"x-message-ttl": int32(100), "x-dead-letter-exchange": "", "x-dead-letter-routing-key": "dlq"}); err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 20; i++ {
		publish(t, ch, "", "ttl", amqp.Publishing{Body: []byte("ttl-" + strconv.Itoa(i))})
	}
	waitQueueLen(t, s, "dlq", 20)
	// Expiry timers may route two batches concurrently, so dead letters
	// are checked as a set.
	seen := map[string]bool{}
	for i := 0; i < 20; i++ {
		d := getOne(t, ch, "dlq")
		seen[string(d.Body)] = true
		if err := d.Ack(false); err != nil {
			t.Fatal(err)
		}
	}
	for i := 0; i < 20; i++ {
		if !seen["ttl-"+strconv.Itoa(i)] {
			t.Fatalf("dead letter ttl-%d missing (got %v)", i, seen)
		}
	}

	// Purge drops paged messages too.
	for i := 0; i < 30; i++ {
		publish(t, ch, "", "dlq", amqp.Publishing{Body: []byte("purged")})
	}
	waitQueueLen(t, s, "dlq", 30)
	if n, err := ch.QueuePurge("dlq", false); err != nil || n != 30 {
		t.Fatalf("purge: %d, %v", n, err)
	}
	// Only the page files' write buffers stay counted until the queues go.
	for _, name := range []string{"prio", "ttl", "dlq"} {
		if _, err := ch.QueueDelete(name, false, false, false); err != nil {
			t.Fatal(err)
		}
	}
	waitCounted(t, s, "back to zero", func(v int64) bool { return v == 0 })
}

// When page files cannot be created, messages stay in memory and nothing
// is lost; paging resumes once the disk is usable again.
func TestPagingFailureKeepsMessages(t *testing.T) {
	dir := t.TempDir()
	// A file where the paging directory should be.
	if err := os.WriteFile(dir+"/paging", nil, 0o600); err != nil {
		t.Fatal(err)
	}
	s, url := startBroker(t, func(o *Options) { o.QueueMemoryLimit = 1; o.DataDir = dir })
	ch := openCh(t, dial(t, url))
	if _, err := ch.QueueDeclare("q", false, false, false, false, nil); err != nil {
		t.Fatal(err)
	}
	vh := s.vhost("/")
	vh.mu.RLock()
	q := vh.queues["q"]
	vh.mu.RUnlock()
	pagedNow := func() int {
		q.mu.Lock()
		defer q.mu.Unlock()
		return q.paged
	}
	for i := 0; i < 20; i++ {
		publish(t, ch, "", "q", amqp.Publishing{Body: []byte(strconv.Itoa(i))})
	}
	waitQueueLen(t, s, "q", 20)
	if n := pagedNow(); n != 0 {
		t.Fatalf("%d messages paged without a paging directory", n)
	}
	if err := os.Remove(dir + "/paging"); err != nil {
		t.Fatal(err)
	}
	time.Sleep(1100 * time.Millisecond) // the retry interval
	for i := 20; i < 40; i++ {
		publish(t, ch, "", "q", amqp.Publishing{Body: []byte(strconv.Itoa(i))})
	}
	waitQueueLen(t, s, "q", 40)
	if n := pagedNow(); n < 19 {
		t.Fatalf("%d messages paged once the directory can be made, want the last 20", n)
	}
	for i := 0; i < 40; i++ {
		d := getOne(t, ch, "q")
		if string(d.Body) != strconv.Itoa(i) {
			t.Fatalf("get %d: %q", i, d.Body)
		}
		if err := d.Ack(false); err != nil {
			t.Fatal(err)
		}
	}
}

// Messages recovered from the store at start page like published ones, or
// are counted when kept in memory, and the counter returns to zero once
// they are consumed.
func TestRecoveredMessagesPage(t *testing.T) {
	dir := t.TempDir()
	mod := func(o *Options) { o.QueueMemoryLimit = 1; o.DataDir = dir }
	s, url := startBroker(t, mod)
	c := dial(t, url)
	ch := openCh(t, c)
	if _, err := ch.QueueDeclare("durable", true, false, false, false, nil); err != nil {
		t.Fatal(err)
	}
	if err := ch.Confirm(false); err != nil {
		t.Fatal(err)
	}
	confirms := ch.NotifyPublish(make(chan amqp.Confirmation, 50))
	for i := 0; i < 50; i++ {
		publish(t, ch, "", "durable", amqp.Publishing{DeliveryMode: amqp.Persistent, Body: []byte(strconv.Itoa(i))})
	}
	for i := 0; i < 50; i++ {
		select {
		case cf := <-confirms:
			if !cf.Ack {
				t.Fatalf("publish %d nacked", cf.DeliveryTag)
			}
		case <-time.After(10 * time.Second):
			t.Fatal("no confirm")
		}
	}
	_ = c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := s.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}

	s, _ = startBroker(t, mod)
	vh := s.vhost("/")
	vh.mu.RLock()
	q := vh.queues["durable"]
	vh.mu.RUnlock()
	q.mu.Lock()
	ready, paged := q.readyCount, q.paged
	q.mu.Unlock()
	if ready != 50 || paged < 45 {
		t.Fatalf("recovered %d messages, %d paged; want 50, nearly all paged", ready, paged)
	}
	if err := s.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}
	// Kept in memory this time: each recovered message is counted.
	s, url = startBroker(t, func(o *Options) { o.QueueMemoryLimit = -1; o.DataDir = dir })
	if v := s.memoryUsed(); v < 50*msgOverhead {
		t.Fatalf("counted memory %d with 50 recovered messages in memory", v)
	}
	ch = openCh(t, dial(t, url))
	for i := 0; i < 50; i++ {
		d := getOne(t, ch, "durable")
		if string(d.Body) != strconv.Itoa(i) {
			t.Fatalf("get %d: %q", i, d.Body)
		}
		if err := d.Ack(false); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := ch.QueueDelete("durable", false, false, false); err != nil {
		t.Fatal(err)
	}
	waitCounted(t, s, "back to zero", func(v int64) bool { return v == 0 })
}

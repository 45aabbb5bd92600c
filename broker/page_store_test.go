package broker

import (
	"bytes"
	"context"
	"encoding/binary"
	"os"
	"path/filepath"
	"runtime"
	"testing"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"
)

// storeBytes is the size of the message store's segment files.
func storeBytes(t *testing.T, dir string) int64 {
	t.Helper()
	files, err := filepath.Glob(filepath.Join(dir, "msgs", "*.seg"))
	if err != nil {
		t.Fatal(err)
	}
	var n int64
	for _, f := range files {
		fi, err := os.Stat(f)
		if err != nil {
			t.Fatal(err)
		}
		n += fi.Size()
	}
	return n
}

// pageFileBytes is what q has written or buffered to its page files
// (they are unlinked, so they are measured through the queue).
func pageFileBytes(q *queue) int64 {
	q.mu.Lock()
	defer q.mu.Unlock()
	var n int64
	if q.pg != nil {
		for _, s := range q.pg.segs {
			n += s.size
		}
	}
	return n
}

func queueOf(t *testing.T, s *Server, name string) *queue {
	t.Helper()
	vh := s.vhost("/")
	vh.mu.RLock()
	defer vh.mu.RUnlock()
	q := vh.queues[name]
	if q == nil {
		t.Fatalf("no queue %s", name)
	}
	return q
}

// publishPersistent publishes n persistent messages of size bytes
// (pagedBody) to queue and waits for their confirms; ch is in confirm mode.
func publishPersistent(t *testing.T, ch *amqp.Channel, queue string, from, n, size int) {
	t.Helper()
	dcs := make([]*amqp.DeferredConfirmation, 0, n)
	for i := from; i < from+n; i++ {
		dc, err := ch.PublishWithDeferredConfirm("", queue, false, false, amqp.Publishing{DeliveryMode: amqp.Persistent, Body: pagedBody(uint64(i), size)})
		if err != nil {
			t.Fatal(err)
		}
		dcs = append(dcs, dc)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for i, dc := range dcs {
		if ok, err := dc.WaitContext(ctx); err != nil || !ok {
			t.Fatalf("publish %d not confirmed: %v", from+i, err)
		}
	}
}

// drainInOrder gets n messages from queue and checks each is pagedBody(from+i).
func drainInOrder(t *testing.T, ch *amqp.Channel, queue string, from, n, size int) {
	t.Helper()
	for i := from; i < from+n; i++ {
		d := getOne(t, ch, queue)
		if len(d.Body) != size || binary.BigEndian.Uint64(d.Body) != uint64(i) {
			t.Fatalf("get %d: %d bytes, sequence %d", i, len(d.Body), binary.BigEndian.Uint64(d.Body))
		}
		if !bytes.Equal(d.Body, pagedBody(uint64(i), size)) {
			t.Fatalf("get %d: body differs from what was published", i)
		}
		if err := d.Ack(false); err != nil {
			t.Fatal(err)
		}
	}
}

// A persistent message that its durable queue pages is written to disk
// once: the queue keeps where the store wrote it and reads it back from
// there. Before, it was written to the store and again to a page file
// (about twice its size in disk writes).
func TestPagedPersistentWrittenOnce(t *testing.T) {
	const n, size = 256, 16 << 10
	dir := t.TempDir()
	s, url := startBroker(t, func(o *Options) { o.QueueMemoryLimit = 1; o.DataDir = dir })
	ch := openCh(t, dial(t, url))
	declareDurable(t, ch, "p")
	publishPersistent(t, ch, "p", 0, n, size)
	q := queueOf(t, s, "p")
	q.mu.Lock()
	paged := q.paged
	q.mu.Unlock()
	if paged < n-1 {
		t.Fatalf("%d of %d messages paged", paged, n)
	}
	written := storeBytes(t, dir) + pageFileBytes(q)
	perMsg := float64(written) / n
	t.Logf("%d persistent messages of %d bytes paged: %d bytes in store segments, %d in page files, %.0f bytes per message",
		n, size, storeBytes(t, dir), pageFileBytes(q), perMsg)
	if perMsg > size*1.05 {
		t.Errorf("%.0f bytes written to disk per paged persistent message of %d bytes, want it written once", perMsg, size)
	}
	drainInOrder(t, ch, "p", 0, n, size)
}

// A paged persistent message needed before the store has written it is
// copied from the store's buffer: fsync is held back by SyncInterval, and
// basic.get reads messages paged a moment before.
func TestPagedPersistentReadBeforeWritten(t *testing.T) {
	const n, size = 64, 4 << 10
	s, url := startBroker(t, func(o *Options) {
		o.QueueMemoryLimit = 1
		o.DataDir = t.TempDir()
		o.SyncInterval = 300 * time.Millisecond
	})
	ch := openCh(t, dial(t, url))
	if _, err := ch.QueueDeclare("p", true, false, false, false, nil); err != nil {
		t.Fatal(err)
	}
	for i := 0; i < n; i++ {
		publish(t, ch, "", "p", amqp.Publishing{DeliveryMode: amqp.Persistent, Body: pagedBody(uint64(i), size)})
	}
	waitQueueLen(t, s, "p", n)
	st := s.store
	st.mu.Lock()
	pending := len(st.chunks) + len(st.inflight)
	st.mu.Unlock()
	t.Logf("store chunks not yet written when the first get arrives: %d", pending)
	drainInOrder(t, ch, "p", 0, n, size)
}

// Compaction copies a paged message's record forward and deletes the
// segment the queue entry points at: the entry follows the copy.
func TestPagedPersistentSurvivesCompaction(t *testing.T) {
	const size = 256
	dir := t.TempDir()
	s, url := startBroker(t, func(o *Options) {
		o.QueueMemoryLimit = 1
		o.DataDir = dir
		o.segmentLimit = 16 << 10
	})
	ch := openCh(t, dial(t, url))
	declareDurable(t, ch, "keep", "churn")
	publishPersistent(t, ch, "keep", 0, 4, size)
	// 100 KB through another queue: segments (16 KiB) rotate and the
	// first, its four kept messages among some sixty dead ones, is
	// compacted.
	publishPersistent(t, ch, "churn", 0, 400, size)
	for i := 0; i < 400; i++ {
		getOne(t, ch, "churn").Ack(false)
	}
	st := s.store
	deadline := time.Now().Add(20 * time.Second)
	for {
		st.mu.Lock()
		moved := len(st.moved)
		st.mu.Unlock()
		if moved >= 4 && segmentFiles(t, dir) <= 4 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d records moved, %d segments: no compaction", moved, segmentFiles(t, dir))
		}
		publishPersistent(t, ch, "churn", 0, 1, size) // a flush runs compaction
		getOne(t, ch, "churn").Ack(false)
		time.Sleep(10 * time.Millisecond)
	}
	q := queueOf(t, s, "keep")
	q.mu.Lock()
	paged := q.paged
	q.mu.Unlock()
	if paged < 3 {
		t.Fatalf("%d of 4 messages paged", paged)
	}
	drainInOrder(t, ch, "keep", 0, 4, size)
}

// A broker restarted on a data directory holding far more persistent
// messages than the high watermark starts without reading them into
// memory: recovery streams the segments and indexes each message where
// its record is; the queue reads them back as they are consumed. Every
// message is delivered once, in order, and counted memory stays under the
// watermark. The bytes allocated during recovery (runtime TotalAlloc, an
// upper bound of how much the heap can have grown) stay under the
// watermark; before, recovery read each segment whole and copied every
// message (over 150 MiB allocated, all of it live at once).
func TestRecoveryPagesIn(t *testing.T) {
	const watermark = 32 << 20
	const size = 64 << 10
	n := 150 << 20 / size // 2,400 messages, 150 MiB
	if testing.Short() {
		n = 64 << 20 / size
	}
	dir := t.TempDir()
	mod := func(o *Options) {
		o.MemoryHighWatermark = watermark
		o.DataDir = dir
	}
	s, url := startBroker(t, mod)
	c := dial(t, url)
	ch := openCh(t, c)
	declareDurable(t, ch, "backlog")
	for i := 0; i < n; i += 100 {
		publishPersistent(t, ch, "backlog", i, min(100, n-i), size)
	}
	_ = c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := s.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}
	t.Logf("%d MiB of persistent messages in the store", storeBytes(t, dir)>>20)

	opts := DefaultOptions()
	opts.AMQPAddr = "127.0.0.1:0"
	mod(&opts)
	s, err := New(opts)
	if err != nil {
		t.Fatal(err)
	}
	runtime.GC()
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	if err := s.Start(); err != nil {
		t.Fatal(err)
	}
	runtime.ReadMemStats(&after)
	t.Cleanup(func() { stopBroker(t, s) })
	allocated := int64(after.TotalAlloc - before.TotalAlloc)
	grown := int64(after.HeapInuse) - int64(before.HeapInuse)
	live := heapInuse() - int64(before.HeapInuse)
	q := queueOf(t, s, "backlog")
	q.mu.Lock()
	ready, paged := q.readyCount, q.paged
	q.mu.Unlock()
	t.Logf("recovered %d messages (%d paged): %.1f MiB allocated during Start, heap in use %.1f MiB more right after it, %.1f MiB after a collection; counted %.1f MiB",
		ready, paged, float64(allocated)/(1<<20), float64(grown)/(1<<20), float64(live)/(1<<20), float64(s.memoryUsed())/(1<<20))
	if ready != n {
		t.Fatalf("recovered %d messages, want %d", ready, n)
	}
	if allocated > watermark || grown > watermark {
		t.Errorf("recovery allocated %d bytes (heap grew %d), more than the %d-byte watermark", allocated, grown, watermark)
	}
	if live > watermark {
		t.Errorf("heap in use %d bytes more after recovery, more than the watermark", live)
	}

	peaks := sampleMemory(s)
	ch = openCh(t, dial(t, "amqp://guest:guest@"+s.Addr().String()+"/"))
	if err := ch.Qos(32, 0, false); err != nil {
		t.Fatal(err)
	}
	msgs, err := ch.Consume("backlog", "", false, false, false, false, nil)
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i < n; i++ {
		d := recv(t, msgs)
		if len(d.Body) != size || binary.BigEndian.Uint64(d.Body) != uint64(i) {
			t.Fatalf("delivery %d: %d bytes, sequence %d", i, len(d.Body), binary.BigEndian.Uint64(d.Body))
		}
		if !d.Redelivered {
			t.Fatalf("delivery %d: recovered message not marked redelivered", i)
		}
		if i%97 == 0 && !bytes.Equal(d.Body, pagedBody(uint64(i), size)) {
			t.Fatalf("delivery %d: body differs from what was published", i)
		}
		if err := d.Ack(false); err != nil {
			t.Fatal(err)
		}
	}
	// Nothing more: each message once.
	select {
	case d := <-msgs:
		t.Fatalf("an extra delivery: %d bytes, sequence %d", len(d.Body), binary.BigEndian.Uint64(d.Body))
	case <-time.After(200 * time.Millisecond):
	}
	peaks.done()
	t.Logf("consumed; peaks: counted %.1f MiB, heap in use %.1f MiB", float64(peaks.counted.Load())/(1<<20), float64(peaks.heap.Load())/(1<<20))
	if peaks.counted.Load() > watermark {
		t.Errorf("counted memory peaked at %d, over the watermark", peaks.counted.Load())
	}
}

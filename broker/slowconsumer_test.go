package broker

import (
	"encoding/binary"
	"fmt"
	"runtime/debug"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"
)

// A consumer with no prefetch limit that takes every delivery and
// acknowledges none (the slowest consumer there is) does not hold the
// broker's memory: past the paging ratio it gets no more than its share,
// the queue pages the rest, the publisher is never blocked, and counted
// memory and the live heap stay near the paging ratio of the watermark.
// Before, every message published went to the consumer and stayed in
// memory unacknowledged until the alarm blocked the publisher. Then the
// consumer acknowledges: it gets the rest, each message once, in order.
// Measured in bytes (counted memory, heap in use after a collection) at
// the end of the pile-up, not in time.
func TestSlowConsumerMemoryBounded(t *testing.T) {
	const watermark = 32 << 20
	const size = 8 << 10
	const n = 3 * watermark / size // 96 MiB
	s, url := startBroker(t, func(o *Options) {
		o.MemoryHighWatermark = watermark
		o.DataDir = t.TempDir()
	})
	before := heapInuse()
	cc := dial(t, url)
	cch := openCh(t, cc)
	if _, err := cch.QueueDeclare("slow", false, false, false, false, nil); err != nil {
		t.Fatal(err)
	}
	deliveries, err := cch.Consume("slow", "", false, false, false, false, nil)
	if err != nil {
		t.Fatal(err)
	}
	// The consumer keeps only the last delivery tag and checks the order.
	var received atomic.Int64
	acking := make(chan struct{})
	consumerErr := make(chan string, 1)
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		next, ack, last := uint64(0), false, uint64(0)
		start := acking
		for {
			select {
			case <-start:
				// Everything held so far, then each delivery as it comes.
				start, ack = nil, true
				if last != 0 {
					_ = cch.Ack(last, true)
				}
				continue
			case d, ok := <-deliveries:
				if !ok {
					return
				}
				if seq := binary.BigEndian.Uint64(d.Body); seq != next || len(d.Body) != size {
					select {
					case consumerErr <- fmt.Sprintf("delivery %d: sequence %d, %d bytes", next, seq, len(d.Body)):
					default:
					}
					return
				}
				next++
				last = d.DeliveryTag
				received.Add(1)
				if ack {
					_ = d.Ack(false)
				}
			}
		}
	}()

	pc := dial(t, url)
	blocked := pc.NotifyBlocked(make(chan amqp.Blocking, 1))
	pch := openCh(t, pc)
	if err := pch.Confirm(false); err != nil {
		t.Fatal(err)
	}
	confirms := pch.NotifyPublish(make(chan amqp.Confirmation, 256))
	peaks := sampleMemory(s)
	body := make([]byte, size)
	for i := 0; i < n; i++ {
		binary.BigEndian.PutUint64(body, uint64(i))
		if err := pch.Publish("", "slow", false, false, amqp.Publishing{Body: body}); err != nil {
			t.Fatal(err)
		}
		if i%64 == 63 || i == n-1 {
			for j := i - i%64; j <= i; j++ {
				select {
				case c := <-confirms:
					if !c.Ack {
						t.Fatalf("publish %d nacked", c.DeliveryTag)
					}
				case b := <-blocked:
					stopBroker(t, s)
					t.Fatalf("publisher blocked (%+v) after %d MiB, counted memory %d, %d messages delivered unacknowledged",
						b, i*size>>20, s.memoryUsed(), received.Load())
				case <-time.After(20 * time.Second):
					stopBroker(t, s)
					t.Fatalf("no confirm within 20s after %d MiB, counted memory %d", i*size>>20, s.memoryUsed())
				}
			}
		}
	}
	// Every message is in the queue or with the consumer.
	vh := s.vhost("/")
	vh.mu.RLock()
	q := vh.queues["slow"]
	vh.mu.RUnlock()
	deadline := time.Now().Add(20 * time.Second)
	for {
		q.mu.Lock()
		ready, unacked, paged := q.readyCount, q.unacked, q.paged
		q.mu.Unlock()
		if ready+unacked == n && int64(unacked) == received.Load() {
			counted := s.memoryUsed()
			heap := heapInuse() - before
			t.Logf("%d MiB published: %d messages delivered unacknowledged, %d ready (%d paged); counted memory %.1f MiB (peak %.1f), heap in use %.1f MiB more than before",
				n*size>>20, unacked, ready, paged, float64(counted)/(1<<20), float64(peaks.counted.Load())/(1<<20), float64(heap)/(1<<20))
			limit := int64(watermark/2 + 4<<20)
			if peaks.counted.Load() > limit || counted > limit {
				t.Errorf("counted memory %d (peak %d), want at most half the watermark and 4 MiB: %d", counted, peaks.counted.Load(), limit)
			}
			if heap > limit+8<<20 {
				t.Errorf("heap in use grew %d bytes, want at most %d", heap, limit+8<<20)
			}
			if int64(unacked)*size > limit {
				t.Errorf("%d messages of %d bytes delivered unacknowledged, more than %d bytes", unacked, size, limit)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("queue: %d ready, %d unacknowledged, %d received; want %d in all", ready, unacked, received.Load(), n)
		}
		time.Sleep(10 * time.Millisecond)
	}
	peaks.done()

	// The consumer acknowledges what it holds and everything after.
	close(acking)
	deadline = time.Now().Add(60 * time.Second)
	for received.Load() < n {
		select {
		case e := <-consumerErr:
			t.Fatal(e)
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d of %d messages received", received.Load(), n)
		}
		time.Sleep(10 * time.Millisecond)
	}
	select {
	case e := <-consumerErr:
		t.Fatal(e)
	default:
	}
	if _, err := pch.QueueDelete("slow", false, false, false); err != nil {
		t.Fatal(err)
	}
	waitCounted(t, s, "back to zero", func(v int64) bool { return v == 0 })
	_ = cc.Close()
	wg.Wait()
}

// With Options.GoMemoryLimit the Go runtime's soft memory limit is the
// watermark plus 48 MiB, follows the watermark when it changes at run time
// and is restored at Shutdown.
func TestGoMemoryLimitFollowsWatermark(t *testing.T) {
	prev := debug.SetMemoryLimit(-1)
	defer debug.SetMemoryLimit(prev)
	s, _ := startBroker(t, func(o *Options) { o.MemoryHighWatermark = 256 << 20; o.GoMemoryLimit = true })
	if got := debug.SetMemoryLimit(-1); got != 256<<20+48<<20 {
		t.Errorf("256 MiB watermark: limit %d", got)
	}
	if err := s.SetMemoryHighWatermark(512 << 20); err != nil {
		t.Fatal(err)
	}
	if got := debug.SetMemoryLimit(-1); got != 512<<20+48<<20 {
		t.Errorf("watermark raised to 512 MiB: limit %d", got)
	}
	if err := s.SetMemoryHighWatermark(0); err != nil {
		t.Fatal(err)
	}
	if got := debug.SetMemoryLimit(-1); got != prev {
		t.Errorf("no watermark: limit %d, want the previous %d", got, prev)
	}
	if err := s.SetMemoryHighWatermark(64 << 20); err != nil {
		t.Fatal(err)
	}
	stopBroker(t, s)
	if got := debug.SetMemoryLimit(-1); got != prev {
		t.Errorf("after Shutdown: limit %d, want the previous %d", got, prev)
	}
	// Embedded without the option, the process's limit is left alone.
	startBroker(t, func(o *Options) { o.MemoryHighWatermark = 256 << 20 })
	if got := debug.SetMemoryLimit(-1); got != prev {
		t.Errorf("without GoMemoryLimit: limit %d, want %d", got, prev)
	}
}

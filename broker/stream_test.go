package broker

import (
	"context"
	"fmt"
	"os"
	"strconv"
	"sync"
	"testing"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"
)

func declareStream(t testing.TB, ch *amqp.Channel, name string, extra amqp.Table) {
	t.Helper()
	args := amqp.Table{"x-queue-type": "stream"}
	for k, v := range extra {
		args[k] = v
	}
	if _, err := ch.QueueDeclare(name, true, false, false, false, args); err != nil {
		t.Fatal(err)
	}
}

// publishConfirmed publishes bodies to queue q through the default
// exchange and waits for every confirm.
func streamPublish(t testing.TB, ch *amqp.Channel, q string, bodies ...string) {
	t.Helper()
	if err := ch.Confirm(false); err != nil {
		t.Fatal(err)
	}
	for _, b := range bodies {
		dc, err := ch.PublishWithDeferredConfirmWithContext(context.Background(), "", q, false, false, amqp.Publishing{Body: []byte(b)})
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		ok, err := dc.WaitContext(ctx)
		cancel()
		if err != nil || !ok {
			t.Fatalf("publish %q: ack %v err %v", b, ok, err)
		}
	}
}

// streamConsume opens a channel with prefetch and consumes q from offset
// (nil: no x-stream-offset argument).
func streamConsume(t testing.TB, c *amqp.Connection, q string, prefetch int, offset any) (*amqp.Channel, <-chan amqp.Delivery) {
	t.Helper()
	ch := openCh(t, c)
	if err := ch.Qos(prefetch, 0, false); err != nil {
		t.Fatal(err)
	}
	var args amqp.Table
	if offset != nil {
		args = amqp.Table{"x-stream-offset": offset}
	}
	d, err := ch.Consume(q, "", false, false, false, false, args)
	if err != nil {
		t.Fatal(err)
	}
	return ch, d
}

// takeStream reads deliveries (acking each) until none arrives for quiet,
// and returns "body@offset" for each.
func takeStream(t testing.TB, d <-chan amqp.Delivery, quiet time.Duration) []string {
	t.Helper()
	var got []string
	for {
		select {
		case m, ok := <-d:
			if !ok {
				return got
			}
			off, isLong := m.Headers["x-stream-offset"].(int64)
			if !isLong {
				t.Fatalf("x-stream-offset header %#v (%T), want a long", m.Headers["x-stream-offset"], m.Headers["x-stream-offset"])
			}
			got = append(got, string(m.Body)+"@"+strconv.FormatInt(off, 10))
			if err := m.Ack(false); err != nil {
				t.Fatal(err)
			}
		case <-time.After(quiet):
			return got
		}
	}
}

func streamOf(t testing.TB, s *Server, vhost, name string) *queue {
	t.Helper()
	s.mu.Lock()
	vh := s.vhosts[vhost]
	s.mu.Unlock()
	vh.mu.RLock()
	defer vh.mu.RUnlock()
	q := vh.queues[name]
	if q == nil || q.stream == nil {
		t.Fatalf("no stream %q", name)
	}
	return q
}

// ageRecords makes the first n records of q look appended at ts.
func ageRecords(q *queue, n int, ts int64) {
	q.mu.Lock()
	defer q.mu.Unlock()
	for _, s := range q.stream.segs {
		for i := range s.idx {
			if n == 0 {
				return
			}
			s.idx[i].ts = ts
			n--
		}
	}
}

func eq(a, b []string) bool { return fmt.Sprint(a) == fmt.Sprint(b) }

func TestStreamOffsets(t *testing.T) {
	s, url := startBroker(t, nil)
	c := dial(t, url)
	ch := openCh(t, c)
	declareStream(t, ch, "st", amqp.Table{"x-max-age": "1800s"})
	streamPublish(t, ch, "st", "m0", "m1", "m2", "m3", "m4")
	// m0..m2 look two hours old: timestamp and interval offsets split there.
	ageRecords(streamOf(t, s, "/", "st"), 3, time.Now().Add(-2*time.Hour).UnixMilli())
	all := []string{"m0@0", "m1@1", "m2@2", "m3@3", "m4@4"}
	for _, tc := range []struct {
		offset any
		want   []string
	}{
		{"first", all},
		{"last", []string{"m4@4"}},
		{"next", nil},
		{nil, nil},
		{int64(2), all[2:]},
		{int32(3), all[3:]},
		{int8(0), all},
		{int64(-5), all},
		{int64(100), nil},
		{time.Now().Add(-time.Hour), all[3:]},
		{time.Now().Add(-3 * time.Hour), all},
		{"1h", all[3:]},
		{"3h", all},
		{"7D", all},
	} {
		cch, d := streamConsume(t, c, "st", 10, tc.offset)
		if got := takeStream(t, d, 300*time.Millisecond); !eq(got, tc.want) {
			t.Errorf("x-stream-offset %#v: got %v, want %v", tc.offset, got, tc.want)
		}
		_ = cch.Close()
	}
	// A consumer at "next" gets what is published after it started, and
	// only as its prefetch allows.
	cch, d := streamConsume(t, c, "st", 1, "next")
	streamPublish(t, openCh(t, c), "st", "m5", "m6")
	m := recv(t, d)
	select {
	case x := <-d:
		t.Fatalf("prefetch 1: second delivery %q before the first was acked", x.Body)
	case <-time.After(200 * time.Millisecond):
	}
	if string(m.Body) != "m5" || m.Headers["x-stream-offset"] != int64(5) || m.Redelivered {
		t.Fatalf("first delivery %q %v redelivered %v", m.Body, m.Headers, m.Redelivered)
	}
	_ = m.Ack(false)
	if m := recv(t, d); string(m.Body) != "m6" || m.Headers["x-stream-offset"] != int64(6) {
		t.Fatalf("second delivery %q %v", m.Body, m.Headers)
	}
	_ = cch.Close()
	// Consuming changed nothing: the log still holds all seven.
	q, err := openCh(t, c).QueueDeclarePassive("st", true, false, false, false, nil)
	if err != nil || q.Messages != 7 {
		t.Fatalf("passive declare: %+v %v", q, err)
	}
}

func TestStreamConsumersHaveOwnOffsets(t *testing.T) {
	_, url := startBroker(t, nil)
	c := dial(t, url)
	ch := openCh(t, c)
	declareStream(t, ch, "st", nil)
	streamPublish(t, ch, "st", "a", "b", "c")
	_, slow := streamConsume(t, c, "st", 1, "first")
	_, fast := streamConsume(t, c, "st", 100, int64(1))
	// The slow consumer holds its first delivery unacked; the other reads on.
	first := recv(t, slow)
	if got := takeStream(t, fast, 300*time.Millisecond); !eq(got, []string{"b@1", "c@2"}) {
		t.Fatalf("fast consumer: %v", got)
	}
	// A nack with requeue gives credit back and does not redeliver.
	if err := first.Nack(false, true); err != nil {
		t.Fatal(err)
	}
	if got := takeStream(t, slow, 300*time.Millisecond); !eq(got, []string{"b@1", "c@2"}) {
		t.Fatalf("slow consumer after nack: %v", got)
	}
}

func TestStreamRetentionDropsWholeSegments(t *testing.T) {
	for _, withDir := range []bool{false, true} {
		t.Run(fmt.Sprintf("dataDir=%v", withDir), func(t *testing.T) {
			dir := ""
			if withDir {
				dir = t.TempDir()
			}
			s, url := startBroker(t, func(o *Options) { o.DataDir = dir })
			c := dial(t, url)
			ch := openCh(t, c)
			// A record of a 100-byte body to a 2-letter queue is 144 bytes:
			// three fill a 500-byte segment.
			declareStream(t, ch, "rs", amqp.Table{"x-stream-max-segment-size-bytes": int64(500), "x-max-length-bytes": int64(1000)})
			body := make([]byte, 100)
			ch.Confirm(false)
			for i := range 20 {
				copy(body, fmt.Sprintf("%03d", i))
				streamPublish(t, ch, "rs", string(body))
			}
			q := streamOf(t, s, "/", "rs")
			q.mu.Lock()
			first, next, segs, bytes := q.stream.firstOffset(), q.stream.next, len(q.stream.segs), q.stream.bytes
			q.mu.Unlock()
			// 20 records of 134 bytes in segments of 3: 6 full and one of
			// 2. Each roll drops whole segments while the log is over 1000
			// bytes: offsets 12.. are kept, 0..11 dropped. Between rolls
			// the log may pass the limit by at most one segment.
			if next != 20 || first != 12 || segs != 3 || bytes > 1000+500 {
				t.Fatalf("after retention: first %d next %d segments %d bytes %d", first, next, segs, bytes)
			}
			if first%3 != 0 {
				t.Fatalf("first kept offset %d is not a segment boundary", first)
			}
			_, d := streamConsume(t, c, "rs", 50, "first")
			got := takeStream(t, d, 300*time.Millisecond)
			if len(got) != 8 || got[0][:3] != "012" || got[0][len(got[0])-3:] != "@12" {
				t.Fatalf("consumer at first: %d messages, first %q", len(got), got[:1])
			}
			// An integer offset before the oldest kept starts there too.
			_, d = streamConsume(t, c, "rs", 50, int64(3))
			if got := takeStream(t, d, 300*time.Millisecond); len(got) != 8 {
				t.Fatalf("consumer at 3: %d messages", len(got))
			}
			// x-max-age: segments whose newest record is too old go at the
			// next append; the segment being written stays.
			declareStream(t, ch, "ra", amqp.Table{"x-stream-max-segment-size-bytes": int64(500), "x-max-age": "1h"})
			for i := range 7 {
				copy(body, fmt.Sprintf("%03d", i))
				streamPublish(t, ch, "ra", string(body))
			}
			qa := streamOf(t, s, "/", "ra")
			ageRecords(qa, 6, time.Now().Add(-2*time.Hour).UnixMilli())
			streamPublish(t, ch, "ra", "fresh")
			qa.mu.Lock()
			first = qa.stream.firstOffset()
			qa.mu.Unlock()
			if first != 6 {
				t.Fatalf("x-max-age: first kept offset %d, want 6", first)
			}
		})
	}
}

func TestStreamInMemoryIsBoundedByRetention(t *testing.T) {
	s, url := startBroker(t, nil)
	c := dial(t, url)
	ch := openCh(t, c)
	declareStream(t, ch, "mem", amqp.Table{"x-stream-max-segment-size-bytes": int64(64 << 10), "x-max-length-bytes": int64(256 << 10)})
	base := s.memoryUsed()
	body := string(make([]byte, 1000))
	for range 10 {
		bodies := make([]string, 100)
		for i := range bodies {
			bodies[i] = body
		}
		streamPublish(t, ch, "mem", bodies...)
	}
	// 1 MB published; the log keeps at most 256 KiB plus one segment.
	if used := s.memoryUsed() - base; used > 256<<10+64<<10+8<<10 {
		t.Fatalf("counted memory grew by %d bytes", used)
	}
}

func TestStreamSurvivesRestart(t *testing.T) {
	dir := t.TempDir()
	opts := func(o *Options) { o.DataDir = dir }
	s, url := startBroker(t, opts)
	c := dial(t, url)
	ch := openCh(t, c)
	declareStream(t, ch, "keep", amqp.Table{"x-max-age": "1800s", "x-stream-max-segment-size-bytes": int64(200)})
	streamPublish(t, ch, "keep", "r0", "r1", "r2", "r3", "r4")
	_ = c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := s.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}
	_, url = startBroker(t, opts)
	c = dial(t, url)
	ch = openCh(t, c)
	declareStream(t, ch, "keep", amqp.Table{"x-max-age": "1800s", "x-stream-max-segment-size-bytes": int64(200)})
	streamPublish(t, ch, "keep", "r5")
	_, d := streamConsume(t, c, "keep", 10, "first")
	want := []string{"r0@0", "r1@1", "r2@2", "r3@3", "r4@4", "r5@5"}
	if got := takeStream(t, d, 300*time.Millisecond); !eq(got, want) {
		t.Fatalf("after restart: %v", got)
	}
	// Deleting the stream deletes its files: a new one starts at 0.
	if _, err := ch.QueueDelete("keep", false, false, false); err != nil {
		t.Fatal(err)
	}
	ch = openCh(t, c)
	declareStream(t, ch, "keep", nil)
	streamPublish(t, ch, "keep", "n0")
	_, d = streamConsume(t, c, "keep", 10, "first")
	if got := takeStream(t, d, 300*time.Millisecond); !eq(got, []string{"n0@0"}) {
		t.Fatalf("recreated stream: %v", got)
	}
}

// TestStreamResumeSeesEveryMessageOnce is oslo.messaging's fanout
// consumer: it starts at "last", and after each reconnect resumes at the
// last offset it saw + 1, while a publisher keeps publishing.
func TestStreamResumeSeesEveryMessageOnce(t *testing.T) {
	_, url := startBroker(t, nil)
	pc := dial(t, url)
	pch := openCh(t, pc)
	declareStream(t, pch, "T_fanout", amqp.Table{"x-max-age": "1800s"})
	streamPublish(t, pch, "T_fanout", "before")
	const n = 600
	var wg sync.WaitGroup
	defer wg.Wait()
	start := make(chan struct{})
	wg.Add(1)
	go func() {
		<-start
		defer wg.Done()
		for i := range n {
			if err := pch.PublishWithContext(context.Background(), "", "T_fanout", false, false, amqp.Publishing{Body: []byte(strconv.Itoa(i))}); err != nil {
				t.Error(err)
				return
			}
			if i%50 == 0 {
				time.Sleep(5 * time.Millisecond)
			}
		}
	}()
	seen := map[string]int{}
	var offsets []int64
	var next any = "last"
	for round := 0; len(seen) < n+1 && round < 200; round++ {
		c, err := amqp.Dial(url)
		if err != nil {
			t.Fatal(err)
		}
		ch, err := c.Channel()
		if err != nil {
			t.Fatal(err)
		}
		_ = ch.Qos(10, 0, false)
		d, err := ch.Consume("T_fanout", "", false, false, false, false, amqp.Table{"x-stream-offset": next})
		if err != nil {
			t.Fatal(err)
		}
		if round == 0 {
			close(start) // "last" is "before": the publisher starts now
		}
		// Take up to 37 messages, ack most of them, then drop the connection.
		for k := 0; k < 37; k++ {
			var m amqp.Delivery
			select {
			case m = <-d:
			case <-time.After(2 * time.Second):
				k = 37
				continue
			}
			off := m.Headers["x-stream-offset"].(int64)
			seen[string(m.Body)]++
			offsets = append(offsets, off)
			next = off + 1
			if k < 30 {
				_ = m.Ack(false) // the last few stay unacked at the drop
			}
		}
		_ = c.Close()
	}
	if len(seen) != n+1 {
		t.Fatalf("saw %d distinct messages, want %d", len(seen), n+1)
	}
	for b, k := range seen {
		if k != 1 {
			t.Fatalf("message %q seen %d times", b, k)
		}
	}
	for i, off := range offsets {
		if off != int64(i) {
			t.Fatalf("delivery %d has offset %d", i, off)
		}
	}
}

func TestStreamRefusals(t *testing.T) {
	_, url := startBroker(t, nil)
	c := dial(t, url)
	declareStream(t, openCh(t, c), "s1", amqp.Table{"x-max-age": "1800s"})
	for _, tc := range streamRefusalCases("/") {
		t.Run(tc.name, func(t *testing.T) {
			code, text := tc.run(t, url)
			if code != tc.code || text != tc.text {
				t.Fatalf("got %d %q\nwant %d %q", code, text, tc.code, tc.text)
			}
		})
	}
}

type refusalCase struct {
	name string
	code int
	text string
	run  func(t testing.TB, url string) (int, string)
}

// refusal runs f on a fresh connection and returns the error's code and
// text (0, "" when it succeeded).
func refusal(t testing.TB, url string, f func(ch *amqp.Channel) error) (int, string) {
	c, err := amqp.Dial(url)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	ch, err := c.Channel()
	if err != nil {
		t.Fatal(err)
	}
	err = f(ch)
	if err == nil {
		// A consume error may arrive after consume-ok is awaited: sync.
		_, err = ch.QueueDeclarePassive("s1", true, false, false, false, nil)
	}
	if err == nil {
		return 0, ""
	}
	ae, ok := err.(*amqp.Error)
	if !ok {
		t.Fatalf("%T %v", err, err)
	}
	return ae.Code, ae.Reason
}

// streamRefusalCases are the refusals of stream and quorum queues, with
// the codes and texts RabbitMQ 3.10 answers in vhost vh (run against it by
// TestQueueTypeRefusalsMatchRabbitMQ). Queue s1 must be a stream with
// x-max-age "1800s".
func streamRefusalCases(vh string) []refusalCase {
	decl := func(name string, durable, autoDelete, exclusive bool, args amqp.Table) func(t testing.TB, url string) (int, string) {
		return func(t testing.TB, url string) (int, string) {
			return refusal(t, url, func(ch *amqp.Channel) error {
				_, err := ch.QueueDeclare(name, durable, autoDelete, exclusive, false, args)
				return err
			})
		}
	}
	consume := func(prefetch int, noAck bool, args amqp.Table) func(t testing.TB, url string) (int, string) {
		return func(t testing.TB, url string) (int, string) {
			return refusal(t, url, func(ch *amqp.Channel) error {
				if prefetch > 0 {
					if err := ch.Qos(prefetch, 0, false); err != nil {
						return err
					}
				}
				_, err := ch.Consume("s1", "", noAck, false, false, false, args)
				return err
			})
		}
	}
	S := func(kv ...any) amqp.Table {
		t := amqp.Table{"x-queue-type": "stream"}
		for i := 0; i < len(kv); i += 2 {
			t[kv[i].(string)] = kv[i+1]
		}
		return t
	}
	Q := amqp.Table{"x-queue-type": "quorum"}
	in := "in vhost '" + vh + "'"
	pf := "PRECONDITION_FAILED - "
	cases := []refusalCase{
		{"stream non-durable", 406, pf + "invalid property 'non-durable' for queue 'x1' " + in, decl("x1", false, false, false, S())},
		{"stream exclusive", 406, pf + "invalid property 'exclusive-owner' for queue 'x1' " + in, decl("x1", true, false, true, S())},
		{"stream exclusive non-durable", 406, pf + "invalid property 'exclusive-owner' for queue 'x1' " + in, decl("x1", false, false, true, S())},
		{"stream auto-delete", 406, pf + "invalid property 'auto-delete' for queue 'x1' " + in, decl("x1", true, true, false, S())},
		{"stream bad x-max-age", 406, pf + "invalid arg 'x-max-age' for queue 'x1' " + in + ": invalid_max_age", decl("x1", true, false, false, S("x-max-age", "1800x"))},
		{"stream zero x-max-age", 406, pf + "invalid arg 'x-max-age' for queue 'x1' " + in + ": invalid_max_age", decl("x1", true, false, false, S("x-max-age", "0s"))},
		{"stream x-max-priority", 406, pf + "invalid arg 'x-max-priority' for queue 'x1' " + in + " of queue type rabbit_stream_queue", decl("x1", true, false, false, S("x-max-priority", int32(5)))},
		{"stream x-message-ttl", 406, pf + "invalid arg 'x-message-ttl' for queue 'x1' " + in + " of queue type rabbit_stream_queue", decl("x1", true, false, false, S("x-message-ttl", int32(5)))},
		{"stream x-dead-letter-exchange", 406, pf + "invalid arg 'x-dead-letter-exchange' for queue 'x1' " + in + " of queue type rabbit_stream_queue", decl("x1", true, false, false, S("x-dead-letter-exchange", "x"))},
		{"stream x-expires", 406, pf + "invalid arg 'x-expires' for queue 'x1' " + in + " of queue type rabbit_stream_queue", decl("x1", true, false, false, S("x-expires", int32(5000)))},
		{"stream x-max-length", 406, pf + "invalid arg 'x-max-length' for queue 'x1' " + in + " of queue type rabbit_stream_queue", decl("x1", true, false, false, S("x-max-length", int32(5)))},
		{"stream x-single-active-consumer", 406, pf + "invalid arg 'x-single-active-consumer' for queue 'x1' " + in + " of queue type rabbit_stream_queue", decl("x1", true, false, false, S("x-single-active-consumer", true))},
		{"stream x-delivery-limit", 406, pf + "invalid arg 'x-delivery-limit' for queue 'x1' " + in + " of queue type rabbit_stream_queue", decl("x1", true, false, false, S("x-delivery-limit", int32(5)))},
		{"stream bad segment size", 406, pf + "invalid arg 'x-stream-max-segment-size-bytes' for queue 'x1' " + in + ": \"expected integer, got longstr\"", decl("x1", true, false, false, S("x-stream-max-segment-size-bytes", "a"))},
		{"redeclare stream as classic", 406, pf + "inequivalent arg 'x-queue-type' for queue 's1' " + in + ": received 'classic' but current is 'stream'", decl("s1", true, false, false, amqp.Table{"x-queue-type": "classic", "x-max-age": "1800s"})},
		{"redeclare stream without type", 406, pf + "inequivalent arg 'x-queue-type' for queue 's1' " + in + ": received none but current is the value 'stream' of type 'longstr'", decl("s1", true, false, false, amqp.Table{"x-max-age": "1800s"})},
		{"redeclare stream as quorum", 406, pf + "inequivalent arg 'x-queue-type' for queue 's1' " + in + ": received 'quorum' but current is 'stream'", decl("s1", true, false, false, amqp.Table{"x-queue-type": "quorum", "x-max-age": "1800s"})},
		{"redeclare stream other age", 406, pf + "inequivalent arg 'x-max-age' for queue 's1' " + in + ": received '1h' but current is '1800s'", decl("s1", true, false, false, S("x-max-age", "1h"))},
		{"redeclare stream without age", 406, pf + "inequivalent arg 'x-max-age' for queue 's1' " + in + ": received none but current is the value '1800s' of type 'longstr'", decl("s1", true, false, false, S())},
		{"redeclare stream new segment size", 406, pf + "inequivalent arg 'x-stream-max-segment-size-bytes' for queue 's1' " + in + ": received the value '2000' of type 'signedint' but current is none", decl("s1", true, false, false, S("x-max-age", "1800s", "x-stream-max-segment-size-bytes", int32(2000)))},
		{"redeclare stream same", 0, "", decl("s1", true, false, false, S("x-max-age", "1800s"))},
		{"consume without prefetch", 406, pf + "consumer prefetch count is not set for 'queue 's1' " + in + "'", consume(0, false, nil)},
		{"consume no-ack without prefetch", 406, pf + "consumer prefetch count is not set for 'queue 's1' " + in + "'", consume(0, true, nil)},
		{"consume no-ack", 540, "NOT_IMPLEMENTED - automatic acknowledgement not supported by stream queues queue 's1' " + in, consume(10, true, nil)},
		{"consume global prefetch only", 406, pf + "consumer prefetch count is not set for 'queue 's1' " + in + "'", func(t testing.TB, url string) (int, string) {
			return refusal(t, url, func(ch *amqp.Channel) error {
				if err := ch.Qos(10, 0, true); err != nil {
					return err
				}
				_, err := ch.Consume("s1", "", false, false, false, false, nil)
				return err
			})
		}},
		{"consume bad interval", 406, pf + "invalid arg 'x-stream-offset' for queue 's1' " + in + ": {invalid_stream_offset_arg,{longstr,<<\"1x\">>}}", consume(10, false, amqp.Table{"x-stream-offset": "1x"})},
		{"consume zero interval", 406, pf + "invalid arg 'x-stream-offset' for queue 's1' " + in + ": {invalid_stream_offset_arg,{longstr,<<\"0s\">>}}", consume(10, false, amqp.Table{"x-stream-offset": "0s"})},
		{"consume exclusive", 0, "", func(t testing.TB, url string) (int, string) {
			return refusal(t, url, func(ch *amqp.Channel) error {
				_ = ch.Qos(10, 0, false)
				_, err := ch.Consume("s1", "", false, true, false, false, nil)
				return err
			})
		}},
		{"basic.get", 540, "NOT_IMPLEMENTED - basic.get not supported by stream queues queue 's1' " + in, func(t testing.TB, url string) (int, string) {
			return refusal(t, url, func(ch *amqp.Channel) error { _, _, err := ch.Get("s1", false); return err })
		}},
		{"purge", 540, "NOT_IMPLEMENTED - queue.purge not supported by stream queues queue 's1' " + in, func(t testing.TB, url string) (int, string) {
			return refusal(t, url, func(ch *amqp.Channel) error { _, err := ch.QueuePurge("s1", false); return err })
		}},
		{"quorum non-durable", 406, pf + "invalid property 'non-durable' for queue 'x2' " + in, decl("x2", false, false, false, Q)},
		{"quorum exclusive", 406, pf + "invalid property 'exclusive-owner' for queue 'x2' " + in, decl("x2", true, false, true, Q)},
		{"quorum auto-delete", 406, pf + "invalid property 'auto-delete' for queue 'x2' " + in, decl("x2", true, true, false, Q)},
		{"bad queue type", 406, pf + "invalid arg 'x-queue-type' for queue 'x2' " + in + ": \"unsupported queue type 'foo'\"", decl("x2", true, false, false, amqp.Table{"x-queue-type": "foo"})},
	}
	for _, k := range []string{"x-max-priority", "x-queue-mode", "x-queue-master-locator", "x-max-age", "x-stream-max-segment-size-bytes", "x-queue-version"} {
		var v any = int32(3)
		switch k {
		case "x-queue-mode":
			v = "lazy"
		case "x-queue-master-locator":
			v = "client-local"
		case "x-max-age":
			v = "1h"
		}
		cases = append(cases, refusalCase{"quorum " + k, 406, pf + "invalid arg '" + k + "' for queue 'x2' " + in + " of queue type rabbit_quorum_queue",
			decl("x2", true, false, false, amqp.Table{"x-queue-type": "quorum", k: v})})
	}
	return cases
}

// TestStreamSurvivesKill9: every confirmed message of a stream, persistent
// or not, is there after the broker process is killed with SIGKILL right
// after the last confirm (records are written before the confirm; the OS
// keeps them when the process dies).
func TestStreamSurvivesKill9(t *testing.T) {
	dir := t.TempDir()
	cmd, url := startChild(t, dir)
	c := dialChild(t, cmd, url)
	ch, err := c.Channel()
	if err != nil {
		kill9(t, cmd)
		t.Fatal(err)
	}
	args := amqp.Table{"x-queue-type": "stream", "x-stream-max-segment-size-bytes": int64(4096)}
	if _, err := ch.QueueDeclare("k9", true, false, false, false, args); err != nil {
		kill9(t, cmd)
		t.Fatal(err)
	}
	const n = 500
	_ = ch.Confirm(false)
	confirms := ch.NotifyPublish(make(chan amqp.Confirmation, n))
	for i := range n {
		mode := amqp.Transient
		if i%2 == 0 {
			mode = amqp.Persistent
		}
		if err := ch.PublishWithContext(context.Background(), "", "k9", false, false, amqp.Publishing{DeliveryMode: mode, Body: []byte(strconv.Itoa(i))}); err != nil {
			kill9(t, cmd)
			t.Fatal(err)
		}
	}
	for i := range n {
		select {
		case cf := <-confirms:
			if !cf.Ack {
				kill9(t, cmd)
				t.Fatalf("nack for %d", cf.DeliveryTag)
			}
		case <-time.After(20 * time.Second):
			kill9(t, cmd)
			t.Fatalf("confirm %d missing", i)
		}
	}
	kill9(t, cmd)
	_ = c.Close()

	cmd, url = startChild(t, dir)
	defer kill9(t, cmd)
	c2 := dialChild(t, cmd, url)
	defer c2.Close()
	if _, err := openCh(t, c2).QueueDeclare("k9", true, false, false, false, args); err != nil {
		t.Fatal(err)
	}
	streamPublish(t, openCh(t, c2), "k9", "after")
	_, d := streamConsume(t, c2, "k9", 100, "first")
	got := takeStream(t, d, 500*time.Millisecond)
	if len(got) != n+1 || got[n] != fmt.Sprintf("after@%d", n) {
		t.Fatalf("after SIGKILL: %d records, last %q", len(got), got[len(got)-1:])
	}
	for i := range n {
		if want := fmt.Sprintf("%d@%d", i, i); got[i] != want {
			t.Fatalf("record %d: %q, want %q", i, got[i], want)
		}
	}
}

// TestStreamRecoveryCutsTornRecord: a record cut short at the end of a
// segment (a crash in the middle of a write) is dropped when the stream is
// opened, and the next record takes its offset.
func TestStreamRecoveryCutsTornRecord(t *testing.T) {
	dir := t.TempDir()
	opts := func(o *Options) { o.DataDir = dir }
	s, url := startBroker(t, opts)
	c := dial(t, url)
	declareStream(t, openCh(t, c), "torn", nil)
	streamPublish(t, openCh(t, c), "torn", "a", "b", "c")
	q := streamOf(t, s, "/", "torn")
	q.mu.Lock()
	seg := q.stream.segs[len(q.stream.segs)-1].path
	q.mu.Unlock()
	_ = c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := s.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}
	// Half of a fourth record: its length says 40 bytes, 10 follow.
	f, err := os.OpenFile(seg, os.O_WRONLY|os.O_APPEND, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.Write([]byte{0, 0, 0, 40, 1, 2, 3, 4, 5, 6}); err != nil {
		t.Fatal(err)
	}
	_ = f.Close()
	_, url = startBroker(t, opts)
	c = dial(t, url)
	declareStream(t, openCh(t, c), "torn", nil)
	streamPublish(t, openCh(t, c), "torn", "d")
	_, d := streamConsume(t, c, "torn", 10, "first")
	if got := takeStream(t, d, 300*time.Millisecond); !eq(got, []string{"a@0", "b@1", "c@2", "d@3"}) {
		t.Fatalf("after a torn record: %v", got)
	}
}

// TestStreamHoldsTwoDescriptors: only the segment being written is open for
// writing, and older segments are read through one cached handle.
func TestStreamHoldsTwoDescriptors(t *testing.T) {
	s, url := startBroker(t, func(o *Options) { o.DataDir = t.TempDir() })
	c := dial(t, url)
	ch := openCh(t, c)
	declareStream(t, ch, "fds", amqp.Table{"x-stream-max-segment-size-bytes": int64(300)})
	bodies := make([]string, 60)
	for i := range bodies {
		bodies[i] = fmt.Sprintf("%0100d", i)
	}
	streamPublish(t, ch, "fds", bodies...)
	_, d := streamConsume(t, c, "fds", 100, "first")
	if got := takeStream(t, d, 300*time.Millisecond); len(got) != 60 {
		t.Fatalf("read back %d of 60", len(got))
	}
	q := streamOf(t, s, "/", "fds")
	q.mu.Lock()
	defer q.mu.Unlock()
	open := 0
	for _, sg := range q.stream.segs {
		if sg.f != nil {
			open++
		}
	}
	if len(q.stream.segs) < 20 || open != 1 || q.stream.rf == nil {
		t.Fatalf("%d segments, %d open for writing, read handle %v", len(q.stream.segs), open, q.stream.rf != nil)
	}
}

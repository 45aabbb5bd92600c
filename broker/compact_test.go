package broker

import (
	"context"
	"fmt"
	"path/filepath"
	"strings"
	"testing"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"
)

// startDurable starts a broker on dir with small log segments; stop shuts
// it down (once; later calls do nothing).
func startDurable(t *testing.T, dir string) (url string, stop func()) {
	t.Helper()
	opts := DefaultOptions()
	opts.AMQPAddr = "127.0.0.1:0"
	opts.DataDir = dir
	opts.segmentLimit = 16 << 10
	s, err := New(opts)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Start(); err != nil {
		t.Fatal(err)
	}
	done := false
	stop = func() {
		if done {
			return
		}
		done = true
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := s.Shutdown(ctx); err != nil {
			t.Errorf("shutdown: %v", err)
		}
	}
	t.Cleanup(stop)
	return fmt.Sprintf("amqp://guest:guest@%s/", s.Addr()), stop
}

func segmentFiles(t *testing.T, dir string) int {
	t.Helper()
	files, err := filepath.Glob(filepath.Join(dir, "msgs", "*.seg"))
	if err != nil {
		t.Fatal(err)
	}
	return len(files)
}

// withDurable runs f against a broker started on dir (one connection, one
// channel), then stops the broker.
func withDurable(t *testing.T, dir string, f func(c *amqp.Connection, ch *amqp.Channel)) {
	t.Helper()
	url, stop := startDurable(t, dir)
	defer stop()
	c, err := amqp.Dial(url)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	f(c, openCh(t, c))
}

// declareDurable declares durable queues and puts ch in confirm mode.
func declareDurable(t *testing.T, ch *amqp.Channel, queues ...string) {
	t.Helper()
	for _, q := range queues {
		if _, err := ch.QueueDeclare(q, true, false, false, false, nil); err != nil {
			t.Fatal(err)
		}
	}
	if err := ch.Confirm(false); err != nil {
		t.Fatal(err)
	}
}

// publishConfirmed publishes persistent messages to queue through the
// default exchange and waits for every confirm.
func publishConfirmed(t *testing.T, ch *amqp.Channel, queue string, bodies ...string) {
	t.Helper()
	for _, b := range bodies {
		dc, err := ch.PublishWithDeferredConfirm("", queue, false, false, amqp.Publishing{DeliveryMode: amqp.Persistent, Body: []byte(b)})
		if err != nil {
			t.Fatal(err)
		}
		if ok, err := dc.WaitContext(context.Background()); err != nil || !ok {
			t.Fatalf("publish %q not confirmed: %v", b, err)
		}
	}
}

// drainBodies consumes every message of queue, acking each, and returns
// their bodies in order.
func drainBodies(t *testing.T, ch *amqp.Channel, queue string) []string {
	t.Helper()
	return getAll(t, ch, queue, true)
}

// listBodies returns the bodies queued in queue, in order, leaving them
// there: it takes them unacknowledged on a channel of its own and closes it.
func listBodies(t *testing.T, c *amqp.Connection, queue string) []string {
	t.Helper()
	ch := openCh(t, c)
	defer ch.Close()
	return getAll(t, ch, queue, false)
}

func getAll(t *testing.T, ch *amqp.Channel, queue string, ack bool) []string {
	t.Helper()
	var out []string
	for {
		m, ok, err := ch.Get(queue, false)
		if err != nil {
			t.Fatal(err)
		}
		if !ok {
			return out
		}
		out = append(out, string(m.Body))
		if ack {
			if err := m.Ack(false); err != nil {
				t.Fatal(err)
			}
		}
	}
}

// TestCompactionBoundsTheLog: a few persistent messages nobody consumes
// sit in the oldest segments while many others pass through. Without
// compaction they would keep every later segment on disk; with it the log
// stays a few segments long, and restarts (twice, so records copied
// forward are themselves recovered and kept) bring back exactly the
// unconsumed messages, in order, and none of the consumed ones.
func TestCompactionBoundsTheLog(t *testing.T) {
	dir := t.TempDir()
	withDurable(t, dir, func(_ *amqp.Connection, ch *amqp.Channel) {
		declareDurable(t, ch, "stuck", "flow")
		pad := string(make([]byte, 200))
		for round := 1; round <= 3; round++ {
			publishConfirmed(t, ch, "stuck", fmt.Sprintf("stuck-%d", round))
			var flow []string
			for i := 0; i < 300; i++ {
				flow = append(flow, fmt.Sprintf("flow-%d-%d%s", round, i, pad))
			}
			publishConfirmed(t, ch, "flow", flow...)
			if got := drainBodies(t, ch, "flow"); len(got) != len(flow) {
				t.Fatalf("round %d: consumed %d of %d", round, len(got), len(flow))
			}
		}
		// About 270 KB went through 16 KB segments; compaction runs in the
		// background after the syncs.
		deadline := time.Now().Add(10 * time.Second)
		for segmentFiles(t, dir) > 3 {
			if time.Now().After(deadline) {
				t.Fatalf("%d segments on disk for 3 live messages", segmentFiles(t, dir))
			}
			publishConfirmed(t, ch, "flow", "nudge")
			drainBodies(t, ch, "flow")
			time.Sleep(20 * time.Millisecond)
		}
	})
	for restart := 1; restart <= 2; restart++ {
		withDurable(t, dir, func(c *amqp.Connection, ch *amqp.Channel) {
			if got := drainBodies(t, ch, "flow"); len(got) != 0 {
				t.Fatalf("restart %d: %d consumed messages came back", restart, len(got))
			}
			if got := listBodies(t, c, "stuck"); fmt.Sprint(got) != "[stuck-1 stuck-2 stuck-3]" {
				t.Fatalf("restart %d: stuck queue holds %q", restart, got)
			}
		})
	}
	// Once consumed, they are gone for good.
	for i, want := range []int{3, 0} {
		withDurable(t, dir, func(_ *amqp.Connection, ch *amqp.Channel) {
			if got := drainBodies(t, ch, "stuck"); len(got) != want {
				t.Fatalf("start %d: consumed %q, want %d messages", i, got, want)
			}
		})
	}
}

// TestRecoveryKeepsDeadMiddleSegments: a segment whose enqueues are all
// consumed still holds the removes of messages in older segments; recovery
// must not delete it while an older segment lives, or a second restart
// brings those messages back.
func TestRecoveryKeepsDeadMiddleSegments(t *testing.T) {
	dir := t.TempDir()
	var want []string
	withDurable(t, dir, func(c *amqp.Connection, ch *amqp.Channel) {
		declareDurable(t, ch, "q", "filler")
		// Segment 1 (16 KB): 16 messages to keep, 30 to consume, and the
		// first fillers; 16 of about 53 records stay live, above the share
		// that triggers compaction, so segment 1 stays as it is.
		pad := string(make([]byte, 200))
		var batch []string
		for i := 0; i < 16; i++ {
			want = append(want, fmt.Sprintf("keep-%02d", i))
		}
		batch = append(batch, want...)
		for i := 0; i < 30; i++ {
			batch = append(batch, fmt.Sprintf("old-%02d%s", i, pad))
		}
		publishConfirmed(t, ch, "q", batch...)
		var fill []string
		for i := 0; i < 40; i++ {
			fill = append(fill, fmt.Sprintf("fill-%02d%s", i, string(make([]byte, 1000))))
		}
		publishConfirmed(t, ch, "filler", fill...)
		// The removes of the 30 and of every filler go to segment 2, which
		// ends up with no live enqueue.
		get := openCh(t, c)
		for i := 0; i < len(batch); i++ {
			m, ok, err := get.Get("q", false)
			if err != nil || !ok {
				t.Fatalf("get %d: %v %v", i, ok, err)
			}
			if len(m.Body) > 8 { // an old-* message
				if err := m.Ack(false); err != nil {
					t.Fatal(err)
				}
			}
		}
		drainBodies(t, ch, "filler")
		// A synchronous call after the acks: they reached the broker.
		if _, err := get.QueueDeclarePassive("q", true, false, false, false, nil); err != nil {
			t.Fatal(err)
		}
		// Closing the connection puts the 16 unacknowledged back.
	})
	if n := segmentFiles(t, dir); n < 2 {
		t.Fatalf("%d segments: the test needs the removes in a later segment", n)
	}
	for restart := 1; restart <= 2; restart++ {
		withDurable(t, dir, func(c *amqp.Connection, _ *amqp.Channel) {
			if got := listBodies(t, c, "q"); fmt.Sprint(got) != fmt.Sprint(want) {
				t.Fatalf("restart %d: queue holds %d messages, want the 16 kept", restart, len(got))
			}
		})
	}
}

// TestCompactionSurvivesKill9 kills the broker with SIGKILL while traffic
// keeps compaction busy copying a long-lived message forward through 16 KB
// segments: after the restart that message is there exactly once, and so
// is every confirmed message not yet acknowledged.
func TestCompactionSurvivesKill9(t *testing.T) {
	dir := t.TempDir()
	t.Setenv(childSegmentEnv, "16384")
	cmd, url := startChild(t, dir)
	c := dialChild(t, cmd, url)
	ch, err := c.Channel()
	if err == nil {
		err = ch.Confirm(false)
	}
	for _, q := range []string{"stuck", "flow"} {
		if err == nil {
			_, err = ch.QueueDeclare(q, true, false, false, false, nil)
		}
	}
	if err != nil {
		kill9(t, cmd)
		t.Fatal(err)
	}
	publishConfirmed(t, ch, "stuck", "stuck-1")
	pad := strings.Repeat("x", 300)
	unacked := map[string]bool{}
	// Traffic runs 1.5 s, then on (20 s at most) until compaction has
	// caught up with it: on a loaded machine it lags, and the check below
	// is about compaction working, not about its speed. The kill comes
	// with traffic still running either way.
	maxSegments := func() int { return len(unacked)*(len(pad)+20)/(16<<10) + 4 }
	stop, giveUp := time.Now().Add(1500*time.Millisecond), time.Now().Add(20*time.Second)
	for round := 0; time.Now().Before(stop) || (segmentFiles(t, dir) > maxSegments() && time.Now().Before(giveUp)); round++ {
		var batch []string
		for i := 0; i < 40; i++ {
			batch = append(batch, fmt.Sprintf("flow-%d-%d-%s", round, i, pad))
		}
		publishConfirmed(t, ch, "flow", batch...)
		for _, b := range batch {
			unacked[b] = true
		}
		// Consume 30 of the 40: the queue keeps a small backlog.
		for i := 0; i < 30; i++ {
			m, ok, err := ch.Get("flow", false)
			if err != nil || !ok {
				kill9(t, cmd)
				t.Fatalf("get: %v %v", ok, err)
			}
			if err := m.Ack(false); err != nil {
				kill9(t, cmd)
				t.Fatal(err)
			}
			delete(unacked, string(m.Body))
		}
	}
	kill9(t, cmd)
	_ = c.Close()
	// Compaction was at work: without it the stuck message keeps every
	// segment written since (all the traffic) on disk.
	if n := segmentFiles(t, dir); n > maxSegments() {
		t.Fatalf("%d segments on disk for a backlog of %d bytes", n, len(unacked)*(len(pad)+20))
	}

	cmd, url = startChild(t, dir)
	defer kill9(t, cmd)
	c2, err := amqp.Dial(url)
	if err != nil {
		t.Fatal(err)
	}
	defer c2.Close()
	if got := listBodies(t, c2, "stuck"); fmt.Sprint(got) != "[stuck-1]" {
		t.Fatalf("stuck queue holds %q", got)
	}
	got := map[string]bool{}
	for _, b := range listBodies(t, c2, "flow") {
		if got[b] {
			t.Fatalf("%.12q... recovered twice", b)
		}
		got[b] = true
	}
	for b := range unacked {
		if !got[b] {
			t.Fatalf("confirmed, unacknowledged %.12q... lost (%d recovered, %d expected at least)", b, len(got), len(unacked))
		}
	}
	t.Logf("%d unacknowledged messages expected, %d recovered", len(unacked), len(got))
}

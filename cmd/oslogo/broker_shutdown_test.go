package main

import (
	"context"
	"regexp"
	"sync"
	"testing"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"
)

// stuckOutput is a stderr that takes 64 KiB and then blocks, as a pipe
// that no one reads, until released.
type stuckOutput struct {
	mu       sync.Mutex
	n        int
	released chan struct{}
}

func (s *stuckOutput) Write(p []byte) (int, error) {
	s.mu.Lock()
	s.n += len(p)
	full := s.n > 64<<10
	s.mu.Unlock()
	if full {
		<-s.released
	}
	return len(p), nil
}

// TestBrokerCommandStopsWithManyConnections: `oslogo broker` with 2,000
// idle client connections and a stderr no one reads stops promptly when
// told to (SIGTERM cancels the context), each client seeing the broker's
// connection.close.
func TestBrokerCommandStopsWithManyConnections(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var out syncBuffer
	stderr := &stuckOutput{released: make(chan struct{})}
	var release sync.Once
	defer release.Do(func() { close(stderr.released) })
	done := make(chan int, 1)
	go func() {
		done <- runMain(ctx, &cmdEnv{stdout: &out, stderr: stderr}, []string{"broker", "--amqp", "127.0.0.1:0"})
	}()
	waitOutput(t, &out, "listening on amqp://")
	url := "amqp://guest:guest@" + regexp.MustCompile(`amqp://(\S+)`).FindStringSubmatch(out.String())[1] + "/"
	const n = 2000
	// amqp091-go closes a NotifyClose channel after its one send: one each.
	closed := make([]chan *amqp.Error, 0, n)
	conns := make([]*amqp.Connection, 0, n)
	defer func() {
		for _, c := range conns {
			_ = c.Close()
		}
	}()
	for range n {
		c, err := amqp.Dial(url)
		if err != nil {
			cancel()
			<-done
			t.Fatal(err)
		}
		closed = append(closed, c.NotifyClose(make(chan *amqp.Error, 1)))
		conns = append(conns, c)
	}
	cancel()
	select {
	case code := <-done:
		if code != 0 {
			t.Fatalf("broker exited %d", code)
		}
	case <-time.After(30 * time.Second):
		release.Do(func() { close(stderr.released) })
		<-done
		t.Fatal("broker still running 30 s after it was told to stop")
	}
	for i, ch := range closed {
		select {
		case e := <-ch:
			if e == nil || e.Code != amqp.ConnectionForced {
				t.Fatalf("client %d closed with %v, want 320 CONNECTION_FORCED", i, e)
			}
		case <-time.After(10 * time.Second):
			t.Fatalf("client %d of %d did not see the close", i, n)
		}
	}
}

package rabbit

import (
	"context"
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/oslogo/oslogo/driver"
)

// TestSendSlotBacksOff: while the broker refuses every connection, a send
// slot dials once per backoff interval however many publishers need it,
// instead of once per publish (measured before: 5 attempts per connection
// per second from 30 sends a second).
func TestSendSlotBacksOff(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var accepted atomic.Int64
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			accepted.Add(1)
			_ = c.Close() // the AMQP handshake fails at once
		}
	}()
	defer func() { _ = ln.Close(); <-done }()

	d, err := OpenString("rabbit://guest:guest@"+ln.Addr().String()+"/", driver.Options{Config: map[string]string{
		"rabbit_retry_interval": "1", "rabbit_retry_backoff": "2", "kombu_reconnect_delay": "0"}})
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	const publishers, window = 16, 3 * time.Second
	ctx, cancel := context.WithTimeout(context.Background(), window)
	defer cancel()
	var wg sync.WaitGroup
	var sends atomic.Int64
	for range publishers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for ctx.Err() == nil {
				sends.Add(1)
				_ = d.Cast(ctx, driver.Target{Exchange: "x", Topic: "t"}, &driver.Request{Method: "m"}, driver.SendOptions{Retry: 0})
			}
		}()
	}
	wg.Wait()
	// Backoff 1 s, then 3 s: at most two dials per slot in 3 s, and one
	// more for a dial that raced the window's end.
	limit := int64(len(d.pool.senders)) * 3
	t.Logf("%d sends, %d connection attempts, %d send slots", sends.Load(), accepted.Load(), len(d.pool.senders))
	if n := accepted.Load(); n > limit {
		t.Fatalf("%d connection attempts in %v from %d send slots, want at most %d", n, window, len(d.pool.senders), limit)
	}
	if accepted.Load() == 0 {
		t.Fatal("no connection attempt at all")
	}
}

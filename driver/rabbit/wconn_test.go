package rabbit

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// TestCoalescingConn: concurrent writes arrive whole, each writer's in its
// order, and a write after the peer went away fails.
func TestCoalescingConn(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	c, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	peer, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	w := newCoalescingConn(c)
	defer w.Close()
	const writers, each = 8, 2000
	var wg sync.WaitGroup
	for g := range writers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range each {
				if _, err := fmt.Fprintf(w, "%d %d %s\n", g, i, strings.Repeat("x", i%97)); err != nil {
					t.Error(err)
					return
				}
			}
		}()
	}
	next := make([]int, writers)
	sc := bufio.NewScanner(peer)
	for n := 0; n < writers*each && sc.Scan(); n++ {
		var g, i int
		var pad string
		if _, err := fmt.Sscanf(sc.Text(), "%d %d %s", &g, &i, &pad); err != nil && i%97 != 0 {
			t.Fatalf("line %q: %v", sc.Text(), err)
		}
		if g < 0 || g >= writers || i != next[g] || len(pad) != i%97 {
			t.Fatalf("line %q out of order or torn (want writer %d at %d)", sc.Text(), g, next[max(0, min(g, writers-1))])
		}
		next[g]++
	}
	wg.Wait()
	for g, n := range next {
		if n != each {
			t.Fatalf("writer %d: %d lines arrived, want %d", g, n, each)
		}
	}
	_ = peer.Close()
	var werr error
	for i := 0; i < 1e6 && werr == nil; i++ {
		_, werr = w.Write([]byte("after close\n"))
	}
	if werr == nil {
		t.Fatal("writes after the peer closed never failed")
	}
}

// TestCoalescingConnBackpressure: when the peer stops reading, writers are
// held back once maxPending bytes are queued (instead of queueing without
// bound), and Close releases them with an error.
func TestCoalescingConnBackpressure(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	c, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	peer, err := ln.Accept() // never read
	if err != nil {
		t.Fatal(err)
	}
	defer peer.Close()
	w := newCoalescingConn(c)
	var total atomic.Int64
	done := make(chan error, 1)
	go func() {
		chunk := make([]byte, 1<<20)
		for {
			if _, err := w.Write(chunk); err != nil {
				done <- err
				return
			}
			total.Add(int64(len(chunk)))
		}
	}()
	// Without the bound the writer passes 256 MB within milliseconds;
	// with it, it stops at the queue plus what the sockets hold.
	deadline := time.Now().Add(2 * time.Second)
	for time.Now().Before(deadline) {
		if n := total.Load(); n > 256<<20 {
			t.Fatalf("%d MB queued for a peer that does not read", n>>20)
		}
		time.Sleep(10 * time.Millisecond) // polling
	}
	_ = w.Close()
	if err := <-done; err == nil {
		t.Fatal("a writer held back got no error at Close")
	}
}

// TestCoalescingConnAdmit: admit lets a publish through at once on a
// healthy connection; while the broker blocks the connection, or while
// maxPending bytes wait for a peer that stopped reading, it waits with its
// context and then says which; unblocking, stop and Close end the wait.
func TestCoalescingConnAdmit(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	c, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	peer, err := ln.Accept() // never read
	if err != nil {
		t.Fatal(err)
	}
	defer peer.Close()
	// Small socket buffers: the kernel soon stops taking bytes.
	_ = c.(*net.TCPConn).SetWriteBuffer(64 << 10)
	_ = peer.(*net.TCPConn).SetReadBuffer(64 << 10)
	w := newCoalescingConn(c)
	stop := make(chan struct{})
	if err := w.admit(context.Background(), stop); err != nil {
		t.Fatalf("healthy connection: %v", err)
	}

	w.setBlocked(true, "low on memory")
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	err = w.admit(ctx, stop)
	cancel()
	if ctx.Err() == nil || err == nil || !strings.Contains(err.Error(), "blocking publishes") || !strings.Contains(err.Error(), "low on memory") {
		t.Fatalf("blocked: %v (context %v), want a wait to the deadline naming the block", err, ctx.Err())
	}
	released := make(chan error, 1)
	go func() { released <- w.admit(context.Background(), stop) }()
	w.setBlocked(false, "")
	if err := <-released; err != nil {
		t.Fatalf("unblocked: %v", err)
	}

	chunk := make([]byte, 1<<20)
	for w.unsent() < maxPending+2<<20 {
		if _, err := w.Write(chunk); err != nil {
			t.Fatal(err)
		}
	}
	ctx, cancel = context.WithTimeout(context.Background(), 100*time.Millisecond)
	err = w.admit(ctx, stop)
	cancel()
	if ctx.Err() == nil || err == nil || !strings.Contains(err.Error(), "not reading") {
		t.Fatalf("%d bytes unwritten: %v (context %v), want a wait to the deadline", w.unsent(), err, ctx.Err())
	}
	go func() { released <- w.admit(context.Background(), stop) }()
	close(stop)
	if err := <-released; !errors.Is(err, errStopped) {
		t.Fatalf("stopped: %v", err)
	}
	go func() { released <- w.admit(context.Background(), make(chan struct{})) }()
	_ = w.Close()
	if err := <-released; err == nil {
		t.Fatal("a publish admitted after Close")
	}
}

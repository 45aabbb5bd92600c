package rabbit

import (
	"bufio"
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

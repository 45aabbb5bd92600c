package faultproxy

import (
	"bufio"
	"errors"
	"io"
	"net"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"
)

// echoServer echoes every line back until it is closed.
func echoServer(t *testing.T) (addr string, stop func()) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	var mu sync.Mutex
	var conns []net.Conn
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns = append(conns, c)
			mu.Unlock()
			wg.Add(1)
			go func() {
				defer wg.Done()
				_, _ = io.Copy(c, c)
				_ = c.Close()
			}()
		}
	}()
	return ln.Addr().String(), func() {
		_ = ln.Close()
		mu.Lock()
		for _, c := range conns {
			_ = c.Close()
		}
		mu.Unlock()
		wg.Wait()
	}
}

func roundTrip(c net.Conn, r *bufio.Reader, timeout time.Duration) (string, error) {
	_ = c.SetDeadline(time.Now().Add(timeout))
	if _, err := c.Write([]byte("ping\n")); err != nil {
		return "", err
	}
	return r.ReadString('\n')
}

func TestFaults(t *testing.T) {
	defer goleak.VerifyNone(t)
	addr, stop := echoServer(t)
	defer stop()
	p, err := New(addr)
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()

	c, err := net.Dial("tcp", p.Addr())
	if err != nil {
		t.Fatal(err)
	}
	r := bufio.NewReader(c)
	if got, err := roundTrip(c, r, 5*time.Second); err != nil || got != "ping\n" {
		t.Fatalf("forward: %q %v", got, err)
	}

	// Delay: the echo comes back, no sooner than twice the delay.
	p.SetDelay(100 * time.Millisecond)
	start := time.Now()
	if got, err := roundTrip(c, r, 5*time.Second); err != nil || got != "ping\n" {
		t.Fatalf("delay: %q %v", got, err)
	}
	if el := time.Since(start); el < 200*time.Millisecond {
		t.Fatalf("delayed round trip took %v, want >= 200ms", el)
	}
	p.SetDelay(0)

	// Drop: nothing comes back, the socket stays open.
	p.SetMode(Drop)
	if got, err := roundTrip(c, r, 300*time.Millisecond); !isTimeout(err) {
		t.Fatalf("drop: got %q %v, want a timeout", got, err)
	}
	p.SetMode(Forward)
	// What was dropped is gone; the stream goes on.
	if got, err := roundTrip(c, r, 5*time.Second); err != nil || got != "ping\n" {
		t.Fatalf("after drop: %q %v", got, err)
	}

	// Reset: the client sees its connection broken.
	p.Reset()
	_ = c.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := r.ReadString('\n'); err == nil || isTimeout(err) {
		t.Fatalf("reset: read err %v, want a broken connection", err)
	}
	_ = c.Close()

	// Half-open: the client's socket stays open and silent; the proxy
	// records when the client finally closes it.
	c2, err := net.Dial("tcp", p.Addr())
	if err != nil {
		t.Fatal(err)
	}
	r2 := bufio.NewReader(c2)
	if _, err := roundTrip(c2, r2, 5*time.Second); err != nil {
		t.Fatal(err)
	}
	p.HalfOpen()
	if got, err := roundTrip(c2, r2, 300*time.Millisecond); !isTimeout(err) {
		t.Fatalf("half-open: got %q %v, want a timeout", got, err)
	}
	_ = c2.Close()
	deadline := time.Now().Add(5 * time.Second)
	for p.Open() > 0 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	// Refuse: a new connection is reset at once.
	p.SetMode(Refuse)
	c3, err := net.Dial("tcp", p.Addr())
	if err == nil {
		_ = c3.SetDeadline(time.Now().Add(5 * time.Second))
		if _, err := c3.Read(make([]byte, 1)); err == nil || isTimeout(err) {
			t.Fatalf("refuse: read err %v, want a reset", err)
		}
		_ = c3.Close()
	}
	p.SetMode(Forward)
	hist := p.Conns()
	if len(hist) != 3 {
		t.Fatalf("%d connections recorded, want 3", len(hist))
	}
	if !hist[0].ClientClosed.IsZero() {
		t.Fatal("a reset by the proxy was recorded as a client close")
	}
	if hist[1].ClientClosed.IsZero() {
		t.Fatal("the client's close of a half-open connection was not recorded")
	}
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

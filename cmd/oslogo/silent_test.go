package main

import (
	"context"
	"net"
	"strings"
	"sync"
	"testing"
	"time"
)

// TestCallSilentHost: `oslogo call --timeout 2s` to a host that accepts
// TCP and never answers exits with MessagingTimeout at its timeout, status
// 3 (it never connected), instead of hanging in the AMQP handshake (connect_timeout is 5 s, so
// closing the transport must interrupt the dial).
func TestCallSilentHost(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	var held []net.Conn
	accepted := make(chan struct{})
	go func() {
		defer close(accepted)
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			held = append(held, c)
			mu.Unlock()
		}
	}()
	silence := sync.OnceFunc(func() {
		_ = ln.Close()
		<-accepted
		mu.Lock()
		defer mu.Unlock()
		for _, c := range held {
			_ = c.Close()
		}
	})
	defer silence()

	var out, errb syncBuffer
	done := make(chan int, 1)
	start := time.Now()
	go func() {
		done <- runMain(context.Background(), &cmdEnv{stdout: &out, stderr: &errb},
			[]string{"call", "--url", "rabbit://guest:guest@" + ln.Addr().String() + "/", "--topic", "T", "--timeout", "2s", "add"})
	}()
	var code int
	select {
	case code = <-done:
	case <-time.After(30 * time.Second):
		silence() // ends the handshake the command hangs in
		<-done
		t.Fatal("oslogo call --timeout 2s to a silent host still running after 30s")
	}
	took := time.Since(start)
	t.Logf("exit %d after %s: %s", code, took.Round(time.Millisecond), strings.TrimSpace(errb.String()))
	if code != exitUnreachable || !strings.Contains(errb.String(), "MessagingTimeout") || !strings.Contains(errb.String(), "cannot connect") || strings.Count(errb.String(), "\n") != 1 {
		t.Fatalf("exit %d, stderr %q: want status 3 and one line: MessagingTimeout, cannot connect", code, errb.String())
	}
	if took < 2*time.Second {
		t.Fatalf("exited after %s, before its timeout", took)
	}
}

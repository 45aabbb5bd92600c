package rabbit

import (
	"context"
	"encoding/json"
	"errors"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/oslogo/oslogo/broker"
	"github.com/oslogo/oslogo/driver"
)

// silentHost is a TCP listener that accepts connections and never says a
// word: a host whose broker hangs before the AMQP handshake.
type silentHost struct {
	ln       net.Listener
	accepted atomic.Int32
	mu       sync.Mutex
	conns    []net.Conn
	done     chan struct{}
	once     sync.Once
}

// newSilentHost listens on a free loopback port until the test ends; its
// cleanup closes the held connections, which also frees a dial that no
// deadline ended (the failure this file tests for).
func newSilentHost(t *testing.T) *silentHost {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := &silentHost{ln: ln, done: make(chan struct{})}
	go func() {
		defer close(s.done)
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			s.accepted.Add(1)
			s.mu.Lock()
			s.conns = append(s.conns, c)
			s.mu.Unlock()
		}
	}()
	t.Cleanup(s.close)
	return s
}

func (s *silentHost) addr() string { return s.ln.Addr().String() }

func (s *silentHost) close() {
	s.once.Do(func() {
		_ = s.ln.Close()
		<-s.done
		s.mu.Lock()
		defer s.mu.Unlock()
		for _, c := range s.conns {
			_ = c.Close()
		}
	})
}

// startEmbedded starts oslogo's broker on a free loopback port; it returns
// the address and the (idempotent) shutdown, which also runs as a cleanup.
func startEmbedded(t *testing.T, watermark int64) (string, func()) {
	t.Helper()
	opts := broker.DefaultOptions()
	opts.AMQPAddr = "127.0.0.1:0"
	opts.MemoryHighWatermark = watermark
	// No paging: the tests fill memory to raise the alarm.
	opts.QueueMemoryLimit = -1
	b, err := broker.New(opts)
	if err != nil {
		t.Fatal(err)
	}
	if err := b.Start(); err != nil {
		t.Fatal(err)
	}
	if !b.ReadyForConnections(10 * time.Second) {
		t.Fatal("embedded broker not ready")
	}
	stop := sync.OnceFunc(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := b.Shutdown(ctx); err != nil {
			t.Errorf("broker shutdown: %v", err)
		}
	})
	t.Cleanup(stop)
	return b.Addr().String(), stop
}

// openHosts opens a driver on hosts, tried in this order (the driver
// shuffles a URL's hosts; the test fixes the order).
func openHosts(t *testing.T, cfg map[string]string, hosts ...string) *Driver {
	t.Helper()
	raw := "rabbit://"
	for i, h := range hosts {
		if i > 0 {
			raw += ","
		}
		raw += "guest:guest@" + h
	}
	d, err := OpenString(raw+"/", driver.Options{Config: cfg})
	if err != nil {
		t.Fatal(err)
	}
	for i, h := range hosts {
		d.dialer.hosts[i] = Host{Username: "guest", Password: "guest", Addr: h}
	}
	return d
}

// closeWithin closes d and fails the test if that takes longer than
// limit (a hang, not a slow machine); free then ends what Close waits for
// (the peer), so the test can finish.
func closeWithin(t *testing.T, d *Driver, limit time.Duration, free func()) {
	t.Helper()
	done := make(chan struct{})
	start := time.Now()
	go func() { _ = d.Close(); close(done) }()
	select {
	case <-done:
		t.Logf("Close took %s", time.Since(start).Round(time.Millisecond))
	case <-time.After(limit):
		t.Errorf("Close still running after %s", limit)
		free()
		<-done
	}
}

// TestSilentHostFailover: with a host that accepts TCP and never answers
// first in the URL, every connection (the RPC server's, the reply
// queue's, the send connection's) gives up on it after connect_timeout
// and fails over to the healthy second host: calls and casts succeed.
func TestSilentHostFailover(t *testing.T) {
	silent := newSilentHost(t)
	healthy, _ := startEmbedded(t, 0)
	cfg := map[string]string{"connect_timeout": "1", "kombu_reconnect_delay": "0"}
	srv := openHosts(t, cfg, silent.addr(), healthy)
	defer closeWithin(t, srv, 30*time.Second, silent.close)
	cli := openHosts(t, cfg, silent.addr(), healthy)
	defer closeWithin(t, cli, 30*time.Second, silent.close)
	// Without a handshake deadline every dial hangs on the silent host: free
	// them eventually, so that the test fails instead of hanging.
	watchdog := time.AfterFunc(40*time.Second, silent.close)
	defer watchdog.Stop()
	start := time.Now()

	topic := uniqueTopic(t)
	target := driver.Target{Exchange: "oslogo_x", Topic: topic}
	l, err := srv.Listen(ctxT(t, 20*time.Second), driver.Target{Exchange: "oslogo_x", Topic: topic, Server: "s1"})
	if err != nil {
		t.Fatal(err)
	}
	wg := serve(t, l, echoHandler)
	defer func() { _ = l.Close(); wg.Wait() }()

	ctx := ctxT(t, 20*time.Second)
	rep, err := cli.Call(ctx, target, &driver.Request{Method: "echo", Args: json.RawMessage(`{"a": 1}`)}, driver.SendOptions{Timeout: 20 * time.Second, Retry: -1})
	if err != nil {
		t.Fatalf("call through the second host: %v (after %s)", err, time.Since(start))
	}
	if string(rep.Result) != `{"a":1}` && string(rep.Result) != `{"a": 1}` {
		t.Fatalf("result %s", rep.Result)
	}
	if err := cli.Cast(ctx, target, &driver.Request{Method: "echo"}, driver.SendOptions{Retry: -1}); err != nil {
		t.Fatalf("cast: %v", err)
	}
	took := time.Since(start)
	t.Logf("listen, call and cast in %s; the silent host took %d connections", took.Round(time.Millisecond), silent.accepted.Load())
	if took > 30*time.Second {
		t.Fatalf("listen, call and cast took %s with connect_timeout 1s", took)
	}
	if silent.accepted.Load() == 0 {
		t.Fatal("the silent host, first in the URL, was never tried")
	}
}

// TestHungDialHonoursDeadlinesAndClose: a single host that never answers.
// Two casts and a call end at their deadlines (one cast starts the send
// connection's dial, the other joins it; the call waits for its reply
// queue's connection), and Close interrupts the dials in progress
// (connect_timeout is far away).
func TestHungDialHonoursDeadlinesAndClose(t *testing.T) {
	silent := newSilentHost(t)
	d := openHosts(t, map[string]string{"connect_timeout": "120"}, silent.addr())
	target := driver.Target{Exchange: "oslogo_x", Topic: "t"}

	var wg sync.WaitGroup
	errs := make([]error, 3)
	took := make([]time.Duration, 3)
	for i := range 3 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			ctx, cancel := context.WithTimeout(context.Background(), 500*time.Millisecond)
			defer cancel()
			start := time.Now()
			if i < 2 {
				errs[i] = d.Cast(ctx, target, &driver.Request{Method: "m"}, driver.SendOptions{Retry: -1})
			} else {
				_, errs[i] = d.Call(ctx, target, &driver.Request{Method: "m"}, driver.SendOptions{Timeout: 500 * time.Millisecond, Retry: -1})
			}
			took[i] = time.Since(start)
		}()
	}
	waited := make(chan struct{})
	go func() { wg.Wait(); close(waited) }()
	select {
	case <-waited:
	case <-time.After(20 * time.Second):
		silent.close() // frees the hung sends, so the test can end
		<-waited
		_ = d.Close()
		t.Fatalf("sends with a 500ms deadline still running after 20s")
	}
	for i, err := range errs {
		if !errors.Is(err, context.DeadlineExceeded) {
			t.Errorf("send %d: %v, want its deadline", i, err)
		}
		t.Logf("send %d ended after %s: %v", i, took[i].Round(time.Millisecond), err)
	}
	if silent.accepted.Load() == 0 {
		t.Fatal("nothing connected to the silent host")
	}
	closeWithin(t, d, 10*time.Second, silent.close)
}

// TestBlockedConnection: the embedded broker's memory alarm blocks the
// send connection (connection.blocked). A call and casts then end at
// their deadlines with an error saying the broker blocks publishes,
// megabytes of casts among them, and no publish waits inside amqp091-go.
// Once the alarm clears, the same driver publishes again.
func TestBlockedConnection(t *testing.T) {
	addr, stop := startEmbedded(t, 1<<20)
	d := openHosts(t, map[string]string{"conn_pool_min_size": "1", "rpc_conn_pool_size": "1"}, addr)
	closed := false
	defer func() {
		if !closed {
			closeWithin(t, d, 10*time.Second, stop)
		}
	}()
	ctx := ctxT(t, 30*time.Second)
	topic := uniqueTopic(t)
	target := driver.Target{Exchange: "oslogo_x", Topic: topic}
	// A mandatory call nobody serves comes back at once; it leaves the
	// reply queue ready, so the call below waits only for the alarm.
	if _, err := d.Call(ctx, target, &driver.Request{Method: "m"}, driver.SendOptions{Timeout: 20 * time.Second, Mandatory: true}); !errors.Is(err, driver.ErrUndeliverable) {
		t.Fatalf("call before the alarm: %v, want ErrUndeliverable", err)
	}
	big := json.RawMessage(`"` + strings.Repeat("x", 700<<10) + `"`)
	// Two notifications nobody consumes hold 1.4 MB: the alarm goes off.
	for range 2 {
		if err := d.Notify(ctx, target, &driver.Notification{Priority: "INFO", EventType: "e", Payload: big}, driver.NotifyOptions{Retry: 0}); err != nil {
			t.Fatal(err)
		}
	}
	// The next publish makes the broker send connection.blocked and stop
	// reading; its confirm waits for the alarm to clear.
	short, cancel := context.WithTimeout(ctx, time.Second)
	err := d.Cast(short, target, &driver.Request{Method: "m"}, driver.SendOptions{Retry: 0})
	cancel()
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("first cast under the alarm: %v, want its deadline", err)
	}

	start := time.Now()
	_, err = d.Call(ctx, target, &driver.Request{Method: "m"}, driver.SendOptions{Timeout: 2 * time.Second, Retry: -1})
	if !errors.Is(err, driver.ErrTimeout) || !strings.Contains(err.Error(), "blocking publishes") {
		t.Errorf("call under the alarm: %v, want ErrTimeout saying the broker blocks publishes", err)
	}
	t.Logf("call ended after %s: %v", time.Since(start).Round(time.Millisecond), err)

	// Megabytes of casts (more than the sockets and the 4 MB write queue
	// hold): each ends with its deadline, none waits inside a publish.
	const casts = 12
	var wg sync.WaitGroup
	castErrs := make(chan error, casts)
	mb := json.RawMessage(`{"b": "` + strings.Repeat("y", 1<<20) + `"}`)
	for range casts {
		wg.Add(1)
		go func() {
			defer wg.Done()
			cctx, cancel := context.WithTimeout(ctx, 2*time.Second)
			defer cancel()
			castErrs <- d.Cast(cctx, target, &driver.Request{Method: "m", Args: mb}, driver.SendOptions{Retry: -1})
		}()
	}
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(20 * time.Second):
		t.Error("casts with a 2s deadline still running after 20s")
		closed = true
		closeWithin(t, d, 10*time.Second, stop)
		<-done
		t.FailNow()
	}
	close(castErrs)
	for err := range castErrs {
		if !errors.Is(err, context.DeadlineExceeded) || !strings.Contains(err.Error(), "blocking publishes") {
			t.Errorf("cast under the alarm: %v, want its deadline, saying the broker blocks publishes", err)
		}
	}

	// Clear the alarm: the notifications go.
	c := amqpConnAt(t, addr)
	ch, err := c.Channel()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := ch.QueueDelete(topic+".info", false, false, false); err != nil {
		t.Fatal(err)
	}
	if err := d.Cast(ctx, target, &driver.Request{Method: "after"}, driver.SendOptions{Retry: -1}); err != nil {
		t.Fatalf("cast once the alarm cleared: %v", err)
	}
}

// TestCloseBlockedConnection: Close returns promptly while the broker
// blocks the send connection (it reads nothing from it, so a polite
// connection.close would wait for the alarm to clear), and a cast waiting
// for the block to lift gets ErrClosed.
func TestCloseBlockedConnection(t *testing.T) {
	addr, stop := startEmbedded(t, 1<<20)
	d := openHosts(t, map[string]string{"conn_pool_min_size": "1", "rpc_conn_pool_size": "1"}, addr)
	ctx := ctxT(t, 20*time.Second)
	topic := uniqueTopic(t)
	big := json.RawMessage(`"` + strings.Repeat("x", 700<<10) + `"`)
	for range 2 {
		if err := d.Notify(ctx, driver.Target{Exchange: "oslogo_x", Topic: topic}, &driver.Notification{Priority: "INFO", EventType: "e", Payload: big}, driver.NotifyOptions{Retry: 0}); err != nil {
			_ = d.Close()
			t.Fatal(err)
		}
	}
	short, cancel := context.WithTimeout(ctx, time.Second)
	err := d.Cast(short, driver.Target{Exchange: "oslogo_x", Topic: topic}, &driver.Request{Method: "m"}, driver.SendOptions{Retry: 0})
	cancel()
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("cast under the alarm: %v, want its deadline", err)
	}
	// A cast with no deadline waits for the block to lift; Close ends it.
	waiting := make(chan error, 1)
	go func() {
		waiting <- d.Cast(context.Background(), driver.Target{Exchange: "oslogo_x", Topic: topic}, &driver.Request{Method: "m"}, driver.SendOptions{Retry: -1})
	}()
	for d.pool.senders[0].busy.Load() == 0 {
		time.Sleep(time.Millisecond) // until the cast is in its publish
	}
	closeWithin(t, d, 10*time.Second, stop)
	if err := <-waiting; !errors.Is(err, driver.ErrClosed) {
		t.Fatalf("cast waiting at Close: %v, want ErrClosed", err)
	}
}

// amqpConnAt opens a plain amqp091 connection to addr as guest.
func amqpConnAt(t *testing.T, addr string) *amqp.Connection {
	t.Helper()
	c, err := amqp.Dial("amqp://guest:guest@" + addr + "/")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	return c
}

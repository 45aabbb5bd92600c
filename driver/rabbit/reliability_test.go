package rabbit

import (
	"context"
	"encoding/json"
	"io"
	"net"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/oslogo/oslogo/broker"
	"github.com/oslogo/oslogo/driver"
)

// startEmbeddedBroker starts oslogo's own broker on a free loopback port
// and returns its address; it is shut down when the test ends.
func startEmbeddedBroker(t testing.TB, edit func(*broker.Options)) string {
	t.Helper()
	opts := broker.DefaultOptions()
	opts.AMQPAddr = "127.0.0.1:0"
	if edit != nil {
		edit(&opts)
	}
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
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := b.Shutdown(ctx); err != nil {
			t.Errorf("broker shutdown: %v", err)
		}
	})
	return b.Addr().String()
}

// cutProxy forwards TCP connections to a broker and can drop all of them
// at once, as a failing network or a broker closing them would.
type cutProxy struct {
	ln     net.Listener
	target string

	mu    sync.Mutex
	conns map[net.Conn]struct{}
	wg    sync.WaitGroup
}

func newCutProxy(t testing.TB, target string) *cutProxy {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &cutProxy{ln: ln, target: target, conns: map[net.Conn]struct{}{}}
	p.wg.Add(1)
	go p.accept()
	t.Cleanup(p.close)
	return p
}

func (p *cutProxy) addr() string { return p.ln.Addr().String() }

func (p *cutProxy) accept() {
	defer p.wg.Done()
	for {
		c, err := p.ln.Accept()
		if err != nil {
			return
		}
		up, err := net.DialTimeout("tcp", p.target, 5*time.Second)
		if err != nil {
			_ = c.Close()
			continue
		}
		p.mu.Lock()
		p.conns[c], p.conns[up] = struct{}{}, struct{}{}
		p.mu.Unlock()
		pipe := func(dst, src net.Conn) {
			defer p.wg.Done()
			_, _ = io.Copy(dst, src)
			_ = dst.Close()
			_ = src.Close()
		}
		p.wg.Add(2)
		go pipe(c, up)
		go pipe(up, c)
	}
}

// cut closes every connection going through the proxy and reports how
// many client connections it dropped.
func (p *cutProxy) cut() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	n := len(p.conns) / 2
	for c := range p.conns {
		_ = c.Close()
	}
	clear(p.conns)
	return n
}

func (p *cutProxy) close() {
	_ = p.ln.Close()
	p.cut()
	p.wg.Wait()
}

// closeConnectionsNamed closes, with rabbitmqctl close_connection, every
// RabbitMQ connection of this process whose connection_name holds
// purpose, and reports how many.
func closeConnectionsNamed(t testing.TB, purpose string) int {
	t.Helper()
	out := rabbitmqctl(t, "-q", "list_connections", "--no-table-headers", "pid", "client_properties")
	marker := ":" + strconv.Itoa(os.Getpid()) + ":" + purpose + ":"
	n := 0
	for _, line := range strings.Split(out, "\n") {
		f := strings.Fields(line)
		if len(f) < 2 || !strings.Contains(line, marker) {
			continue
		}
		rabbitmqctl(t, "close_connection", f[0], "oslogo reliability test")
		n++
	}
	return n
}

// TestCastsSurviveServerConnectionLoss: 2,000 casts are queued for an RPC
// server, whose connection is then closed three times while it works
// through them. Every cast is processed (at least once); requests the
// client library had received but not handed to the server are
// redelivered by the broker instead of being lost with the connection.
// Run against RabbitMQ (rabbitmqctl close_connection) and the embedded
// broker (the connection dropped by a proxy).
func TestCastsSurviveServerConnectionLoss(t *testing.T) {
	cfg := map[string]string{"rabbit_retry_interval": "1", "kombu_reconnect_delay": "0"}
	t.Run("rabbitmq", func(t *testing.T) {
		topic := uniqueTopic(t)
		srv := openTest(t, cfg)
		cli := openTest(t, nil)
		castsSurvive(t, srv, cli, topic, func() int { return closeConnectionsNamed(t, "rpc-"+topic) })
		cleanupQueues(t, topic, topic+".s")
	})
	t.Run("embedded", func(t *testing.T) {
		addr := startEmbeddedBroker(t, nil)
		p := newCutProxy(t, addr)
		srv := openString(t, "rabbit://guest:guest@"+p.addr()+"/", cfg)
		cli := openString(t, "rabbit://guest:guest@"+addr+"/", nil)
		castsSurvive(t, srv, cli, uniqueTopic(t), p.cut)
	})
}

func openString(t testing.TB, raw string, cfg map[string]string) *Driver {
	t.Helper()
	d, err := OpenString(raw, driver.Options{Config: cfg})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = d.Close() })
	return d
}

func castsSurvive(t *testing.T, srv, cli *Driver, topic string, closeServer func() int) {
	const total = 2000
	ctx := ctxT(t, 3*time.Minute)
	target := driver.Target{Exchange: "oslogo_x", Topic: topic, Server: "s"}
	l, err := srv.Listen(ctx, target)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = l.Close() }()
	var wg sync.WaitGroup
	for w := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := w; i < total; i += 8 {
				req := &driver.Request{Method: "rec", Args: json.RawMessage(`{"i": ` + strconv.Itoa(i) + `}`)}
				if err := cli.Cast(ctx, driver.Target{Exchange: "oslogo_x", Topic: topic}, req, driver.SendOptions{Retry: -1}); err != nil {
					t.Errorf("cast %d: %v", i, err)
					return
				}
			}
		}()
	}
	wg.Wait()
	if t.Failed() {
		return
	}

	// The server works through the backlog at a steady pace and stops
	// while its connection is being closed, so that most of the backlog
	// has been received and not yet handed over when that happens.
	var pause sync.Mutex
	seen := make([]int, total) // guarded by pause
	var unique, dups atomic.Int64
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			in, err := l.Receive(context.Background())
			if err != nil {
				return
			}
			var a struct{ I int }
			if err := json.Unmarshal(in.Request().Args, &a); err != nil || a.I < 0 || a.I >= total {
				t.Errorf("bad request %s", in.Request().Args)
				continue
			}
			pause.Lock()
			seen[a.I]++
			if seen[a.I] == 1 {
				unique.Add(1)
			} else {
				dups.Add(1)
			}
			pause.Unlock()
			time.Sleep(200 * time.Microsecond)
		}
	}()
	// waitUnique waits for n requests processed, or for progress to stop
	// for 20 s (a lost request never comes).
	waitUnique := func(n int64) bool {
		stall, last := time.Now(), unique.Load()
		for unique.Load() < n {
			if u := unique.Load(); u != last {
				last, stall = u, time.Now()
			} else if time.Since(stall) > 20*time.Second || ctx.Err() != nil {
				return false
			}
			time.Sleep(5 * time.Millisecond) // polling a counter, not readiness
		}
		return true
	}
	for _, at := range []int64{200, 800, 1400} {
		if !waitUnique(at) {
			break
		}
		pause.Lock()
		n := closeServer()
		pause.Unlock()
		if n < 1 {
			t.Fatalf("no server connection closed at %d", at)
		}
	}
	waitUnique(total)
	_ = l.Close()
	<-done
	t.Logf("%d casts: %d processed, %d lost, %d duplicates", total, unique.Load(), total-int(unique.Load()), dups.Load())
	if got := unique.Load(); got != total {
		t.Fatalf("%d of %d casts processed, %d lost", got, total, total-int(got))
	}
}

// TestCancelledConsumerResubscribed: deleting an RPC server's queue makes
// the broker cancel that one consumer; it is declared and subscribed
// again on the same connection, the server's other consumers untouched,
// and requests sent to it are served again.
func TestCancelledConsumerResubscribed(t *testing.T) {
	srv := openTest(t, nil)
	cli := openTest(t, nil)
	topic := uniqueTopic(t)
	ctx := ctxT(t, 30*time.Second)
	l, err := srv.Listen(ctx, driver.Target{Exchange: "oslogo_x", Topic: topic, Server: "s"})
	if err != nil {
		t.Fatal(err)
	}
	wg := serve(t, l, echoHandler)
	defer func() { _ = l.Close(); wg.Wait(); cleanupQueues(t, topic, topic+".s") }()
	c := l.(*rpcListener).c
	call := func(server string) {
		t.Helper()
		rep, err := cli.Call(ctx, driver.Target{Exchange: "oslogo_x", Topic: topic, Server: server}, &driver.Request{Method: "echo", Args: json.RawMessage(`{"i": 1}`)}, driver.SendOptions{Timeout: 20 * time.Second})
		if err != nil || rep.Failure != nil || string(rep.Result) != `{"i": 1}` {
			t.Fatalf("call to %q: %v %+v", server, err, rep)
		}
	}
	call("s")
	before := c.session()
	c.mu.Lock()
	others := []*consumerHandle{before.cons[0], before.cons[2]}
	c.mu.Unlock()

	ch, err := amqpConn(t).Channel()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := ch.QueueDelete(topic+".s", false, false, false); err != nil {
		t.Fatal(err)
	}
	// Served again, by a resubscribed consumer or a new session.
	for {
		_, err := cli.Call(ctx, driver.Target{Exchange: "oslogo_x", Topic: topic, Server: "s"}, &driver.Request{Method: "echo", Args: json.RawMessage(`{}`)}, driver.SendOptions{Timeout: time.Second})
		if err == nil {
			break
		}
		if ctx.Err() != nil {
			t.Fatalf("server queue not consumed again: %v", err)
		}
	}
	call("s")
	call("")
	if after := c.session(); after != before || after.conn.IsClosed() || c.resubscribed.Load() != 1 {
		t.Fatalf("the listener reconnected (%v) instead of resubscribing one consumer (%d)", after != before, c.resubscribed.Load())
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if before.cons[0] != others[0] || before.cons[2] != others[1] || others[0].ch.IsClosed() || others[1].ch.IsClosed() {
		t.Fatal("the other consumers were replaced")
	}
}

// TestNotifyListenManyQueues: a notification listener's queues share a
// channel, so more of them than a connection has channels (16) still
// work.
func TestNotifyListenManyQueues(t *testing.T) {
	d := openTest(t, nil)
	topic := uniqueTopic(t)
	ctx := ctxT(t, 30*time.Second)
	var targets []driver.NotificationTarget
	var queues []string
	for i := range 20 {
		p := "p" + strconv.Itoa(i)
		targets = append(targets, driver.NotificationTarget{Exchange: "oslogo_x", Topic: topic, Priority: p})
		queues = append(queues, topic+"."+p)
	}
	l, err := d.ListenNotifications(ctx, targets, "")
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = l.Close(); cleanupQueues(t, queues...) }()
	n := &driver.Notification{MessageID: NewMessageID(), Priority: "P19", Payload: json.RawMessage(`1`), Timestamp: PythonTimestamp(time.Now())}
	if err := d.Notify(ctx, driver.Target{Exchange: "oslogo_x", Topic: topic}, n, driver.NotifyOptions{Envelope: true, Retry: -1}); err != nil {
		t.Fatal(err)
	}
	in, err := l.Receive(ctx)
	if err != nil || in.Notification().MessageID != n.MessageID {
		t.Fatalf("notification not received: %v", err)
	}
	if err := in.Ack(); err != nil {
		t.Fatal(err)
	}
}

// TestServerBackSoonAfterConnectionLoss: an RPC server whose connection
// drops tries again after a short random splay (below 0.8 s), failing over
// at once, not after the backoff: a call made as the connection drops is
// answered well before the first backoff interval (2 s with the defaults,
// the least the old reconnect loop waited) would have passed.
func TestServerBackSoonAfterConnectionLoss(t *testing.T) {
	addr := startEmbeddedBroker(t, nil)
	p := newCutProxy(t, addr)
	srv := openString(t, "rabbit://guest:guest@"+p.addr()+"/", nil)
	cli := openString(t, "rabbit://guest:guest@"+addr+"/", nil)
	topic := uniqueTopic(t)
	ctx := ctxT(t, time.Minute)
	target := driver.Target{Exchange: "oslogo_x", Topic: topic}
	l, err := srv.Listen(ctx, driver.Target{Exchange: "oslogo_x", Topic: topic, Server: "s"})
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = l.Close() }()
	serve(t, l, func(r driver.IncomingRequest) *driver.Reply { return &driver.Reply{Result: json.RawMessage(`1`)} })
	call := func() time.Duration {
		start := time.Now()
		if _, err := cli.Call(ctx, target, &driver.Request{Method: "m"}, driver.SendOptions{Timeout: 20 * time.Second, Retry: -1}); err != nil {
			t.Fatalf("call: %v", err)
		}
		return time.Since(start)
	}
	call() // the server is up
	least := DefaultConfig().backoff(1)
	for i := range 3 {
		if n := p.cut(); n == 0 {
			t.Fatal("no connection through the proxy to cut")
		}
		took := call()
		t.Logf("cut %d: answered after %v", i+1, took.Round(time.Millisecond))
		if took >= least-100*time.Millisecond {
			t.Errorf("cut %d: call answered after %v, not before the first backoff (%v)", i+1, took, least)
		}
	}
}

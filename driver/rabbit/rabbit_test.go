package rabbit

import (
	"context"
	"encoding/json"
	"errors"
	"net"
	"net/url"
	"os"
	"os/exec"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"
	"go.uber.org/goleak"

	"github.com/oslogo/oslogo/driver"
	"github.com/oslogo/oslogo/internal/testrabbit"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(testrabbit.Wrap(m))
}

// testURL is the broker of the driver tests: a vhost of this test binary's
// own on the shared RabbitMQ, deleted when the tests end.
func testURL() string { return testrabbit.URL() }

func openTest(t testing.TB, cfg map[string]string) *Driver {
	t.Helper()
	u, err := url.Parse(testURL())
	if err != nil {
		t.Fatal(err)
	}
	d, err := OpenURL(u, driver.Options{Config: cfg})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = d.Close() })
	return d
}

// amqpConn opens a plain amqp091 connection to the test vhost, for
// inspecting topology and publishing crafted messages.
func amqpConn(t testing.TB) *amqp.Connection {
	t.Helper()
	tu, err := ParseURL(testURL())
	if err != nil {
		t.Fatal(err)
	}
	h := tu.Hosts[0]
	c, err := amqp.DialConfig("amqp://"+url.UserPassword(h.Username, h.Password).String()+"@"+h.Addr+"/", amqp.Config{Vhost: tu.VirtualHost})
	if err != nil {
		t.Fatalf("RabbitMQ must be up (run scripts/setup.sh): %v", err)
	}
	t.Cleanup(func() { _ = c.Close() })
	return c
}

func uniqueTopic(t testing.TB) string {
	return "t" + newHexID()[:12]
}

func ctxT(t testing.TB, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

// serve answers requests of l with handler until l is closed.
func serve(t testing.TB, l driver.RPCListener, handler func(r driver.IncomingRequest) *driver.Reply) *sync.WaitGroup {
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			in, err := l.Receive(context.Background())
			if err != nil {
				return
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				rep := handler(in)
				if in.IsCall() {
					if err := in.Reply(context.Background(), rep); err != nil && !errors.Is(err, driver.ErrClosed) {
						t.Errorf("reply: %v", err)
					}
				}
			}()
		}
	}()
	return &wg
}

func echoHandler(r driver.IncomingRequest) *driver.Reply {
	req := r.Request()
	if req.Method == "fail" {
		return &driver.Reply{Failure: &driver.Failure{Class: "ValueError", Module: "builtins", Message: "bad", Args: []any{"bad"}}}
	}
	return &driver.Reply{Result: req.Args}
}

func TestCallCastRoundTrip(t *testing.T) {
	d := openTest(t, nil)
	topic := uniqueTopic(t)
	target := driver.Target{Exchange: "oslogo_x", Topic: topic, Server: "s1"}
	l, err := d.Listen(ctxT(t, 10*time.Second), target)
	if err != nil {
		t.Fatal(err)
	}
	wg := serve(t, l, echoHandler)
	defer func() { _ = l.Close(); wg.Wait() }()

	ctx := ctxT(t, 10*time.Second)
	rep, err := d.Call(ctx, driver.Target{Exchange: "oslogo_x", Topic: topic}, &driver.Request{Method: "echo", Args: json.RawMessage(`{"x": "h\u00e9llo", "n": [1, 2]}`), Context: map[string]any{"user": "u1"}}, driver.SendOptions{Timeout: 5 * time.Second, Retry: -1})
	if err != nil {
		t.Fatal(err)
	}
	var got map[string]any
	if err := json.Unmarshal(rep.Result, &got); err != nil || got["x"] != "héllo" {
		t.Fatalf("result %s (%v)", rep.Result, err)
	}
	rep, err = d.Call(ctx, driver.Target{Exchange: "oslogo_x", Topic: topic, Server: "s1"}, &driver.Request{Method: "fail"}, driver.SendOptions{Timeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	if rep.Failure == nil || rep.Failure.Class != "ValueError" || rep.Failure.Module != "builtins" {
		t.Fatalf("failure %+v", rep.Failure)
	}
	if err := d.Cast(ctx, driver.Target{Exchange: "oslogo_x", Topic: topic, Fanout: true}, &driver.Request{Method: "echo"}, driver.SendOptions{}); err != nil {
		t.Fatal(err)
	}
}

func TestCallTimeoutAndMandatory(t *testing.T) {
	d := openTest(t, nil)
	topic := uniqueTopic(t)
	target := driver.Target{Exchange: "oslogo_x", Topic: topic}
	start := time.Now()
	_, err := d.Call(context.Background(), target, &driver.Request{Method: "x"}, driver.SendOptions{Timeout: 300 * time.Millisecond})
	if !errors.Is(err, driver.ErrTimeout) {
		t.Fatalf("want ErrTimeout, got %v", err)
	}
	if time.Since(start) < 300*time.Millisecond {
		t.Fatalf("returned before the timeout")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	_, err = d.Call(ctx, target, &driver.Request{Method: "x"}, driver.SendOptions{})
	if !errors.Is(err, driver.ErrTimeout) || !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("want ErrTimeout wrapping DeadlineExceeded, got %v", err)
	}
	_, err = d.Call(ctxT(t, 5*time.Second), target, &driver.Request{Method: "x"}, driver.SendOptions{Timeout: 5 * time.Second, Mandatory: true})
	if !errors.Is(err, driver.ErrUndeliverable) {
		t.Fatalf("want ErrUndeliverable, got %v", err)
	}
	err = d.Cast(ctxT(t, 5*time.Second), target, &driver.Request{Method: "x"}, driver.SendOptions{Mandatory: true})
	if !errors.Is(err, driver.ErrUndeliverable) {
		t.Fatalf("cast: want ErrUndeliverable, got %v", err)
	}
}

func TestNotifyListen(t *testing.T) {
	d := openTest(t, nil)
	topic := uniqueTopic(t)
	ctx := ctxT(t, 10*time.Second)
	l, err := d.ListenNotifications(ctx, []driver.NotificationTarget{{Exchange: "oslogo_x", Topic: topic, Priority: "info"}, {Exchange: "oslogo_x", Topic: topic, Priority: "error"}}, "")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	for i, env := range []bool{false, true} {
		n := &driver.Notification{MessageID: NewMessageID(), PublisherID: "p", EventType: "e", Priority: "ERROR", Payload: json.RawMessage(`{"i": 1}`), Timestamp: PythonTimestamp(time.Now()), Context: map[string]any{"user": "u"}}
		if err := d.Notify(ctx, driver.Target{Exchange: "oslogo_x", Topic: topic}, n, driver.NotifyOptions{Envelope: env, Retry: -1}); err != nil {
			t.Fatal(err)
		}
		in, err := l.Receive(ctx)
		if err != nil {
			t.Fatal(err)
		}
		got := in.Notification()
		if got.MessageID != n.MessageID || got.Priority != "ERROR" || got.Context["user"] != "u" {
			t.Fatalf("%d: got %+v", i, got)
		}
		if i == 0 {
			if err := in.Requeue(); err != nil {
				t.Fatal(err)
			}
			in, err = l.Receive(ctx)
			if err != nil || in.Notification().MessageID != n.MessageID {
				t.Fatalf("requeued notification not redelivered: %v", err)
			}
		}
		if err := in.Ack(); err != nil {
			t.Fatal(err)
		}
	}
	cleanupQueues(t, topic+".info", topic+".error")
}

func cleanupQueues(t testing.TB, names ...string) {
	c := amqpConn(t)
	ch, err := c.Channel()
	if err != nil {
		t.Fatal(err)
	}
	for _, n := range names {
		_, _ = ch.QueueDelete(n, false, false, false)
	}
}

func rabbitmqctl(t testing.TB, args ...string) string {
	t.Helper()
	out, err := exec.Command("rabbitmqctl", args...).CombinedOutput()
	if err != nil {
		t.Fatalf("rabbitmqctl %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return string(out)
}

// closeOurConnections force-closes, with rabbitmqctl close_connection,
// every broker connection this test process opened, and reports how many.
func closeOurConnections(t testing.TB) int {
	t.Helper()
	out := rabbitmqctl(t, "-q", "list_connections", "--no-table-headers", "pid", "client_properties")
	marker := ":" + strconv.Itoa(os.Getpid()) + ":"
	n := 0
	for _, line := range strings.Split(out, "\n") {
		f := strings.Fields(line)
		if len(f) < 2 || !strings.Contains(line, marker) {
			continue
		}
		rabbitmqctl(t, "close_connection", f[0], "oslogo connection-loss test")
		n++
	}
	return n
}

// TestConnectionLoss closes every connection of the driver from the broker
// side in the middle of traffic: the call in flight ends (a result or
// ErrTimeout at its deadline), the server resumes consuming by itself and
// new calls succeed; nothing leaks (goleak in TestMain).
func TestConnectionLoss(t *testing.T) {
	cfg := map[string]string{"rabbit_retry_interval": "1", "kombu_reconnect_delay": "0"}
	srv := openTest(t, cfg)
	cli := openTest(t, cfg)
	topic := uniqueTopic(t)
	l, err := srv.Listen(ctxT(t, 10*time.Second), driver.Target{Exchange: "oslogo_x", Topic: topic, Server: "s"})
	if err != nil {
		t.Fatal(err)
	}
	wg := serve(t, l, func(r driver.IncomingRequest) *driver.Reply {
		if r.Request().Method == "slow" {
			time.Sleep(time.Second)
		}
		return &driver.Reply{Result: json.RawMessage(`"ok"`)}
	})
	defer func() { _ = l.Close(); wg.Wait() }()
	nl, err := srv.ListenNotifications(ctxT(t, 10*time.Second), []driver.NotificationTarget{{Exchange: "oslogo_x", Topic: topic, Priority: "info"}}, "")
	if err != nil {
		t.Fatal(err)
	}
	defer nl.Close()
	target := driver.Target{Exchange: "oslogo_x", Topic: topic}
	call := func(method string, timeout time.Duration) error {
		_, err := cli.Call(context.Background(), target, &driver.Request{Method: method}, driver.SendOptions{Timeout: timeout, Retry: -1})
		return err
	}
	if err := call("ping", 10*time.Second); err != nil {
		t.Fatal(err)
	}
	inflight := make(chan error, 1)
	start := time.Now()
	go func() { inflight <- call("slow", 5*time.Second) }()
	time.Sleep(200 * time.Millisecond) // let the request reach the server
	if n := closeOurConnections(t); n < 4 {
		t.Fatalf("closed %d connections, want the send, reply, server and listener ones", n)
	}
	select {
	case err := <-inflight:
		if err != nil && !errors.Is(err, driver.ErrTimeout) {
			t.Fatalf("in-flight call: %v", err)
		}
		if err != nil && time.Since(start) < 5*time.Second {
			t.Fatalf("in-flight call gave up before its deadline: %v", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("in-flight call hangs")
	}
	// The server, the reply consumer and the send pool recover on their own.
	deadline := time.Now().Add(60 * time.Second)
	for {
		err := call("ping", 2*time.Second)
		if err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no recovery: %v", err)
		}
	}
	n := &driver.Notification{MessageID: NewMessageID(), Priority: "INFO", Payload: json.RawMessage(`1`), Timestamp: PythonTimestamp(time.Now())}
	if err := cli.Notify(ctxT(t, 30*time.Second), target, n, driver.NotifyOptions{Envelope: true, Retry: -1}); err != nil {
		t.Fatal(err)
	}
	in, err := nl.Receive(ctxT(t, 60*time.Second))
	if err != nil || in.Notification().MessageID != n.MessageID {
		t.Fatalf("notification listener did not resume: %v", err)
	}
	_ = in.Ack()
	cleanupQueues(t, topic+".info")
}

// TestReplyAcksRespectPrefetch: replies are acknowledged in batches, but
// with rabbit_qos_prefetch_count set the batch never reaches the limit
// (the broker would stop delivering replies until a timer flushed them).
func TestReplyAcksRespectPrefetch(t *testing.T) {
	srv := openTest(t, nil)
	cli := openTest(t, map[string]string{"rabbit_qos_prefetch_count": "1"})
	topic := uniqueTopic(t)
	ctx := ctxT(t, 30*time.Second)
	l, err := srv.Listen(ctx, driver.Target{Exchange: "oslogo_x", Topic: topic, Server: "s"})
	if err != nil {
		t.Fatal(err)
	}
	wg := serve(t, l, echoHandler)
	defer func() { _ = l.Close(); wg.Wait() }()
	const n = 20
	for i := range n {
		rep, err := cli.Call(ctx, driver.Target{Exchange: "oslogo_x", Topic: topic}, &driver.Request{Method: "echo", Args: json.RawMessage(`{"i": 1}`)}, driver.SendOptions{Timeout: 20 * time.Second})
		if err != nil || rep.Failure != nil {
			t.Fatalf("call %d: %v %+v", i, err, rep)
		}
	}
	// Each reply is acknowledged on its own, right after it is handled.
	for cli.waiter.ackRounds.Load() < n && ctx.Err() == nil {
		runtime.Gosched()
	}
	if got, late := cli.waiter.ackRounds.Load(), cli.waiter.lateAcks.Load(); got != n || late != 0 {
		t.Fatalf("with prefetch 1: %d reply acks (%d of them by the timer) for %d replies, want one each, none late", got, late, n)
	}
}

// TestManualAcks: every consumer (RPC queues, reply queue, notification
// queues) acknowledges manually with a prefetch limit, 64 without
// rabbit_qos_prefetch_count, as RabbitMQ's list_consumers shows; a
// malformed request or reply is rejected and the consumers keep serving;
// nothing is left in the queues.
func TestManualAcks(t *testing.T) {
	for _, prefetch := range []string{"0", "2"} {
		t.Run("prefetch="+prefetch, func(t *testing.T) {
			cfg := map[string]string{"rabbit_qos_prefetch_count": prefetch}
			srv := openTest(t, cfg)
			cli := openTest(t, cfg)
			wantPrefetch := prefetch
			if prefetch == "0" {
				wantPrefetch = strconv.Itoa(defaultPrefetch)
			}
			topic := uniqueTopic(t)
			ctx := ctxT(t, 30*time.Second)
			l, err := srv.Listen(ctx, driver.Target{Exchange: "oslogo_x", Topic: topic, Server: "s"})
			if err != nil {
				t.Fatal(err)
			}
			wg := serve(t, l, echoHandler)
			defer func() { _ = l.Close(); wg.Wait() }()
			nl, err := srv.ListenNotifications(ctx, []driver.NotificationTarget{{Exchange: "oslogo_x", Topic: topic, Priority: "info"}}, "")
			if err != nil {
				t.Fatal(err)
			}
			defer func() { _ = nl.Close(); cleanupQueues(t, topic+".info") }()
			call := func() {
				t.Helper()
				rep, err := cli.Call(ctx, driver.Target{Exchange: "oslogo_x", Topic: topic}, &driver.Request{Method: "echo", Args: json.RawMessage(`{"i": 1}`)}, driver.SendOptions{Timeout: 20 * time.Second})
				if err != nil || rep.Failure != nil || string(rep.Result) != `{"i": 1}` {
					t.Fatalf("call: %v %+v", err, rep)
				}
			}
			call()
			queues := map[string]bool{topic: false, topic + ".s": false, l.(*rpcListener).fanoutQ: false, replyName(t, cli): false, topic + ".info": false}
			missing := func() []string {
				var m []string
				for q, found := range queues {
					if !found {
						m = append(m, q)
					}
				}
				return m
			}
			// The listing is polled until it shows every consumer.
			for len(missing()) > 0 && ctx.Err() == nil {
				out := rabbitmqctl(t, "-q", "list_consumers", "-p", testrabbit.Vhost(), "--no-table-headers", "queue_name", "ack_required", "prefetch_count")
				for _, line := range strings.Split(out, "\n") {
					f := strings.Fields(line)
					if len(f) != 3 {
						continue
					}
					if _, ok := queues[f[0]]; !ok {
						continue
					}
					queues[f[0]] = true
					if f[1] != "true" || f[2] != wantPrefetch {
						t.Errorf("consumer on %s: ack_required %s, prefetch %s; want true, %s", f[0], f[1], f[2], wantPrefetch)
					}
				}
			}
			if m := missing(); len(m) > 0 {
				t.Errorf("no consumer on %v", m)
			}
			// Malformed request and reply, then the consumers still work.
			ch, err := amqpConn(t).Channel()
			if err != nil {
				t.Fatal(err)
			}
			for _, key := range []string{topic, replyName(t, cli)} {
				if err := ch.Publish("", key, false, false, amqp.Publishing{ContentType: "application/json", Body: []byte(`{not json`)}); err != nil {
					t.Fatal(err)
				}
			}
			call()
			call()
			for _, q := range []string{topic, replyName(t, cli)} {
				for {
					st, err := ch.QueueDeclarePassive(q, false, false, false, false, nil)
					if err != nil {
						t.Fatal(err)
					}
					if st.Messages == 0 {
						break
					}
					if ctx.Err() != nil {
						t.Fatalf("%d messages left in %s", st.Messages, q)
					}
					time.Sleep(10 * time.Millisecond) // polling the broker's count
				}
			}
			// Requests handed over and not yet acknowledged (they are
			// acknowledged in groups) are acknowledged on Close, not
			// returned to the queue.
			_ = l.Close()
			wg.Wait()
			st, err := ch.QueueDeclarePassive(topic, false, false, false, false, nil)
			if err != nil {
				t.Fatal(err)
			}
			if st.Messages != 0 {
				t.Fatalf("%d requests back in %s after Close", st.Messages, topic)
			}
		})
	}
}

// TestReplyReturnedRetried: a reply to a reply queue that does not exist
// (yet) comes back (mandatory) without holding up the server, is retried
// every 0.25 s and delivered once the queue appears; after
// kombu_missing_consumer_retry_timeout it is dropped and the queue marked
// obsolete, so a further reply to it fails at once.
func TestReplyReturnedRetried(t *testing.T) {
	srv := openTest(t, map[string]string{"kombu_missing_consumer_retry_timeout": "2"})
	topic := uniqueTopic(t)
	ctx := ctxT(t, 30*time.Second)
	l, err := srv.Listen(ctx, driver.Target{Exchange: "oslogo_x", Topic: topic, Server: "s"})
	if err != nil {
		t.Fatal(err)
	}
	wg := serve(t, l, echoHandler)
	defer func() { _ = l.Close(); wg.Wait() }()
	ch, err := amqpConn(t).Channel()
	if err != nil {
		t.Fatal(err)
	}
	request := func(replyQ, msgID string) {
		t.Helper()
		body, err := encodeRequest(&driver.Request{Method: "echo", Args: json.RawMessage(`{"n": 7}`)}, &callInfo{msgID: msgID, replyQ: replyQ}, newHexID())
		if err != nil {
			t.Fatal(err)
		}
		if err := ch.Publish("oslogo_x", topic, false, false, amqp.Publishing{ContentType: contentType, ContentEncoding: contentEncoding, Body: body}); err != nil {
			t.Fatal(err)
		}
	}
	waitFor := func(what string, cond func() bool) {
		t.Helper()
		for !cond() {
			if ctx.Err() != nil {
				t.Fatalf("timed out waiting for %s", what)
			}
			time.Sleep(5 * time.Millisecond) // polling, not readiness
		}
	}

	// The queue appears while the reply is being retried.
	late := "reply_" + newHexID()
	request(late, "m1")
	waitFor("the returned reply to be retried", func() bool { return srv.replyRetries.Load() > 0 })
	if _, err := ch.QueueDeclare(late, false, true, false, false, nil); err != nil {
		t.Fatal(err)
	}
	var got amqp.Delivery
	waitFor("the retried reply", func() bool {
		var ok bool
		got, ok, err = ch.Get(late, true)
		return ok || err != nil
	})
	m, err := decodeBody(got.ContentType, got.Headers, got.Body)
	if err != nil {
		t.Fatal(err)
	}
	r, err := decodeReply(m)
	if err != nil || r.msgID != "m1" || string(r.result) != `{"n": 7}` || !r.ending {
		t.Fatalf("retried reply: %+v %v", r, err)
	}
	waitFor("the retry to end", func() bool { return srv.replyRetries.Load() == 0 })
	if srv.obsolet.has(late) {
		t.Fatal("a delivered reply marked its queue obsolete")
	}

	// The queue never appears: dropped after the window, queue obsolete.
	gone := "reply_" + newHexID()
	start := time.Now()
	request(gone, "m2")
	waitFor("the reply queue to be marked obsolete", func() bool { return srv.obsolet.has(gone) })
	if el := time.Since(start); el < 2*time.Second {
		t.Fatalf("reply given up after %s, before kombu_missing_consumer_retry_timeout", el)
	}
	waitFor("the retry to end", func() bool { return srv.replyRetries.Load() == 0 })
	err = srv.sendReply(ctx, gone, "m3", &driver.Reply{}, true)
	if !errors.Is(err, driver.ErrUndeliverable) {
		t.Fatalf("reply to an obsolete queue: %v, want ErrUndeliverable", err)
	}
}

// closedPort returns the address of a local port nothing listens on.
func closedPort(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	_ = ln.Close()
	return addr
}

// TestUnreachableBroker: with Retry 0 (or N used up) a call or cast to a
// broker that refuses connections fails at once with ErrDeliveryFailure
// naming the refused address, the reply queue's connection included;
// with Retry -1 a call ends at its deadline and the timeout names the
// last connection error.
func TestUnreachableBroker(t *testing.T) {
	addr := closedPort(t)
	d, err := OpenString("rabbit://guest:guest@"+addr+"/", driver.Options{Config: map[string]string{"rabbit_retry_interval": "1", "kombu_reconnect_delay": "0"}})
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	target := driver.Target{Exchange: "oslogo_x", Topic: "t"}
	refused := func(what string, err error) {
		t.Helper()
		if !errors.Is(err, driver.ErrDeliveryFailure) || errors.Is(err, driver.ErrTimeout) {
			t.Fatalf("%s: %v, want ErrDeliveryFailure", what, err)
		}
		if !strings.Contains(err.Error(), addr) || !strings.Contains(err.Error(), "connection refused") {
			t.Fatalf("%s: %q does not name the refused address %s", what, err, addr)
		}
	}
	// A minute of timeout: only a prompt failure can pass.
	ctx := ctxT(t, time.Minute)
	_, err = d.Call(ctx, target, &driver.Request{Method: "m"}, driver.SendOptions{Timeout: time.Minute, Retry: 0})
	refused("call, retry 0", err)
	if ctx.Err() != nil {
		t.Fatal("call with retry 0 waited for its timeout")
	}
	_, err = d.Call(ctx, target, &driver.Request{Method: "m"}, driver.SendOptions{Timeout: time.Minute, Retry: 1})
	refused("call, retry 1", err)
	err = d.Cast(ctx, target, &driver.Request{Method: "m"}, driver.SendOptions{Retry: 0})
	refused("cast, retry 0", err)
	err = d.Cast(ctx, target, &driver.Request{Method: "m"}, driver.SendOptions{Retry: 1})
	refused("cast, retry 1", err)
	if ctx.Err() != nil {
		t.Fatal("sends with a retry limit waited for their timeout")
	}
	_, err = d.Call(context.Background(), target, &driver.Request{Method: "m"}, driver.SendOptions{Timeout: 1500 * time.Millisecond, Retry: -1})
	if !errors.Is(err, driver.ErrTimeout) || !strings.Contains(err.Error(), "connection refused") {
		t.Fatalf("call, retry -1: %v, want ErrTimeout naming the last connection error", err)
	}
}

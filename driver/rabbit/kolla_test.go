package rabbit

import (
	"encoding/json"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/oslogo/oslogo/driver"
	"github.com/oslogo/oslogo/driver/drivertest"
	"github.com/oslogo/oslogo/internal/testrabbit"
)

// kollaOptions is [oslo_messaging_rabbit] as kolla-ansible writes it since
// 2025.1: quorum queues, transient quorum queues, stream fanout with a
// prefetch, and the queue manager.
func kollaOptions(t testing.TB) map[string]string {
	return map[string]string{
		"rabbit_quorum_queue":           "true",
		"rabbit_transient_quorum_queue": "true",
		"rabbit_stream_fanout":          "true",
		"rabbit_qos_prefetch_count":     "10",
		"use_queue_manager":             "true",
		"hostname":                      fmt.Sprintf("oslogo-test-%d", os.Getpid()),
		"processname":                   "rabbit.test",
	}
}

// kollaEnv is a vhost of its own for the kolla configuration (a durable
// control exchange) and a lock_path; the queue manager's counter file is
// removed at the end.
type kollaEnv struct {
	url  string
	lock string
}

func newKollaEnv(t testing.TB, name string) kollaEnv {
	t.Helper()
	e := kollaEnv{url: testrabbit.NewVhost(t, name), lock: t.TempDir()}
	opts := kollaOptions(t)
	t.Cleanup(func() { _ = os.Remove(filepath.Join(shmDir, opts["hostname"]+"_"+opts["processname"]+"_qmanager")) })
	return e
}

// open opens a driver in the kolla configuration, with extra options over
// it.
func (e kollaEnv) open(t testing.TB, extra map[string]string) *Driver {
	t.Helper()
	cfg := kollaOptions(t)
	for k, v := range extra {
		cfg[k] = v
	}
	u, err := url.Parse(e.url)
	if err != nil {
		t.Fatal(err)
	}
	d, err := OpenURL(u, driver.Options{Config: cfg, LockPath: e.lock})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = d.Close() })
	return d
}

// TestKollaConformance runs the conformance suite on rabbit:// in the kolla
// configuration (quorum + transient quorum + stream fanout + prefetch +
// queue manager) on RabbitMQ 3.10, in a vhost of its own.
func TestKollaConformance(t *testing.T) {
	env := newKollaEnv(t, "kolla_conformance")
	drivertest.RunConformanceTests(t, drivertest.Harness{
		Open:     func(t testing.TB) driver.Driver { return env.open(t, nil) },
		Features: drivertest.Features{Durable: true},
	})
}

// TestStreamFanoutSurvivesReconnects: two servers (eight receivers each)
// read the fanout stream of a topic; their connections are closed by the broker (rabbitmqctl
// close_connection) three times while 1,000 fanout casts are sent. Each
// server gets each cast exactly once: the reconnected consumer resumes at
// the offset after the last message it handed over (x-stream-offset), so
// it misses none and sees none twice.
//
// On the embedded broker the broker closes them too ("embedded":
// Server.CloseConnection, the method behind DELETE
// /api/connections/{name}), and, in "embedded-socket", a proxy drops their
// TCP connections without a connection.close (a failing network: the
// client learns of it from the read error, not from the broker).
func TestStreamFanoutSurvivesReconnects(t *testing.T) {
	t.Run("rabbitmq", func(t *testing.T) {
		env := newKollaEnv(t, "kolla_stream")
		topic := uniqueTopic(t)
		streamFanoutSurvives(t, env, env, topic, 400*time.Millisecond, func() int { return closeConnectionsNamed(t, "rpc-"+topic) })
	})
	t.Run("embedded", func(t *testing.T) {
		b := startEmbeddedServer(t)
		env := kollaEnv{url: "rabbit://guest:guest@" + b.Addr().String() + "/", lock: t.TempDir()}
		topic := uniqueTopic(t)
		streamFanoutSurvives(t, env, env, topic, 1500*time.Millisecond, func() int { return closeEmbeddedConnectionsNamed(t, b, "rpc-"+topic) })
	})
	t.Run("embedded-socket", func(t *testing.T) {
		addr := startEmbeddedBroker(t, nil)
		p := newCutProxy(t, addr)
		lock := t.TempDir()
		srvEnv := kollaEnv{url: "rabbit://guest:guest@" + p.addr() + "/", lock: lock}
		cliEnv := kollaEnv{url: "rabbit://guest:guest@" + addr + "/", lock: lock}
		streamFanoutSurvives(t, srvEnv, cliEnv, uniqueTopic(t), 1500*time.Millisecond, p.cut)
	})
}

// streamFanoutSurvives runs two servers on srvEnv and 1,000 fanout casts
// from cliEnv, calling cut three times (every pause) while the casts go
// out; each server must get each cast once.
func streamFanoutSurvives(t *testing.T, srvEnv, cliEnv kollaEnv, topic string, pause time.Duration, cut func() int) {
	fast := map[string]string{"rabbit_retry_interval": "1", "kombu_reconnect_delay": "0"}
	ctx := ctxT(t, 120*time.Second)
	const casts, cuts = 1000, 3

	type counts struct {
		mu   sync.Mutex
		seen map[int]int
		n    int
	}
	servers := []string{"s1", "s2"}
	got := map[string]*counts{}
	for _, name := range servers {
		srv := srvEnv.open(t, fast)
		l, err := srv.Listen(ctx, driver.Target{Exchange: "openstack", Topic: topic, Server: name})
		if err != nil {
			t.Fatal(err)
		}
		c := &counts{seen: map[int]int{}}
		got[name] = c
		// Eight receivers, as a messaging server's workers: requests are
		// handed over out of order.
		for range 8 {
			serve(t, l, func(r driver.IncomingRequest) *driver.Reply {
				var args struct{ I int }
				if err := json.Unmarshal(r.Request().Args, &args); err != nil {
					t.Errorf("args %s: %v", r.Request().Args, err)
				}
				c.mu.Lock()
				c.seen[args.I]++
				c.n++
				c.mu.Unlock()
				return nil
			})
		}
		t.Cleanup(func() { _ = l.Close() })
	}
	cli := cliEnv.open(t, nil)
	start := time.Now()
	cutDone := make(chan int, 1)
	cutting := make(chan struct{})
	go func() {
		defer close(cutting)
		n := 0
		for i := 0; i < cuts; i++ {
			time.Sleep(pause)
			n += cut()
			t.Logf("cut %d at %v", i, time.Since(start))
		}
		cutDone <- n
	}()
	for i := 0; i < casts; i++ {
		req := &driver.Request{Method: "record", Args: json.RawMessage(fmt.Sprintf(`{"i": %d}`, i)), Context: map[string]any{}}
		if err := cli.Cast(ctx, driver.Target{Exchange: "openstack", Topic: topic, Fanout: true}, req, driver.SendOptions{Retry: -1}); err != nil {
			t.Fatalf("cast %d: %v", i, err)
		}
		// Spread the casts over the cuts (rabbitmqctl takes seconds): one
		// every 25 ms until the last cut, then as fast as they go.
		select {
		case <-cutting:
		case <-time.After(25 * time.Millisecond):
		}
	}
	t.Logf("casts sent in %v", time.Since(start))
	<-cutting
	if n := <-cutDone; n < cuts*len(servers) {
		t.Fatalf("closed %d connections of the servers, want %d", n, cuts*len(servers))
	}
	deadline := time.Now().Add(60 * time.Second)
	for _, name := range servers {
		c := got[name]
		for {
			c.mu.Lock()
			n := len(c.seen)
			c.mu.Unlock()
			if n == casts || time.Now().After(deadline) {
				break
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
	time.Sleep(500 * time.Millisecond) // a late duplicate would show now
	for _, name := range servers {
		c := got[name]
		c.mu.Lock()
		var missing, twice []int
		for i := 0; i < casts; i++ {
			switch c.seen[i] {
			case 0:
				missing = append(missing, i)
			case 1:
			default:
				twice = append(twice, i)
			}
		}
		t.Logf("server %s: %d casts received, %d distinct, %d missing, %d more than once", name, c.n, len(c.seen), len(missing), len(twice))
		if len(missing) > 0 || len(twice) > 0 {
			t.Errorf("server %s: missing %v, more than once %v", name, head(missing), head(twice))
		}
		c.mu.Unlock()
	}
}

func head(s []int) []int {
	if len(s) > 20 {
		return s[:20]
	}
	return s
}

// listQueues returns "name type durable auto_delete arguments" of every
// queue of the vhost of u, by name.
func listQueues(t testing.TB, u string) map[string]string {
	t.Helper()
	vhost := strings.TrimPrefix(mustURL(t, u).Path, "/")
	out := rabbitmqctl(t, "-q", "list_queues", "-p", vhost, "--no-table-headers", "name", "type", "durable", "auto_delete", "arguments")
	m := map[string]string{}
	for _, line := range strings.Split(strings.TrimSpace(out), "\n") {
		f := strings.Fields(line)
		if len(f) < 2 {
			continue
		}
		m[f[0]] = strings.Join(f[1:], " ")
	}
	return m
}

// amqpChannelAt opens a channel on a plain amqp091 connection to the
// transport URL rabbitURL (rabbit://); cleanup closes the connection.
func amqpChannelAt(t testing.TB, rabbitURL string) *amqp.Channel {
	t.Helper()
	conn, err := amqp.Dial(strings.Replace(rabbitURL, "rabbit://", "amqp://", 1))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = conn.Close() })
	ch, err := conn.Channel()
	if err != nil {
		t.Fatal(err)
	}
	return ch
}

func mustURL(t testing.TB, s string) *url.URL {
	t.Helper()
	u, err := url.Parse(s)
	if err != nil {
		t.Fatal(err)
	}
	return u
}

// TestKollaDurableFallback checks 18.1's recovery paths on RabbitMQ 3.10:
// a control exchange declared non-durable by another service makes a
// server with amqp_durable_queues fall back to a non-durable exchange and
// queue (and it serves); with quorum queues the fallback is refused by
// RabbitMQ and Listen returns its 406; any other 406 (a classic queue
// where a quorum one is asked for) is returned with RabbitMQ's text.
func TestKollaDurableFallback(t *testing.T) {
	u := testrabbit.NewVhost(t, "fallback")
	ch := amqpChannelAt(t, u)
	for _, x := range []string{"fb_durable", "fb_quorum"} {
		if err := ch.ExchangeDeclare(x, amqp.ExchangeTopic, false, false, false, false, nil); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := ch.QueueDeclare("fb_classic", true, false, false, false, nil); err != nil {
		t.Fatal(err)
	}
	open := func(opts map[string]string) *Driver {
		d, err := OpenURL(mustURL(t, u), driver.Options{Config: opts})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = d.Close() })
		return d
	}
	ctx := ctxT(t, 60*time.Second)

	d := open(map[string]string{"amqp_durable_queues": "true"})
	l, err := d.Listen(ctx, driver.Target{Exchange: "fb_durable", Topic: "fb_t", Server: "s"})
	if err != nil {
		t.Fatalf("listen with a non-durable control exchange: %v", err)
	}
	serve(t, l, func(r driver.IncomingRequest) *driver.Reply { return &driver.Reply{Result: json.RawMessage(`"ok"`)} })
	t.Cleanup(func() { _ = l.Close() })
	rep, err := d.Call(ctx, driver.Target{Exchange: "fb_durable", Topic: "fb_t"}, &driver.Request{Method: "m", Args: json.RawMessage(`{}`), Context: map[string]any{}}, driver.SendOptions{Timeout: 10 * time.Second})
	if err != nil || string(rep.Result) != `"ok"` {
		t.Fatalf("call through the fallen-back exchange: %v %v", rep, err)
	}
	if q := listQueues(t, u)["fb_t"]; !strings.HasPrefix(q, "classic false false") {
		t.Errorf("queue fb_t is %q, want a non-durable classic queue (the fallback)", q)
	}

	dq := open(map[string]string{"rabbit_quorum_queue": "true"})
	_, err = dq.Listen(ctx, driver.Target{Exchange: "fb_quorum", Topic: "fb_q", Server: "s"})
	if err == nil || !strings.Contains(err.Error(), "PRECONDITION_FAILED") || !strings.Contains(err.Error(), "non-durable") {
		t.Errorf("quorum queue on a non-durable exchange: %v, want RabbitMQ's 406 on the non-durable fallback", err)
	}
	_, err = dq.Listen(ctx, driver.Target{Exchange: "fb_new", Topic: "fb_classic", Server: "s"})
	if err == nil || !strings.Contains(err.Error(), "inequivalent arg 'x-queue-type'") {
		t.Errorf("quorum over a classic queue: %v, want RabbitMQ's 406 text", err)
	}
}

// TestStreamFanoutCancelReadsFromLast: the fanout stream is deleted under
// a server (RabbitMQ cancels its consumer with basic.cancel); the server
// declares it again and reads it from "last", as 18.1 does, so the casts
// sent to the new stream (whose offsets start over at 0) reach it. Kept at
// the old position it would drop them as already seen.
func TestStreamFanoutCancelReadsFromLast(t *testing.T) {
	env := newKollaEnv(t, "kolla_cancel")
	topic := uniqueTopic(t)
	ctx := ctxT(t, 60*time.Second)
	srv := env.open(t, nil)
	dl, err := srv.Listen(ctx, driver.Target{Exchange: "openstack", Topic: topic, Server: "s1"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = dl.Close() })
	got := make(chan int, 100)
	serve(t, dl, func(r driver.IncomingRequest) *driver.Reply {
		var args struct{ I int }
		_ = json.Unmarshal(r.Request().Args, &args)
		got <- args.I
		return nil
	})
	cli := env.open(t, nil)
	cast := func(from, to int) {
		for i := from; i < to; i++ {
			req := &driver.Request{Method: "record", Args: json.RawMessage(fmt.Sprintf(`{"i": %d}`, i)), Context: map[string]any{}}
			if err := cli.Cast(ctx, driver.Target{Exchange: "openstack", Topic: topic, Fanout: true}, req, driver.SendOptions{Retry: -1}); err != nil {
				t.Fatal(err)
			}
		}
	}
	expect := func(from, to int) {
		t.Helper()
		seen := map[int]bool{}
		for len(seen) < to-from {
			select {
			case n := <-got:
				if n < from || n >= to || seen[n] {
					t.Fatalf("got cast %d, want each of %d..%d once (have %v)", n, from, to-1, seen)
				}
				seen[n] = true
			case <-time.After(20 * time.Second):
				t.Fatalf("casts %d..%d: received only %v", from, to-1, seen)
			}
		}
	}
	cast(0, 10)
	expect(0, 10)
	ch := amqpChannelAt(t, env.url)
	if _, err := ch.QueueDelete(topic+"_fanout", false, false, false); err != nil {
		t.Fatal(err)
	}
	l := dl.(*rpcListener)
	deadline := time.Now().Add(20 * time.Second)
	for l.c.resubscribed.Load() == 0 {
		if time.Now().After(deadline) {
			t.Fatal("the server did not subscribe again after the stream was deleted")
		}
		time.Sleep(20 * time.Millisecond)
	}
	if q := listQueues(t, env.url)[topic+"_fanout"]; !strings.HasPrefix(q, "stream true false") {
		t.Fatalf("stream not declared again: %q", q)
	}
	cast(10, 15)
	expect(10, 15)
}

// TestQueueManagerFanoutQueueKept: with use_queue_manager (and no stream)
// a server's fanout queue T_fanout_<host>:<proc>:<n> is a durable quorum
// queue that outlives the server, as in 18.1 (x-expires removes it); with
// random names it is deleted when the server stops.
func TestQueueManagerFanoutQueueKept(t *testing.T) {
	env := newKollaEnv(t, "kolla_qmkept")
	ctx := ctxT(t, 30*time.Second)
	for _, qm := range []bool{true, false} {
		srv := env.open(t, map[string]string{"rabbit_stream_fanout": "false", "use_queue_manager": fmt.Sprint(qm)})
		topic := uniqueTopic(t)
		l, err := srv.Listen(ctx, driver.Target{Exchange: "openstack", Topic: topic, Server: "s"})
		if err != nil {
			t.Fatal(err)
		}
		fq := l.(*rpcListener).fanoutQ
		if want := topic + "_fanout_" + kollaOptions(t)["hostname"] + ":rabbit.test:"; qm != strings.HasPrefix(fq, want) {
			t.Errorf("fanout queue %q (use_queue_manager %v)", fq, qm)
		}
		q := listQueues(t, env.url)[fq]
		if !strings.HasPrefix(q, "quorum true false") || !strings.Contains(q, `"x-expires",1800000`) {
			t.Errorf("fanout queue %s: %q, want a durable quorum queue with x-expires", fq, q)
		}
		_ = l.Close()
		_, kept := listQueues(t, env.url)[fq]
		if kept != qm {
			t.Errorf("use_queue_manager %v: fanout queue kept after Close: %v", qm, kept)
		}
	}
}

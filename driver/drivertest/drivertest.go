// Package drivertest is the conformance suite every transport passes: the
// behaviour of oslo.messaging's RPC and notifications, exercised through the
// public messaging API over the driver under test, plus benchmarks.
//
// A driver's test calls RunConformanceTests with a Harness that opens fresh
// drivers; tests use unique topic and exchange names, so drivers may share a
// broker (or an in-process world) between tests.
package drivertest

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/oslogo/oslogo/driver"
	"github.com/oslogo/oslogo/messaging"
)

// Harness tells the suite how to get drivers.
type Harness struct {
	// Open returns a new, independent driver on the transport under test.
	// The suite closes it.
	Open func(t testing.TB) driver.Driver
	// Features lists optional behaviour the driver has.
	Features Features
}

// Features are optional capabilities; the tests of a feature run only when
// the driver declares it.
type Features struct {
	// Durable: notifications sent before any listener started are kept
	// (true of every oslo transport, since the publisher declares the queue).
	Durable bool
}

// waitTimeout bounds every wait in the suite: generous, because it only
// matters when something is broken.
const waitTimeout = 20 * time.Second

// RunConformanceTests runs the whole suite as subtests of t.
func RunConformanceTests(t *testing.T, h Harness) {
	tests := []struct {
		name string
		fn   func(*testing.T, Harness)
	}{
		{"Call", testCall},
		{"CallTypedResult", testCallTypedResult},
		{"Cast", testCast},
		{"Fanout", testFanout},
		{"ServerSpecific", testServerSpecific},
		{"RoundRobin", testRoundRobin},
		{"ExchangeIsolation", testExchangeIsolation},
		{"Timeout", testTimeout},
		{"RemoteError", testRemoteError},
		{"DispatchErrors", testDispatchErrors},
		{"NamespaceAndVersion", testNamespaceAndVersion},
		{"Ping", testPing},
		{"RequestContext", testRequestContext},
		{"Concurrency", testConcurrency},
		{"CallMonitorHeartbeat", testCallMonitorHeartbeat},
		{"AtLeastOnceUndeliverable", testAtLeastOnce},
		{"StopFinishesInFlight", testStopFinishesInFlight},
		{"Payloads", testPayloads},
		{"Notify", testNotify},
		{"NotifyBothFormats", testNotifyFormats},
		{"NotifyAllPriorities", testNotifyAllPriorities},
		{"NotifyPools", testNotifyPools},
		{"NotifyFilter", testNotifyFilter},
		{"NotifyRequeue", testNotifyRequeue},
		{"NotifyBatch", testNotifyBatch},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) { tc.fn(t, h) })
	}
}

// unique returns a name no other test uses.
func unique(prefix string) string {
	var b [6]byte
	_, _ = rand.Read(b[:])
	return prefix + "_" + hex.EncodeToString(b[:])
}

func newTransport(t testing.TB, h Harness, mutate ...func(*messaging.TransportConfig)) *messaging.Transport {
	t.Helper()
	cfg := messaging.DefaultTransportConfig()
	cfg.ResponseTimeout = waitTimeout
	for _, m := range mutate {
		m(&cfg)
	}
	tr, err := messaging.NewTransport(h.Open(t), cfg)
	if err != nil {
		t.Fatalf("NewTransport: %v", err)
	}
	t.Cleanup(func() { tr.Close() })
	return tr
}

func ctxT(t testing.TB) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
	t.Cleanup(cancel)
	return ctx
}

// server is the endpoint used by most tests: it records who served what.
type server struct {
	name    string
	calls   atomic.Int64
	casts   atomic.Int64
	release chan struct{} // closes to let "block" return
}

func exampleEndpoint(s *server) *messaging.Endpoint {
	ep := messaging.NewEndpoint(messaging.Target{})
	type addArgs struct{ A, B int }
	messaging.Handle(ep, "add", func(_ context.Context, a addArgs) (int, error) {
		s.calls.Add(1)
		return a.A + a.B, nil
	})
	messaging.Handle(ep, "whoami", func(context.Context, struct{}) (string, error) {
		s.calls.Add(1)
		return s.name, nil
	})
	messaging.Handle(ep, "count", func(context.Context, struct{}) (any, error) {
		s.casts.Add(1)
		return nil, nil
	})
	messaging.Handle(ep, "counted", func(context.Context, struct{}) (int64, error) {
		return s.casts.Load(), nil
	})
	messaging.Handle(ep, "fail", func(_ context.Context, a struct{ Message string }) (any, error) {
		return nil, messaging.NewRemoteError("builtins", "ValueError", a.Message)
	})
	messaging.Handle(ep, "block", func(context.Context, struct{}) (string, error) {
		<-s.release
		return "released", nil
	})
	messaging.Handle(ep, "sleep", func(_ context.Context, a struct{ Seconds float64 }) (float64, error) {
		time.Sleep(time.Duration(a.Seconds * float64(time.Second)))
		return a.Seconds, nil
	})
	messaging.Handle(ep, "context", func(ctx context.Context, _ struct{}) (messaging.RequestContext, error) {
		return messaging.RequestContextFrom(ctx), nil
	})
	messaging.Handle(ep, "echo", func(_ context.Context, a map[string]any) (any, error) {
		return a["data"], nil
	})
	messaging.Handle(ep, "_private", func(context.Context, struct{}) (string, error) { return "secret", nil })
	return ep
}

func startServer(t testing.TB, tr *messaging.Transport, target messaging.Target, eps ...*messaging.Endpoint) *messaging.RPCServer {
	t.Helper()
	srv, err := messaging.NewRPCServer(tr, target, eps)
	if err != nil {
		t.Fatalf("NewRPCServer: %v", err)
	}
	if err := srv.Start(ctxT(t)); err != nil {
		t.Fatalf("Start: %v", err)
	}
	t.Cleanup(func() {
		if err := srv.Stop(context.Background()); err != nil {
			t.Errorf("Stop: %v", err)
		}
		srv.Wait()
	})
	return srv
}

// newServer starts a server named name on topic with the example endpoint.
func newServer(t testing.TB, tr *messaging.Transport, topic, name string) *server {
	s := &server{name: name, release: make(chan struct{})}
	startServer(t, tr, messaging.Target{Topic: topic, Server: name}, exampleEndpoint(s))
	return s
}

// eventually polls cond until it holds or the suite's timeout passes.
func eventually(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(waitTimeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func testCall(t *testing.T, h Harness) {
	tr := newTransport(t, h)
	topic := unique("call")
	s := newServer(t, tr, topic, "s1")
	c := messaging.NewRPCClient(tr, messaging.Target{Topic: topic})
	raw, err := c.Call(ctxT(t), "add", map[string]int{"a": 2, "b": 3})
	if err != nil {
		t.Fatalf("Call: %v", err)
	}
	if string(raw) != "5" {
		t.Fatalf("add(2, 3) = %s, want 5", raw)
	}
	if got := s.calls.Load(); got != 1 {
		t.Fatalf("server saw %d calls, want 1", got)
	}
}

func testCallTypedResult(t *testing.T, h Harness) {
	tr := newTransport(t, h)
	topic := unique("typed")
	newServer(t, tr, topic, "s1")
	c := messaging.NewRPCClient(tr, messaging.Target{Topic: topic})
	n, err := messaging.Call[int](ctxT(t), c, "add", struct{ A, B int }{40, 2})
	if err != nil || n != 42 {
		t.Fatalf("Call[int] = %d, %v; want 42", n, err)
	}
	if _, err := messaging.Call[int](ctxT(t), c, "whoami", nil); err == nil {
		t.Fatal("decoding a string result into an int did not fail")
	}
}

func testCast(t *testing.T, h Harness) {
	tr := newTransport(t, h)
	topic := unique("cast")
	s := newServer(t, tr, topic, "s1")
	c := messaging.NewRPCClient(tr, messaging.Target{Topic: topic})
	for i := 0; i < 5; i++ {
		if err := c.Cast(ctxT(t), "count", nil); err != nil {
			t.Fatalf("Cast: %v", err)
		}
	}
	eventually(t, "5 casts", func() bool { return s.casts.Load() == 5 })
	n, err := messaging.Call[int](ctxT(t), c, "counted", nil)
	if err != nil || n != 5 {
		t.Fatalf("counted = %d, %v; want 5", n, err)
	}
}

func testFanout(t *testing.T, h Harness) {
	tr := newTransport(t, h)
	topic := unique("fanout")
	servers := []*server{newServer(t, tr, topic, "a"), newServer(t, tr, topic, "b"), newServer(t, tr, topic, "c")}
	c := messaging.NewRPCClient(tr, messaging.Target{Topic: topic, Fanout: true})
	if err := c.Cast(ctxT(t), "count", nil); err != nil {
		t.Fatalf("fanout Cast: %v", err)
	}
	eventually(t, "every server to get the fanout cast", func() bool {
		for _, s := range servers {
			if s.casts.Load() != 1 {
				return false
			}
		}
		return true
	})
	if _, err := c.Call(ctxT(t), "add", nil); !errors.Is(err, messaging.ErrInvalidTarget) {
		t.Fatalf("fanout Call: got %v, want ErrInvalidTarget", err)
	}
}

func testServerSpecific(t *testing.T, h Harness) {
	tr := newTransport(t, h)
	topic := unique("direct")
	a, b := newServer(t, tr, topic, "a"), newServer(t, tr, topic, "b")
	c := messaging.NewRPCClient(tr, messaging.Target{Topic: topic}).Prepare(messaging.WithServer("b"))
	for i := 0; i < 6; i++ {
		who, err := messaging.Call[string](ctxT(t), c, "whoami", nil)
		if err != nil || who != "b" {
			t.Fatalf("call to server b answered by %q, %v", who, err)
		}
		if err := c.Cast(ctxT(t), "count", nil); err != nil {
			t.Fatal(err)
		}
	}
	eventually(t, "casts to b", func() bool { return b.casts.Load() == 6 })
	if a.calls.Load() != 0 || a.casts.Load() != 0 {
		t.Fatalf("server a got %d calls and %d casts meant for b", a.calls.Load(), a.casts.Load())
	}
}

func testRoundRobin(t *testing.T, h Harness) {
	tr := newTransport(t, h)
	topic := unique("rr")
	a, b := newServer(t, tr, topic, "a"), newServer(t, tr, topic, "b")
	c := messaging.NewRPCClient(tr, messaging.Target{Topic: topic})
	const n = 40
	for i := 0; i < n; i++ {
		if _, err := c.Call(ctxT(t), "whoami", nil); err != nil {
			t.Fatal(err)
		}
	}
	ga, gb := a.calls.Load(), b.calls.Load()
	if ga+gb != n || ga < n/4 || gb < n/4 {
		t.Fatalf("calls not spread over the servers: a=%d b=%d of %d", ga, gb, n)
	}
}

func testExchangeIsolation(t *testing.T, h Harness) {
	tr := newTransport(t, h)
	topic := unique("iso")
	exA, exB := unique("exa"), unique("exb")
	sa := &server{name: "a", release: make(chan struct{})}
	sb := &server{name: "b", release: make(chan struct{})}
	startServer(t, tr, messaging.Target{Exchange: exA, Topic: topic, Server: "a"}, exampleEndpoint(sa))
	startServer(t, tr, messaging.Target{Exchange: exB, Topic: topic, Server: "b"}, exampleEndpoint(sb))
	// Server queues are bound on their own exchange only.
	for _, tc := range []struct{ exchange, server string }{{exA, "a"}, {exB, "b"}} {
		c := messaging.NewRPCClient(tr, messaging.Target{Exchange: tc.exchange, Topic: topic, Server: tc.server})
		who, err := messaging.Call[string](ctxT(t), c, "whoami", nil)
		if err != nil || who != tc.server {
			t.Fatalf("call to %s on its exchange answered by %q, %v", tc.server, who, err)
		}
	}
	short := messaging.WithTimeout(300 * time.Millisecond)
	wrong := messaging.NewRPCClient(tr, messaging.Target{Exchange: exA, Topic: topic, Server: "b"}, short)
	if _, err := wrong.Call(ctxT(t), "whoami", nil); !errors.Is(err, messaging.ErrTimeout) {
		t.Fatalf("call to server b on exchange A: got %v, want ErrTimeout", err)
	}
	// An exchange nobody serves the topic on: the call times out.
	other := messaging.NewRPCClient(tr, messaging.Target{Exchange: unique("exc"), Topic: topic}, short)
	if _, err := other.Call(ctxT(t), "whoami", nil); !errors.Is(err, messaging.ErrTimeout) {
		t.Fatalf("call on an unserved exchange: got %v, want ErrTimeout", err)
	}
	if sa.calls.Load() != 1 || sb.calls.Load() != 1 {
		t.Fatalf("servers got a=%d b=%d calls, want 1 each", sa.calls.Load(), sb.calls.Load())
	}
}

func testTimeout(t *testing.T, h Harness) {
	tr := newTransport(t, h)
	topic := unique("timeout")
	c := messaging.NewRPCClient(tr, messaging.Target{Topic: topic}, messaging.WithTimeout(200*time.Millisecond))
	_, err := c.Call(ctxT(t), "add", nil)
	if !errors.Is(err, messaging.ErrTimeout) || !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("call with nobody serving: got %v, want ErrTimeout wrapping DeadlineExceeded", err)
	}
	// The deadline of the context wins over a longer client timeout.
	newServer(t, tr, topic, "s1")
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	_, err = messaging.NewRPCClient(tr, messaging.Target{Topic: topic}).Call(ctx, "sleep", map[string]float64{"seconds": 2})
	if !errors.Is(err, messaging.ErrTimeout) {
		t.Fatalf("call past the context deadline: got %v, want ErrTimeout", err)
	}
}

func testRemoteError(t *testing.T, h Harness) {
	tr := newTransport(t, h)
	topic := unique("remote")
	newServer(t, tr, topic, "s1")
	c := messaging.NewRPCClient(tr, messaging.Target{Topic: topic})
	_, err := c.Call(ctxT(t), "fail", map[string]string{"message": "bad value"})
	var re *messaging.RemoteError
	if !errors.As(err, &re) {
		t.Fatalf("got %v, want *RemoteError", err)
	}
	if re.Module != "builtins" || re.Class != "ValueError" || re.Message != "bad value" {
		t.Fatalf("remote error = %+v", re)
	}
	if err.Error() != "builtins.ValueError: bad value" {
		t.Fatalf("Error() = %q", err.Error())
	}
	// The server keeps serving after a failure.
	if _, err := c.Call(ctxT(t), "add", map[string]int{"a": 1, "b": 1}); err != nil {
		t.Fatalf("call after a failure: %v", err)
	}
	// Arguments that do not decode are a TypeError, as in Python.
	_, err = c.Call(ctxT(t), "add", map[string]string{"a": "x"})
	if !errors.As(err, &re) || re.Class != "TypeError" {
		t.Fatalf("bad arguments: got %v, want builtins.TypeError", err)
	}
}

func testDispatchErrors(t *testing.T, h Harness) {
	tr := newTransport(t, h)
	topic := unique("dispatch")
	newServer(t, tr, topic, "s1")
	c := messaging.NewRPCClient(tr, messaging.Target{Topic: topic})
	for _, method := range []string{"nosuch", "_private"} {
		_, err := c.Call(ctxT(t), method, nil)
		var re *messaging.RemoteError
		if !errors.Is(err, messaging.ErrNoSuchMethod) || !errors.As(err, &re) || re.Module != "oslo_messaging.rpc.dispatcher" {
			t.Fatalf("%s: got %v, want NoSuchMethod from oslo_messaging.rpc.dispatcher", method, err)
		}
	}
}

func testNamespaceAndVersion(t *testing.T, h Harness) {
	tr := newTransport(t, h)
	topic := unique("ns")
	ep := messaging.NewEndpoint(messaging.Target{Namespace: "ns1", Version: "2.3"})
	messaging.Handle(ep, "echo", func(_ context.Context, a struct{ X string }) (string, error) { return "ns1:" + a.X, nil })
	plain := messaging.NewEndpoint(messaging.Target{})
	messaging.Handle(plain, "echo", func(_ context.Context, a struct{ X string }) (string, error) { return "plain:" + a.X, nil })
	startServer(t, tr, messaging.Target{Topic: topic, Server: "s1"}, ep, plain)
	c := messaging.NewRPCClient(tr, messaging.Target{Topic: topic})
	cases := []struct {
		namespace, version string
		want               string
		wantErr            error
	}{
		{"ns1", "2.1", "ns1:v", nil},
		{"ns1", "2.3", "ns1:v", nil},
		{"ns1", "2.4", "", messaging.ErrUnsupportedVersion},
		{"ns1", "3.0", "", messaging.ErrUnsupportedVersion},
		{"", "", "plain:v", nil},
		{"", "1.0", "plain:v", nil},
		{"", "1.1", "", messaging.ErrUnsupportedVersion},
		{"other", "1.0", "", messaging.ErrUnsupportedVersion},
	}
	for _, tc := range cases {
		cc := c.Prepare(messaging.WithNamespace(tc.namespace), messaging.WithVersion(tc.version))
		got, err := messaging.Call[string](ctxT(t), cc, "echo", map[string]string{"x": "v"})
		if tc.wantErr != nil {
			if !errors.Is(err, tc.wantErr) {
				t.Errorf("ns=%q version=%q: got %q, %v; want %v", tc.namespace, tc.version, got, err, tc.wantErr)
			}
			continue
		}
		if err != nil || got != tc.want {
			t.Errorf("ns=%q version=%q: got %q, %v; want %q", tc.namespace, tc.version, got, err, tc.want)
		}
	}
	// A method missing from a compatible endpoint is NoSuchMethod.
	_, err := c.Prepare(messaging.WithNamespace("ns1"), messaging.WithVersion("2.0")).Call(ctxT(t), "add", nil)
	if !errors.Is(err, messaging.ErrNoSuchMethod) {
		t.Errorf("missing method in a compatible namespace: got %v, want NoSuchMethod", err)
	}
	// Version caps are checked before sending.
	_, err = c.Prepare(messaging.WithVersionCap("1.0"), messaging.WithVersion("1.5")).Call(ctxT(t), "echo", nil)
	if !errors.Is(err, messaging.ErrVersionCap) {
		t.Errorf("above the version cap: got %v, want ErrVersionCap", err)
	}
}

func testPing(t *testing.T, h Harness) {
	tr := newTransport(t, h)
	topic := unique("ping")
	newServer(t, tr, topic, "s1")
	got, err := messaging.Call[string](ctxT(t), messaging.NewRPCClient(tr, messaging.Target{Topic: topic}), messaging.PingMethod, nil)
	if err != nil || got != "pong" {
		t.Fatalf("ping = %q, %v; want pong", got, err)
	}
}

func testRequestContext(t *testing.T, h Harness) {
	tr := newTransport(t, h)
	topic := unique("ctx")
	newServer(t, tr, topic, "s1")
	c := messaging.NewRPCClient(tr, messaging.Target{Topic: topic})
	ctx := messaging.WithRequestContext(ctxT(t), messaging.RequestContext{
		"user": "u1", "project": "p1", "request_id": "req-1", "roles": []string{"admin"}, "is_admin": true,
	})
	got, err := messaging.Call[map[string]any](ctx, c, "context", nil)
	if err != nil {
		t.Fatal(err)
	}
	for k, want := range map[string]any{"user": "u1", "project": "p1", "request_id": "req-1", "is_admin": true} {
		if got[k] != want {
			t.Errorf("context[%q] = %v, want %v", k, got[k], want)
		}
	}
	if roles, _ := got["roles"].([]any); len(roles) != 1 || roles[0] != "admin" {
		t.Errorf("context roles = %v", got["roles"])
	}
	if v, ok := got["client_timeout"]; !ok || v != nil {
		t.Errorf("client_timeout = %v (present %v), want null as oslo adds it", v, ok)
	}
}

func testConcurrency(t *testing.T, h Harness) {
	tr := newTransport(t, h)
	topic := unique("conc")
	s := newServer(t, tr, topic, "s1")
	c := messaging.NewRPCClient(tr, messaging.Target{Topic: topic})
	slow := make(chan error, 1)
	go func() {
		got, err := messaging.Call[string](ctxT(t), c, "block", nil)
		if err == nil && got != "released" {
			err = fmt.Errorf("block returned %q", got)
		}
		slow <- err
	}()
	// The fast call completes while the slow one is still blocked: no
	// timing, the slow handler cannot return before release is closed.
	for i := 0; i < 3; i++ {
		if _, err := c.Call(ctxT(t), "add", map[string]int{"a": i, "b": 1}); err != nil {
			t.Fatalf("fast call while a slow one runs: %v", err)
		}
	}
	select {
	case err := <-slow:
		t.Fatalf("slow call returned before release: %v", err)
	default:
	}
	close(s.release)
	if err := <-slow; err != nil {
		t.Fatalf("slow call: %v", err)
	}
}

func testCallMonitorHeartbeat(t *testing.T, h Harness) {
	tr := newTransport(t, h)
	topic := unique("monitor")
	newServer(t, tr, topic, "s1")
	// With a 2 s call monitor the server heartbeats every second, so a 3 s
	// call survives; without heartbeats it would fail after 2 s.
	c := messaging.NewRPCClient(tr, messaging.Target{Topic: topic},
		messaging.WithTimeout(15*time.Second), messaging.WithCallMonitorTimeout(2*time.Second))
	got, err := messaging.Call[float64](ctxT(t), c, "sleep", map[string]float64{"seconds": 3})
	if err != nil || got != 3 {
		t.Fatalf("long call with call monitor = %v, %v", got, err)
	}
}

func testAtLeastOnce(t *testing.T, h Harness) {
	tr := newTransport(t, h)
	c := messaging.NewRPCClient(tr, messaging.Target{Topic: unique("nobody")}, messaging.WithAtLeastOnce(true), messaging.WithTimeout(5*time.Second))
	if _, err := c.Call(ctxT(t), "add", nil); !errors.Is(err, messaging.ErrUndeliverable) {
		t.Fatalf("mandatory call with no queue: got %v, want ErrUndeliverable", err)
	}
	if err := c.Cast(ctxT(t), "add", nil); !errors.Is(err, messaging.ErrUndeliverable) {
		t.Fatalf("mandatory cast with no queue: got %v, want ErrUndeliverable", err)
	}
}

func testStopFinishesInFlight(t *testing.T, h Harness) {
	tr := newTransport(t, h)
	topic := unique("stop")
	s := &server{name: "s1", release: make(chan struct{})}
	srv, err := messaging.NewRPCServer(tr, messaging.Target{Topic: topic, Server: "s1"}, []*messaging.Endpoint{exampleEndpoint(s)})
	if err != nil {
		t.Fatal(err)
	}
	if err := srv.Start(ctxT(t)); err != nil {
		t.Fatal(err)
	}
	c := messaging.NewRPCClient(tr, messaging.Target{Topic: topic})
	result := make(chan error, 1)
	go func() {
		_, err := c.Call(ctxT(t), "block", nil)
		result <- err
	}()
	// Wait until the call is in the handler, then stop while it runs.
	eventually(t, "the call to be running", func() bool {
		select {
		case s.release <- struct{}{}:
			return true
		default:
			return false
		}
	})
	stopped := make(chan error, 1)
	go func() { stopped <- srv.Stop(ctxT(t)) }()
	if err := <-result; err != nil {
		t.Fatalf("in-flight call during Stop: %v", err)
	}
	if err := <-stopped; err != nil {
		t.Fatalf("Stop: %v", err)
	}
	srv.Wait()
	// After Stop nothing is consumed: a call times out.
	_, err = c.Prepare(messaging.WithTimeout(200*time.Millisecond)).Call(ctxT(t), "add", nil)
	if !errors.Is(err, messaging.ErrTimeout) {
		t.Fatalf("call after Stop: got %v, want ErrTimeout", err)
	}
}

func testPayloads(t *testing.T, h Harness) {
	tr := newTransport(t, h)
	topic := unique("payload")
	newServer(t, tr, topic, "s1")
	c := messaging.NewRPCClient(tr, messaging.Target{Topic: topic})
	cases := map[string]any{
		"unicode": "héllo wörld ✓ 日本語 🚀",
		"nested":  map[string]any{"a": []any{1.0, "two", map[string]any{"three": []any{nil, true}}}},
		"large":   strings.Repeat("x", 1<<20),
		"null":    nil,
	}
	for name, data := range cases {
		raw, err := c.Call(ctxT(t), "echo", map[string]any{"data": data})
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		want, _ := json.Marshal(data)
		var gotV, wantV any
		_ = json.Unmarshal(raw, &gotV)
		_ = json.Unmarshal(want, &wantV)
		if fmt.Sprint(gotV) != fmt.Sprint(wantV) {
			t.Fatalf("%s: echo returned a different value (%d bytes, want %d)", name, len(raw), len(want))
		}
	}
}

// collector gathers notifications from handlers.
type collector struct {
	mu   sync.Mutex
	got  []*messaging.Notification
	from map[string]int // listener name -> count
}

func (c *collector) handler(name string) messaging.NotificationHandler {
	return func(_ context.Context, n *messaging.Notification) messaging.NotificationResult {
		c.mu.Lock()
		defer c.mu.Unlock()
		c.got = append(c.got, n)
		if c.from == nil {
			c.from = map[string]int{}
		}
		c.from[name]++
		return messaging.Handled
	}
}

func (c *collector) count() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.got)
}

func (c *collector) by(name string) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.from[name]
}

func (c *collector) snapshot() []*messaging.Notification {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]*messaging.Notification(nil), c.got...)
}

func startListener(t testing.TB, l *messaging.NotificationListener) {
	t.Helper()
	if err := l.Start(ctxT(t)); err != nil {
		t.Fatalf("listener Start: %v", err)
	}
	t.Cleanup(func() {
		if err := l.Stop(context.Background()); err != nil {
			t.Errorf("listener Stop: %v", err)
		}
		l.Wait()
	})
}

func newNotifier(t testing.TB, tr *messaging.Transport, topic, driverName string) *messaging.Notifier {
	t.Helper()
	n, err := messaging.NewNotifier(tr, "compute.host1", messaging.WithNotifyDrivers(driverName), messaging.WithNotifyTopics(topic))
	if err != nil {
		t.Fatal(err)
	}
	return n
}

func testNotify(t *testing.T, h Harness) {
	tr := newTransport(t, h)
	topic := unique("notif")
	var col collector
	l, err := messaging.NewNotificationListener(tr, []messaging.Target{{Topic: topic}},
		[]messaging.NotificationEndpoint{{Handlers: map[messaging.Priority]messaging.NotificationHandler{messaging.PriorityInfo: col.handler("l")}}})
	if err != nil {
		t.Fatal(err)
	}
	startListener(t, l)
	n := newNotifier(t, tr, topic, messaging.NotifyDriverMessagingV2)
	ctx := messaging.WithRequestContext(ctxT(t), messaging.RequestContext{"user_id": "u1", "request_id": "req-9"})
	if err := n.Info(ctx, "volume.create.end", map[string]any{"volume_id": "v1", "size": 10}); err != nil {
		t.Fatal(err)
	}
	eventually(t, "the notification", func() bool { return col.count() == 1 })
	got := col.snapshot()[0]
	if got.Priority != messaging.PriorityInfo || got.PublisherID != "compute.host1" || got.EventType != "volume.create.end" {
		t.Fatalf("notification = %+v", got)
	}
	var payload map[string]any
	if err := json.Unmarshal(got.Payload, &payload); err != nil || payload["volume_id"] != "v1" || payload["size"] != 10.0 {
		t.Fatalf("payload = %s (%v)", got.Payload, err)
	}
	if got.Context["request_id"] != "req-9" {
		t.Fatalf("context = %v", got.Context)
	}
	if len(got.MessageID) != 36 || strings.Count(got.MessageID, "-") != 4 {
		t.Fatalf("message_id %q is not a dashed uuid", got.MessageID)
	}
	if _, err := time.Parse("2006-01-02 15:04:05.999999", got.Timestamp); err != nil {
		t.Fatalf("timestamp %q not in Python's format: %v", got.Timestamp, err)
	}
}

func testNotifyFormats(t *testing.T, h Harness) {
	tr := newTransport(t, h)
	topic := unique("formats")
	var col collector
	l, err := messaging.NewNotificationListener(tr, []messaging.Target{{Topic: topic}},
		[]messaging.NotificationEndpoint{{Handlers: map[messaging.Priority]messaging.NotificationHandler{messaging.PriorityError: col.handler("l")}}})
	if err != nil {
		t.Fatal(err)
	}
	startListener(t, l)
	for _, d := range []string{messaging.NotifyDriverMessaging, messaging.NotifyDriverMessagingV2} {
		if err := newNotifier(t, tr, topic, d).Error(ctxT(t), "compute.error."+d, d); err != nil {
			t.Fatal(err)
		}
	}
	eventually(t, "both notifications", func() bool { return col.count() == 2 })
	seen := map[string]string{}
	for _, n := range col.snapshot() {
		var p string
		_ = json.Unmarshal(n.Payload, &p)
		seen[n.EventType] = p
	}
	if seen["compute.error.messaging"] != "messaging" || seen["compute.error.messagingv2"] != "messagingv2" {
		t.Fatalf("received %v", seen)
	}
}

func testNotifyAllPriorities(t *testing.T, h Harness) {
	tr := newTransport(t, h)
	topic := unique("prio")
	got := map[messaging.Priority]int{}
	var mu sync.Mutex
	handlers := map[messaging.Priority]messaging.NotificationHandler{}
	for _, p := range messaging.Priorities {
		handlers[p] = func(_ context.Context, n *messaging.Notification) messaging.NotificationResult {
			mu.Lock()
			defer mu.Unlock()
			if n.Priority == p && n.EventType == "event."+string(p) {
				got[p]++
			}
			return messaging.Handled
		}
	}
	l, err := messaging.NewNotificationListener(tr, []messaging.Target{{Topic: topic}}, []messaging.NotificationEndpoint{{Handlers: handlers}})
	if err != nil {
		t.Fatal(err)
	}
	startListener(t, l)
	n := newNotifier(t, tr, topic, messaging.NotifyDriverMessagingV2)
	for _, p := range messaging.Priorities {
		if err := n.Notify(ctxT(t), p, "event."+string(p), nil); err != nil {
			t.Fatal(err)
		}
	}
	eventually(t, "one notification per priority", func() bool {
		mu.Lock()
		defer mu.Unlock()
		for _, p := range messaging.Priorities {
			if got[p] != 1 {
				return false
			}
		}
		return true
	})
}

func testNotifyPools(t *testing.T, h Harness) {
	tr := newTransport(t, h)
	topic := unique("pools")
	poolA, poolB := unique("poolA"), unique("poolB")
	var colA, colB collector
	mk := func(pool, name string, col *collector) {
		l, err := messaging.NewNotificationListener(tr, []messaging.Target{{Topic: topic}},
			[]messaging.NotificationEndpoint{{Handlers: map[messaging.Priority]messaging.NotificationHandler{messaging.PriorityInfo: col.handler(name)}}},
			messaging.WithPool(pool))
		if err != nil {
			t.Fatal(err)
		}
		startListener(t, l)
	}
	mk(poolA, "a1", &colA)
	mk(poolA, "a2", &colA)
	mk(poolB, "b1", &colB)
	n := newNotifier(t, tr, topic, messaging.NotifyDriverMessagingV2)
	const total = 20
	for i := 0; i < total; i++ {
		if err := n.Info(ctxT(t), "pool.event", i); err != nil {
			t.Fatal(err)
		}
	}
	eventually(t, "each pool to get every notification", func() bool { return colA.count() == total && colB.count() == total })
	if colA.by("a1") == 0 || colA.by("a2") == 0 {
		t.Fatalf("listeners of one pool did not share: a1=%d a2=%d", colA.by("a1"), colA.by("a2"))
	}
	for _, col := range []*collector{&colA, &colB} {
		seen := map[string]bool{}
		for _, n := range col.snapshot() {
			if seen[string(n.Payload)] {
				t.Fatalf("a pool got notification %s twice", n.Payload)
			}
			seen[string(n.Payload)] = true
		}
	}
}

func testNotifyFilter(t *testing.T, h Harness) {
	tr := newTransport(t, h)
	topic := unique("filter")
	var volumes, computeHost1 collector
	l, err := messaging.NewNotificationListener(tr, []messaging.Target{{Topic: topic}}, []messaging.NotificationEndpoint{
		{Filter: &messaging.NotificationFilter{EventType: `volume\.create\..*`}, Handlers: map[messaging.Priority]messaging.NotificationHandler{messaging.PriorityInfo: volumes.handler("v")}},
		{Filter: &messaging.NotificationFilter{PublisherID: "compute", Context: map[string]string{"user_id": "u[0-9]+"}, Payload: map[string]string{"state": "act"}},
			Handlers: map[messaging.Priority]messaging.NotificationHandler{messaging.PriorityInfo: computeHost1.handler("c")}},
	})
	if err != nil {
		t.Fatal(err)
	}
	startListener(t, l)
	n := newNotifier(t, tr, topic, messaging.NotifyDriverMessagingV2)
	ctx := messaging.WithRequestContext(ctxT(t), messaging.RequestContext{"user_id": "u42"})
	send := func(n *messaging.Notifier, ctx context.Context, event string, payload any) {
		t.Helper()
		if err := n.Info(ctx, event, payload); err != nil {
			t.Fatal(err)
		}
	}
	send(n, ctx, "volume.create.start", map[string]any{"state": "creating"})                     // volumes
	send(n, ctx, "volume.delete.start", map[string]any{"state": "deleting"})                     // nobody
	send(n, ctx, "compute.instance.update", map[string]any{"state": "active"})                   // compute (re.match "act")
	send(n, ctxT(t), "compute.instance.update", map[string]any{"state": "active"})               // no user_id: nobody
	send(n, ctx, "compute.instance.update", map[string]any{"state": 1})                          // non-string: nobody
	send(n.Prepare("network.host"), ctx, "volume.create.end", map[string]any{"state": "active"}) // volumes only
	// A final marker both endpoints accept proves delivery has caught up.
	send(n, ctx, "volume.create.marker", map[string]any{"state": "active"})
	eventually(t, "the marker", func() bool { return volumes.count() == 3 && computeHost1.count() == 2 })
	for _, got := range volumes.snapshot() {
		if !strings.HasPrefix(got.EventType, "volume.create.") {
			t.Errorf("volume endpoint got %s", got.EventType)
		}
	}
	for _, got := range computeHost1.snapshot() {
		if got.PublisherID != "compute.host1" {
			t.Errorf("compute endpoint got a notification from %s", got.PublisherID)
		}
	}
}

func testNotifyRequeue(t *testing.T, h Harness) {
	tr := newTransport(t, h)
	topic := unique("requeue")
	var mu sync.Mutex
	attempts := map[string]int{}
	handled := make(chan string, 10)
	l, err := messaging.NewNotificationListener(tr, []messaging.Target{{Topic: topic}}, []messaging.NotificationEndpoint{{
		Handlers: map[messaging.Priority]messaging.NotificationHandler{messaging.PriorityInfo: func(_ context.Context, n *messaging.Notification) messaging.NotificationResult {
			mu.Lock()
			attempts[n.MessageID]++
			first := attempts[n.MessageID] == 1
			mu.Unlock()
			if first {
				return messaging.Requeue
			}
			handled <- n.MessageID
			return messaging.Handled
		}},
	}}, messaging.WithAllowRequeue(true))
	if err != nil {
		t.Fatal(err)
	}
	startListener(t, l)
	if err := newNotifier(t, tr, topic, messaging.NotifyDriverMessagingV2).Info(ctxT(t), "requeue.me", nil); err != nil {
		t.Fatal(err)
	}
	select {
	case id := <-handled:
		mu.Lock()
		defer mu.Unlock()
		if attempts[id] != 2 {
			t.Fatalf("handled after %d attempts, want 2", attempts[id])
		}
	case <-time.After(waitTimeout):
		t.Fatal("requeued notification was not redelivered")
	}
}

func testNotifyBatch(t *testing.T, h Harness) {
	tr := newTransport(t, h)
	topic := unique("batch")
	var mu sync.Mutex
	var sizes []int
	total := 0
	l, err := messaging.NewBatchNotificationListener(tr, []messaging.Target{{Topic: topic}}, []messaging.BatchNotificationEndpoint{{
		Handlers: map[messaging.Priority]messaging.BatchNotificationHandler{messaging.PriorityInfo: func(_ context.Context, batch []*messaging.Notification) messaging.NotificationResult {
			mu.Lock()
			defer mu.Unlock()
			sizes = append(sizes, len(batch))
			total += len(batch)
			return messaging.Handled
		}},
	}}, 5, 300*time.Millisecond)
	if err != nil {
		t.Fatal(err)
	}
	// Publish first, then listen: the 12 notifications wait in the queue,
	// so the batches are full except the last one, cut by the timeout.
	n := newNotifier(t, tr, topic, messaging.NotifyDriverMessagingV2)
	for i := 0; i < 12; i++ {
		if err := n.Info(ctxT(t), "batch.event", i); err != nil {
			t.Fatal(err)
		}
	}
	startListener(t, l)
	eventually(t, "all 12 in batches", func() bool { mu.Lock(); defer mu.Unlock(); return total == 12 })
	mu.Lock()
	defer mu.Unlock()
	if len(sizes) != 3 || sizes[0] != 5 || sizes[1] != 5 || sizes[2] != 2 {
		t.Fatalf("batch sizes %v, want [5 5 2]", sizes)
	}
}

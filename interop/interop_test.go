package interop

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"io"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"

	_ "github.com/oslogo/oslogo/driver/rabbit"
	"github.com/oslogo/oslogo/internal/testrabbit"
	"github.com/oslogo/oslogo/messaging"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(testrabbit.Wrap(m))
}

// brokerURL is a vhost of this test binary's own on the shared RabbitMQ,
// deleted when the tests end.
func brokerURL() string { return testrabbit.URL() }

const python = "/usr/bin/python3"

// pyProc is a running Python peer whose stdout JSON lines arrive on lines.
type pyProc struct {
	cmd   *exec.Cmd
	stdin io.WriteCloser
	lines chan map[string]any
	done  chan struct{}
	log   *logWriter
}

// startPy runs interop/python/<script> and, when wantReady, waits for its
// {"ready": ...} line.
func startPy(t *testing.T, wantReady bool, script string, args ...string) *pyProc {
	t.Helper()
	return startProc(t, wantReady, script, exec.Command(python, append([]string{filepath.Join("python", script)}, args...)...))
}

// startProc runs cmd as a peer named name (stdout: JSON lines) and, when
// wantReady, waits for its {"ready": ...} line.
func startProc(t *testing.T, wantReady bool, script string, cmd *exec.Cmd) *pyProc {
	t.Helper()
	lw := &logWriter{t: t, prefix: script}
	cmd.Stderr = lw
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatalf("start %s: %v", script, err)
	}
	p := &pyProc{cmd: cmd, stdin: stdin, lines: make(chan map[string]any, 1024), done: make(chan struct{}), log: lw}
	go func() {
		defer close(p.done)
		defer close(p.lines)
		sc := bufio.NewScanner(stdout)
		sc.Buffer(make([]byte, 64<<10), 16<<20)
		for sc.Scan() {
			var m map[string]any
			if err := json.Unmarshal(sc.Bytes(), &m); err != nil {
				t.Logf("%s: %s", script, sc.Text())
				continue
			}
			p.lines <- m
		}
	}()
	t.Cleanup(func() { p.stop(t) })
	if wantReady {
		if m := p.next(t, 60*time.Second); m["ready"] == nil {
			t.Fatalf("%s: want ready, got %v", script, m)
		}
	}
	return p
}

func (p *pyProc) next(t *testing.T, timeout time.Duration) map[string]any {
	t.Helper()
	select {
	case m, ok := <-p.lines:
		if !ok {
			t.Fatalf("python peer %s exited; its stderr ends with:\n%s", p.log.prefix, p.log.tailString())
		}
		return m
	case <-time.After(timeout):
		t.Fatal("python peer sent nothing")
	}
	return nil
}

func (p *pyProc) stop(t *testing.T) {
	_ = p.stdin.Close()
	exited := make(chan struct{})
	go func() {
		for range p.lines {
		}
		_ = p.cmd.Wait()
		close(exited)
	}()
	select {
	case <-exited:
	case <-time.After(30 * time.Second):
		_ = p.cmd.Process.Kill()
		<-exited
	}
}

// logWriter sends a peer's stderr to the test log.
type logWriter struct {
	t      *testing.T
	prefix string
	mu     sync.Mutex
	tail   []byte // the last 8 KiB, for the message of a peer that exits
}

func (w *logWriter) tailString() string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return string(w.tail)
}

func (w *logWriter) Write(b []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.tail = append(w.tail, b...)
	if n := len(w.tail) - 8<<10; n > 0 {
		w.tail = append(w.tail[:0], w.tail[n:]...)
	}
	if testing.Verbose() {
		w.t.Logf("%s: %s", w.prefix, strings.TrimRight(string(b), "\n"))
	}
	return len(b), nil
}

func openTransport(t *testing.T) *messaging.Transport {
	t.Helper()
	cfg := messaging.DefaultTransportConfig()
	tr, err := messaging.OpenTransport(context.Background(), brokerURL(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = tr.Close() })
	return tr
}

func uniqueTopic(prefix string) string {
	return prefix + "_" + strings.ReplaceAll(time.Now().Format("150405.000000"), ".", "")
}

// castRecord is a cast a Go server received.
type castRecord struct {
	server string
	tag    string
	ctx    messaging.RequestContext
}

// startGoServer serves the same endpoints as interop/python/server.py.
func startGoServer(t *testing.T, topic, server string, casts chan<- castRecord) {
	t.Helper()
	tr := openTransport(t)
	def := messaging.NewEndpoint(messaging.Target{Version: "1.3"})
	def.HandleRaw("add", func(ctx context.Context, args json.RawMessage) (any, error) {
		var a struct{ A, B float64 }
		if err := json.Unmarshal(args, &a); err != nil {
			return nil, err
		}
		return a.A + a.B, nil
	})
	def.HandleRaw("echo", func(ctx context.Context, args json.RawMessage) (any, error) { return args, nil })
	def.HandleRaw("ctx", func(ctx context.Context, _ json.RawMessage) (any, error) {
		return messaging.RequestContextFrom(ctx), nil
	})
	def.HandleRaw("whoami", func(context.Context, json.RawMessage) (any, error) { return server, nil })
	def.HandleRaw("fail", func(_ context.Context, args json.RawMessage) (any, error) {
		var a struct{ Msg string }
		_ = json.Unmarshal(args, &a)
		return nil, messaging.NewRemoteError("builtins", "ValueError", "('"+a.Msg+"', 42)", a.Msg, 42)
	})
	def.HandleRaw("slow", func(ctx context.Context, args json.RawMessage) (any, error) {
		var a struct{ Seconds float64 }
		_ = json.Unmarshal(args, &a)
		select {
		case <-time.After(time.Duration(a.Seconds * float64(time.Second))):
		case <-ctx.Done():
		}
		return a.Seconds, nil
	})
	def.HandleRaw("record", func(ctx context.Context, args json.RawMessage) (any, error) {
		var a struct{ Tag string }
		_ = json.Unmarshal(args, &a)
		casts <- castRecord{server: server, tag: a.Tag, ctx: messaging.RequestContextFrom(ctx)}
		return nil, nil
	})
	ns := messaging.NewEndpoint(messaging.Target{Namespace: "ns1", Version: "2.3"})
	ns.HandleRaw("nsmethod", func(context.Context, json.RawMessage) (any, error) { return "ns1-ok", nil })
	srv, err := messaging.NewRPCServer(tr, messaging.Target{Topic: topic, Server: server}, []*messaging.Endpoint{def, ns})
	if err != nil {
		t.Fatal(err)
	}
	if err := srv.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		_ = srv.Stop(ctx)
		srv.Wait()
	})
}

type outcome struct {
	OK    bool            `json:"ok"`
	Value json.RawMessage `json:"value"`
	Error struct {
		Type         string `json:"type"`
		Module       string `json:"module"`
		Str          string `json:"str"`
		Args         []any  `json:"args"`
		IsValueError bool   `json:"is_value_error"`
		ExcType      string `json:"exc_type"`
	} `json:"error"`
}

// TestPythonClientGoServer: Python oslo.messaging's RPC client against two
// oslogo servers on rabbit://.
func TestPythonClientGoServer(t *testing.T) {
	topic := uniqueTopic("pyc")
	casts := make(chan castRecord, 16)
	startGoServer(t, topic, "s1", casts)
	startGoServer(t, topic, "s2", casts)

	p := startPy(t, false, "client.py", brokerURL(), topic)
	raw := p.next(t, 180*time.Second)
	res := map[string]outcome{}
	b, _ := json.Marshal(raw)
	if err := json.Unmarshal(b, &res); err != nil {
		t.Fatal(err)
	}
	val := func(name string) string {
		t.Helper()
		o := res[name]
		if !o.OK {
			t.Errorf("%s: %+v", name, o.Error)
		}
		return string(o.Value)
	}
	failed := func(name, typ string) outcome {
		t.Helper()
		o := res[name]
		if o.OK || o.Error.Type != typ {
			t.Errorf("%s: want %s, got %+v (value %s)", name, typ, o.Error, o.Value)
		}
		return o
	}
	if v := val("add"); v != "5" && v != "5.0" {
		t.Errorf("add = %s", v)
	}
	if v := val("echo_nested"); !jsonEq(v, `{"n": {"a": [1, 2.5, null, true, {"b": {"c": ["d"]}}], "u": "h\u00e9llo \u2603 \ud83d\ude00"}}`) {
		t.Errorf("echo_nested = %s", v)
	}
	if v := val("echo_big_len"); v != "1048576" {
		t.Errorf("1 MB string came back with length %s", v)
	}
	var ctx map[string]any
	_ = json.Unmarshal([]byte(val("ctx")), &ctx)
	if ctx["user_id"] != "u1" || ctx["request_id"] != "req-1" || ctx["is_admin"] != true {
		t.Errorf("context = %v", ctx)
	}
	if _, ok := ctx["client_timeout"]; !ok {
		t.Errorf("context lacks client_timeout: %v", ctx)
	}
	if o := failed("fail", "ValueError"); o.Error.Module != "builtins" || !o.Error.IsValueError || !strings.Contains(o.Error.Str, "bad value") {
		t.Errorf("fail: Python did not rebuild builtins.ValueError: %+v", o.Error)
	}
	if o := failed("nosuch", "RemoteError"); o.Error.ExcType != "NoSuchMethod" {
		t.Errorf("nosuch: %+v", o.Error)
	}
	if o := failed("private", "RemoteError"); o.Error.ExcType != "NoSuchMethod" {
		t.Errorf("private: %+v", o.Error)
	}
	if o := failed("v30", "RemoteError"); o.Error.ExcType != "UnsupportedVersion" {
		t.Errorf("v30: %+v", o.Error)
	}
	if v := val("v12"); v != "2" && v != "2.0" {
		t.Errorf("v12 = %s", v)
	}
	if v := val("ns21"); v != `"ns1-ok"` {
		t.Errorf("ns21 = %s", v)
	}
	if o := failed("ns24", "RemoteError"); o.Error.ExcType != "UnsupportedVersion" {
		t.Errorf("ns24: %+v", o.Error)
	}
	if v := val("named"); v != `"s2"` {
		t.Errorf("named = %s", v)
	}
	if v := val("roundrobin"); !jsonEq(v, `["s1", "s2"]`) {
		t.Errorf("round robin reached %s", v)
	}
	failed("timeout", "MessagingTimeout")
	if v := val("monitor"); v != "4" && v != "4.0" {
		t.Errorf("call kept alive by heartbeats = %s", v)
	}
	val("cast")
	val("fanout")
	failed("mandatory", "MessageUndeliverable")

	got := map[string][]string{}
	deadline := time.After(30 * time.Second)
	for len(got["cast-1"]) < 1 || len(got["fanout-1"]) < 2 {
		select {
		case c := <-casts:
			got[c.tag] = append(got[c.tag], c.server)
			if c.ctx["user_id"] != "u1" {
				t.Errorf("cast context %v", c.ctx)
			}
		case <-deadline:
			t.Fatalf("casts received: %v", got)
		}
	}
	slices.Sort(got["fanout-1"])
	if !slices.Equal(got["fanout-1"], []string{"s1", "s2"}) || len(got["cast-1"]) != 1 {
		t.Errorf("casts received: %v", got)
	}
}

func jsonEq(a, b string) bool {
	var x, y any
	if json.Unmarshal([]byte(a), &x) != nil || json.Unmarshal([]byte(b), &y) != nil {
		return false
	}
	xb, _ := json.Marshal(x)
	yb, _ := json.Marshal(y)
	return string(xb) == string(yb)
}

// TestGoClientPythonServer: an oslogo RPC client against two Python
// oslo.messaging servers.
func TestGoClientPythonServer(t *testing.T) {
	topic := uniqueTopic("goc")
	s1 := startPy(t, true, "server.py", brokerURL(), topic, "s1")
	s2 := startPy(t, true, "server.py", brokerURL(), topic, "s2")
	tr := openTransport(t)
	cli := messaging.NewRPCClient(tr, messaging.Target{Topic: topic}, messaging.WithTimeout(20*time.Second))
	rc := messaging.RequestContext{"user_id": "u1", "request_id": "req-1", "roles": []any{"admin"}, "is_admin": true}
	ctx := messaging.WithRequestContext(context.Background(), rc)

	call := func(c *messaging.RPCClient, method string, args any) (json.RawMessage, error) {
		cctx, cancel := context.WithTimeout(ctx, 60*time.Second)
		defer cancel()
		return c.Call(cctx, method, args)
	}
	if v, err := call(cli, "add", map[string]any{"a": 2, "b": 3}); err != nil || string(v) != "5" {
		t.Fatalf("add = %s, %v", v, err)
	}
	nested := `{"n": {"a": [1, 2.5, null, true, {"b": {"c": ["d"]}}], "u": "héllo ☃ 😀"}}`
	if v, err := call(cli, "echo", json.RawMessage(nested)); err != nil || !jsonEq(string(v), nested) {
		t.Fatalf("echo = %s, %v", v, err)
	}
	big := strings.Repeat("é", 512*1024) // 1 MB of UTF-8, 512 Ki characters
	if v, err := call(cli, "echo", map[string]any{"s": big}); err != nil {
		t.Fatal(err)
	} else {
		var got struct{ S string }
		if err := json.Unmarshal(v, &got); err != nil || got.S != big {
			t.Fatalf("1 MB string did not round-trip (len %d, %v)", len(got.S), err)
		}
	}
	v, err := call(cli, "ctx", nil)
	if err != nil {
		t.Fatal(err)
	}
	var gotCtx map[string]any
	_ = json.Unmarshal(v, &gotCtx)
	if gotCtx["user_id"] != "u1" || gotCtx["request_id"] != "req-1" || gotCtx["is_admin"] != true {
		t.Fatalf("context seen by Python: %v", gotCtx)
	}
	if ct, ok := gotCtx["client_timeout"]; !ok || ct != nil {
		t.Fatalf("client_timeout seen by Python: %v", gotCtx)
	}

	var re *messaging.RemoteError
	_, err = call(cli, "fail", map[string]any{"msg": "bad value"})
	if !errors.As(err, &re) || re.Class != "ValueError" || re.Module != "builtins" || re.Message != "('bad value', 42)" || len(re.Traceback) == 0 {
		t.Fatalf("fail: %#v", err)
	}
	_, err = call(cli, "myfail", nil)
	if !errors.As(err, &re) || re.Class != "MyError" || re.Kwargs["code"] != float64(7) {
		t.Fatalf("myfail: %#v", err)
	}
	for _, m := range []string{"nosuch", "_private"} {
		if _, err := call(cli, m, nil); !errors.Is(err, messaging.ErrNoSuchMethod) {
			t.Fatalf("%s: %v", m, err)
		}
	}
	if _, err := call(cli.Prepare(messaging.WithVersion("3.0")), "add", map[string]any{"a": 1, "b": 1}); !errors.Is(err, messaging.ErrUnsupportedVersion) {
		t.Fatalf("3.0: %v", err)
	}
	if v, err := call(cli.Prepare(messaging.WithNamespace("ns1"), messaging.WithVersion("2.1")), "nsmethod", nil); err != nil || string(v) != `"ns1-ok"` {
		t.Fatalf("ns1 2.1: %s %v", v, err)
	}
	if _, err := call(cli.Prepare(messaging.WithNamespace("ns1"), messaging.WithVersion("2.4")), "nsmethod", nil); !errors.Is(err, messaging.ErrUnsupportedVersion) {
		t.Fatalf("ns1 2.4: %v", err)
	}
	if v, err := call(cli.Prepare(messaging.WithServer("s2")), "whoami", nil); err != nil || string(v) != `"s2"` {
		t.Fatalf("named server: %s %v", v, err)
	}
	seen := map[string]bool{}
	for i := 0; i < 30 && len(seen) < 2; i++ {
		v, err := call(cli, "whoami", nil)
		if err != nil {
			t.Fatal(err)
		}
		seen[string(v)] = true
	}
	if !seen[`"s1"`] || !seen[`"s2"`] {
		t.Errorf("round robin reached %v", seen)
	}
	start := time.Now()
	_, err = call(cli.Prepare(messaging.WithTimeout(time.Second)), "slow", map[string]any{"seconds": 3})
	if !errors.Is(err, messaging.ErrTimeout) || time.Since(start) > 20*time.Second {
		t.Fatalf("timeout: %v after %s", err, time.Since(start))
	}
	// Heartbeats from the Python server keep a 4 s call alive under a 2 s
	// call-monitor timeout.
	if v, err := call(cli.Prepare(messaging.WithCallMonitorTimeout(2*time.Second)), "slow", map[string]any{"seconds": 4}); err != nil || string(v) != "4" {
		t.Fatalf("monitored call: %s %v", v, err)
	}
	if _, err := call(cli.Prepare(messaging.WithTopic(topic+"_nobody"), messaging.WithAtLeastOnce(true)), "add", nil); !errors.Is(err, messaging.ErrUndeliverable) {
		t.Fatalf("at-least-once to nobody: %v", err)
	}

	// Casts: one server gets a plain cast, both get a fanout one.
	if err := cli.Cast(ctx, "record", map[string]any{"tag": "cast-1"}); err != nil {
		t.Fatal(err)
	}
	if err := cli.Prepare(messaging.WithFanout(true)).Cast(ctx, "record", map[string]any{"tag": "fanout-1"}); err != nil {
		t.Fatal(err)
	}
	got := map[string][]string{}
	for _, p := range []*pyProc{s1, s2} {
		for {
			var m map[string]any
			select {
			case m = <-p.lines:
			case <-time.After(2 * time.Second):
			}
			if m == nil {
				break
			}
			cast, _ := m["cast"].(map[string]any)
			tag, _ := cast["tag"].(string)
			got[tag] = append(got[tag], m["server"].(string))
			if c, _ := m["ctxt"].(map[string]any); c["user_id"] != "u1" {
				t.Errorf("cast context seen by Python: %v", m["ctxt"])
			}
		}
	}
	slices.Sort(got["fanout-1"])
	if len(got["cast-1"]) != 1 || !slices.Equal(got["fanout-1"], []string{"s1", "s2"}) {
		t.Errorf("casts seen by Python: %v", got)
	}
}

var priorities = []messaging.Priority{"audit", "debug", "info", "warn", "error", "critical", "sample"}

// TestPythonNotifierGoListener: Python's messaging (v1) and messagingv2
// notifiers to an oslogo listener and an oslogo pooled listener, every
// priority.
func TestPythonNotifierGoListener(t *testing.T) {
	topic := uniqueTopic("pyn")
	tr := openTransport(t)
	type got struct {
		pool string
		n    *messaging.Notification
	}
	ch := make(chan got, 64)
	for _, pool := range []string{"", topic + "_pool"} {
		handlers := map[messaging.Priority]messaging.NotificationHandler{}
		for _, p := range priorities {
			handlers[p] = func(_ context.Context, n *messaging.Notification) messaging.NotificationResult {
				ch <- got{pool, n}
				return messaging.Handled
			}
		}
		var opts []messaging.ListenerOption
		if pool != "" {
			opts = append(opts, messaging.WithPool(pool))
		}
		l, err := messaging.NewNotificationListener(tr, []messaging.Target{{Topic: topic}}, []messaging.NotificationEndpoint{{Handlers: handlers}}, opts...)
		if err != nil {
			t.Fatal(err)
		}
		if err := l.Start(context.Background()); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = l.Stop(context.Background()); l.Wait() })
	}
	for _, drv := range []string{"messaging", "messagingv2"} {
		p := startPy(t, false, "notifier.py", brokerURL(), topic, drv, drv)
		if m := p.next(t, 60*time.Second); m["sent"] != float64(7) {
			t.Fatalf("notifier: %v", m)
		}
		seen := map[string]int{}
		for range 2 * len(priorities) {
			select {
			case g := <-ch:
				var payload struct {
					Tag string
					U   string
				}
				_ = json.Unmarshal(g.n.Payload, &payload)
				if payload.Tag != drv || payload.U != "héllo" || g.n.PublisherID != "py.host1" || g.n.EventType != "interop."+string(g.n.Priority) {
					t.Errorf("%s: got %+v", drv, g.n)
				}
				if g.n.Context["user_id"] != "u1" || g.n.Context["auth_token"] != nil || len(g.n.MessageID) != 36 || len(g.n.Timestamp) < 19 {
					t.Errorf("%s: context/metadata %+v", drv, g.n)
				}
				seen[g.pool+"/"+string(g.n.Priority)]++
			case <-time.After(30 * time.Second):
				t.Fatalf("%s: received %v", drv, seen)
			}
		}
		for _, pool := range []string{"", topic + "_pool"} {
			for _, p := range priorities {
				if seen[pool+"/"+string(p)] != 1 {
					t.Errorf("%s: pool %q priority %s received %d times", drv, pool, p, seen[pool+"/"+string(p)])
				}
			}
		}
	}
	cleanupNotificationQueues(t, topic)
}

// TestGoNotifierPythonListener: oslogo's messaging and messagingv2
// notifiers to a Python listener and a pooled Python listener.
func TestGoNotifierPythonListener(t *testing.T) {
	topic := uniqueTopic("gon")
	plain := startPy(t, true, "listener.py", brokerURL(), topic, "-")
	pooled := startPy(t, true, "listener.py", brokerURL(), topic, topic+"_pypool")
	tr := openTransport(t)
	ctx := messaging.WithRequestContext(context.Background(), messaging.RequestContext{"user_id": "u1", "request_id": "req-9"})
	for _, drv := range []string{"messaging", "messagingv2"} {
		n, err := messaging.NewNotifier(tr, "go.host1", messaging.WithNotifyDrivers(drv), messaging.WithNotifyTopics(topic))
		if err != nil {
			t.Fatal(err)
		}
		for _, p := range priorities {
			if err := n.Notify(ctx, p, "go."+string(p), map[string]any{"drv": drv, "u": "héllo"}); err != nil {
				t.Fatal(err)
			}
		}
		for _, l := range []*pyProc{plain, pooled} {
			seen := map[string]bool{}
			for range priorities {
				m := l.next(t, 30*time.Second)
				payload, _ := m["payload"].(map[string]any)
				meta, _ := m["metadata"].(map[string]any)
				c, _ := m["ctxt"].(map[string]any)
				prio, _ := m["priority"].(string)
				if payload["drv"] != drv || payload["u"] != "héllo" || m["publisher_id"] != "go.host1" || m["event_type"] != "go."+prio || c["user_id"] != "u1" {
					t.Errorf("%s: Python got %v", drv, m)
				}
				if id, _ := meta["message_id"].(string); len(id) != 36 {
					t.Errorf("%s: metadata %v", drv, meta)
				}
				seen[prio] = true
			}
			if len(seen) != len(priorities) {
				t.Errorf("%s: priorities seen %v", drv, seen)
			}
		}
	}
	cleanupNotificationQueues(t, topic)
}

// cleanupNotificationQueues deletes the <topic>.<priority> queues the
// publishers declared (they outlive the test otherwise).
func cleanupNotificationQueues(t *testing.T, topic string) {
	for _, p := range priorities {
		_ = exec.Command("rabbitmqctl", "-q", "-p", testrabbit.Vhost(), "delete_queue", topic+"."+string(p)).Run()
	}
}

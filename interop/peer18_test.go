package interop

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/oslogo/oslogo/broker"
	"github.com/oslogo/oslogo/internal/oslo18"
	"github.com/oslogo/oslogo/internal/testrabbit"
)

// The three oslo.messaging configurations of interop/python18/common.py.
var peer18Configs = []string{"defaults", "kolla", "kolla-qm"}

// TestPeer18RabbitMQ: the oslo.messaging 18.1.0 peer talks to itself on
// RabbitMQ 3.10 in each configuration (a fresh vhost per configuration):
// RPC calls, remote errors, named servers, round-robin, casts, fanout casts
// and notifications to pooled and pool-less listeners.
func TestPeer18RabbitMQ(t *testing.T) {
	peer := oslo18.Get(t)
	for _, conf := range peer18Configs {
		t.Run(conf, func(t *testing.T) {
			url := testrabbit.NewVhost(t, "py18_"+conf)
			peer18Scenario(t, peer, url, conf)
		})
	}
}

// TestPeer18EmbeddedBroker: the same scenario against the embedded broker,
// a fresh broker per configuration. The kolla configurations need stream
// queues (rabbit_stream_fanout) from the broker.
func TestPeer18EmbeddedBroker(t *testing.T) {
	peer := oslo18.Get(t)
	for _, conf := range peer18Configs {
		t.Run(conf, func(t *testing.T) {
			peer18Scenario(t, peer, startEmbedded(t), conf)
		})
	}
}

// startEmbedded starts the embedded broker on a free loopback port and
// returns its rabbit:// URL.
func startEmbedded(t *testing.T) string {
	t.Helper()
	return startEmbeddedWith(t, nil)
}

// startEmbeddedWith is startEmbedded with options changed by set.
func startEmbeddedWith(t *testing.T, set func(*broker.Options)) string {
	t.Helper()
	opts := broker.DefaultOptions()
	opts.AMQPAddr = "127.0.0.1:0"
	if set != nil {
		set(&opts)
	}
	s, err := broker.New(opts)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if err := s.Shutdown(ctx); err != nil {
			t.Errorf("broker shutdown: %v", err)
		}
	})
	if !s.ReadyForConnections(10 * time.Second) {
		t.Fatal("embedded broker not ready")
	}
	return fmt.Sprintf("rabbit://guest:guest@%s/", s.Addr())
}

func startPeer18(t *testing.T, peer oslo18.Peer, wantReady bool, script string, args ...string) *pyProc {
	t.Helper()
	return startProc(t, wantReady, "py18 "+script, peer18Cmd(context.Background(), t, peer, append([]string{peer.Script(script)}, args...)...))
}

// peer18Cmd runs the peer's Python with args as the configurations need:
// with use_queue_manager (kolla-qm) 18.1's queue manager keeps a counter in
// /dev/shm/<hostname>_<processname>_qmanager and reads the start time of
// its process group's leader from /proc, so each peer gets a process group
// of its own (the test binary's group leader may have exited, e.g. under a
// shell's background job, and then the peer dies on start) and a hostname
// of this test binary's, whose counter files are removed afterwards.
func peer18Cmd(ctx context.Context, t *testing.T, peer oslo18.Peer, args ...string) *exec.Cmd {
	t.Helper()
	cmd := exec.CommandContext(ctx, peer.Python, args...)
	cmd.Env = slices.Clone(peer.Env)
	host := fmt.Sprintf("oslogo-peer18-%d", os.Getpid())
	cmd.Env = append(cmd.Env, "OSLO18_HOSTNAME="+host)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	t.Cleanup(func() {
		matches, _ := filepath.Glob("/dev/shm/" + host + "_*_qmanager")
		for _, m := range matches {
			_ = os.Remove(m)
		}
	})
	return cmd
}

// runPeer18 runs a one-shot peer script and returns its JSON line.
func runPeer18(t *testing.T, peer oslo18.Peer, script string, args ...string) map[string]any {
	t.Helper()
	p := startPeer18(t, peer, false, script, args...)
	return p.next(t, 120*time.Second)
}

type peerOp struct {
	Op     string         `json:"op"`
	Method string         `json:"method"`
	Args   map[string]any `json:"args,omitempty"`
	Server string         `json:"server,omitempty"`
	Fanout bool           `json:"fanout,omitempty"`
}

func peer18Scenario(t *testing.T, peer oslo18.Peer, url, conf string) {
	topic := uniqueTopic("py18_" + strings.ReplaceAll(conf, "-", ""))
	ntopic := topic + "_notify"
	start := time.Now()
	// The peers start side by side (each takes seconds to import
	// oslo.messaging on a busy machine), then the test waits for each.
	servers := map[string]*pyProc{}
	var all []*pyProc
	for _, name := range []string{"s1", "s2"} {
		servers[name] = startPeer18(t, peer, false, "server.py", url, conf, topic, name)
		all = append(all, servers[name])
	}
	listeners := map[string][]*pyProc{}
	for _, pool := range []string{"-", "p1", "p1", "p2"} {
		p := startPeer18(t, peer, false, "listener.py", url, conf, ntopic, pool)
		listeners[pool] = append(listeners[pool], p)
		all = append(all, p)
	}
	// Stopping takes seconds per peer too: stop them side by side (this
	// cleanup runs before each peer's own, which then finds it done).
	t.Cleanup(func() {
		var wg sync.WaitGroup
		for _, p := range all {
			wg.Go(func() { p.stop(t) })
		}
		wg.Wait()
	})
	for _, p := range all {
		if m := p.next(t, 120*time.Second); m["ready"] == nil {
			t.Fatalf("want ready, got %v", m)
		}
	}
	t.Logf("%s: peers ready after %v", conf, time.Since(start).Round(time.Millisecond))

	ops := []peerOp{
		{Op: "call", Method: "add", Args: map[string]any{"a": 2, "b": 3}},
		{Op: "call", Method: "echo", Args: map[string]any{"n": map[string]any{"a": []any{1, 2.5, nil, true}, "u": "h\u00e9llo \u2603"}}},
		{Op: "call", Method: "fail", Args: map[string]any{"msg": "bad value"}},
		{Op: "call", Method: "whoami", Server: "s2"},
		{Op: "cast", Method: "record", Args: map[string]any{"tag": "cast-1"}},
		{Op: "cast", Method: "record", Args: map[string]any{"tag": "fanout-1"}, Fanout: true},
	}
	for range 6 {
		ops = append(ops, peerOp{Op: "call", Method: "whoami"})
	}
	opsJSON, err := json.Marshal(ops)
	if err != nil {
		t.Fatal(err)
	}
	res := runPeer18(t, peer, "client.py", url, conf, topic, string(opsJSON))
	if f, _ := res["oslo_messaging"].(string); !strings.Contains(f, "oslo.messaging-"+oslo18.Version) && !strings.Contains(f, "oslo18-venv") {
		t.Errorf("client ran oslo_messaging from %q, not the 18.1.0 peer", f)
	}
	rs, _ := res["results"].([]any)
	if len(rs) != len(ops) {
		t.Fatalf("client: %d results for %d operations: %v", len(rs), len(ops), res)
	}
	get := func(i int) (any, map[string]any) {
		r, _ := rs[i].(map[string]any)
		if ok, _ := r["ok"].(bool); !ok {
			e, _ := r["error"].(map[string]any)
			return nil, e
		}
		return r["value"], nil
	}
	if v, e := get(0); e != nil || v != float64(5) {
		t.Errorf("call add: %v %v, want 5", v, e)
	}
	if v, e := get(1); e != nil {
		t.Errorf("call echo: %v", e)
	} else if b, _ := json.Marshal(v); string(b) != `{"n":{"a":[1,2.5,null,true],"u":"héllo ☃"}}` {
		t.Errorf("call echo: %s", b)
	}
	if v, e := get(2); e == nil || e["type"] != "ValueError" || e["str"] != "bad value" {
		t.Errorf("call fail: %v %v, want the remote ValueError", v, e)
	}
	if v, e := get(3); e != nil || v != "s2" {
		t.Errorf("call whoami on server s2: %v %v", v, e)
	}
	for i := 4; i < 6; i++ {
		if _, e := get(i); e != nil {
			t.Errorf("%s: %v", ops[i].Args["tag"], e)
		}
	}
	seen := map[any]bool{}
	for i := 6; i < len(ops); i++ {
		v, e := get(i)
		if e != nil {
			t.Errorf("round-robin call %d: %v", i, e)
		}
		seen[v] = true
	}
	if !seen["s1"] || !seen["s2"] {
		t.Errorf("six calls to the topic reached %v, want both servers", seen)
	}

	// Casts: cast-1 once on one server, fanout-1 once on each.
	got := map[string][]string{}
	deadline := time.Now().Add(30 * time.Second)
	for name, p := range servers {
		for len(got["fanout-1"]) < 2 || len(got["cast-1"]) < 1 {
			left := time.Until(deadline)
			if left <= 0 {
				break
			}
			m, ok := nextOrTimeout(p, min(left, 2*time.Second))
			if !ok {
				break
			}
			c, _ := m["cast"].(map[string]any)
			tag, _ := c["tag"].(string)
			got[tag] = append(got[tag], name)
		}
	}
	// Then half a second more on each server for a duplicate.
	for name, p := range servers {
		for {
			m, ok := nextOrTimeout(p, 500*time.Millisecond)
			if !ok {
				break
			}
			c, _ := m["cast"].(map[string]any)
			tag, _ := c["tag"].(string)
			got[tag] = append(got[tag], name)
		}
	}
	slices.Sort(got["fanout-1"])
	if !slices.Equal(got["fanout-1"], []string{"s1", "s2"}) {
		t.Errorf("fanout cast reached %v, want s1 and s2 once each", got["fanout-1"])
	}
	if len(got["cast-1"]) != 1 {
		t.Errorf("cast reached %v, want one server", got["cast-1"])
	}

	t.Logf("%s: RPC checked after %v", conf, time.Since(start).Round(time.Millisecond))

	// Notifications: seven, to every pool once.
	n := runPeer18(t, peer, "notifier.py", url, conf, ntopic, "tag-"+conf)
	if n["sent"] != float64(7) {
		t.Fatalf("notifier: %v", n)
	}
	// Each pool gets the seven once: wait until it has them, then 500 ms
	// more for a duplicate.
	count := func(ps []*pyProc) (int, []string) {
		var events []string
		deadline := time.Now().Add(30 * time.Second)
		quiet := 0
		for quiet < len(ps) && time.Now().Before(deadline) {
			quiet = 0
			for _, p := range ps {
				wait := 200 * time.Millisecond
				if len(events) >= 7 {
					wait = 500 * time.Millisecond
				}
				m, ok := nextOrTimeout(p, wait)
				if !ok {
					if len(events) >= 7 {
						quiet++
					}
					continue
				}
				payload, _ := m["payload"].(map[string]any)
				if payload["tag"] != "tag-"+conf || m["publisher_id"] != "py18.host1" {
					t.Errorf("notification %v", m)
				}
				events = append(events, fmt.Sprint(m["event_type"]))
			}
		}
		slices.Sort(events)
		return len(events), events
	}
	for pool, ps := range listeners {
		if got, events := count(ps); got != 7 {
			t.Errorf("pool %q: %d notifications %v, want 7", pool, got, events)
		}
	}
	t.Logf("%s: notifications checked after %v", conf, time.Since(start).Round(time.Millisecond))
}

// nextOrTimeout is pyProc.next without failing the test on a quiet peer.
func nextOrTimeout(p *pyProc, d time.Duration) (map[string]any, bool) {
	tm := time.NewTimer(d)
	defer tm.Stop()
	select {
	case m, ok := <-p.lines:
		return m, ok
	case <-tm.C:
		return nil, false
	}
}

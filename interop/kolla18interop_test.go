package interop

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/oslogo/oslogo/broker"
	"github.com/oslogo/oslogo/internal/testrabbit"
	"github.com/oslogo/oslogo/messaging"
)

// go18Options is [oslo_messaging_rabbit] of the Go side in one of the
// peer's configurations (interop/python18/common.py), and whether the
// configuration needs [oslo_concurrency] lock_path (the queue manager's).
func go18Options(conf, processname string) (map[string]string, bool) {
	switch conf {
	case "defaults":
		return map[string]string{}, false
	case "kolla":
		o := kolla18Options(processname)
		delete(o, "use_queue_manager")
		delete(o, "hostname")
		delete(o, "processname")
		return o, false
	case "kolla-qm":
		return kolla18Options(processname), true
	}
	panic("unknown configuration " + conf)
}

// openGo18 opens a Go transport on u in configuration conf; processname
// tells the queue manager's counters apart (one per transport, as 18.1
// wants one per process).
func openGo18(t *testing.T, u, conf, processname string) *messaging.Transport {
	t.Helper()
	if conf == "kolla-qm" {
		return openKolla18(t, u, processname)
	}
	opts, _ := go18Options(conf, processname)
	cfg := messaging.DefaultTransportConfig()
	cfg.DriverConfig = opts
	tr, err := messaging.OpenTransport(context.Background(), u, cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = tr.Close() })
	return tr
}

// startEmbedded18 starts the embedded broker with a data directory, as a
// deployment has it, and returns its rabbit:// URL.
func startEmbedded18(t *testing.T) string {
	t.Helper()
	return startEmbeddedWith(t, func(o *broker.Options) { o.DataDir = t.TempDir() })
}

const (
	k18Fanouts = 20 // fanout casts each way, each to every server once
	k18Casts   = 3  // plain casts each way, each to one server once
)

var k18Servers = []string{"s1", "s2", "s3"}

// TestKolla18Interop: Go and the Python oslo.messaging 18.1.0 peer
// (interop/python18) on RabbitMQ 3.10 (a vhost per case) and on the
// embedded broker (a broker with a data directory per case), in each of
// the peer's configurations (defaults; kolla: quorum + transient quorum +
// stream fanout + prefetch 10; kolla-qm: kolla + use_queue_manager), the
// Go side configured the same:
//
//   - a Go client calls three Python servers: round robin reaches all
//     three, a call by server name reaches that server, a remote
//     ValueError comes back as one, 20 fanout casts reach each server
//     exactly once, 3 casts reach one server each;
//   - the Python client does the same to three Go servers;
//   - a Go notifier (messagingv2, seven priorities) reaches Python
//     listeners in two pools, each pool every notification once;
//   - a Python notifier reaches Go listeners in two pools (two listeners
//     sharing the first), each pool every notification once.
func TestKolla18Interop(t *testing.T) {
	brokers := []struct {
		name string
		url  func(t *testing.T, conf string) string
	}{
		{"rabbitmq", func(t *testing.T, conf string) string { return testrabbit.NewVhost(t, "k18i_"+conf) }},
		{"embedded", func(t *testing.T, _ string) string { return startEmbedded18(t) }},
	}
	for _, b := range brokers {
		t.Run(b.name, func(t *testing.T) {
			for _, conf := range peer18Configs {
				t.Run(conf, func(t *testing.T) { kolla18Interop(t, b.url(t, conf), conf) })
			}
		})
	}
}

// k18Note is a notification a Go listener received.
type k18Note struct {
	pool, priority, tag string
}

func kolla18Interop(t *testing.T, u, conf string) {
	start := time.Now()
	short := strings.ReplaceAll(conf, "-", "")
	pyTopic := uniqueTopic("k18py" + short) // Python servers, Go client
	goTopic := uniqueTopic("k18go" + short) // Go servers, Python client
	pyNotify := pyTopic + "_n"              // Go notifier, Python listeners
	goNotify := goTopic + "_n"              // Python notifier, Go listeners
	pyTag, goTag := "py-"+conf, "go-"+conf

	// The Go side first: it is up in milliseconds, and the Python client
	// and notifier started below need it.
	casts := make(chan castRecord, 4*(len(k18Servers)*k18Fanouts+k18Casts))
	for _, s := range k18Servers {
		startGo18Server(t, openGo18(t, u, conf, "goserver-"+s), goTopic, s, casts)
	}
	notes := make(chan k18Note, 64)
	ltr := openGo18(t, u, conf, "golisten")
	goPools := []string{"g1", "g1", "g2"}
	for _, pool := range goPools {
		handlers := map[messaging.Priority]messaging.NotificationHandler{}
		for _, p := range priorities {
			handlers[p] = func(_ context.Context, n *messaging.Notification) messaging.NotificationResult {
				var payload struct{ Tag string }
				_ = json.Unmarshal(n.Payload, &payload)
				if n.PublisherID != "py18.host1" || n.EventType != "interop."+string(n.Priority) {
					t.Errorf("pool %s: notification %+v", pool, n)
				}
				notes <- k18Note{pool, string(n.Priority), payload.Tag}
				return messaging.Handled
			}
		}
		l, err := messaging.NewNotificationListener(ltr, []messaging.Target{{Topic: goNotify}}, []messaging.NotificationEndpoint{{Handlers: handlers}}, messaging.WithPool(pool))
		if err != nil {
			t.Fatal(err)
		}
		if err := l.Start(context.Background()); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() {
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			_ = l.Stop(ctx)
			l.Wait()
		})
	}

	// Every Python peer at once: each takes seconds to import
	// oslo.messaging on a busy machine.
	var ops []peerOp
	ops = append(ops, peerOp{Op: "call", Method: "add", Args: map[string]any{"a": 2, "b": 3}})
	for range 6 {
		ops = append(ops, peerOp{Op: "call", Method: "whoami"})
	}
	ops = append(ops, peerOp{Op: "call", Method: "whoami", Server: "s2"})
	ops = append(ops, peerOp{Op: "call", Method: "fail", Args: map[string]any{"msg": "k18 " + conf}})
	for i := range k18Fanouts {
		ops = append(ops, peerOp{Op: "cast", Method: "record", Args: map[string]any{"tag": fmt.Sprintf("f%d", i)}, Fanout: true})
	}
	for i := range k18Casts {
		ops = append(ops, peerOp{Op: "cast", Method: "record", Args: map[string]any{"tag": fmt.Sprintf("c%d", i)}})
	}
	opsJSON, err := json.Marshal(ops)
	if err != nil {
		t.Fatal(err)
	}
	pyServers := map[string]*pyProc{}
	var all []*pyProc
	for _, s := range k18Servers {
		pyServers[s] = startPy18(t, false, "server.py", u, conf, pyTopic, s)
		all = append(all, pyServers[s])
	}
	pyListeners := map[string]*pyProc{}
	for _, pool := range []string{"p1", "p2"} {
		pyListeners[pool] = startPy18(t, false, "listener.py", u, conf, pyNotify, pool)
		all = append(all, pyListeners[pool])
	}
	pyClient := startPy18(t, false, "client.py", u, conf, goTopic, string(opsJSON))
	pyNotifier := startPy18(t, false, "notifier.py", u, conf, goNotify, pyTag)
	// Stop the long-running peers side by side (each takes seconds).
	t.Cleanup(func() {
		var wg sync.WaitGroup
		for _, p := range all {
			wg.Go(func() { p.stop(t) })
		}
		wg.Wait()
	})
	for _, p := range all {
		m := p.next(t, 150*time.Second)
		if m["ready"] == nil {
			t.Fatalf("%s: want ready, got %v", p.log.prefix, m)
		}
		if f, _ := m["oslo_messaging"].(string); !strings.Contains(f, "18.1") && !strings.Contains(f, "oslo18-venv") {
			t.Fatalf("%s runs %s, not oslo.messaging 18.1", p.log.prefix, f)
		}
	}
	t.Logf("%s: Python servers and listeners ready after %v", conf, time.Since(start).Round(time.Millisecond))

	// Go client -> Python servers.
	tr := openGo18(t, u, conf, "goclient")
	ctx, cancel := context.WithTimeout(context.Background(), 150*time.Second)
	defer cancel()
	cli := messaging.NewRPCClient(tr, messaging.Target{Topic: pyTopic}, messaging.WithTimeout(30*time.Second))
	if res, err := cli.Call(ctx, "add", map[string]any{"a": 2, "b": 3}); err != nil || (string(res) != "5" && string(res) != "5.0") {
		t.Errorf("Go -> Python add = %s, %v", res, err)
	}
	seen := map[string]bool{}
	for range 6 {
		res, err := cli.Call(ctx, "whoami", map[string]any{})
		if err != nil {
			t.Fatalf("Go -> Python whoami: %v", err)
		}
		seen[string(res)] = true
	}
	if len(seen) != len(k18Servers) {
		t.Errorf("Go -> Python: six calls to the topic reached %v, want all three servers", seen)
	}
	if res, err := cli.Prepare(messaging.WithServer("s2")).Call(ctx, "whoami", map[string]any{}); err != nil || string(res) != `"s2"` {
		t.Errorf("Go -> Python whoami on s2 = %s, %v", res, err)
	}
	_, err = cli.Call(ctx, "fail", map[string]any{"msg": "k18 " + conf})
	var re *messaging.RemoteError
	if !errors.As(err, &re) || re.Class != "ValueError" || !strings.Contains(re.Message, "k18 "+conf) {
		t.Errorf("Go -> Python fail: %v", err)
	}
	fan := cli.Prepare(messaging.WithFanout(true))
	for i := range k18Fanouts {
		if err := fan.Cast(ctx, "record", map[string]any{"tag": fmt.Sprintf("f%d", i)}); err != nil {
			t.Fatal(err)
		}
	}
	for i := range k18Casts {
		if err := cli.Cast(ctx, "record", map[string]any{"tag": fmt.Sprintf("c%d", i)}); err != nil {
			t.Fatal(err)
		}
	}
	// Go notifier -> Python listeners.
	n, err := messaging.NewNotifier(tr, "go18.host1", messaging.WithNotifyDrivers("messagingv2"), messaging.WithNotifyTopics(pyNotify))
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range priorities {
		if err := n.Notify(ctx, p, "go."+string(p), map[string]any{"tag": goTag}); err != nil {
			t.Fatal(err)
		}
	}

	// What the Python servers received.
	got := map[string][]string{}
	want := len(k18Servers)*k18Fanouts + k18Casts
	total := 0
	deadline := time.Now().Add(60 * time.Second)
	for total < want && time.Now().Before(deadline) {
		for name, p := range pyServers {
			m, ok := nextOrTimeout(p, 100*time.Millisecond)
			if !ok {
				continue
			}
			c, _ := m["cast"].(map[string]any)
			tag, _ := c["tag"].(string)
			got[tag] = append(got[tag], name)
			total++
		}
	}
	// Then a second more on each server for a duplicate.
	for name, p := range pyServers {
		for {
			m, ok := nextOrTimeout(p, time.Second)
			if !ok {
				break
			}
			c, _ := m["cast"].(map[string]any)
			tag, _ := c["tag"].(string)
			got[tag] = append(got[tag], name)
		}
	}
	checkK18Casts(t, "Go -> Python", got)

	// What the Python listeners received: each pool the seven once.
	for pool, p := range pyListeners {
		events := map[string]int{}
		for range priorities {
			m, ok := nextOrTimeout(p, 30*time.Second)
			if !ok {
				break
			}
			payload, _ := m["payload"].(map[string]any)
			prio, _ := m["priority"].(string)
			if payload["tag"] != goTag || m["publisher_id"] != "go18.host1" || m["event_type"] != "go."+prio || m["pool"] != pool {
				t.Errorf("Go -> Python pool %s: notification %v", pool, m)
			}
			events[prio]++
		}
		if m, ok := nextOrTimeout(p, time.Second); ok {
			t.Errorf("Go -> Python pool %s: extra notification %v", pool, m)
		}
		for _, prio := range priorities {
			if events[string(prio)] != 1 {
				t.Errorf("Go -> Python pool %s: %s received %d times (all: %v)", pool, prio, events[string(prio)], events)
			}
		}
	}
	t.Logf("%s: Go -> Python checked after %v", conf, time.Since(start).Round(time.Millisecond))

	// Python client -> Go servers.
	m := pyClient.next(t, 150*time.Second)
	b, _ := json.Marshal(m["results"])
	var res []outcome
	if err := json.Unmarshal(b, &res); err != nil || len(res) != len(ops) {
		t.Fatalf("Python client results %s: %v", b, err)
	}
	if v := string(res[0].Value); !res[0].OK || (v != "5" && v != "5.0") {
		t.Errorf("Python -> Go add: %+v %s", res[0].Error, v)
	}
	seen = map[string]bool{}
	for _, r := range res[1:7] {
		if !r.OK {
			t.Errorf("Python -> Go whoami: %+v", r.Error)
		}
		seen[string(r.Value)] = true
	}
	if len(seen) != len(k18Servers) {
		t.Errorf("Python -> Go: six calls to the topic reached %v, want all three servers", seen)
	}
	if string(res[7].Value) != `"s2"` {
		t.Errorf("Python -> Go whoami on s2: %s %+v", res[7].Value, res[7].Error)
	}
	if res[8].OK || res[8].Error.Type != "ValueError" || !strings.Contains(res[8].Error.Str, "k18 "+conf) {
		t.Errorf("Python -> Go fail: %+v", res[8].Error)
	}
	for i, r := range res[9:] {
		if !r.OK {
			t.Errorf("Python -> Go cast %d: %+v", i, r.Error)
		}
	}
	got = map[string][]string{}
	deadline = time.Now().Add(60 * time.Second)
	for total = 0; total < want; total++ {
		select {
		case c := <-casts:
			got[c.tag] = append(got[c.tag], c.server)
			continue
		case <-time.After(time.Until(deadline)):
		}
		break
	}
	func() {
		extra := time.After(time.Second)
		for {
			select {
			case c := <-casts:
				got[c.tag] = append(got[c.tag], c.server)
			case <-extra:
				return
			}
		}
	}()
	checkK18Casts(t, "Python -> Go", got)

	// Python notifier -> Go listeners.
	if m := pyNotifier.next(t, 150*time.Second); m["sent"] != float64(len(priorities)) {
		t.Fatalf("Python notifier: %v", m)
	}
	counts := map[string]int{}
	wantNotes := len(priorities) * 2 // two pools
	deadline = time.Now().Add(30 * time.Second)
	for total = 0; total < wantNotes; total++ {
		select {
		case nt := <-notes:
			if nt.tag != pyTag {
				t.Errorf("Python -> Go: tag %q", nt.tag)
			}
			counts[nt.pool+"/"+nt.priority]++
			continue
		case <-time.After(time.Until(deadline)):
		}
		break
	}
	select {
	case nt := <-notes:
		counts[nt.pool+"/"+nt.priority]++
	case <-time.After(time.Second):
	}
	for _, pool := range []string{"g1", "g2"} {
		for _, p := range priorities {
			if c := counts[pool+"/"+string(p)]; c != 1 {
				t.Errorf("Python -> Go pool %s: %s received %d times (all: %v)", pool, p, c, counts)
			}
		}
	}
	t.Logf("%s: Python -> Go checked after %v", conf, time.Since(start).Round(time.Millisecond))
}

// checkK18Casts: every fanout cast f<i> reached each server once, every
// cast c<i> one server once, nothing else arrived.
func checkK18Casts(t *testing.T, dir string, got map[string][]string) {
	t.Helper()
	for i := range k18Fanouts {
		tag := fmt.Sprintf("f%d", i)
		s := slices.Sorted(slices.Values(got[tag]))
		if !slices.Equal(s, k18Servers) {
			t.Errorf("%s: fanout cast %s reached %v, want each of %v once", dir, tag, s, k18Servers)
		}
		delete(got, tag)
	}
	for i := range k18Casts {
		tag := fmt.Sprintf("c%d", i)
		if len(got[tag]) != 1 {
			t.Errorf("%s: cast %s reached %v, want one server once", dir, tag, got[tag])
		}
		delete(got, tag)
	}
	if len(got) > 0 {
		t.Errorf("%s: unexpected casts %v", dir, got)
	}
}

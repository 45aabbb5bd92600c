package interop

import (
	"context"
	"encoding/json"
	"fmt"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/oslogo/oslogo/internal/oslo18"
	"github.com/oslogo/oslogo/internal/testrabbit"
	"github.com/oslogo/oslogo/messaging"
)

// The kolla configuration against the Python oslo.messaging 18.1.0 peer
// (interop/python18, configuration "kolla-qm": quorum queues, transient
// quorum queues, stream fanout, prefetch 10, queue manager) on RabbitMQ
// 3.10, each test in a vhost of its own. TestKolla18Interop
// (kolla18interop_test.go) runs Go against Python in all three
// configurations on RabbitMQ and on the embedded broker.

// kolla18Options is [oslo_messaging_rabbit] of the Go side, as the peer's
// kolla-qm configuration (interop/python18/common.py).
func kolla18Options(processname string) map[string]string {
	return map[string]string{
		"rabbit_quorum_queue":           "true",
		"rabbit_transient_quorum_queue": "true",
		"rabbit_stream_fanout":          "true",
		"rabbit_qos_prefetch_count":     "10",
		"use_queue_manager":             "true",
		"hostname":                      fmt.Sprintf("oslogo-go-%d", os.Getpid()),
		"processname":                   processname,
	}
}

func openKolla18(t *testing.T, u, processname string) *messaging.Transport {
	t.Helper()
	cfg := messaging.DefaultTransportConfig()
	cfg.DriverConfig = kolla18Options(processname)
	cfg.LockPath = t.TempDir()
	t.Cleanup(func() {
		_ = os.Remove(fmt.Sprintf("/dev/shm/oslogo-go-%d_%s_qmanager", os.Getpid(), processname))
	})
	tr, err := messaging.OpenTransport(context.Background(), u, cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = tr.Close() })
	return tr
}

// startPy18 runs interop/python18/<script> with the 18.1 peer, in a
// process group of its own (18.1's queue manager reads the start time of
// the group's leader, which must be alive: the test binary's may not be,
// e.g. under a shell's background job), and, when wantReady, waits for its
// {"ready": ...} line, which must name the 18.1 copy.
func startPy18(t *testing.T, wantReady bool, script string, args ...string) *pyProc {
	t.Helper()
	peer := oslo18.Get(t)
	cmd := peer.Command(append([]string{peer.Script(script)}, args...)...)
	host := fmt.Sprintf("oslogo-py-%d", os.Getpid())
	cmd.Env = append(cmd.Env, "OSLO18_HOSTNAME="+host)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	t.Cleanup(func() {
		matches, _ := filepath.Glob("/dev/shm/" + host + "_*_qmanager")
		for _, m := range matches {
			_ = os.Remove(m)
		}
	})
	p := startProc(t, false, "py18 "+script, cmd)
	if wantReady {
		m := p.next(t, 90*time.Second)
		if m["ready"] == nil {
			t.Fatalf("%s: want ready, got %v", script, m)
		}
		if f, _ := m["oslo_messaging"].(string); !strings.Contains(f, "18.1") {
			t.Fatalf("%s runs %s, not oslo.messaging 18.1", script, f)
		}
	}
	return p
}

// startKollaGoServer is startGoServer on the kolla configuration.
func startKollaGoServer(t *testing.T, u, topic, server string, casts chan<- castRecord) {
	t.Helper()
	startGo18Server(t, openKolla18(t, u, "goserver-"+server), topic, server, casts)
}

// startGo18Server is startGoServer on tr: add, whoami, fail (a remote
// ValueError) and record (casts, sent to casts).
func startGo18Server(t *testing.T, tr *messaging.Transport, topic, server string, casts chan<- castRecord) {
	t.Helper()
	def := messaging.NewEndpoint(messaging.Target{})
	def.HandleRaw("add", func(ctx context.Context, args json.RawMessage) (any, error) {
		var a struct{ A, B float64 }
		if err := json.Unmarshal(args, &a); err != nil {
			return nil, err
		}
		return a.A + a.B, nil
	})
	def.HandleRaw("whoami", func(context.Context, json.RawMessage) (any, error) { return server, nil })
	def.HandleRaw("fail", func(_ context.Context, args json.RawMessage) (any, error) {
		var a struct{ Msg string }
		_ = json.Unmarshal(args, &a)
		return nil, messaging.NewRemoteError("builtins", "ValueError", "('"+a.Msg+"',)", a.Msg)
	})
	def.HandleRaw("record", func(ctx context.Context, args json.RawMessage) (any, error) {
		var a struct{ Tag string }
		_ = json.Unmarshal(args, &a)
		casts <- castRecord{server: server, tag: a.Tag}
		return nil, nil
	})
	srv, err := messaging.NewRPCServer(tr, messaging.Target{Topic: topic, Server: server}, []*messaging.Endpoint{def})
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

// TestKolla18DeclarationsMatchPython: a Python 18.1 server and client on
// topic P and a Go server and client on topic G, all in the kolla
// configuration in one vhost, leave queues and exchanges of the same
// types, flags and arguments (rabbitmqctl list_queues/list_exchanges),
// names mapped P/G -> T and <host>:<proc>:<n> -> N. This is the table of
// /work/shared/peers/README.md, checked on both sides.
func TestKolla18DeclarationsMatchPython(t *testing.T) {
	u := testrabbit.NewVhost(t, "k18_decl")
	stamp := uniqueTopic("")
	py, gt := "pyt"+stamp, "got"+stamp
	p := startPy18(t, true, "server.py", u, "kolla-qm", py, "srv")
	_ = p
	c := startPy18(t, false, "client.py", u, "kolla-qm", py, `[{"op": "call", "method": "whoami"}]`)
	if m := c.next(t, 120*time.Second); !strings.Contains(fmt.Sprint(m["results"]), "ok:true") {
		t.Fatalf("python call: %v", m)
	}
	casts := make(chan castRecord, 4)
	startKollaGoServer(t, u, gt, "srv", casts)
	tr := openKolla18(t, u, "gocli")
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	if _, err := messaging.NewRPCClient(tr, messaging.Target{Topic: gt}).Call(ctx, "whoami", map[string]any{}); err != nil {
		t.Fatal(err)
	}
	vhost := strings.TrimPrefix(mustParse(t, u).Path, "/")
	qm := regexp.MustCompile(`oslogo-(py|go)-\d+:[^: \t]+:\d+`)
	norm := func(s, topic string) string {
		s = strings.ReplaceAll(s, topic, "T")
		s = qm.ReplaceAllString(s, "N")
		// Arguments are listed in the order they came; an AMQP table has
		// none.
		if i := strings.Index(s, "[{"); i >= 0 && strings.HasSuffix(s, "}]") {
			args := strings.Split(s[i+2:len(s)-2], "},{")
			slices.Sort(args)
			s = s[:i] + "[{" + strings.Join(args, "},{") + "}]"
		}
		return s
	}
	shapes := func(args ...string) (pyS, goS []string) {
		out, err := exec.Command("rabbitmqctl", append([]string{"-q", "--no-table-headers", "-p", vhost}, args...)...).CombinedOutput()
		if err != nil {
			t.Fatalf("rabbitmqctl %v: %v\n%s", args, err, out)
		}
		for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
			line = strings.Join(strings.Fields(line), " ")
			switch {
			case strings.Contains(line, py):
				pyS = append(pyS, norm(line, py))
			case strings.Contains(line, gt):
				goS = append(goS, norm(line, gt))
			case strings.HasPrefix(line, "reply_oslogo-py"):
				pyS = append(pyS, norm(line, py))
			case strings.HasPrefix(line, "reply_oslogo-go"):
				goS = append(goS, norm(line, gt))
			}
		}
		slices.Sort(pyS)
		slices.Sort(goS)
		return pyS, goS
	}
	pq, gq := shapes("list_queues", "name", "type", "durable", "auto_delete", "arguments")
	t.Logf("queues of 18.1:\n%s", strings.Join(pq, "\n"))
	if strings.Join(pq, "\n") != strings.Join(gq, "\n") {
		t.Errorf("queues differ:\n18.1:\n%s\noslogo:\n%s", strings.Join(pq, "\n"), strings.Join(gq, "\n"))
	}
	for _, want := range []string{"T quorum true false", "T.srv quorum true false", "T_fanout stream true false", "reply_N quorum true false"} {
		found := false
		for _, q := range gq {
			found = found || strings.HasPrefix(q, want)
		}
		if !found {
			t.Errorf("no queue %q among\n%s", want, strings.Join(gq, "\n"))
		}
	}
	px, gx := shapes("list_exchanges", "name", "type", "durable", "auto_delete")
	t.Logf("exchanges of 18.1:\n%s", strings.Join(px, "\n"))
	if strings.Join(px, "\n") != strings.Join(gx, "\n") {
		t.Errorf("exchanges differ:\n18.1:\n%s\noslogo:\n%s", strings.Join(px, "\n"), strings.Join(gx, "\n"))
	}
	pc, gc := shapes("list_consumers", "queue_name", "ack_required", "prefetch_count", "arguments")
	t.Logf("consumers of 18.1:\n%s\nof oslogo:\n%s", strings.Join(pc, "\n"), strings.Join(gc, "\n"))
}

func mustParse(t *testing.T, s string) *url.URL {
	t.Helper()
	u, err := url.Parse(s)
	if err != nil {
		t.Fatal(err)
	}
	return u
}

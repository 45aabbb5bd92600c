//go:build linux

package broker

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/oslogo/oslogo/internal/oslo18"
)

func mustEvalSymlinks(t *testing.T, p string) string {
	t.Helper()
	r, err := filepath.EvalSymlinks(p)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

// TestOslo18KollaDefaults runs oslo.messaging 18.1.0 with kolla-ansible
// 2025.1's defaults (quorum queues, transient quorum reply queues, stream
// fanout, prefetch 10, the queue manager) against the broker: an RPC
// server with its fanout listener, and a client doing call, direct call,
// cast and two fanout casts. Before stream queues the server failed at its
// first fanout listener with 406 "invalid arg 'x-queue-type'".
func TestOslo18KollaDefaults(t *testing.T) {
	peer := oslo18.Get(t)
	s, _ := startBroker(t, func(o *Options) { o.DataDir = t.TempDir() })
	dir := t.TempDir()
	// 18.1's queue manager keeps its counter in /dev/shm, named after the
	// host and the process ("<host>_oslo18_stream.py_qmanager").
	if host, err := os.Hostname(); err == nil {
		t.Cleanup(func() { _ = os.Remove("/dev/shm/" + host + "_oslo18_stream.py_qmanager") })
	}
	conf := filepath.Join(dir, "oslo.conf")
	err := os.WriteFile(conf, []byte(fmt.Sprintf(`[DEFAULT]
transport_url = rabbit://guest:guest@127.0.0.1:%s/
[oslo_messaging_rabbit]
rabbit_quorum_queue = true
rabbit_transient_quorum_queue = true
rabbit_stream_fanout = true
rabbit_qos_prefetch_count = 10
use_queue_manager = true
[oslo_concurrency]
lock_path = %s
`, port(t, s), dir)), 0o600)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 150*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, peer.Python, "oslo18_stream.py", conf)
	cmd.Dir = pyDir(t)
	cmd.Env = peer.Env
	// use_queue_manager reads /proc/<process group>/stat: a group of its
	// own, whose leader cannot have exited before it.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	var buf bytes.Buffer
	cmd.Stdout, cmd.Stderr = &buf, &buf
	if err := cmd.Run(); err != nil {
		t.Fatalf("oslo18_stream.py: %v\n%s", err, buf.String())
	}
	out := buf.String()
	line := out[strings.LastIndex(strings.TrimSpace(out), "\n")+1:]
	var res struct {
		File   string   `json:"oslo_messaging"`
		Call   string   `json:"call"`
		Events []string `json:"events"`
	}
	if err := json.Unmarshal([]byte(line), &res); err != nil {
		t.Fatalf("output %q: %v", out, err)
	}
	if got, _ := filepath.EvalSymlinks(res.File); got != mustEvalSymlinks(t, peer.Package) {
		t.Fatalf("ran oslo.messaging from %s, not the 18.1.0 peer", res.File)
	}
	// The queues it declared have the types kolla's defaults ask for.
	qs, err := s.Queues(QueuesOptions{VHost: "/"})
	if err != nil {
		t.Fatal(err)
	}
	types := map[string]string{}
	for _, q := range qs {
		switch {
		case strings.HasPrefix(q.Name, "reply_"):
			types["reply_*"] = q.Type
			if q.Arguments["x-expires"] == nil {
				t.Errorf("reply queue %s without x-expires: %v", q.Name, q.Arguments)
			}
		default:
			types[q.Name] = q.Type
		}
	}
	want := map[string]string{"oslogo_t": "quorum", "oslogo_t.srv1": "quorum", "oslogo_t_fanout": "stream", "reply_*": "quorum"}
	for n, ty := range want {
		if types[n] != ty {
			t.Errorf("queue %s: type %q, want %q (all: %v)", n, types[n], ty, types)
		}
	}
}

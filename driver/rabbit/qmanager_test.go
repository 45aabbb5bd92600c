package rabbit

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/oslogo/oslogo/driver"
	"github.com/oslogo/oslogo/internal/oslo18"
)

func newTestQM(t *testing.T, host, proc string) *queueManager {
	t.Helper()
	q, err := newQueueManager(host, proc, t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = os.Remove(q.file) })
	return q
}

func mustGet(t *testing.T, q *queueManager) string {
	t.Helper()
	n, err := q.get()
	if err != nil {
		t.Fatal(err)
	}
	return n
}

// TestQueueManagerCounter: names count up within a process group, the
// counter file holds "<pgid>:<n>:<start time>" as 18.1 writes it, and a
// process of another group (a restart) starts over at 1.
func TestQueueManagerCounter(t *testing.T) {
	host := fmt.Sprintf("oslogo-qm-%d", os.Getpid())
	q := newTestQM(t, host, "svc")
	for i := 1; i <= 3; i++ {
		if got, want := mustGet(t, q), fmt.Sprintf("%s:svc:%d", host, i); got != want {
			t.Fatalf("name %q, want %q", got, want)
		}
	}
	b, err := os.ReadFile(filepath.Join(shmDir, host+"_svc_qmanager"))
	if err != nil {
		t.Fatal(err)
	}
	if want := fmt.Sprintf("%d:3:%d", syscall.Getpgrp(), q.startTime); string(b) != want {
		t.Errorf("counter file %q, want %q", b, want)
	}
	restarted := *q
	restarted.pg++
	if got := mustGet(t, &restarted); got != host+":svc:1" {
		t.Errorf("after a restart %q, want %s:svc:1", got, host)
	}
	if err := os.WriteFile(q.file, []byte("garbage"), 0o644); err != nil {
		t.Fatal(err)
	}
	if got := mustGet(t, q); got != host+":svc:1" {
		t.Errorf("after an unreadable counter %q, want ...:1 (18.1's ValueError)", got)
	}
}

// TestQueueManagerRestartReusesNames runs a service twice, each time in a
// process group of its own (as a restarted container or systemd unit):
// both runs name their queues alike, so RabbitMQ keeps them.
func TestQueueManagerRestartReusesNames(t *testing.T) {
	if os.Getenv("OSLOGO_QM_CHILD") != "" {
		return // the child's own run
	}
	host := fmt.Sprintf("oslogo-qm-restart-%d", os.Getpid())
	lock := t.TempDir()
	t.Cleanup(func() { _ = os.Remove(filepath.Join(shmDir, host+"_nova-compute_qmanager")) })
	run := func() string {
		cmd := exec.Command(os.Args[0], "-test.run=^TestQueueManagerChild$", "-test.v")
		cmd.Env = append(os.Environ(), "OSLOGO_QM_CHILD="+host, "OSLOGO_QM_LOCK="+lock)
		cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("child: %v\n%s", err, out)
		}
		for _, line := range strings.Split(string(out), "\n") {
			if s, ok := strings.CutPrefix(strings.TrimSpace(line), "names: "); ok {
				return s
			}
		}
		t.Fatalf("child printed no names:\n%s", out)
		return ""
	}
	first, second := run(), run()
	want := fmt.Sprintf("reply_%[1]s:nova-compute:1 compute_fanout_%[1]s:nova-compute:2", host)
	if first != want || second != want {
		t.Errorf("first run %q, second run %q, want both %q", first, second, want)
	}
}

// TestQueueManagerChild is the service TestQueueManagerRestartReusesNames
// starts: a driver with use_queue_manager and a server's fanout queue.
func TestQueueManagerChild(t *testing.T) {
	host := os.Getenv("OSLOGO_QM_CHILD")
	if host == "" {
		return // only as TestQueueManagerRestartReusesNames's child
	}
	d, err := OpenString("rabbit://127.0.0.1:1/", driverOptions(map[string]string{
		"use_queue_manager": "true", "hostname": host, "processname": "nova-compute"}, os.Getenv("OSLOGO_QM_LOCK")))
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	rq, err := d.replyQueue()
	if err != nil {
		t.Fatal(err)
	}
	fq, err := d.fanoutQueueName("compute")
	if err != nil {
		t.Fatal(err)
	}
	fmt.Printf("names: %s %s\n", rq, fq)
}

// TestQueueManagerSharedWithPython: a Go driver and the Python 18.1 peer's
// QManager of the same host and process name, in the same process group,
// share one counter (same file, format and fcntl lock): their names
// interleave 1, 2, 3.
func TestQueueManagerSharedWithPython(t *testing.T) {
	peer := oslo18.Get(t)
	host := fmt.Sprintf("oslogo-qm-py-%d", os.Getpid())
	q := newTestQM(t, host, "shared")
	// A process group of its own whose leader lives while the test runs
	// (the test binary's group leader may have exited, and 18.1 then
	// fails to read its start time); the Go side takes its identity.
	leader := exec.Command("sleep", "120")
	leader.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := leader.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = leader.Process.Kill(); _ = leader.Wait() })
	q.pg = leader.Process.Pid
	st, err := procStartTime(q.pg)
	if err != nil {
		t.Fatal(err)
	}
	q.startTime = st
	py := func() string {
		cmd := peer.Command("-c", `
import sys
from oslo_concurrency import lockutils
from oslo_messaging._drivers import amqpdriver
lockutils.set_defaults(sys.argv[3])
print(amqpdriver.QManager(hostname=sys.argv[1], processname=sys.argv[2]).get())
`, host, "shared", filepath.Dir(q.lock))
		cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pgid: q.pg}
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("python QManager: %v\n%s", err, out)
		}
		return strings.TrimSpace(string(out))
	}
	got := []string{mustGet(t, q), py(), mustGet(t, q), py()}
	want := []string{host + ":shared:1", host + ":shared:2", host + ":shared:3", host + ":shared:4"}
	if strings.Join(got, " ") != strings.Join(want, " ") {
		t.Errorf("names %v, want %v", got, want)
	}
}

func driverOptions(cfg map[string]string, lockPath string) driver.Options {
	return driver.Options{Config: cfg, LockPath: lockPath}
}

// replyName is d's reply queue (named on first use).
func replyName(t testing.TB, d *Driver) string {
	t.Helper()
	q, err := d.replyQueue()
	if err != nil {
		t.Fatal(err)
	}
	return q
}

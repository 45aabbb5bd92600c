package broker

import (
	"bytes"
	"context"
	"encoding/json"
	"io/fs"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// These tests run real clients, unchanged, against a broker started on a
// free loopback port. scripts/setup.d/10-debian-peers.sh installs them.

const python = "/usr/bin/python3"

func run(t *testing.T, timeout time.Duration, dir string, env []string, name string, args ...string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), env...)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Run(); err != nil {
		t.Fatalf("%s %v: %v\n%s", name, args, err, out.String())
	}
	return out.String()
}

func port(t *testing.T, s *Server) string {
	_, p, _ := strings.Cut(s.Addr().String(), ":")
	return p
}

func pyDir(t *testing.T) string {
	d, err := filepath.Abs("testdata/python")
	if err != nil {
		t.Fatal(err)
	}
	return d
}

// TestPikaHelloWorld runs the send/receive pair of the seed document with
// Debian's python3-pika.
func TestPikaHelloWorld(t *testing.T) {
	s, _ := startBroker(t, nil)
	p := port(t, s)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	recvCmd := exec.CommandContext(ctx, python, "pika_receive.py", p)
	recvCmd.Dir = pyDir(t)
	var recvOut bytes.Buffer
	recvCmd.Stdout, recvCmd.Stderr = &recvOut, &recvOut
	if err := recvCmd.Start(); err != nil {
		t.Fatal(err)
	}
	out := run(t, 60*time.Second, pyDir(t), nil, python, "pika_send.py", p)
	if !strings.Contains(out, "Sent 'Hello World!'") {
		t.Fatalf("send: %s", out)
	}
	if err := recvCmd.Wait(); err != nil {
		t.Fatalf("receive: %v\n%s", err, recvOut.String())
	}
	if !strings.Contains(recvOut.String(), "Received b'Hello World!'") {
		t.Fatalf("receive output: %s", recvOut.String())
	}
}

// TestKombuPriorityWorker runs the seed document's kombu worker and client:
// three tasks through the "tasks" direct exchange to the hipri, midpri and
// lopri queues, pickled and bzip2-compressed.
func TestKombuPriorityWorker(t *testing.T) {
	s, _ := startBroker(t, nil)
	p := port(t, s)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	worker := exec.CommandContext(ctx, python, "kombu_worker.py", p, "3")
	worker.Dir = pyDir(t)
	var wout bytes.Buffer
	worker.Stdout, worker.Stderr = &wout, &wout
	if err := worker.Start(); err != nil {
		t.Fatal(err)
	}
	// The worker declares the queues; wait until all three exist so the
	// client's messages have somewhere to go.
	deadline := time.Now().Add(30 * time.Second)
	for {
		vh := s.vhost("/")
		vh.mu.RLock()
		n := 0
		for _, q := range []string{"hipri", "midpri", "lopri"} {
			if vq := vh.queues[q]; vq != nil && vq.consumerCount() > 0 {
				n++
			}
		}
		vh.mu.RUnlock()
		if n == 3 {
			break
		}
		if time.Now().After(deadline) {
			cancel()
			_ = worker.Wait() // its output is complete once it exited
			t.Fatalf("worker never consumed from its queues:\n%s", wout.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
	out := run(t, 60*time.Second, pyDir(t), nil, python, "kombu_client.py", p)
	if !strings.Contains(out, "sent") {
		t.Fatalf("client: %s", out)
	}
	if err := worker.Wait(); err != nil {
		t.Fatalf("worker: %v\n%s", err, wout.String())
	}
	for _, who := range []string{"Hello Kombu-high", "Hello Kombu-mid", "Hello Kombu-low"} {
		if !strings.Contains(wout.String(), who) {
			t.Fatalf("worker output lacks %q:\n%s", who, wout.String())
		}
	}
}

// TestOsloMessagingPython runs Debian's python3-oslo.messaging 14 (rabbit
// driver, kombu with AMQPLAIN) through RPC call, remote error, cast,
// fanout and notifications.
func TestOsloMessagingPython(t *testing.T) {
	s, _ := startBroker(t, nil)
	url := "rabbit://guest:guest@127.0.0.1:" + port(t, s) + "/"
	out := run(t, 120*time.Second, pyDir(t), nil, python, "oslo_rpc.py", url)
	for _, want := range []string{"call ok", "remote error ok", "cast ok", "fanout ok", "notify ok", "ALL OK"} {
		if !strings.Contains(out, want) {
			t.Fatalf("missing %q in output:\n%s", want, out)
		}
	}
}

// TestAMQPTools publishes with amqp-publish and reads with amqp-consume
// (librabbitmq, Debian's amqp-tools).
func TestAMQPTools(t *testing.T) {
	s, _ := startBroker(t, nil)
	p := port(t, s)
	url := "amqp://guest:guest@127.0.0.1:" + p
	run(t, 30*time.Second, "", nil, "amqp-declare-queue", "--url", url, "-q", "tools.q", "-d")
	run(t, 30*time.Second, "", nil, "amqp-publish", "--url", url, "-r", "tools.q", "-p", "-b", "hello from amqp-tools")
	out := run(t, 30*time.Second, "", nil, "amqp-consume", "--url", url, "-q", "tools.q", "-c", "1", "cat")
	if !strings.Contains(out, "hello from amqp-tools") {
		t.Fatalf("amqp-consume output: %q", out)
	}
}

// amqp091MgmtAddr is where amqp091-go's connection recovery tests look for
// the management API (hard-coded localhost:15672): they find their
// connections through GET /api/connections and kill them with DELETE.
const amqp091MgmtAddr = "127.0.0.1:15672"

// TestAMQP091GoIntegrationSuite runs the integration tests shipped in the
// github.com/rabbitmq/amqp091-go module (the version in go.mod), unchanged,
// against this broker, its connection recovery tests included. (Its TLS
// tests bring their own certificates and TLS server; TestPlaintextDialTLS
// dials this broker.)
func TestAMQP091GoIntegrationSuite(t *testing.T) {
	if ln, err := net.Listen("tcp", amqp091MgmtAddr); err != nil {
		t.Fatalf("amqp091-go's recovery tests need the management API on %s, which is taken: %v", amqp091MgmtAddr, err)
	} else {
		_ = ln.Close()
	}
	_, url := startBroker(t, func(o *Options) { o.HTTPAddr = amqp091MgmtAddr })
	out := run(t, 2*time.Minute, "", nil, "go", "mod", "download", "-json", "github.com/rabbitmq/amqp091-go")
	var mod struct{ Dir string }
	if err := json.Unmarshal([]byte(out), &mod); err != nil || mod.Dir == "" {
		t.Fatalf("go mod download: %v %s", err, out)
	}
	dir := t.TempDir()
	if err := os.CopyFS(dir, os.DirFS(mod.Dir)); err != nil {
		t.Fatal(err)
	}
	// The module cache is read-only; make the copy writable for go test.
	_ = filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err == nil {
			_ = os.Chmod(p, 0o755)
		}
		return nil
	})
	ctlShim := rabbitmqctlShim(t, "http://"+amqp091MgmtAddr)
	out = run(t, 8*time.Minute, dir, []string{"AMQP_URL=" + url, "GOFLAGS=-mod=mod", "RABBITMQ_RABBITMQCTL_PATH=" + ctlShim},
		"go", "test", "-tags", "integration", "-count=1", "-timeout", "7m", "-v", ".")
	pass := strings.Count(out, "--- PASS")
	if strings.Contains(out, "--- FAIL") || pass < 200 || !strings.Contains(out, "--- PASS: TestConnectionRecoveryAutoDeleteExchangeCascade") ||
		!strings.Contains(out, "--- PASS: TestConnection_Close_WhenMemoryAlarmIsActive") {
		t.Fatalf("amqp091-go integration suite: %d passed\n%s", pass, out)
	}
	var skipped []string
	for _, line := range strings.Split(out, "\n") {
		if name, ok := strings.CutPrefix(strings.TrimSpace(line), "--- SKIP: "); ok {
			skipped = append(skipped, name)
		}
	}
	t.Logf("amqp091-go integration suite: %d tests passed, skipped by the suite itself: %v", pass, skipped)
}

// rabbitmqctlShim builds oslogo and writes a script that runs `oslogo ctl`
// against the management API at apiURL, for the suite's
// RABBITMQ_RABBITMQCTL_PATH: TestConnection_Close_WhenMemoryAlarmIsActive
// runs "$RABBITMQ_RABBITMQCTL_PATH set_vm_memory_high_watermark 0.0001"
// (and 0.4 after), which oslogo ctl sends to the broker's
// PUT /api/nodes/{node}/memory-high-watermark.
func rabbitmqctlShim(t *testing.T, apiURL string) string {
	t.Helper()
	dir := t.TempDir()
	bin := filepath.Join(dir, "oslogo")
	run(t, 5*time.Minute, "", nil, "go", "build", "-o", bin, "../cmd/oslogo")
	shim := filepath.Join(dir, "rabbitmqctl")
	script := "#!/bin/sh\nexec " + bin + " ctl --url " + apiURL + " --username guest --password guest \"$@\"\n"
	if err := os.WriteFile(shim, []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	return shim
}

// TestOsloMessagingFunctionalSuite runs the functional tests Debian ships
// in python3-oslo.messaging (call, cast, notify test cases) with
// RPC_TRANSPORT_URL and NOTIFY_TRANSPORT_URL pointed at this broker.
// MetricsTestCase is left out: it needs oslo.metrics and an HTTP endpoint
// on :3000, unrelated to the broker.
func TestOsloMessagingFunctionalSuite(t *testing.T) {
	s, _ := startBroker(t, nil)
	url := "rabbit://guest:guest@127.0.0.1:" + port(t, s) + "/"
	mod := "oslo_messaging.tests.functional.test_functional."
	out := run(t, 10*time.Minute, t.TempDir(), []string{"RPC_TRANSPORT_URL=" + url, "NOTIFY_TRANSPORT_URL=" + url},
		python, "-m", "unittest", "-v", mod+"CallTestCase", mod+"CastTestCase", mod+"NotifyTestCase")
	if !strings.Contains(out, "\nOK") || strings.Contains(out, "skipped") {
		t.Fatalf("functional suite did not pass cleanly:\n%s", out)
	}
	t.Logf("oslo.messaging functional suite: %s", lastLine(out))
}

func lastLine(s string) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	for i := len(lines) - 1; i >= 0; i-- {
		if strings.HasPrefix(lines[i], "Ran ") {
			return lines[i]
		}
	}
	return lines[len(lines)-1]
}

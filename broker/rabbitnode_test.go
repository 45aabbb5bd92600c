package broker

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	osuser "os/user"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// A RabbitMQ 3.10 node of the test's own, with the management plugin, for
// the tests that compare the broker's administration with RabbitMQ's. It
// listens on the ports of the defs task (AMQP 5800, management 15800,
// Erlang distribution 25800), runs as user rabbitmq when the test runs as
// root, and is stopped (its process group) in the test's cleanup.
const (
	rabbitNodeAMQP = 5800
	rabbitNodeHTTP = 15800
	rabbitNodeDist = 25800
	rabbitNodeName = "oslogo-defs@localhost"
	rabbitServer   = "/usr/lib/rabbitmq/bin/rabbitmq-server"
	rabbitCtl      = "/usr/lib/rabbitmq/bin/rabbitmqctl"
)

type rabbitNode struct {
	t    testing.TB
	dir  string
	cmd  *exec.Cmd
	cred *syscall.Credential
	// AMQP and API are the node's addresses (guest/guest, an administrator
	// allowed from anywhere).
	AMQP, API string
}

func startRabbitNode(t testing.TB) *rabbitNode {
	t.Helper()
	if _, err := os.Stat(rabbitServer); err != nil {
		t.Fatalf("RabbitMQ is not installed (make setup installs it): %v", err)
	}
	dir, err := os.MkdirTemp("", "oslogo-defs-rabbit-")
	if err != nil {
		t.Fatal(err)
	}
	n := &rabbitNode{t: t, dir: dir, AMQP: fmt.Sprintf("amqp://guest:guest@127.0.0.1:%d/", rabbitNodeAMQP),
		API: fmt.Sprintf("http://127.0.0.1:%d", rabbitNodeHTTP)}
	t.Cleanup(n.stop)
	for _, sub := range []string{"mnesia", "log"} {
		if err := os.MkdirAll(filepath.Join(dir, sub), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	conf := fmt.Sprintf("listeners.tcp.default = 127.0.0.1:%d\nloopback_users = none\nlog.console = false\n"+
		"management.tcp.port = %d\nmanagement.tcp.ip = 127.0.0.1\n", rabbitNodeAMQP, rabbitNodeHTTP)
	if err := os.WriteFile(filepath.Join(dir, "rabbitmq.conf"), []byte(conf), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "enabled_plugins"), []byte("[rabbitmq_management].\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if os.Geteuid() == 0 {
		u, err := osuser.Lookup("rabbitmq")
		if err != nil {
			t.Fatalf("running as root needs the rabbitmq user: %v", err)
		}
		uid, _ := strconv.Atoi(u.Uid)
		gid, _ := strconv.Atoi(u.Gid)
		n.cred = &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid)}
		if err := filepath.Walk(dir, func(p string, _ os.FileInfo, err error) error {
			if err != nil {
				return err
			}
			return os.Chown(p, uid, gid)
		}); err != nil {
			t.Fatal(err)
		}
	}
	lf, err := os.Create(filepath.Join(dir, "stdout.log"))
	if err != nil {
		t.Fatal(err)
	}
	defer lf.Close()
	cmd := exec.Command(rabbitServer)
	cmd.Env = n.env()
	cmd.Dir = dir
	cmd.Stdout, cmd.Stderr = lf, lf
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: n.cred, Setpgid: true}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	n.cmd = cmd
	// The management API answers once the node and the plugin are up.
	deadline := time.Now().Add(120 * time.Second)
	client := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
	for {
		req, _ := http.NewRequest("GET", n.API+"/api/overview", nil)
		req.SetBasicAuth("guest", "guest")
		resp, err := client.Do(req)
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == 200 {
				break
			}
		}
		if time.Now().After(deadline) {
			log, _ := os.ReadFile(filepath.Join(dir, "stdout.log"))
			t.Fatalf("RabbitMQ node %s did not start within 120 s (ports %d, %d, %d taken?): %v\n%s",
				rabbitNodeName, rabbitNodeAMQP, rabbitNodeHTTP, rabbitNodeDist, err, lastLogLines(string(log), 15))
		}
		time.Sleep(500 * time.Millisecond)
	}
	return n
}

func lastLogLines(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	return strings.Join(lines[max(0, len(lines)-n):], "\n")
}

func (n *rabbitNode) env() []string {
	return append(os.Environ(),
		"HOME=/var/lib/rabbitmq",
		"RABBITMQ_NODENAME="+rabbitNodeName,
		"RABBITMQ_NODE_PORT="+strconv.Itoa(rabbitNodeAMQP),
		"RABBITMQ_DIST_PORT="+strconv.Itoa(rabbitNodeDist),
		"RABBITMQ_MNESIA_BASE="+filepath.Join(n.dir, "mnesia"),
		"RABBITMQ_LOG_BASE="+filepath.Join(n.dir, "log"),
		"RABBITMQ_ENABLED_PLUGINS_FILE="+filepath.Join(n.dir, "enabled_plugins"),
		"RABBITMQ_CONFIG_FILE="+filepath.Join(n.dir, "rabbitmq.conf"),
		"RABBITMQ_ADVANCED_CONFIG_FILE="+filepath.Join(n.dir, "advanced.config"),
		"RABBITMQ_PID_FILE="+filepath.Join(n.dir, "pid"),
	)
}

// eval runs an Erlang expression on the node (rabbitmqctl eval).
func (n *rabbitNode) eval(expr string) string {
	n.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, rabbitCtl, "-q", "-n", rabbitNodeName, "eval", expr)
	cmd.Env = n.env()
	cmd.Dir = n.dir
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: n.cred}
	out, err := cmd.CombinedOutput()
	if err != nil {
		n.t.Fatalf("rabbitmqctl eval %s: %v: %s", expr, err, out)
	}
	return strings.TrimSpace(string(out))
}

// stop ends the node's process group (the server script and its Erlang
// VM), then removes its directory.
func (n *rabbitNode) stop() {
	if n.cmd != nil {
		pgid := n.cmd.Process.Pid
		// rabbitmqctl stop halts the node; the VM does not always end on
		// SIGTERM at once. The process group is killed if it lingers.
		ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
		stop := exec.CommandContext(ctx, rabbitCtl, "-q", "-n", rabbitNodeName, "stop")
		stop.Env = n.env()
		stop.Dir = n.dir
		stop.SysProcAttr = &syscall.SysProcAttr{Credential: n.cred}
		_ = stop.Run()
		cancel()
		done := make(chan struct{})
		go func() { _ = n.cmd.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(30 * time.Second):
			_ = syscall.Kill(-pgid, syscall.SIGKILL)
			<-done
		}
		// The VM may outlive the script briefly; its pid file names it.
		if raw, err := os.ReadFile(filepath.Join(n.dir, "pid")); err == nil {
			if pid, err := strconv.Atoi(strings.TrimSpace(string(raw))); err == nil && pid > 0 {
				for i := 0; i < 100 && syscall.Kill(pid, 0) == nil; i++ {
					time.Sleep(100 * time.Millisecond)
				}
				if syscall.Kill(pid, 0) == nil {
					_ = syscall.Kill(pid, syscall.SIGKILL)
				}
			}
		}
		n.cmd = nil
	}
	_ = os.RemoveAll(n.dir)
}

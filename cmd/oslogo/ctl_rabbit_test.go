package main

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// The RabbitMQ node of the ctl tests, with the management plugin, on ports
// of its own (the shared node on 5672 has no management plugin and must not
// be changed). The test starts it, as user rabbitmq, and stops it.
const (
	ctlRabbitAMQPPort = 5790
	ctlRabbitHTTPPort = 15790
	ctlRabbitDistPort = 25790
)

type ctlRabbit struct {
	name    string
	dir     string
	cred    *syscall.Credential
	cmd     *exec.Cmd
	amqpURL string
	apiURL  string
}

// startCtlRabbit boots the node (about 10-20 s) and returns it; cleanup
// stops it and removes its directory.
func startCtlRabbit(t *testing.T) *ctlRabbit {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Fatal("starting a RabbitMQ node as user rabbitmq needs root (make test runs as root)")
	}
	if _, err := os.Stat("/usr/lib/rabbitmq/bin/rabbitmq-server"); err != nil {
		t.Fatal("rabbitmq-server is not installed: run make setup")
	}
	for _, p := range []int{ctlRabbitAMQPPort, ctlRabbitHTTPPort, ctlRabbitDistPort} {
		ln, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", p))
		if err != nil {
			t.Fatalf("port %d, which the ctl tests' RabbitMQ node uses, is taken: %v", p, err)
		}
		_ = ln.Close()
	}
	u, err := user.Lookup("rabbitmq")
	if err != nil {
		t.Fatal(err)
	}
	uid, _ := strconv.Atoi(u.Uid)
	gid, _ := strconv.Atoi(u.Gid)
	host, err := os.Hostname()
	if err != nil {
		t.Fatal(err)
	}
	host, _, _ = strings.Cut(host, ".")
	dir, err := os.MkdirTemp("", "oslogo-ctl-rabbit-")
	if err != nil {
		t.Fatal(err)
	}
	n := &ctlRabbit{name: "oslogo-ctl@" + host, dir: dir, cred: &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid)},
		amqpURL: fmt.Sprintf("amqp://guest:guest@127.0.0.1:%d/", ctlRabbitAMQPPort),
		apiURL:  fmt.Sprintf("http://127.0.0.1:%d", ctlRabbitHTTPPort)}
	t.Cleanup(n.stop)
	for _, sub := range []string{"mnesia", "log"} {
		if err := os.MkdirAll(filepath.Join(dir, sub), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	// Statistics every second rather than every 5 s: the API's message
	// counts follow sooner.
	conf := fmt.Sprintf("listeners.tcp.default = 127.0.0.1:%d\nloopback_users = none\nlog.console = false\n"+
		"management.tcp.port = %d\nmanagement.tcp.ip = 127.0.0.1\ncollect_statistics_interval = 1000\n",
		ctlRabbitAMQPPort, ctlRabbitHTTPPort)
	for name, content := range map[string]string{"rabbitmq.conf": conf, "enabled_plugins": "[rabbitmq_management].\n"} {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	if err := filepath.Walk(dir, func(p string, _ os.FileInfo, err error) error {
		if err != nil {
			return err
		}
		return os.Chown(p, uid, gid)
	}); err != nil {
		t.Fatal(err)
	}
	lf, err := os.Create(filepath.Join(dir, "stdout.log"))
	if err != nil {
		t.Fatal(err)
	}
	defer lf.Close()
	cmd := exec.Command("/usr/lib/rabbitmq/bin/rabbitmq-server")
	cmd.Env = n.env()
	cmd.Dir = dir
	cmd.Stdout, cmd.Stderr = lf, lf
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: n.cred, Setpgid: true}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	n.cmd = cmd
	deadline := time.Now().Add(180 * time.Second)
	for {
		out, err := n.ctl("--timeout", "60", "await_startup")
		if err == nil {
			break
		}
		if time.Now().After(deadline) {
			log, _ := os.ReadFile(filepath.Join(dir, "stdout.log"))
			t.Fatalf("%s did not start: %v: %s\n%s", n.name, err, out, log)
		}
		time.Sleep(time.Second)
	}
	return n
}

func (n *ctlRabbit) env() []string {
	return append(os.Environ(),
		"HOME=/var/lib/rabbitmq",
		"RABBITMQ_NODENAME="+n.name,
		"RABBITMQ_NODE_PORT="+strconv.Itoa(ctlRabbitAMQPPort),
		"RABBITMQ_DIST_PORT="+strconv.Itoa(ctlRabbitDistPort),
		"RABBITMQ_MNESIA_BASE="+filepath.Join(n.dir, "mnesia"),
		"RABBITMQ_LOG_BASE="+filepath.Join(n.dir, "log"),
		"RABBITMQ_ENABLED_PLUGINS_FILE="+filepath.Join(n.dir, "enabled_plugins"),
		"RABBITMQ_CONFIG_FILE="+filepath.Join(n.dir, "rabbitmq.conf"),
		"RABBITMQ_ADVANCED_CONFIG_FILE="+filepath.Join(n.dir, "advanced.config"),
		"RABBITMQ_PID_FILE="+filepath.Join(n.dir, "pid"),
	)
}

// ctl runs the real rabbitmqctl against the node.
func (n *ctlRabbit) ctl(args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 120*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, "/usr/lib/rabbitmq/bin/rabbitmqctl", append([]string{"-n", n.name}, args...)...)
	cmd.Env = n.env()
	cmd.Dir = n.dir
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: n.cred}
	out, err := cmd.CombinedOutput()
	return string(out), err
}

// stop asks the node to stop, kills it if it does not within 60 s, and
// removes its directory.
func (n *ctlRabbit) stop() {
	if n.cmd != nil {
		_, _ = n.ctl("stop")
		done := make(chan struct{})
		go func() {
			_ = n.cmd.Wait()
			close(done)
		}()
		select {
		case <-done:
		case <-time.After(60 * time.Second):
			if raw, err := os.ReadFile(filepath.Join(n.dir, "pid")); err == nil {
				if pid, err := strconv.Atoi(strings.TrimSpace(string(raw))); err == nil && pid > 0 {
					_ = syscall.Kill(pid, syscall.SIGKILL)
				}
			}
			_ = syscall.Kill(-n.cmd.Process.Pid, syscall.SIGKILL)
			<-done
		}
		n.cmd = nil
	}
	_ = os.RemoveAll(n.dir)
}

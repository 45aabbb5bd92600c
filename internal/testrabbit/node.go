package testrabbit

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	osuser "os/user"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

const (
	rabbitServer = "/usr/lib/rabbitmq/bin/rabbitmq-server"
	rabbitCtl    = "/usr/lib/rabbitmq/bin/rabbitmqctl"
	mgmtPlugin   = "rabbitmq_management"
	// startTimeout bounds the boot of a node (10-20 s alone, much more on
	// a busy 2-core machine).
	startTimeout = 180 * time.Second
)

// NodeOptions describe a RabbitMQ node of a test's own, beside (never
// touching) the system node on 5672/25672.
type NodeOptions struct {
	// Name is the node name; without "@" the short host name is added
	// ("oslogo-ctl" becomes "oslogo-ctl@host").
	Name string
	// AMQPPort and DistPort (Erlang distribution, binds 0.0.0.0) are
	// required; MgmtPort, when set, enables the management plugin on
	// 127.0.0.1:MgmtPort.
	AMQPPort, MgmtPort, DistPort int
	// Plugins are enabled besides the management plugin.
	Plugins []string
	// Config holds more rabbitmq.conf lines (e.g.
	// "collect_statistics_interval = 1000").
	Config string
}

// Node is a running node; cleanup stops it and removes its directory.
type Node struct {
	// Name is the full node name (name@host).
	Name string
	// AMQPURL ("amqp://guest:guest@127.0.0.1:PORT/") and APIURL
	// ("http://127.0.0.1:PORT", "" without MgmtPort) reach the node as
	// guest, an administrator allowed from anywhere.
	AMQPURL, APIURL string

	dir  string
	cred *syscall.Credential // nil: the node runs as the test's user
	env  []string
	cmd  *exec.Cmd
	done chan struct{} // closed when cmd has been waited for
}

// files returns rabbitmq.conf and enabled_plugins for o.
func (o NodeOptions) files() (conf, plugins string, err error) {
	if o.Name == "" || o.AMQPPort <= 0 || o.DistPort <= 0 {
		return "", "", errors.New("testrabbit: a node needs a Name, an AMQPPort and a DistPort")
	}
	ps := slices.Clone(o.Plugins)
	if slices.Contains(ps, mgmtPlugin) && o.MgmtPort <= 0 {
		return "", "", errors.New("testrabbit: the management plugin needs a MgmtPort (the default 15672 is taken)")
	}
	conf = fmt.Sprintf("listeners.tcp.default = 127.0.0.1:%d\nloopback_users = none\nlog.console = false\n", o.AMQPPort)
	if o.MgmtPort > 0 {
		conf += fmt.Sprintf("management.tcp.port = %d\nmanagement.tcp.ip = 127.0.0.1\n", o.MgmtPort)
		if !slices.Contains(ps, mgmtPlugin) {
			ps = append([]string{mgmtPlugin}, ps...)
		}
	}
	if o.Config != "" {
		conf += strings.TrimRight(o.Config, "\n") + "\n"
	}
	return conf, "[" + strings.Join(ps, ",") + "].\n", nil
}

// StartNode boots a RabbitMQ node with o's ports in a temporary directory
// and waits until it is up (rabbitmqctl await_startup, and the management
// API answers when MgmtPort is set). Run as root, the node runs as user
// rabbitmq (HOME=/var/lib/rabbitmq, its Erlang cookie). Cleanup stops it
// (rabbitmqctl stop, then SIGKILL to its process group and VM if they
// linger) and removes the directory.
func StartNode(t testing.TB, o NodeOptions) *Node {
	t.Helper()
	conf, plugins, err := o.files()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(rabbitServer); err != nil {
		t.Fatalf("RabbitMQ is not installed (make setup installs it): %v", err)
	}
	for _, p := range []int{o.AMQPPort, o.MgmtPort, o.DistPort} {
		if p <= 0 {
			continue
		}
		ln, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", p))
		if err != nil {
			t.Fatalf("port %d of RabbitMQ node %s is taken: %v", p, o.Name, err)
		}
		_ = ln.Close()
	}
	name := o.Name
	if !strings.Contains(name, "@") {
		host, err := os.Hostname()
		if err != nil {
			t.Fatal(err)
		}
		host, _, _ = strings.Cut(host, ".")
		name += "@" + host
	}
	local, _, _ := strings.Cut(name, "@")
	dir, err := os.MkdirTemp("", "oslogo-rabbit-"+local+"-")
	if err != nil {
		t.Fatal(err)
	}
	n := &Node{Name: name, AMQPURL: fmt.Sprintf("amqp://guest:guest@127.0.0.1:%d/", o.AMQPPort), dir: dir}
	if o.MgmtPort > 0 {
		n.APIURL = fmt.Sprintf("http://127.0.0.1:%d", o.MgmtPort)
	}
	t.Cleanup(n.stop)
	n.env = append(os.Environ(),
		"HOME=/var/lib/rabbitmq",
		"RABBITMQ_NODENAME="+name,
		"RABBITMQ_NODE_PORT="+strconv.Itoa(o.AMQPPort),
		"RABBITMQ_DIST_PORT="+strconv.Itoa(o.DistPort),
		"RABBITMQ_MNESIA_BASE="+filepath.Join(dir, "mnesia"),
		"RABBITMQ_LOG_BASE="+filepath.Join(dir, "log"),
		"RABBITMQ_ENABLED_PLUGINS_FILE="+filepath.Join(dir, "enabled_plugins"),
		"RABBITMQ_CONFIG_FILE="+filepath.Join(dir, "rabbitmq.conf"),
		"RABBITMQ_ADVANCED_CONFIG_FILE="+filepath.Join(dir, "advanced.config"),
		"RABBITMQ_PID_FILE="+filepath.Join(dir, "pid"),
	)
	for _, sub := range []string{"mnesia", "log"} {
		if err := os.MkdirAll(filepath.Join(dir, sub), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	for file, content := range map[string]string{"rabbitmq.conf": conf, "enabled_plugins": plugins} {
		if err := os.WriteFile(filepath.Join(dir, file), []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
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
	logPath := filepath.Join(dir, "stdout.log")
	lf, err := os.Create(logPath)
	if err != nil {
		t.Fatal(err)
	}
	defer lf.Close()
	cmd := exec.Command(rabbitServer)
	cmd.Env = n.env
	cmd.Dir = dir
	cmd.Stdout, cmd.Stderr = lf, lf
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: n.cred, Setpgid: true}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	n.cmd, n.done = cmd, make(chan struct{})
	go func() { _ = cmd.Wait(); close(n.done) }()

	deadline := time.Now().Add(startTimeout)
	client := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
	for {
		out, err := n.Ctl("--timeout", "60", "await_startup")
		if err == nil && n.APIURL != "" {
			err = apiUp(client, n.APIURL)
		}
		if err == nil {
			return n
		}
		select {
		case <-n.done:
			log, _ := os.ReadFile(logPath)
			t.Fatalf("RabbitMQ node %s exited while starting (%v): %s\n%s", name, cmd.ProcessState, out, lastLines(string(log), 30))
		default:
		}
		if time.Now().After(deadline) {
			log, _ := os.ReadFile(logPath)
			t.Fatalf("RabbitMQ node %s did not start within %v: %v: %s\n%s", name, startTimeout, err, out, lastLines(string(log), 30))
		}
		time.Sleep(time.Second)
	}
}

// apiUp reports whether GET /api/overview answers 200 (the management
// plugin is up).
func apiUp(client *http.Client, base string) error {
	req, err := http.NewRequest("GET", base+"/api/overview", nil)
	if err != nil {
		return err
	}
	req.SetBasicAuth("guest", "guest")
	resp, err := client.Do(req)
	if err != nil {
		return err
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("GET /api/overview: %s", resp.Status)
	}
	return nil
}

func lastLines(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	return strings.Join(lines[max(0, len(lines)-n):], "\n")
}

// Ctl runs the real rabbitmqctl against the node (as the node's user,
// within 120 s) and returns its combined output.
func (n *Node) Ctl(args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 120*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, rabbitCtl, append([]string{"-n", n.Name}, args...)...)
	cmd.Env = n.env
	cmd.Dir = n.dir
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: n.cred}
	out, err := cmd.CombinedOutput()
	return string(out), err
}

// stop asks the node to stop, kills its process group if it has not ended
// within 60 s, waits up to 10 s more for the Erlang VM named by the pid
// file (it may outlive the script) and kills it, then removes the
// directory.
func (n *Node) stop() {
	if n.cmd != nil {
		_, _ = n.Ctl("-q", "stop")
		select {
		case <-n.done:
		case <-time.After(60 * time.Second):
			_ = syscall.Kill(-n.cmd.Process.Pid, syscall.SIGKILL)
			<-n.done
		}
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

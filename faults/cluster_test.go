//go:build faults

package faults

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/oslogo/oslogo/messaging"
)

// The cluster's nodes: names f1..f3@host, AMQP ports 5781..5783,
// distribution ports 25781..25783, beside (never touching) the system node
// on 5672/25672.
const (
	clusterAMQPBase = 5781
	clusterDistBase = 25781
	clusterNodes    = 3
)

// rabbitCluster is three RabbitMQ nodes run by the test as user rabbitmq,
// everything under one temporary directory.
type rabbitCluster struct {
	t     *testing.T
	dir   string
	host  string
	cred  *syscall.Credential
	nodes []*rabbitNode
}

type rabbitNode struct {
	name string // f1@host
	port int
	dist int
	dir  string
	cmd  *exec.Cmd
	pid  int // the node's beam process
}

func startCluster(t *testing.T) *rabbitCluster {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("starting RabbitMQ nodes as user rabbitmq needs root")
	}
	if _, err := os.Stat("/usr/lib/rabbitmq/bin/rabbitmq-server"); err != nil {
		t.Skip("rabbitmq-server is not installed (make setup)")
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
	dir, err := os.MkdirTemp("", "oslogo-faults-cluster-")
	if err != nil {
		t.Fatal(err)
	}
	c := &rabbitCluster{t: t, dir: dir, host: host, cred: &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid)}}
	t.Cleanup(c.remove)
	for i := range clusterNodes {
		n := &rabbitNode{name: fmt.Sprintf("f%d@%s", i+1, host), port: clusterAMQPBase + i, dist: clusterDistBase + i,
			dir: filepath.Join(dir, fmt.Sprintf("f%d", i+1))}
		for _, sub := range []string{"mnesia", "log"} {
			if err := os.MkdirAll(filepath.Join(n.dir, sub), 0o755); err != nil {
				t.Fatal(err)
			}
		}
		conf := fmt.Sprintf("listeners.tcp.default = 127.0.0.1:%d\nloopback_users = none\nlog.console = false\n", n.port)
		if err := os.WriteFile(filepath.Join(n.dir, "rabbitmq.conf"), []byte(conf), 0o644); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(n.dir, "enabled_plugins"), []byte("[].\n"), 0o644); err != nil {
			t.Fatal(err)
		}
		c.nodes = append(c.nodes, n)
	}
	if err := chownR(dir, uid, gid); err != nil {
		t.Fatal(err)
	}
	// Start all three at once (boot is slow on a small machine), then
	// join f2 and f3 to f1.
	for _, n := range c.nodes {
		c.launch(n)
	}
	for _, n := range c.nodes {
		c.awaitUp(n)
	}
	for _, n := range c.nodes[1:] {
		for _, args := range [][]string{{"stop_app"}, {"join_cluster", c.nodes[0].name}, {"start_app"}} {
			if out, err := c.ctl(n, args...); err != nil {
				t.Fatalf("rabbitmqctl -n %s %s: %v: %s", n.name, args[0], err, out)
			}
		}
	}
	out, err := c.ctl(c.nodes[0], "cluster_status")
	if err != nil || !strings.Contains(out, c.nodes[2].name) {
		t.Fatalf("cluster not formed: %v: %s", err, out)
	}
	return c
}

func chownR(dir string, uid, gid int) error {
	return filepath.Walk(dir, func(p string, _ os.FileInfo, err error) error {
		if err != nil {
			return err
		}
		return os.Chown(p, uid, gid)
	})
}

func (c *rabbitCluster) env(n *rabbitNode) []string {
	return append(os.Environ(),
		"HOME=/var/lib/rabbitmq",
		"RABBITMQ_NODENAME="+n.name,
		"RABBITMQ_NODE_PORT="+strconv.Itoa(n.port),
		"RABBITMQ_DIST_PORT="+strconv.Itoa(n.dist),
		"RABBITMQ_MNESIA_BASE="+filepath.Join(n.dir, "mnesia"),
		"RABBITMQ_LOG_BASE="+filepath.Join(n.dir, "log"),
		"RABBITMQ_ENABLED_PLUGINS_FILE="+filepath.Join(n.dir, "enabled_plugins"),
		"RABBITMQ_CONFIG_FILE="+filepath.Join(n.dir, "rabbitmq.conf"),
		"RABBITMQ_ADVANCED_CONFIG_FILE="+filepath.Join(n.dir, "advanced.config"),
		"RABBITMQ_PID_FILE="+filepath.Join(n.dir, "pid"),
	)
}

// launch starts a node's server script in the background.
func (c *rabbitCluster) launch(n *rabbitNode) {
	c.t.Helper()
	_ = os.Remove(filepath.Join(n.dir, "pid"))
	lf, err := os.OpenFile(filepath.Join(n.dir, "stdout.log"), os.O_APPEND|os.O_CREATE|os.O_WRONLY, 0o644)
	if err != nil {
		c.t.Fatal(err)
	}
	defer lf.Close()
	cmd := exec.Command("/usr/lib/rabbitmq/bin/rabbitmq-server")
	cmd.Env = c.env(n)
	cmd.Dir = n.dir
	cmd.Stdout, cmd.Stderr = lf, lf
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: c.cred, Setpgid: true}
	if err := cmd.Start(); err != nil {
		c.t.Fatal(err)
	}
	n.cmd = cmd
}

// awaitUp waits for the node to boot and reads its beam pid.
func (c *rabbitCluster) awaitUp(n *rabbitNode) {
	c.t.Helper()
	// await_startup fails at once while the node is not yet registered
	// with epmd: ask again until it answers.
	deadline := time.Now().Add(180 * time.Second)
	for {
		out, err := c.ctl(n, "--timeout", "60", "await_startup")
		if err == nil {
			break
		}
		if time.Now().After(deadline) {
			log, _ := os.ReadFile(filepath.Join(n.dir, "stdout.log"))
			c.t.Fatalf("%s did not start: %v: %s\nnode output: %s", n.name, err, lastLines(out, 3), lastLines(string(log), 10))
		}
		time.Sleep(time.Second)
	}
	raw, err := os.ReadFile(filepath.Join(n.dir, "pid"))
	if err != nil {
		c.t.Fatalf("%s pid file: %v", n.name, err)
	}
	n.pid, err = strconv.Atoi(strings.TrimSpace(string(raw)))
	if err != nil {
		c.t.Fatalf("%s pid file: %v", n.name, err)
	}
}

// ctl runs rabbitmqctl against one node (as user rabbitmq, for the cookie).
func (c *rabbitCluster) ctl(n *rabbitNode, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, "/usr/lib/rabbitmq/bin/rabbitmqctl", append([]string{"-n", n.name}, args...)...)
	cmd.Env = c.env(n)
	cmd.Dir = n.dir
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: c.cred}
	out, err := cmd.CombinedOutput()
	return string(out), err
}

// kill sends SIGKILL to the node's beam process.
func (c *rabbitCluster) kill(n *rabbitNode) {
	c.t.Helper()
	if n.pid > 0 {
		if err := syscall.Kill(n.pid, syscall.SIGKILL); err != nil {
			c.t.Errorf("kill %s (pid %d): %v", n.name, n.pid, err)
		}
		n.pid = 0
	}
	if n.cmd != nil {
		_ = n.cmd.Wait() // the wrapper script ends with its beam
		n.cmd = nil
	}
}

// restart boots a killed node; it rejoins the cluster by itself.
func (c *rabbitCluster) restart(n *rabbitNode) {
	c.t.Helper()
	c.launch(n)
	c.awaitUp(n)
}

// remove stops every node (SIGKILL: nothing to keep) and deletes the
// directory.
func (c *rabbitCluster) remove() {
	for _, n := range c.nodes {
		if n.pid == 0 {
			if raw, err := os.ReadFile(filepath.Join(n.dir, "pid")); err == nil {
				n.pid, _ = strconv.Atoi(strings.TrimSpace(string(raw)))
			}
		}
		if n.pid > 0 {
			_ = syscall.Kill(n.pid, syscall.SIGKILL)
			n.pid = 0
		}
		if n.cmd != nil {
			_ = n.cmd.Process.Kill()
			_ = n.cmd.Wait()
			n.cmd = nil
		}
	}
	_ = os.RemoveAll(c.dir)
}

func (c *rabbitCluster) url() string {
	var hosts []string
	for _, n := range c.nodes {
		hosts = append(hosts, fmt.Sprintf("guest:guest@127.0.0.1:%d", n.port))
	}
	return "rabbit://" + strings.Join(hosts, ",") + "/"
}

func (g *loadGen) callsCopy() []callRec {
	g.mu.Lock()
	defer g.mu.Unlock()
	return append([]callRec(nil), g.calls...)
}

// killRec is one node kill of the schedule.
type killRec struct {
	node   string
	at     time.Time
	seqLo  int // last cast sequence number sent before the window
	window time.Duration
}

// TestClusterFailover is oslo.messaging's test_failover_scenario on a
// three-node RabbitMQ 3.10 cluster: calls and casts at 20/s each, the URL
// listing all three nodes, and the node holding the server's consumer
// killed with SIGKILL three times (restarted after each kill). Measured for oslogo with
// quorum and classic queues and, when /usr/bin/python3 has oslo.messaging,
// for Python oslo.messaging 14 in the same run.
func TestClusterFailover(t *testing.T) {
	c := startCluster(t)
	rounds := clusterNodes
	if testing.Short() {
		rounds = 1
	}
	python := os.Getenv("FAULTS_PYTHON") != "0" && !testing.Short() && exec.Command("/usr/bin/python3", "-c", "import oslo_messaging").Run() == nil
	var pyResults = map[bool]*Result{}
	for _, quorum := range []bool{true, false} {
		kind := map[bool]string{true: "quorum", false: "classic"}[quorum]
		if python {
			t.Run("python-"+kind, func(t *testing.T) { pyResults[quorum] = clusterRunPython(t, c, rounds, quorum) })
		}
		t.Run("oslogo-"+kind, func(t *testing.T) { clusterRunGo(t, c, rounds, quorum, pyResults[quorum]) })
	}
}

const (
	failoverCallRate    = 20
	failoverCastRate    = 20
	failoverCallTimeout = 10 * time.Second
	// Each kill: the node stays down this long, then restarts; the next
	// kill waits for the cluster to settle.
	failoverDown   = 15 * time.Second
	failoverSettle = 10 * time.Second
)

// perKill measures each kill: calls that failed among those started from
// one call timeout before the kill (or the end of the previous window) to
// the end of its window, confirmed
// casts sent in its window that never arrived, and the first good call
// started after the kill.
func perKill(recs []killRec, calls []callRec, led *ledger, seqHi []int) (out []map[string]any, worstFailed, worstLost int, worstFirst time.Duration, lostFrac float64) {
	var prevEnd time.Time
	for i, k := range recs {
		from, to := k.at.Add(-failoverCallTimeout), k.at.Add(k.window)
		if from.Before(prevEnd) {
			from = prevEnd // windows do not overlap
		}
		prevEnd = to
		failed, firstGood := 0, time.Time{}
		for _, c := range calls {
			if c.start.Before(from) || !c.start.Before(to) {
				continue
			}
			if c.err != nil {
				failed++
			} else if !c.start.Before(k.at) && (firstGood.IsZero() || c.end.Before(firstGood)) {
				firstGood = c.end
			}
		}
		_, confirmed, _, lost, dup := led.countsRange(k.seqLo, seqHi[i])
		first := time.Duration(-1)
		if !firstGood.IsZero() {
			first = firstGood.Sub(k.at)
		}
		out = append(out, map[string]any{"node": k.node, "calls_failed": failed, "casts_confirmed": confirmed, "casts_lost": lost, "casts_duplicated": dup, "first_good_call_s": secs(first)})
		worstFailed = max(worstFailed, failed)
		worstLost = max(worstLost, lost)
		if first < 0 {
			worstFirst = time.Hour
		} else {
			worstFirst = max(worstFirst, first)
		}
		if confirmed > 0 {
			lostFrac = max(lostFrac, float64(lost)/float64(confirmed))
		}
	}
	return
}

func clusterRunGo(t *testing.T, c *rabbitCluster, rounds int, quorum bool, py *Result) {
	opts := map[string]string{"rabbit_quorum_queue": strconv.FormatBool(quorum)}
	topic := fmt.Sprintf("faults_failover_%d", time.Now().UnixNano())
	led := newLedger()
	srvTr := openTransport(t, c.url(), opts)
	defer srvTr.Close()
	// Each run has its own exchange: quorum queues make oslo declare it
	// durable, classic ones not.
	exchange := topic
	srv := startServer(t, srvTr, messaging.Target{Exchange: exchange, Topic: topic, Server: "s1"}, recordEndpoint(led, 0))
	defer stopServer(srv)
	// The server's send connection comes up with its first reply; then
	// the client's is placed on the node that will be killed first (the
	// one of the server's consumer and of the quorum queues' leaders), the
	// case of issue 10 that the driver's shuffle of hosts hit only now and
	// then.
	{
		tr := openTransport(t, c.url(), opts)
		warmUp(t, messaging.NewRPCClient(tr, messaging.Target{Exchange: exchange, Topic: topic}))
		_ = tr.Close()
	}
	victim := c.consumerNode(topic)
	if victim == nil {
		t.Fatalf("no node reports the consumer of %s", topic)
	}
	cliLog, nackRetries := newCountingLogger("broker nacked a publish, publishing it again")
	cliTr, cli, placed := openClientOn(t, c, victim, opts, messaging.Target{Exchange: exchange, Topic: topic}, cliLog)
	defer cliTr.Close()

	g := &loadGen{cli: cli, led: led, callRate: failoverCallRate, castRate: failoverCastRate, callTimeout: failoverCallTimeout, castTimeout: failoverCallTimeout}
	begin := time.Now()
	g.start()
	var seqHi []int
	recs := runKills(t, c, rounds, topic, led.peekSeq, &seqHi)
	g.halt()
	led.waitDrained(30 * time.Second)

	kind := map[bool]string{true: "quorum", false: "classic"}[quorum]
	sent, confirmed, received, lost, dup := led.counts()
	per, worstFailed, worstLost, worstFirst, lostFrac := perKill(recs, g.callsCopy(), led, seqHi)
	calls, ok, failed, _ := g.callStats(time.Time{})
	r := &Result{Scenario: "cluster-failover", Broker: "RabbitMQ 3.10, 3 nodes, " + kind + " queues", Load: "oslogo: 20 calls/s (10 s timeout) + 20 casts/s",
		Fault:     fmt.Sprintf("SIGKILL of the node holding the server's consumer (kills: %d; each node restarted after %s)", len(recs), failoverDown),
		DurationS: time.Since(begin).Seconds(), Sent: sent, Confirmed: confirmed, Received: received, Lost: lost, Duplicated: dup, RecoveryS: worstFirst.Seconds()}
	if worstFirst == time.Hour {
		r.RecoveryS = -1
	}
	r.extra("per_kill", per)
	r.extra("calls", calls)
	r.extra("calls_ok", ok)
	r.extra("call_failures", failed)
	r.extra("call_error_examples", g.errorExamples())
	r.extra("cast_failures", led.failures())
	r.extra("client_send_on_killed_node", placed)
	r.extra("nacks_published_again", nackRetries.Load())
	if quorum {
		r.check(worstFailed == 0, "quorum queues: up to %d calls failed per kill, want none", worstFailed)
		r.check(worstLost == 0, "quorum queues: up to %d confirmed casts lost per kill, want none", worstLost)
		r.check(worstFirst <= time.Second, "quorum queues: first good call %s after a kill, want within 1 s", worstFirst)
	} else {
		// Never worse than Python oslo.messaging: measured in this run
		// when possible, else its reference figures (160 calls, 15 % of
		// casts, 9 s per kill).
		pyFailed, pyFrac, pyFirst := 160, 0.15, 9*time.Second
		if py != nil {
			pyFailed, pyFrac, pyFirst = py.Extra["worst_calls_failed"].(int), py.Extra["worst_lost_fraction"].(float64), time.Duration(py.RecoveryS*float64(time.Second))
			if py.RecoveryS < 0 {
				pyFirst = time.Hour
			}
		}
		r.check(worstFailed <= pyFailed, "classic queues: up to %d calls failed per kill, Python %d", worstFailed, pyFailed)
		r.check(lostFrac <= pyFrac+0.01, "classic queues: up to %.0f%% of confirmed casts lost per kill, Python %.0f%%", 100*lostFrac, 100*pyFrac)
		r.check(worstFirst <= pyFirst+time.Second, "classic queues: first good call %s after a kill, Python %s", worstFirst, pyFirst)
	}
	report(t, r)
}

// consumerNode is the node whose channel consumes from queue (nil if no
// node answers or nobody consumes).
func (c *rabbitCluster) consumerNode(queue string) *rabbitNode {
	for _, n := range c.nodes {
		if n.pid == 0 {
			continue
		}
		out, err := c.ctl(n, "list_consumers", "-q", "-p", "/", "queue_name", "channel_pid")
		if err != nil {
			continue
		}
		for _, line := range strings.Split(out, "\n") {
			f := strings.Fields(line)
			if len(f) != 2 || f[0] != queue {
				continue
			}
			// A pid prints as <node.a.b.c>.
			name, _, _ := strings.Cut(strings.TrimPrefix(f[1], "<"), ".")
			for _, m := range c.nodes {
				if m.name == name {
					return m
				}
			}
		}
		return nil
	}
	return nil
}

// runKills kills, rounds times, the node holding the consumer of topic
// (the RPC server's), restarts it after failoverDown, lets the cluster
// settle, and notes the last cast sequence number of each kill's window.
func runKills(t *testing.T, c *rabbitCluster, rounds int, topic string, seq func() int, hi *[]int) []killRec {
	var recs []killRec
	time.Sleep(5 * time.Second)
	for i := range rounds {
		n := c.consumerNode(topic)
		if n == nil {
			t.Logf("no node reports a consumer on %s; killing %s", topic, c.nodes[i%len(c.nodes)].name)
			n = c.nodes[i%len(c.nodes)]
		}
		if out, err := c.ctl(n, "list_queues", "-q", "-p", "/", "name", "type", "leader", "members", "online"); err == nil {
			t.Logf("before killing %s:\n%s", n.name, out)
		}
		lo := seq()
		at := time.Now()
		c.kill(n)
		time.Sleep(failoverDown)
		for _, m := range c.nodes {
			if m != n {
				if out, err := c.ctl(m, "list_queues", "-q", "-p", "/", "name", "type", "leader", "online"); err == nil {
					t.Logf("%s down %s, queues seen from %s:\n%s", n.name, failoverDown, m.name, out)
				}
				break
			}
		}
		c.restart(n)
		time.Sleep(failoverSettle)
		recs = append(recs, killRec{node: n.name, at: at, seqLo: lo, window: time.Since(at)})
		*hi = append(*hi, seq())
	}
	return recs
}

// clusterRunPython runs faults/python/failover.py under the same schedule
// and measures it the same way. Its checks are none: it is the reference.
func clusterRunPython(t *testing.T, c *rabbitCluster, rounds int, quorum bool) *Result {
	topic := fmt.Sprintf("faults_failover_py_%d", time.Now().UnixNano())
	// Load lasts the whole schedule: warm-up, each kill's window, a tail.
	seconds := 5*time.Second + time.Duration(rounds)*(failoverDown+failoverSettle+30*time.Second) + 5*time.Second
	q := "0"
	if quorum {
		q = "1"
	}
	cmd := exec.Command("/usr/bin/python3", "python/failover.py", c.url(), topic, q,
		strconv.Itoa(int(seconds.Seconds())), strconv.Itoa(failoverCallRate), strconv.Itoa(failoverCastRate), strconv.Itoa(int(failoverCallTimeout.Seconds())))
	cmd.SysProcAttr = dieWithParent()
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	stderrPath := filepath.Join(t.TempDir(), "python.log")
	ef, err := os.Create(stderrPath)
	if err != nil {
		t.Fatal(err)
	}
	defer ef.Close()
	cmd.Stderr = ef
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() {
		if cmd.ProcessState == nil {
			_ = cmd.Process.Kill()
			_ = cmd.Wait()
		}
	}()
	led := newLedger()
	var (
		mu    sync.Mutex
		calls []callRec
		maxSq int
	)
	ready, end := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(end)
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			f := strings.Fields(sc.Text())
			if len(f) == 0 {
				continue
			}
			switch f[0] {
			case "READY":
				close(ready)
			case "CALL":
				if len(f) == 4 {
					s, _ := strconv.ParseFloat(f[1], 64)
					e, _ := strconv.ParseFloat(f[2], 64)
					var err error
					if f[3] != "ok" {
						err = fmt.Errorf("%s", f[3])
					}
					mu.Lock()
					calls = append(calls, callRec{start: unixF(s), end: unixF(e), err: err})
					mu.Unlock()
				}
			case "CAST":
				if len(f) == 3 {
					n, _ := strconv.Atoi(f[1])
					led.mu.Lock()
					led.sent[n] = true
					if f[2] == "ok" {
						led.confirmed[n] = true
					} else {
						led.failed[n] = f[2]
					}
					led.mu.Unlock()
					mu.Lock()
					maxSq = max(maxSq, n)
					mu.Unlock()
				}
			case "RECV":
				n, _ := strconv.Atoi(f[1])
				led.receive(n)
			}
		}
	}()
	select {
	case <-ready:
	case <-end:
		t.Fatalf("python failover.py ended before READY (log %s)", stderrPath)
	case <-time.After(120 * time.Second):
		t.Fatalf("python failover.py not ready after 120 s (log %s)", stderrPath)
	}
	begin := time.Now()
	seqNow := func() int { mu.Lock(); defer mu.Unlock(); return maxSq }
	var seqHi []int
	recs := runKills(t, c, rounds, topic, seqNow, &seqHi)
	select {
	case <-end:
	case <-time.After(seconds + 120*time.Second):
		t.Fatalf("python failover.py did not end (log %s)", stderrPath)
	}
	_ = cmd.Wait()

	kind := map[bool]string{true: "quorum", false: "classic"}[quorum]
	sent, confirmed, received, lost, dup := led.counts()
	mu.Lock()
	allCalls := append([]callRec(nil), calls...)
	mu.Unlock()
	per, worstFailed, _, worstFirst, lostFrac := perKill(recs, allCalls, led, seqHi)
	okN, failedN := 0, map[string]int{}
	for _, c := range allCalls {
		if c.err == nil {
			okN++
		} else {
			failedN[c.err.Error()]++
		}
	}
	r := &Result{Scenario: "cluster-failover", Broker: "RabbitMQ 3.10, 3 nodes, " + kind + " queues", Load: "Python oslo.messaging 14.0.3: 20 calls/s (10 s timeout) + 20 casts/s",
		Fault:     fmt.Sprintf("SIGKILL of the node holding the server's consumer (kills: %d; each node restarted after %s)", len(recs), failoverDown),
		DurationS: time.Since(begin).Seconds(), Sent: sent, Confirmed: confirmed, Received: received, Lost: lost, Duplicated: dup, RecoveryS: worstFirst.Seconds()}
	if worstFirst == time.Hour {
		r.RecoveryS = -1
	}
	r.extra("per_kill", per)
	r.extra("calls", len(allCalls))
	r.extra("calls_ok", okN)
	r.extra("call_failures", failedN)
	r.extra("cast_failures", led.failures())
	r.extra("worst_calls_failed", worstFailed)
	r.extra("worst_lost_fraction", round2(lostFrac))
	report(t, r)
	return r
}

func unixF(s float64) time.Time {
	sec := int64(s)
	return time.Unix(sec, int64((s-float64(sec))*1e9))
}

//go:build faults

package faults

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/oslogo/oslogo/internal/testrabbit"
	"github.com/oslogo/oslogo/messaging"
)

// childServerEnv makes the test binary run one RPC server (the transport
// URL is its value) instead of the tests, so a test can SIGKILL it.
const childServerEnv = "FAULTS_CHILD_SERVER_URL"

// runChildServer serves "record" (slowly, on two workers) and "sleep" for
// FAULTS_CHILD_TOPIC as FAULTS_CHILD_NAME, writing "GOT n" when a cast's
// handler starts and "DONE n" when it has finished, straight to stdout
// (unbuffered, so a SIGKILL loses no line written before it).
func runChildServer() int {
	cfg := messaging.DefaultTransportConfig()
	ctx, cancel := signal.NotifyContext(context.Background(), syscall.SIGTERM)
	defer cancel()
	tr, err := messaging.OpenTransport(ctx, os.Getenv(childServerEnv), cfg)
	if err != nil {
		fmt.Println("ERR", err)
		return 1
	}
	defer tr.Close()
	work, _ := time.ParseDuration(os.Getenv("FAULTS_CHILD_WORK"))
	var out sync.Mutex
	say := func(s string) {
		out.Lock()
		_, _ = os.Stdout.WriteString(s + "\n")
		out.Unlock()
	}
	ep := messaging.NewEndpoint(messaging.Target{})
	messaging.Handle(ep, "record", func(_ context.Context, a struct {
		Seq int `json:"seq"`
	}) (any, error) {
		say("GOT " + strconv.Itoa(a.Seq))
		time.Sleep(work)
		say("DONE " + strconv.Itoa(a.Seq))
		return nil, nil
	})
	messaging.Handle(ep, "sleep", func(_ context.Context, a struct {
		Seconds float64 `json:"seconds"`
	}) (float64, error) {
		time.Sleep(time.Duration(a.Seconds * float64(time.Second)))
		return a.Seconds, nil
	})
	srv, err := messaging.NewRPCServer(tr, messaging.Target{Topic: os.Getenv("FAULTS_CHILD_TOPIC"), Server: os.Getenv("FAULTS_CHILD_NAME")},
		[]*messaging.Endpoint{ep}, messaging.WithExecutorThreadPoolSize(2))
	if err == nil {
		err = srv.Start(ctx)
	}
	if err != nil {
		fmt.Println("ERR", err)
		return 1
	}
	say("READY")
	<-ctx.Done()
	stopServer(srv)
	return 0
}

// childServer is a running child RPC server and what it reported.
type childServer struct {
	cmd  *exec.Cmd
	done chan struct{} // closed when its stdout is drained

	mu  sync.Mutex
	got map[int]bool
	fin map[int]bool
}

// startChildServer runs the killable server: this test binary (impl "go")
// or python/slow_server.py (impl "python"), both with two workers.
func startChildServer(t *testing.T, impl, url, topic, name string, work time.Duration, led *ledger) *childServer {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), childServerEnv+"="+url, "FAULTS_CHILD_TOPIC="+topic, "FAULTS_CHILD_NAME="+name, "FAULTS_CHILD_WORK="+work.String())
	if impl == "python" {
		cmd = exec.Command("/usr/bin/python3", "python/slow_server.py", url, topic, name, fmt.Sprint(work.Seconds()), "2")
	}
	cmd.SysProcAttr = dieWithParent()
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	c := &childServer{cmd: cmd, done: make(chan struct{}), got: map[int]bool{}, fin: map[int]bool{}}
	ready := make(chan error, 1)
	go func() {
		defer close(c.done)
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			word, arg, _ := strings.Cut(sc.Text(), " ")
			n, _ := strconv.Atoi(arg)
			c.mu.Lock()
			switch word {
			case "READY":
				ready <- nil
			case "ERR":
				ready <- errors.New(arg)
			case "GOT":
				c.got[n] = true
			case "DONE":
				c.fin[n] = true
				led.receive(n)
			}
			c.mu.Unlock()
		}
	}()
	t.Cleanup(func() { c.kill() })
	select {
	case err := <-ready:
		if err != nil {
			c.kill()
			t.Fatalf("child server: %v", err)
		}
	case <-time.After(60 * time.Second):
		c.kill()
		t.Fatal("child server not ready after 60s")
	}
	return c
}

func (c *childServer) kill() {
	if c.cmd.ProcessState != nil {
		return
	}
	_ = c.cmd.Process.Signal(syscall.SIGKILL)
	<-c.done
	_ = c.cmd.Wait()
}

// inProgress is how many casts the child had started and not finished.
func (c *childServer) inProgress() (started, finished, open int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for n := range c.got {
		if !c.fin[n] {
			open++
		}
	}
	return len(c.got), len(c.fin), open
}

// TestServerKilled kills one of two RPC servers of a topic (a child
// process, SIGKILL) while casts stream in faster than the servers work
// them off. The target: casts the dead server held but had not started go
// to the other server, so at most those it was running are lost; a caller
// waiting on the dead server gets MessagingTimeout at its deadline.
//
// The killed server is oslogo's, and Python oslo.messaging 14's when
// /usr/bin/python3 has it: Python acknowledges each request as its
// consumer receives it (RpcAMQPListener.__call__), before dispatch, so it
// loses everything it held; that is the floor, measured, not checked.
func TestServerKilled(t *testing.T) {
	b := startBroker(t, "")
	brokers := []struct{ name, url string }{
		{"oslogo embedded (memory)", b.url()},
		{"rabbitmq 3.10 (system node, a vhost of this run)", testrabbit.URL()},
	}
	impls := []string{"go"}
	if exec.Command("/usr/bin/python3", "-c", "import oslo_messaging").Run() == nil {
		impls = append(impls, "python")
	}
	for _, br := range brokers {
		for _, impl := range impls {
			t.Run(strings.Fields(br.name)[0]+"-"+impl, func(t *testing.T) { serverKilled(t, br.name, br.url, impl) })
		}
	}
}

func serverKilled(t *testing.T, brokerName, url, impl string) {
	topic := fmt.Sprintf("faults_srvkill_%d", time.Now().UnixNano())
	led := newLedger()
	const work = 50 * time.Millisecond
	a := startChildServer(t, impl, url, topic, "a", work, led)
	srvTr := openTransport(t, url, nil)
	defer srvTr.Close()
	// Server b works as a does: two workers, 50 ms a cast.
	srvB, err := messaging.NewRPCServer(srvTr, messaging.Target{Topic: topic, Server: "b"}, []*messaging.Endpoint{recordEndpoint(led, work)},
		messaging.WithExecutorThreadPoolSize(2))
	if err != nil {
		t.Fatal(err)
	}
	if err := srvB.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	defer stopServer(srvB)
	cliTr := openTransport(t, url, nil)
	defer cliTr.Close()
	defer cleanupQueues(t, url, topic, topic+".a", topic+".b")
	cli := messaging.NewRPCClient(cliTr, messaging.Target{Topic: topic})
	warmUp(t, cli)

	// 100 casts/s against 2 x 40/s of work: a backlog builds on both.
	g := &loadGen{cli: cli, led: led, castRate: 100, castTimeout: 10 * time.Second}
	begin := time.Now()
	g.start()
	// A call to a, in flight when a dies, with a 4 s deadline.
	const callTimeout = 4 * time.Second
	toA := cli.Prepare(messaging.WithServer("a"), messaging.WithTimeout(callTimeout))
	type callOut struct {
		err     error
		elapsed time.Duration
	}
	inflight := make(chan callOut, 1)
	time.Sleep(scale(4 * time.Second))
	go func() {
		start := time.Now()
		_, err := toA.Call(context.Background(), "sleep", map[string]any{"seconds": 30})
		inflight <- callOut{err, time.Since(start)}
	}()
	time.Sleep(time.Second)
	killAt := time.Now()
	a.kill()
	startedA, doneA, openA := a.inProgress()
	// A call to a after its death.
	start := time.Now()
	_, errAfter := toA.Call(context.Background(), "sleep", map[string]any{"seconds": 0})
	afterElapsed := time.Since(start)
	time.Sleep(scale(2 * time.Second))
	g.halt()
	stopCasts := time.Now()
	led.waitDrained(30 * time.Second)
	drained := time.Since(stopCasts)
	in := <-inflight

	sent, confirmed, received, lost, dup := led.counts()
	victim := map[string]string{"go": "oslogo", "python": "Python oslo.messaging 14.0.3"}[impl]
	r := &Result{Scenario: "server-kill9", Broker: brokerName, Load: "100 casts/s from oslogo to 2 servers (2 workers x 50 ms each)",
		Fault: "SIGKILL of one RPC server (" + victim + ", child process) mid-stream; the other is oslogo", DurationS: time.Since(begin).Seconds(),
		Sent: sent, Confirmed: confirmed, Received: received, Lost: lost, Duplicated: dup, RecoveryS: -1}
	if lost == 0 {
		// Recovery: every confirmed cast processed, from the kill on.
		r.RecoveryS = stopCasts.Add(drained).Sub(killAt).Seconds()
	}
	r.extra("killed_server_started", startedA)
	r.extra("killed_server_done", doneA)
	r.extra("killed_server_in_progress", openA)
	r.extra("cast_failures", led.failures())
	r.extra("inflight_call", fmt.Sprintf("%s after %.2fs (deadline %s)", errClassOrOK(in.err), in.elapsed.Seconds(), callTimeout))
	r.extra("call_after_death", fmt.Sprintf("%s after %.2fs (deadline %s)", errClassOrOK(errAfter), afterElapsed.Seconds(), callTimeout))
	r.extra("killed_after_s", secs(killAt.Sub(begin)))
	if impl == "python" {
		// Python is the reference: measured, not checked.
		report(t, r)
		return
	}
	// At most the casts the dead server was running may be lost.
	r.check(lost <= openA, "%d confirmed casts lost, more than the %d the killed server was running", lost, openA)
	slack := 1500 * time.Millisecond
	r.check(errors.Is(in.err, messaging.ErrTimeout) && in.elapsed < callTimeout+slack,
		"in-flight call to the killed server: %v after %s, want MessagingTimeout at %s", in.err, in.elapsed, callTimeout)
	r.check(errors.Is(errAfter, messaging.ErrTimeout) && afterElapsed < callTimeout+slack,
		"call to the dead server: %v after %s, want MessagingTimeout at %s", errAfter, afterElapsed, callTimeout)
	report(t, r)
}

func errClassOrOK(err error) string {
	if err == nil {
		return "ok"
	}
	return errClass(err)
}

//go:build faults

package faults

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"

	_ "github.com/oslogo/oslogo/driver/rabbit"
	"github.com/oslogo/oslogo/internal/testrabbit"
	"github.com/oslogo/oslogo/messaging"
)

// oslogoBin is the oslogo binary the broker scenarios run (built once).
var oslogoBin string

func TestMain(m *testing.M) {
	if os.Getenv(childServerEnv) != "" {
		os.Exit(runChildServer())
	}
	dir, err := os.MkdirTemp("", "oslogo-faults-bin-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	oslogoBin = filepath.Join(dir, "oslogo")
	build := exec.Command("go", "build", "-o", oslogoBin, "github.com/oslogo/oslogo/cmd/oslogo")
	build.Stdout, build.Stderr = os.Stderr, os.Stderr
	if err := build.Run(); err != nil {
		fmt.Fprintln(os.Stderr, "build oslogo:", err)
		os.Exit(1)
	}
	code := testrabbit.Wrap(m).Run()
	_ = os.RemoveAll(dir)
	os.Exit(code)
}

// Result is one scenario's outcome, printed as one JSON line.
type Result struct {
	Scenario   string         `json:"scenario"`
	Broker     string         `json:"broker"`
	Load       string         `json:"load"`
	Fault      string         `json:"fault"`
	DurationS  float64        `json:"duration_s"`
	Sent       int            `json:"sent"`
	Confirmed  int            `json:"confirmed"`
	Received   int            `json:"received"`
	Lost       int            `json:"lost"`
	Duplicated int            `json:"duplicated"`
	RecoveryS  float64        `json:"recovery_s"` // -1: no recovery seen
	Extra      map[string]any `json:"extra,omitempty"`
	Failures   []string       `json:"failures,omitempty"`
}

// report prints r as the scenario's result line (and appends it to
// $FAULTS_RESULTS), then fails the test for each failed check.
func report(t *testing.T, r *Result) {
	t.Helper()
	r.DurationS = round2(r.DurationS)
	r.RecoveryS = round2(r.RecoveryS)
	b, err := json.Marshal(r)
	if err != nil {
		t.Fatal(err)
	}
	fmt.Printf("FAULTS-RESULT %s\n", b)
	if f := os.Getenv("FAULTS_RESULTS"); f != "" {
		if fh, err := os.OpenFile(f, os.O_APPEND|os.O_CREATE|os.O_WRONLY, 0o644); err == nil {
			_, _ = fh.Write(append(b, '\n'))
			_ = fh.Close()
		}
	}
	for _, f := range r.Failures {
		t.Error(f)
	}
}

// check records a failed check on r when ok is false.
func (r *Result) check(ok bool, format string, args ...any) {
	if !ok {
		r.Failures = append(r.Failures, fmt.Sprintf(format, args...))
	}
}

func (r *Result) extra(k string, v any) {
	if r.Extra == nil {
		r.Extra = map[string]any{}
	}
	r.Extra[k] = v
}

func round2(x float64) float64 {
	if x < 0 {
		return x
	}
	return float64(int64(x*100+0.5)) / 100
}

// ledger counts casts by sequence number: sent, confirmed by the broker
// (Cast returned nil) and received by a server.
type ledger struct {
	mu        sync.Mutex
	next      int
	sent      map[int]bool
	confirmed map[int]bool
	failed    map[int]string // failed casts: their error class
	received  map[int]int
}

func newLedger() *ledger {
	return &ledger{sent: map[int]bool{}, confirmed: map[int]bool{}, failed: map[int]string{}, received: map[int]int{}}
}

func (l *ledger) newSeq() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.next++
	l.sent[l.next] = true
	return l.next
}

func (l *ledger) done(seq int, err error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if err == nil {
		l.confirmed[seq] = true
		return
	}
	l.failed[seq] = errClass(err)
}

func (l *ledger) receive(seq int) {
	l.mu.Lock()
	l.received[seq]++
	l.mu.Unlock()
}

// counts returns sent, confirmed, distinct received, confirmed-but-never-
// received and extra copies received.
func (l *ledger) counts() (sent, confirmed, received, lost, dup int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	for seq := range l.confirmed {
		if l.received[seq] == 0 {
			lost++
		}
	}
	for _, n := range l.received {
		dup += n - 1
	}
	return len(l.sent), len(l.confirmed), len(l.received), lost, dup
}

// missing is how many confirmed casts have not been received yet.
func (l *ledger) missing() int {
	_, _, _, lost, _ := l.counts()
	return lost
}

func (l *ledger) failures() map[string]int { return l.failuresSince(0) }

// failuresSince counts failed casts after sequence number lo, by class.
func (l *ledger) failuresSince(lo int) map[string]int {
	l.mu.Lock()
	defer l.mu.Unlock()
	out := map[string]int{}
	for seq, class := range l.failed {
		if seq > lo {
			out[class]++
		}
	}
	return out
}

// peekSeq is the last sequence number handed out.
func (l *ledger) peekSeq() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.next
}

// countsRange is counts for the casts numbered (lo, hi].
func (l *ledger) countsRange(lo, hi int) (sent, confirmed, received, lost, dup int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	for seq := lo + 1; seq <= hi; seq++ {
		n := l.received[seq]
		if l.sent[seq] {
			sent++
		}
		if l.confirmed[seq] {
			confirmed++
			if n == 0 {
				lost++
			}
		}
		if n > 0 {
			received++
			dup += n - 1
		}
	}
	return
}

func (l *ledger) waitDrainedRange(lo, hi int, d time.Duration) {
	deadline := time.Now().Add(d)
	for time.Now().Before(deadline) {
		if _, _, _, lost, _ := l.countsRange(lo, hi); lost == 0 {
			return
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// errClass names an error by the oslo exception it stands for.
func errClass(err error) string {
	switch {
	case errors.Is(err, messaging.ErrTimeout):
		return "MessagingTimeout"
	case errors.Is(err, messaging.ErrDeliveryFailure):
		return "MessageDeliveryFailure"
	case errors.Is(err, messaging.ErrUndeliverable):
		return "MessageUndeliverable"
	case errors.Is(err, context.DeadlineExceeded):
		return "DeadlineExceeded"
	case errors.Is(err, messaging.ErrClosed):
		return "Closed"
	}
	var re *messaging.RemoteError
	if errors.As(err, &re) {
		return "RemoteError"
	}
	return "other"
}

// waitDrained waits until every confirmed cast was received or d passed.
func (l *ledger) waitDrained(d time.Duration) {
	deadline := time.Now().Add(d)
	for l.missing() > 0 && time.Now().Before(deadline) {
		time.Sleep(100 * time.Millisecond)
	}
}

// recordEndpoint serves "record" (a cast carrying a sequence number,
// counted in l) and "echo" (for calls).
func recordEndpoint(l *ledger, work time.Duration) *messaging.Endpoint {
	ep := messaging.NewEndpoint(messaging.Target{})
	messaging.Handle(ep, "record", func(_ context.Context, a struct {
		Seq int `json:"seq"`
	}) (any, error) {
		if work > 0 {
			time.Sleep(work)
		}
		l.receive(a.Seq)
		return nil, nil
	})
	messaging.Handle(ep, "echo", func(_ context.Context, a struct {
		N int `json:"n"`
	}) (int, error) {
		return a.N, nil
	})
	return ep
}

// callRec is one call: when it started and ended, and how.
type callRec struct {
	start, end time.Time
	err        error
}

// loadGen casts and calls at fixed rates, each request in its own
// goroutine (bounded by inflight), so a stalled request never slows the
// rate.
type loadGen struct {
	cli         *messaging.RPCClient
	led         *ledger
	callRate    float64
	castRate    float64
	callTimeout time.Duration
	castTimeout time.Duration

	stop     chan struct{}
	wg       sync.WaitGroup
	inflight chan struct{}

	mu    sync.Mutex
	calls []callRec
	skips int // ticks skipped because inflight was full
}

const maxInflight = 512

func (g *loadGen) start() {
	g.stop = make(chan struct{})
	g.inflight = make(chan struct{}, maxInflight)
	if g.callRate > 0 {
		g.wg.Add(1)
		go g.loop(g.callRate, g.oneCall)
	}
	if g.castRate > 0 {
		g.wg.Add(1)
		go g.loop(g.castRate, g.oneCast)
	}
}

func (g *loadGen) loop(rate float64, fn func()) {
	defer g.wg.Done()
	tick := time.NewTicker(time.Duration(float64(time.Second) / rate))
	defer tick.Stop()
	for {
		select {
		case <-g.stop:
			return
		case <-tick.C:
		}
		select {
		case g.inflight <- struct{}{}:
		default:
			g.mu.Lock()
			g.skips++
			g.mu.Unlock()
			continue
		}
		g.wg.Add(1)
		go func() {
			defer g.wg.Done()
			defer func() { <-g.inflight }()
			fn()
		}()
	}
}

func (g *loadGen) oneCall() {
	ctx, cancel := context.WithTimeout(context.Background(), g.callTimeout)
	defer cancel()
	start := time.Now()
	_, err := g.cli.Call(ctx, "echo", map[string]any{"n": 1})
	g.mu.Lock()
	g.calls = append(g.calls, callRec{start: start, end: time.Now(), err: err})
	g.mu.Unlock()
}

func (g *loadGen) oneCast() {
	ctx, cancel := context.WithTimeout(context.Background(), g.castTimeout)
	defer cancel()
	seq := g.led.newSeq()
	g.led.done(seq, g.cli.Cast(ctx, "record", map[string]any{"seq": seq}))
}

// halt stops issuing and waits for every request in flight to end (each
// has its own deadline).
func (g *loadGen) halt() {
	close(g.stop)
	g.wg.Wait()
}

// callStats summarises calls: how many, how many failed by class, and the
// first good call at or after t (its end; zero if none).
func (g *loadGen) callStats(t time.Time) (n, ok int, failed map[string]int, firstGood time.Time) {
	g.mu.Lock()
	defer g.mu.Unlock()
	failed = map[string]int{}
	for _, c := range g.calls {
		n++
		if c.err != nil {
			failed[errClass(c.err)]++
			continue
		}
		ok++
		if !c.start.Before(t) && (firstGood.IsZero() || c.end.Before(firstGood)) {
			firstGood = c.end
		}
	}
	return n, ok, failed, firstGood
}

// errorExamples is the first error message of each class of failed call,
// so that a report says what failed and not only how often.
func (g *loadGen) errorExamples() map[string]string {
	g.mu.Lock()
	defer g.mu.Unlock()
	ex := map[string]string{}
	for _, c := range g.calls {
		if c.err != nil {
			if _, seen := ex[errClass(c.err)]; !seen {
				ex[errClass(c.err)] = c.err.Error()
			}
		}
	}
	return ex
}

// longerThan counts calls that took longer than d.
func (g *loadGen) longerThan(d time.Duration) int {
	g.mu.Lock()
	defer g.mu.Unlock()
	n := 0
	for _, c := range g.calls {
		if c.end.Sub(c.start) > d {
			n++
		}
	}
	return n
}

// slowest is the longest call.
func (g *loadGen) slowest() time.Duration {
	g.mu.Lock()
	defer g.mu.Unlock()
	var m time.Duration
	for _, c := range g.calls {
		m = max(m, c.end.Sub(c.start))
	}
	return m
}

// firstGoodAfter is the end of the first successful call that ended after t
// (zero if none).
func (g *loadGen) firstGoodAfter(t time.Time) time.Time {
	g.mu.Lock()
	defer g.mu.Unlock()
	var first time.Time
	for _, c := range g.calls {
		if c.err == nil && c.end.After(t) && c.start.After(t) && (first.IsZero() || c.end.Before(first)) {
			first = c.end
		}
	}
	return first
}

// openTransport opens a transport with oslo driver options; logs go to
// stderr with FAULTS_VERBOSE=1.
func openTransport(t *testing.T, url string, opts map[string]string) *messaging.Transport {
	t.Helper()
	cfg := messaging.DefaultTransportConfig()
	cfg.DriverConfig = opts
	if os.Getenv("FAULTS_VERBOSE") != "" {
		cfg.Logger = slog.New(slog.NewTextHandler(os.Stderr, nil))
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	tr, err := messaging.OpenTransport(ctx, url, cfg)
	if err != nil {
		t.Fatal(err)
	}
	return tr
}

func startServer(t *testing.T, tr *messaging.Transport, target messaging.Target, ep *messaging.Endpoint) *messaging.RPCServer {
	t.Helper()
	srv, err := messaging.NewRPCServer(tr, target, []*messaging.Endpoint{ep})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	if err := srv.Start(ctx); err != nil {
		t.Fatal(err)
	}
	return srv
}

func stopServer(srv *messaging.RPCServer) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	_ = srv.Stop(ctx)
}

// warmUp waits until a call through cli succeeds (the server consumes).
func warmUp(t *testing.T, cli *messaging.RPCClient) {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		_, err := cli.Call(ctx, "echo", map[string]any{"n": 0})
		cancel()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("no server answers: %v", err)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// scale shortens durations in -short mode.
func scale(d time.Duration) time.Duration {
	if testing.Short() {
		return d / 2
	}
	return d
}

// freePort returns a TCP port free on 127.0.0.1 right now.
func freePort(t *testing.T) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

// waitPort waits until addr accepts TCP connections.
func waitPort(addr string, d time.Duration) error {
	deadline := time.Now().Add(d)
	for {
		c, err := net.DialTimeout("tcp", addr, time.Second)
		if err == nil {
			_ = c.Close()
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s not listening after %s: %w", addr, d, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// dieWithParent makes a child process get SIGKILL when the test binary
// dies, so a test timeout leaves no broker or server behind.
func dieWithParent() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
}

// brokerProc is the embedded broker run as `oslogo broker` in a child
// process, so it can be killed with SIGKILL and restarted on the same
// address and data directory.
type brokerProc struct {
	t    *testing.T
	addr string
	data string
	log  string
	cmd  *exec.Cmd
}

func startBroker(t *testing.T, data string) *brokerProc {
	t.Helper()
	b := &brokerProc{t: t, addr: "127.0.0.1:" + strconv.Itoa(freePort(t)), data: data, log: filepath.Join(t.TempDir(), "broker.log")}
	b.start()
	t.Cleanup(b.stop)
	return b
}

func (b *brokerProc) start() {
	b.t.Helper()
	args := []string{"broker", "--amqp", b.addr}
	if b.data != "" {
		args = append(args, "--data", b.data)
	}
	lf, err := os.OpenFile(b.log, os.O_APPEND|os.O_CREATE|os.O_WRONLY, 0o644)
	if err != nil {
		b.t.Fatal(err)
	}
	cmd := exec.Command(oslogoBin, args...)
	cmd.Stdout, cmd.Stderr = lf, lf
	cmd.SysProcAttr = dieWithParent()
	if err := cmd.Start(); err != nil {
		b.t.Fatal(err)
	}
	_ = lf.Close()
	b.cmd = cmd
	if err := waitPort(b.addr, 60*time.Second); err != nil {
		b.kill9()
		b.t.Fatalf("embedded broker: %v (log %s)", err, b.log)
	}
}

func (b *brokerProc) url() string { return "rabbit://guest:guest@" + b.addr + "/" }

func (b *brokerProc) kill9() {
	if b.cmd == nil {
		return
	}
	_ = b.cmd.Process.Signal(syscall.SIGKILL)
	_ = b.cmd.Wait()
	b.cmd = nil
}

func (b *brokerProc) stop() { b.kill9() }

// rssKB is the broker's resident set size in KiB (from /proc).
func (b *brokerProc) rssKB() int64 {
	if b.cmd == nil {
		return -1
	}
	return procRSS(b.cmd.Process.Pid)
}

func procRSS(pid int) int64 {
	raw, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return -1
	}
	for _, line := range strings.Split(string(raw), "\n") {
		if v, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			f := strings.Fields(v)
			if len(f) > 0 {
				n, _ := strconv.ParseInt(f[0], 10, 64)
				return n
			}
		}
	}
	return -1
}

// logTail is the end of the broker's log, for failure messages.
func (b *brokerProc) logTail() string {
	raw, _ := os.ReadFile(b.log)
	if len(raw) > 2000 {
		raw = raw[len(raw)-2000:]
	}
	return string(raw)
}

// percentile of sorted durations (p in 0..100).
func percentile(ds []time.Duration, p float64) time.Duration {
	if len(ds) == 0 {
		return 0
	}
	s := slices.Clone(ds)
	slices.Sort(s)
	i := int(float64(len(s)-1) * p / 100)
	return s[i]
}

func secs(d time.Duration) float64 { return round2(d.Seconds()) }

// cleanupQueues deletes queues a scenario left on a shared broker.
func cleanupQueues(t *testing.T, url string, queues ...string) {
	t.Helper()
	conn, err := amqp.DialConfig(strings.Replace(url, "rabbit://", "amqp://", 1), amqp.Config{Dial: amqp.DefaultDial(10 * time.Second)})
	if err != nil {
		t.Logf("cleanup: %v", err)
		return
	}
	defer conn.Close()
	for _, q := range queues {
		ch, err := conn.Channel()
		if err != nil {
			return
		}
		_, _ = ch.QueueDelete(q, false, false, false)
		_ = ch.Close()
	}
}

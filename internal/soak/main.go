// Command soak runs the embedded broker (`oslogo broker`, a child process)
// under mixed RPC and notification load for minutes, with many idle
// connections and queues beside it, and samples every second the broker's
// RSS and goroutines and the load's rates and latency. It writes the samples
// as JSON lines and a chart, and fails when memory or goroutines grow from
// the first measured minute to the last, or when calls fail.
//
//	go run ./internal/soak -duration 10m -conns 1000 -queues 10000
//
// `make soak` runs it with those figures (not part of `make test`).
package main

import (
	"bufio"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log"
	"log/slog"
	"net/http"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"

	_ "github.com/oslogo/oslogo/driver/rabbit"
	"github.com/oslogo/oslogo/messaging"
)

type config struct {
	bin        string
	duration   time.Duration
	warmup     time.Duration
	conns      int
	queues     int
	services   int
	callRate   int
	castRate   int
	notifyRate int
	out, png   string
	external   string
}

// Sample is one second of the run.
type Sample struct {
	T          float64 `json:"t"` // seconds since the load started
	RSSMB      float64 `json:"rss_mb"`
	Goroutines int     `json:"goroutines"`
	Calls      int64   `json:"calls"`
	Casts      int64   `json:"casts"`
	Notifies   int64   `json:"notifications"`
	Received   int64   `json:"notifications_received"`
	Errors     int64   `json:"errors"`
	P50ms      float64 `json:"call_p50_ms"`
	P99ms      float64 `json:"call_p99_ms"`
}

func main() {
	var c config
	flag.StringVar(&c.bin, "bin", "bin/oslogo", "the oslogo binary (make build)")
	flag.DurationVar(&c.duration, "duration", 10*time.Minute, "how long the load runs")
	flag.DurationVar(&c.warmup, "warmup", time.Minute, "samples before this are not compared")
	flag.IntVar(&c.conns, "conns", 1000, "idle AMQP connections beside the load")
	flag.IntVar(&c.queues, "queues", 10000, "queues declared (with a consumer each) on the idle connections")
	flag.IntVar(&c.services, "services", 8, "RPC services (transports with a server, callers and a notifier)")
	flag.IntVar(&c.callRate, "call-rate", 200, "calls per second, all services together")
	flag.IntVar(&c.castRate, "cast-rate", 200, "casts per second")
	flag.IntVar(&c.notifyRate, "notify-rate", 200, "notifications per second")
	flag.StringVar(&c.out, "out", "docs/bench/soak.jsonl", "samples, one JSON line per second")
	flag.StringVar(&c.png, "png", "docs/bench/soak.png", "chart of the samples")
	flag.StringVar(&c.external, "external", "", "host:port/vhost of a broker to load instead of starting one (guest/guest; no RSS or goroutine samples)")
	flag.Parse()
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, c); err != nil {
		log.Fatalf("soak: %v", err)
	}
}

func run(ctx context.Context, c config) error {
	b, err := startBroker(c.bin, c.external)
	if err != nil {
		return err
	}
	defer b.stop()
	url := "rabbit://guest:guest@" + b.amqpAddr + "/" + b.vhost
	if b.cmd != nil {
		log.Printf("broker pid %d, profiles on http://%s/debug/pprof/", b.cmd.Process.Pid, b.profileAddr)
	}
	log.Printf("broker on %s; opening %d idle connections with %d queues", b.amqpAddr, c.conns, c.queues)
	idle, err := openIdle(ctx, b.amqpAddr+"/"+b.vhost, c.conns, c.queues)
	defer closeAll(idle)
	if err != nil {
		return err
	}
	log.Printf("idle load in place; starting %d services", c.services)
	ld, err := startLoad(ctx, url, c)
	if err != nil {
		return err
	}
	samples, err := sample(ctx, b, ld, c.duration)
	ld.stop()
	if err != nil {
		return err
	}
	if err := writeSamples(c.out, samples); err != nil {
		return err
	}
	if err := drawChart(c.png, samples); err != nil {
		return err
	}
	return verdict(samples, c.warmup, ld)
}

// broker is the child `oslogo broker`.
type broker struct {
	cmd                   *exec.Cmd
	amqpAddr, profileAddr string
	vhost                 string
	dataDir               string
	done                  chan struct{}
}

func startBroker(bin, external string) (*broker, error) {
	if external != "" {
		addr, vhost, _ := strings.Cut(external, "/")
		return &broker{amqpAddr: addr, vhost: vhost, done: make(chan struct{})}, nil
	}
	dir, err := os.MkdirTemp("", "oslogo-soak-")
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(bin, "broker", "--amqp", "127.0.0.1:0", "--data", filepath.Join(dir, "data"), "--profile", "127.0.0.1:0")
	cmd.Stderr = os.Stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start %s (run make build first): %w", bin, err)
	}
	b := &broker{cmd: cmd, dataDir: dir, done: make(chan struct{})}
	lines := make(chan string, 4)
	go func() {
		defer close(b.done)
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			select {
			case lines <- sc.Text():
			default:
			}
		}
	}()
	deadline := time.After(30 * time.Second)
	for b.amqpAddr == "" || b.profileAddr == "" {
		select {
		case l := <-lines:
			if a, ok := strings.CutPrefix(l, "oslogo broker listening on amqp://"); ok {
				b.amqpAddr = a
			}
			if a, ok := strings.CutPrefix(l, "profiles on http://"); ok {
				b.profileAddr = strings.TrimSuffix(a, "/debug/pprof/")
			}
		case <-deadline:
			b.stop()
			return nil, errors.New("broker did not report its listeners within 30 s")
		}
	}
	return b, nil
}

func (b *broker) stop() {
	if b.cmd == nil {
		return
	}
	_ = b.cmd.Process.Signal(syscall.SIGTERM)
	exited := make(chan error, 1)
	go func() { exited <- b.cmd.Wait() }()
	select {
	case <-exited:
	case <-time.After(30 * time.Second):
		log.Printf("broker did not exit 30 s after SIGTERM; killing it")
		_ = b.cmd.Process.Kill()
		<-exited
	}
	<-b.done
	_ = os.RemoveAll(b.dataDir)
}

func (b *broker) rssMB() float64 {
	if b.cmd == nil {
		return 0
	}
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", b.cmd.Process.Pid))
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(data), "\n") {
		if f, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			kb, _ := strconv.ParseFloat(strings.TrimSuffix(strings.TrimSpace(f), " kB"), 64)
			return kb / 1024
		}
	}
	return 0
}

var httpClient = &http.Client{Timeout: 10 * time.Second}

// goroutines reads the count from the broker's pprof goroutine profile.
func (b *broker) goroutines() int {
	if b.cmd == nil {
		return 0
	}
	resp, err := httpClient.Get("http://" + b.profileAddr + "/debug/pprof/goroutine?debug=1")
	if err != nil {
		return -1
	}
	defer resp.Body.Close()
	first, err := bufio.NewReader(io.LimitReader(resp.Body, 4096)).ReadString('\n')
	if err != nil {
		return -1
	}
	n, err := strconv.Atoi(strings.TrimSpace(strings.TrimPrefix(first, "goroutine profile: total")))
	if err != nil {
		return -1
	}
	return n
}

// openIdle opens conns connections that declare queues exclusive queues
// between them, each with a consumer, and then sit idle as most of a
// cloud's fanout and reply queues do.
func openIdle(ctx context.Context, addr string, conns, queues int) ([]*amqp.Connection, error) {
	out := make([]*amqp.Connection, conns)
	sem := make(chan struct{}, 16)
	var wg sync.WaitGroup
	var mu sync.Mutex
	var firstErr error
	for i := range conns {
		n := queues / conns
		if i < queues%conns {
			n++
		}
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer func() { <-sem; wg.Done() }()
			if ctx.Err() != nil {
				return
			}
			c, err := amqp.DialConfig("amqp://guest:guest@"+addr, amqp.Config{Heartbeat: 10 * time.Second, Dial: amqp.DefaultDial(30 * time.Second)})
			if err == nil {
				out[i] = c
				err = declareIdle(c, i, n)
			}
			if err != nil {
				mu.Lock()
				if firstErr == nil {
					firstErr = fmt.Errorf("idle connection %d: %w", i, err)
				}
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	return out, firstErr
}

func declareIdle(c *amqp.Connection, i, n int) error {
	ch, err := c.Channel()
	if err != nil {
		return err
	}
	if err := ch.Qos(10, 0, false); err != nil {
		return err
	}
	for j := range n {
		q, err := ch.QueueDeclare(fmt.Sprintf("soak_idle_%d_%d", i, j), false, true, true, false, amqp.Table{"x-expires": int32(600000)})
		if err != nil {
			return err
		}
		if _, err := ch.Consume(q.Name, "", false, true, false, false, nil); err != nil {
			return err
		}
	}
	return nil
}

func closeAll(cs []*amqp.Connection) {
	for _, c := range cs {
		if c != nil {
			_ = c.Close()
		}
	}
}

// load is the RPC and notification traffic.
type load struct {
	cancel context.CancelFunc
	wg     sync.WaitGroup
	stops  []func()

	calls, casts, notifies, received, errors atomic.Int64
	mu                                       sync.Mutex
	latencies                                []time.Duration // since the last sample
	lastErr                                  atomic.Value
}

func startLoad(parent context.Context, url string, c config) (*load, error) {
	ctx, cancel := context.WithCancel(parent)
	ld := &load{cancel: cancel}
	every := func(rate int) time.Duration {
		if rate <= 0 {
			return 0
		}
		return time.Duration(int64(time.Second) * int64(c.services) / int64(rate))
	}
	for s := range c.services {
		tcfg := messaging.DefaultTransportConfig()
		if os.Getenv("SOAK_DEBUG") != "" {
			tcfg.Logger = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
		}
		tr, err := messaging.OpenTransport(ctx, url, tcfg)
		if err != nil {
			ld.stop()
			return nil, err
		}
		ld.stops = append(ld.stops, func() { _ = tr.Close() })
		topic := fmt.Sprintf("soak_service_%d", s)
		ep := messaging.NewEndpoint(messaging.Target{})
		messaging.Handle(ep, "echo", func(_ context.Context, a struct {
			Data string `json:"data"`
		}) (string, error) {
			return a.Data, nil
		})
		messaging.Handle(ep, "count", func(context.Context, struct{}) (any, error) { return nil, nil })
		srv, err := messaging.NewRPCServer(tr, messaging.Target{Topic: topic, Server: "host1"}, []*messaging.Endpoint{ep})
		if err != nil {
			ld.stop()
			return nil, err
		}
		if err := srv.Start(ctx); err != nil {
			ld.stop()
			return nil, err
		}
		ld.stops = append(ld.stops, func() {
			sctx, scancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer scancel()
			srv.Stop(sctx)
		})
		got := func(context.Context, *messaging.Notification) messaging.NotificationResult {
			ld.received.Add(1)
			return messaging.Handled
		}
		nl, err := messaging.NewNotificationListener(tr, []messaging.Target{{Topic: "soak_notifications"}},
			[]messaging.NotificationEndpoint{{Handlers: map[messaging.Priority]messaging.NotificationHandler{messaging.PriorityInfo: got}}},
			listenerPool(s))
		if err != nil {
			ld.stop()
			return nil, err
		}
		if err := nl.Start(ctx); err != nil {
			ld.stop()
			return nil, err
		}
		ld.stops = append(ld.stops, func() {
			sctx, scancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer scancel()
			nl.Stop(sctx)
		})
		notifier, err := messaging.NewNotifier(tr, "soak."+topic, messaging.WithNotifyDrivers(messaging.NotifyDriverMessagingV2), messaging.WithNotifyTopics("soak_notifications"))
		if err != nil {
			ld.stop()
			return nil, err
		}
		client := messaging.NewRPCClient(tr, messaging.Target{Topic: topic}, messaging.WithTimeout(30*time.Second))
		ld.loop(ctx, every(c.callRate), func(ctx context.Context) error {
			start := time.Now()
			_, err := messaging.Call[string](ctx, client, "echo", map[string]string{"data": "soak"})
			if err == nil {
				ld.calls.Add(1)
				ld.mu.Lock()
				ld.latencies = append(ld.latencies, time.Since(start))
				ld.mu.Unlock()
			}
			return err
		})
		ld.loop(ctx, every(c.castRate), func(ctx context.Context) error {
			err := client.Cast(ctx, "count", nil)
			if err == nil {
				ld.casts.Add(1)
			}
			return err
		})
		ld.loop(ctx, every(c.notifyRate), func(ctx context.Context) error {
			err := notifier.Info(ctx, "soak.tick", map[string]int{"n": 1})
			if err == nil {
				ld.notifies.Add(1)
			}
			return err
		})
	}
	return ld, nil
}

// listenerPool puts every service but the first in a pool of its own; the
// first reads the notifier's own queue (topic.priority), which would
// otherwise fill, as it does in a cloud where nothing consumes it.
func listenerPool(service int) messaging.ListenerOption {
	if service == 0 {
		return messaging.WithPool("")
	}
	return messaging.WithPool(fmt.Sprintf("soak_pool_%d", service))
}

// loop runs op every interval until ctx ends, counting failures.
func (ld *load) loop(ctx context.Context, interval time.Duration, op func(context.Context) error) {
	if interval <= 0 {
		return
	}
	ld.wg.Add(1)
	go func() {
		defer ld.wg.Done()
		t := time.NewTicker(interval)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
			}
			if err := op(ctx); err != nil && ctx.Err() == nil {
				ld.errors.Add(1)
				ld.lastErr.Store(err.Error())
			}
		}
	}()
}

func (ld *load) stop() {
	ld.cancel()
	ld.wg.Wait()
	for i := len(ld.stops) - 1; i >= 0; i-- {
		ld.stops[i]()
	}
}

func (ld *load) takeLatencies() (p50, p99 float64) {
	ld.mu.Lock()
	l := ld.latencies
	ld.latencies = nil
	ld.mu.Unlock()
	if len(l) == 0 {
		return 0, 0
	}
	sort.Slice(l, func(i, j int) bool { return l[i] < l[j] })
	ms := func(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }
	return ms(l[len(l)/2]), ms(l[(len(l)*99)/100])
}

func sample(ctx context.Context, b *broker, ld *load, d time.Duration) ([]Sample, error) {
	start := time.Now()
	t := time.NewTicker(time.Second)
	defer t.Stop()
	var out []Sample
	var last Sample
	for time.Since(start) < d {
		select {
		case <-ctx.Done():
			return out, ctx.Err()
		case <-b.done:
			return out, errors.New("the broker exited during the run")
		case <-t.C:
		}
		s := Sample{T: time.Since(start).Seconds(), RSSMB: b.rssMB(), Goroutines: b.goroutines(),
			Calls: ld.calls.Load(), Casts: ld.casts.Load(), Notifies: ld.notifies.Load(), Received: ld.received.Load(), Errors: ld.errors.Load()}
		s.P50ms, s.P99ms = ld.takeLatencies()
		if len(out)%30 == 0 {
			log.Printf("t=%3.0fs rss=%.1f MB goroutines=%d calls/s=%d casts/s=%d notifications/s=%d p99=%.1f ms errors=%d",
				s.T, s.RSSMB, s.Goroutines, s.Calls-last.Calls, s.Casts-last.Casts, s.Notifies-last.Notifies, s.P99ms, s.Errors)
		}
		last = s
		out = append(out, s)
	}
	return out, nil
}

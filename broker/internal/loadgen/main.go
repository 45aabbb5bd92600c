// Command loadgen measures an AMQP 0-9-1 broker with amqp091-go: one queue
// publish-to-consume (transient 100 B, persistent with confirms), request/
// reply round trips at 1 and 8 callers, fanout to 10 queues, topic routing
// through 10,000 bindings, and the broker's resident memory idle and with
// 1 million queued messages. It prints one JSON object.
//
// Usage: go run ./broker/internal/loadgen -url amqp://guest:guest@127.0.0.1:5673/ -pid PID -name oslogo
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"log"
	"net"
	"os"
	"runtime"
	"runtime/debug"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"
)

// Result is what one broker scored.
type Result struct {
	Name              string   `json:"name"`
	TransientMsgs     float64  `json:"transient_msgs_per_s"`
	PersistentSeconds float64  `json:"persistent_confirm_seconds"`
	PersistentMsgs    float64  `json:"persistent_msgs_per_s"`
	RoundTrips1       float64  `json:"round_trips_per_s_1"`
	RoundTrips8       float64  `json:"round_trips_per_s_8"`
	FanoutDeliveries  float64  `json:"fanout_deliveries_per_s"`
	TopicMsgs         float64  `json:"topic_msgs_per_s"`
	IdleRSSMB         float64  `json:"idle_rss_mb"`
	AfterLoadRSSMB    float64  `json:"after_load_rss_mb"`
	MillionRSSMB      float64  `json:"million_queued_rss_mb"`
	Errors            []string `json:"errors,omitempty"`
}

var (
	url       = flag.String("url", "amqp://guest:guest@127.0.0.1:5672/", "broker URL")
	pid       = flag.Int("pid", 0, "broker process id for RSS (0 skips)")
	name      = flag.String("name", "broker", "name in the output")
	transient = flag.Int("transient", 200000, "messages in the transient test")
	persist   = flag.Int("persistent", 20000, "messages in the persistent test")
	rttDur    = flag.Duration("rtt", 3*time.Second, "duration of each round-trip test")
	fanoutN   = flag.Int("fanout", 20000, "messages published in the fanout test")
	topicN    = flag.Int("topic", 50000, "messages in the topic test")
	million   = flag.Int("million", 1000000, "messages queued for the memory test (0 skips)")
	stepWait  = flag.Duration("timeout", 30*time.Second, "how long one test may wait for deliveries or confirms")
	cork      = flag.Bool("cork", true, "batch publishers' writes in the throughput tests (see corkConn)")
	rttProcs  = flag.Int("rtt-procs", 0, "GOMAXPROCS of the generator in the round-trip tests (0: unchanged); see roundTrips")
	gcPercent = flag.Int("gc", 400, "GOGC of the generator unless the GOGC variable is set")
	reps      = flag.Int("reps", 3, "runs per throughput test; the best is reported (the box is shared)")
	rttOnly   = flag.Int("callers", 0, "run only the round-trip row for 1 or 8 callers (0: both)")
	only      = flag.String("only", "", "comma-separated subset: transient,persistent,rtt,fanout,topic,memory")
	chartIn   = flag.String("chart", "", "render this results file (JSON lines) as a PNG instead of measuring")
	chartOut  = flag.String("png", "broker-bench.png", "PNG written by -chart")
	chartRef  = flag.String("ref", "rabbitmq-3.10", "reference broker name for -chart and -paired ratios")
	pairedIn  = flag.String("paired", "", "print the ratios of this file of back-to-back round-trip runs (JSON lines, see bench.sh) instead of measuring")
)

func main() {
	flag.Parse()
	if *rttOnly != 0 && *rttOnly != 1 && *rttOnly != 8 {
		log.Fatal("-callers takes 1 or 8 (the two round-trip rows)")
	}
	if os.Getenv("GOGC") == "" {
		// amqp091-go allocates about 25 objects per delivery; a larger heap
		// target keeps the generator's GC from eating the CPU it shares
		// with the broker (the same setting for every broker).
		debug.SetGCPercent(*gcPercent)
	}
	if *pairedIn != "" {
		if err := pairedTable(*pairedIn, "oslogo", *chartRef); err != nil {
			log.Fatal(err)
		}
		return
	}
	if *chartIn != "" {
		if err := chart(*chartIn, *chartOut, *chartRef); err != nil {
			log.Fatal(err)
		}
		return
	}
	r := Result{Name: *name}
	want := func(s string) bool { return *only == "" || strings.Contains(","+*only+",", ","+s+",") }
	r.IdleRSSMB = rss()
	step := func(n string, limit time.Duration, f func() error) {
		if !want(n) {
			return
		}
		log.Printf("%s: %s", *name, n)
		// A wedged broker can block a publish in the socket write, where no
		// context reaches it: give up on the step and move on.
		done := make(chan error, 1)
		go func() { done <- f() }()
		var err error
		select {
		case err = <-done:
		case <-time.After(limit):
			err = fmt.Errorf("step did not finish (broker stopped responding)")
		}
		if err != nil {
			log.Printf("%s: %s: %v", *name, n, err)
			r.Errors = append(r.Errors, n+": "+err.Error())
		}
	}
	best := func(f func() (float64, error)) (float64, error) {
		var b float64
		var lastErr error
		for i := 0; i < *reps; i++ {
			v, err := f()
			if err != nil {
				lastErr = err
				continue
			}
			b = max(b, v)
		}
		if b == 0 {
			return 0, lastErr
		}
		return b, nil
	}
	// lowest is best for durations.
	lowest := func(f func() (float64, error)) (float64, error) {
		var b float64
		var lastErr error
		for i := 0; i < *reps; i++ {
			v, err := f()
			if err != nil {
				lastErr = err
				continue
			}
			if b == 0 || v < b {
				b = v
			}
		}
		if b == 0 {
			return 0, lastErr
		}
		return b, nil
	}
	step("transient", 2*time.Duration(*reps)**stepWait, func() (err error) {
		r.TransientMsgs, err = best(func() (float64, error) { return oneQueue(*transient, false) })
		return
	})
	step("persistent", 2*time.Duration(*reps)**stepWait, func() (err error) {
		var secs float64
		secs, err = lowest(func() (float64, error) { return persistent(*persist) })
		r.PersistentSeconds = secs
		if secs > 0 {
			r.PersistentMsgs = float64(*persist) / secs
		}
		return
	})
	step("rtt", 2*time.Duration(*reps)*(*stepWait+*rttDur), func() (err error) {
		if *rttProcs > 0 {
			defer runtime.GOMAXPROCS(runtime.GOMAXPROCS(*rttProcs))
		}
		if *rttOnly != 8 {
			if r.RoundTrips1, err = best(func() (float64, error) { return roundTrips(1) }); err != nil || *rttOnly == 1 {
				return err
			}
		}
		r.RoundTrips8, err = best(func() (float64, error) { return roundTrips(8) })
		return
	})
	step("fanout", 2*time.Duration(*reps)**stepWait, func() (err error) {
		r.FanoutDeliveries, err = best(func() (float64, error) { return fanout(*fanoutN, 10) })
		return
	})
	step("topic", 2*time.Duration(*reps)**stepWait, func() (err error) {
		r.TopicMsgs, err = best(func() (float64, error) { return topic(*topicN, 10000) })
		return
	})
	r.AfterLoadRSSMB = rss()
	step("memory", 20**stepWait, func() (err error) {
		if *million == 0 {
			return nil
		}
		r.MillionRSSMB, err = fill(*million)
		return
	})
	_ = json.NewEncoder(os.Stdout).Encode(r)
	// Steps that gave up may still hold connections; do not wait for them.
	os.Exit(0)
}

func rss() float64 {
	if *pid == 0 {
		return 0
	}
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", *pid))
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(b), "\n") {
		if strings.HasPrefix(line, "VmRSS:") {
			f := strings.Fields(line)
			kb, _ := strconv.ParseFloat(f[1], 64)
			return kb / 1024
		}
	}
	return 0
}

func conn() (*amqp.Connection, *amqp.Channel, error) {
	c, err := amqp.Dial(*url)
	if err != nil {
		return nil, nil, err
	}
	ch, err := c.Channel()
	if err != nil {
		c.Close()
		return nil, nil, err
	}
	return c, ch, nil
}

// pubConn opens the publishing connection of a throughput test: with
// -cork its writes go through a corkConn.
func pubConn() (*amqp.Connection, *amqp.Channel, error) {
	if !*cork {
		return conn()
	}
	c, err := amqp.DialConfig(*url, amqp.Config{
		Heartbeat: 10 * time.Second,
		Locale:    "en_US",
		Dial: func(network, addr string) (net.Conn, error) {
			nc, err := net.DialTimeout(network, addr, 30*time.Second)
			if err != nil {
				return nil, err
			}
			return newCorkConn(nc), nil
		},
	})
	if err != nil {
		return nil, nil, err
	}
	ch, err := c.Channel()
	if err != nil {
		c.Close()
		return nil, nil, err
	}
	return c, ch, nil
}

// corkConn batches writes. amqp091-go flushes after every publish, one
// write syscall per 100-byte message, which makes the generator, not the
// broker, the bottleneck on two shared cores. Writes are appended to a
// buffer that one goroutine writes out whole: while it is in a write,
// further publishes accumulate and go out together, as a publisher with
// its own batching would send them. Nothing waits on a timer, so a lone
// message goes out at once. A writer blocks when 4 MiB are pending, so a
// slow broker still pushes back through TCP.
type corkConn struct {
	net.Conn
	mu      sync.Mutex
	cond    *sync.Cond
	buf     []byte
	spare   []byte
	err     error
	wake    chan struct{}
	done    chan struct{}
	closeMu sync.Once
}

const corkLimit = 4 << 20

func newCorkConn(nc net.Conn) *corkConn {
	c := &corkConn{Conn: nc, wake: make(chan struct{}, 1), done: make(chan struct{})}
	c.cond = sync.NewCond(&c.mu)
	go c.flushLoop()
	return c
}

func (c *corkConn) Write(p []byte) (int, error) {
	c.mu.Lock()
	for c.err == nil && len(c.buf) > corkLimit {
		c.cond.Wait()
	}
	if c.err != nil {
		err := c.err
		c.mu.Unlock()
		return 0, err
	}
	c.buf = append(c.buf, p...)
	c.mu.Unlock()
	select {
	case c.wake <- struct{}{}:
	default:
	}
	return len(p), nil
}

func (c *corkConn) flushLoop() {
	for {
		select {
		case <-c.wake:
		case <-c.done:
			return
		}
		c.mu.Lock()
		if len(c.buf) == 0 {
			// Nothing to write (the data went out with the previous
			// write). Swapping here would leave buf and spare sharing
			// one array, and later writes would land in the array
			// being written: a corrupted stream (RabbitMQ's
			// frame_error in the topic test).
			c.mu.Unlock()
			continue
		}
		b := c.buf
		c.buf = c.spare[:0]
		c.spare = nil
		c.mu.Unlock()
		_, err := c.Conn.Write(b)
		c.mu.Lock()
		c.spare = b[:0]
		if err != nil && c.err == nil {
			c.err = err
		}
		if len(c.buf) > 0 {
			select {
			case c.wake <- struct{}{}:
			default:
			}
		}
		c.cond.Broadcast()
		c.mu.Unlock()
	}
}

func (c *corkConn) Close() error {
	c.closeMu.Do(func() {
		close(c.done)
		c.mu.Lock()
		if c.err == nil {
			c.err = net.ErrClosed
		}
		c.cond.Broadcast()
		c.mu.Unlock()
	})
	return c.Conn.Close()
}

var body100 = make([]byte, 100)

// oneQueue publishes n messages to one queue while a consumer on another
// connection drains it; the rate is n over the time to the last delivery.
func oneQueue(n int, persistentMode bool) (float64, error) {
	pc, pch, err := pubConn()
	if err != nil {
		return 0, err
	}
	defer pc.Close()
	cc, cch, err := conn()
	if err != nil {
		return 0, err
	}
	defer cc.Close()
	q := fmt.Sprintf("bench.one.%d", time.Now().UnixNano())
	if _, err := pch.QueueDeclare(q, false, false, false, false, nil); err != nil {
		return 0, err
	}
	defer func() { _, _ = pch.QueueDelete(q, false, false, false) }()
	if err := cch.Qos(2000, 0, false); err != nil {
		return 0, err
	}
	d, err := cch.Consume(q, "", false, false, false, false, nil)
	if err != nil {
		return 0, err
	}
	done := make(chan error, 1)
	go func() {
		for i := 0; i < n; i++ {
			m, ok := <-d
			if !ok {
				done <- fmt.Errorf("deliveries closed after %d", i)
				return
			}
			if i%100 == 99 || i == n-1 {
				if err := m.Ack(true); err != nil {
					done <- err
					return
				}
			}
		}
		done <- nil
	}()
	start := time.Now()
	ctx := context.Background()
	for i := 0; i < n; i++ {
		if err := pch.PublishWithContext(ctx, "", q, false, false, amqp.Publishing{Body: body100}); err != nil {
			return 0, err
		}
	}
	select {
	case err := <-done:
		if err != nil {
			return 0, err
		}
	case <-time.After(*stepWait):
		return 0, fmt.Errorf("timeout")
	}
	return float64(n) / time.Since(start).Seconds(), nil
}

// persistent publishes n persistent messages to a durable queue with
// publisher confirms (up to 1000 outstanding) and times the last confirm.
func persistent(n int) (float64, error) {
	c, ch, err := conn()
	if err != nil {
		return 0, err
	}
	defer c.Close()
	q := fmt.Sprintf("bench.persist.%d", time.Now().UnixNano())
	if _, err := ch.QueueDeclare(q, true, false, false, false, nil); err != nil {
		return 0, err
	}
	defer func() { _, _ = ch.QueueDelete(q, false, false, false) }()
	if err := ch.Confirm(false); err != nil {
		return 0, err
	}
	confirms := ch.NotifyPublish(make(chan amqp.Confirmation, n+1))
	sem := make(chan struct{}, 1000)
	var acked atomic.Int64
	doneCh := make(chan error, 1)
	go func() {
		for i := 0; i < n; i++ {
			cf, ok := <-confirms
			if !ok {
				doneCh <- fmt.Errorf("confirms closed")
				return
			}
			if !cf.Ack {
				doneCh <- fmt.Errorf("nack %d", cf.DeliveryTag)
				return
			}
			acked.Add(1)
			<-sem
		}
		doneCh <- nil
	}()
	start := time.Now()
	for i := 0; i < n; i++ {
		select {
		case sem <- struct{}{}:
		case <-time.After(*stepWait):
			return 0, fmt.Errorf("timeout after %d confirms", acked.Load())
		}
		if err := ch.PublishWithContext(context.Background(), "", q, false, false, amqp.Publishing{DeliveryMode: amqp.Persistent, Body: body100}); err != nil {
			return 0, err
		}
	}
	select {
	case err := <-doneCh:
		if err != nil {
			return 0, err
		}
	case <-time.After(*stepWait):
		return 0, fmt.Errorf("timeout after %d confirms", acked.Load())
	}
	return time.Since(start).Seconds(), nil
}

// roundTrips runs callers that each send a request with reply_to and wait
// for the server's reply before sending the next, for the -rtt duration.
//
// -rtt-procs 1 runs them on one P, for analysis only: a round trip is a
// chain of hand-offs (reader goroutine, consumer goroutine, caller) that
// cannot overlap, and with two Ps the scheduler moves each hand-off to
// another thread, which more than doubles the generator's CPU per round
// trip. Every broker gets faster with it, RabbitMQ (whose schedulers
// busy-wait on the CPU it frees) the most, so the ratios do not improve and
// the benchmark keeps the default (docs/BENCHMARKS.md).
func roundTrips(callers int) (float64, error) {
	sc, sch, err := conn()
	if err != nil {
		return 0, err
	}
	defer sc.Close()
	q := fmt.Sprintf("bench.rpc.%d", time.Now().UnixNano())
	if _, err := sch.QueueDeclare(q, false, true, false, false, nil); err != nil {
		return 0, err
	}
	reqs, err := sch.Consume(q, "", true, false, false, false, nil)
	if err != nil {
		return 0, err
	}
	go func() {
		for m := range reqs {
			_ = sch.PublishWithContext(context.Background(), "", m.ReplyTo, false, false,
				amqp.Publishing{CorrelationId: m.CorrelationId, Body: m.Body})
		}
	}()
	var total atomic.Int64
	var wg sync.WaitGroup
	errs := make(chan error, callers)
	stop := time.Now().Add(*rttDur)
	for i := 0; i < callers; i++ {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			c, ch, err := conn()
			if err != nil {
				errs <- err
				return
			}
			defer c.Close()
			rq, err := ch.QueueDeclare(fmt.Sprintf("%s.reply.%d", q, i), false, true, true, false, nil)
			if err != nil {
				errs <- err
				return
			}
			replies, err := ch.Consume(rq.Name, "", true, false, false, false, nil)
			if err != nil {
				errs <- err
				return
			}
			// One timer for the whole loop, not one per request: the
			// caller's own overhead stays out of the measured latency.
			timer := time.NewTimer(*stepWait)
			defer timer.Stop()
			for n := 0; time.Now().Before(stop); n++ {
				id := strconv.Itoa(n)
				if err := ch.PublishWithContext(context.Background(), "", q, false, false,
					amqp.Publishing{ReplyTo: rq.Name, CorrelationId: id, Body: body100}); err != nil {
					errs <- err
					return
				}
				timer.Reset(*stepWait)
				var m amqp.Delivery
				ok := false
				select {
				case m, ok = <-replies:
				case <-timer.C:
				}
				if !ok || m.CorrelationId != id {
					errs <- fmt.Errorf("no reply within %v or a wrong correlation id", *stepWait)
					return
				}
				total.Add(1)
			}
		}(i)
	}
	start := time.Now()
	wg.Wait()
	el := time.Since(start).Seconds()
	_, _ = sch.QueueDelete(q, false, false, false)
	select {
	case err := <-errs:
		return 0, err
	default:
	}
	return float64(total.Load()) / el, nil
}

// fanout publishes n messages to a fanout exchange bound to k queues, each
// with its own consumer, and counts deliveries per second.
func fanout(n, k int) (float64, error) {
	pc, pch, err := pubConn()
	if err != nil {
		return 0, err
	}
	defer pc.Close()
	ex := fmt.Sprintf("bench.fanout.%d", time.Now().UnixNano())
	if err := pch.ExchangeDeclare(ex, "fanout", false, true, false, false, nil); err != nil {
		return 0, err
	}
	var wg sync.WaitGroup
	errs := make(chan error, k)
	cc, err := amqp.Dial(*url)
	if err != nil {
		return 0, err
	}
	defer cc.Close()
	for i := 0; i < k; i++ {
		// One channel per consumer: a multiple ack covers the whole channel.
		cch, err := cc.Channel()
		if err != nil {
			return 0, err
		}
		if err := cch.Qos(2000, 0, false); err != nil {
			return 0, err
		}
		q, err := cch.QueueDeclare(fmt.Sprintf("%s.%d", ex, i), false, true, true, false, nil)
		if err != nil {
			return 0, err
		}
		if err := cch.QueueBind(q.Name, "", ex, false, nil); err != nil {
			return 0, err
		}
		d, err := cch.Consume(q.Name, "", false, false, false, false, nil)
		if err != nil {
			return 0, err
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			for j := 0; j < n; j++ {
				m, ok := <-d
				if !ok {
					errs <- fmt.Errorf("closed")
					return
				}
				if j%100 == 99 || j == n-1 {
					_ = m.Ack(true)
				}
			}
		}()
	}
	start := time.Now()
	for i := 0; i < n; i++ {
		if err := pch.PublishWithContext(context.Background(), ex, "", false, false, amqp.Publishing{Body: body100}); err != nil {
			return 0, err
		}
	}
	waited := make(chan struct{})
	go func() { wg.Wait(); close(waited) }()
	select {
	case <-waited:
	case <-time.After(*stepWait):
		return 0, fmt.Errorf("timeout")
	}
	select {
	case err := <-errs:
		return 0, err
	default:
	}
	return float64(n*k) / time.Since(start).Seconds(), nil
}

// topic binds 10 queues to a topic exchange with bindings patterns in
// total ("app.<i>.*.event" style keys) and publishes messages whose keys
// each match one binding.
func topic(n, bindings int) (float64, error) {
	pc, pch, err := pubConn()
	if err != nil {
		return 0, err
	}
	defer pc.Close()
	ex := fmt.Sprintf("bench.topic.%d", time.Now().UnixNano())
	if err := pch.ExchangeDeclare(ex, "topic", false, true, false, false, nil); err != nil {
		return 0, err
	}
	cc, err := amqp.Dial(*url)
	if err != nil {
		return 0, err
	}
	defer cc.Close()
	const queues = 10
	var got atomic.Int64
	allDone := make(chan struct{})
	var cch *amqp.Channel
	for i := 0; i < queues; i++ {
		// One channel per consumer: a multiple ack covers the whole channel.
		if cch, err = cc.Channel(); err != nil {
			return 0, err
		}
		if err := cch.Qos(2000, 0, false); err != nil {
			return 0, err
		}
		q, err := cch.QueueDeclare(fmt.Sprintf("%s.%d", ex, i), false, true, true, false, nil)
		if err != nil {
			return 0, err
		}
		// Binds wait for bind-ok (set-up is not timed): a broker that
		// answers a no-wait bind anyway would fail the next synchronous
		// call with "unexpected command received".
		for b := i; b < bindings; b += queues {
			if err := cch.QueueBind(q.Name, fmt.Sprintf("app.%d.*.event", b), ex, false, nil); err != nil {
				return 0, err
			}
		}
		d, err := cch.Consume(q.Name, "", false, false, false, false, nil)
		if err != nil {
			return 0, err
		}
		go func() {
			j := 0
			for m := range d {
				j++
				if j%100 == 0 {
					_ = m.Ack(true)
				} else if got.Load()+1 >= int64(n) {
					_ = m.Ack(true)
				}
				if got.Add(1) == int64(n) {
					close(allDone)
				}
			}
		}()
	}
	// A synchronous call makes sure every binding is in place.
	if _, err := cch.QueueDeclarePassive(fmt.Sprintf("%s.%d", ex, queues-1), false, true, true, false, nil); err != nil {
		return 0, err
	}
	start := time.Now()
	for i := 0; i < n; i++ {
		key := fmt.Sprintf("app.%d.host%d.event", (i*7919)%bindings, i%5)
		if err := pch.PublishWithContext(context.Background(), ex, key, false, false, amqp.Publishing{Body: body100}); err != nil {
			return 0, err
		}
	}
	select {
	case <-allDone:
	case <-time.After(*stepWait):
		return 0, fmt.Errorf("timeout with %d of %d delivered", got.Load(), n)
	}
	return float64(n) / time.Since(start).Seconds(), nil
}

// fill queues n transient 100-byte messages with no consumer, reads RSS,
// then deletes the queue.
func fill(n int) (float64, error) {
	c, ch, err := conn()
	if err != nil {
		return 0, err
	}
	defer c.Close()
	q := fmt.Sprintf("bench.fill.%d", time.Now().UnixNano())
	if _, err := ch.QueueDeclare(q, false, false, false, false, nil); err != nil {
		return 0, err
	}
	defer func() { _, _ = ch.QueueDelete(q, false, false, false) }()
	if err := ch.Confirm(false); err != nil {
		return 0, err
	}
	confirms := ch.NotifyPublish(make(chan amqp.Confirmation, 20000))
	const batch = 10000
	for i := 0; i < n; i += batch {
		for j := 0; j < batch && i+j < n; j++ {
			if err := ch.PublishWithContext(context.Background(), "", q, false, false, amqp.Publishing{Body: body100}); err != nil {
				return 0, err
			}
		}
		for j := 0; j < batch && i+j < n; j++ {
			select {
			case _, ok := <-confirms:
				if !ok {
					return 0, fmt.Errorf("confirms closed")
				}
			case <-time.After(*stepWait):
				return 0, fmt.Errorf("timeout waiting for confirms")
			}
		}
	}
	deadline := time.Now().Add(*stepWait)
	for time.Now().Before(deadline) {
		qi, err := ch.QueueDeclarePassive(q, false, false, false, false, nil)
		if err != nil {
			return 0, err
		}
		if qi.Messages >= n {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	return rss(), nil
}

package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/url"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/oslogo/oslogo/driver/rabbit"
	"github.com/oslogo/oslogo/messaging"
)

func init() {
	register(&command{name: "bench", summary: "measure RPC calls, casts or notifications per second on a transport", run: runBench})
}

// benchResult is the JSON line `oslogo bench` prints last.
type benchResult struct {
	Impl        string  `json:"impl"`
	Mode        string  `json:"mode"`
	Concurrency int     `json:"concurrency"`
	Size        int     `json:"size"`
	Count       int     `json:"count"`
	Seconds     float64 `json:"seconds"`
	Rate        float64 `json:"rate"`
	P50ms       float64 `json:"p50_ms"`
	P99ms       float64 `json:"p99_ms"`
}

func runBench(ctx context.Context, env *cmdEnv, args []string) error {
	fs := newFlagSet(env, "bench", "[flags]")
	rawURL := fs.String("url", "rabbit://guest:guest@127.0.0.1:5672/", "transport URL")
	mode := fs.String("mode", "call", "call, cast, fanout (fanout casts to one server), notify, bare-call (a plain amqp091-go request/reply loop, the floor for RPC over the broker) or bare-call-wire (the same loop meeting oslo's wire obligations: topic exchange, confirms, mandatory replies)")
	conc := fs.Int("concurrency", 1, "concurrent callers")
	size := fs.Int("size", 64, "payload size in bytes")
	count := fs.Int("count", 2000, "messages to send (after a warm-up of count/10)")
	if err := parseNoArgs(fs, args); err != nil {
		return err
	}
	if *conc < 1 || *count < 1 || *size < 0 {
		return usageError(errors.New("--concurrency and --count must be >= 1, --size >= 0"))
	}
	payload := strings.Repeat("x", *size)
	var res *benchResult
	var err error
	switch *mode {
	case "call", "cast", "fanout", "notify":
		res, err = benchOslogo(ctx, *rawURL, *mode, *conc, *count, payload)
	case "bare-call", "bare-call-wire":
		res, err = benchBare(ctx, *rawURL, *conc, *count, payload, *mode == "bare-call-wire")
	default:
		return usageError(fmt.Errorf("unknown --mode %q", *mode))
	}
	if err != nil {
		return err
	}
	res.Size = *size
	fmt.Fprintf(env.stdout, "%s %s: %d messages, concurrency %d, %.0f/s, p50 %.3f ms, p99 %.3f ms\n",
		res.Impl, res.Mode, res.Count, res.Concurrency, res.Rate, res.P50ms, res.P99ms)
	line, _ := json.Marshal(res)
	fmt.Fprintln(env.stdout, string(line))
	return nil
}

// runWorkers runs op count times on conc goroutines and returns the
// elapsed time and every latency.
func runWorkers(ctx context.Context, conc, count int, op func(ctx context.Context) error) (time.Duration, []time.Duration, error) {
	var next atomic.Int64
	lat := make([][]time.Duration, conc)
	errs := make([]error, conc)
	var wg sync.WaitGroup
	start := time.Now()
	for w := range conc {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for next.Add(1) <= int64(count) {
				t0 := time.Now()
				if err := op(ctx); err != nil {
					errs[w] = err
					return
				}
				lat[w] = append(lat[w], time.Since(t0))
			}
		}()
	}
	wg.Wait()
	elapsed := time.Since(start)
	all := slices.Concat(lat...)
	return elapsed, all, errors.Join(errs...)
}

func summarize(impl, mode string, conc, count int, elapsed time.Duration, lat []time.Duration) *benchResult {
	slices.Sort(lat)
	pct := func(p float64) float64 {
		if len(lat) == 0 {
			return 0
		}
		return float64(lat[min(len(lat)-1, int(p*float64(len(lat))))]) / float64(time.Millisecond)
	}
	return &benchResult{Impl: impl, Mode: mode, Concurrency: conc, Count: count, Seconds: elapsed.Seconds(),
		Rate: float64(count) / elapsed.Seconds(), P50ms: pct(0.50), P99ms: pct(0.99)}
}

func benchOslogo(ctx context.Context, rawURL, mode string, conc, count int, payload string) (*benchResult, error) {
	cfg := messaging.DefaultTransportConfig()
	cfg.Notifications.Drivers = []string{"messagingv2"}
	srvT, err := messaging.OpenTransport(ctx, rawURL, cfg)
	if err != nil {
		return nil, err
	}
	defer srvT.Close()
	cliT, err := messaging.OpenTransport(ctx, rawURL, cfg)
	if err != nil {
		return nil, err
	}
	defer cliT.Close()
	topic := "oslogo_bench_" + rabbit.NewMessageID()[:8]
	args := map[string]any{"s": payload}
	warm := max(count/10, 1)

	var received atomic.Int64
	allIn := make(chan struct{})
	var target atomic.Int64
	target.Store(int64(warm))
	got := func() {
		if received.Add(1) == target.Load() {
			allIn <- struct{}{}
		}
	}
	waitAll := func(n int) error {
		select {
		case <-allIn:
			return nil
		case <-time.After(5 * time.Minute):
			return fmt.Errorf("only %d of %d messages arrived", received.Load(), n)
		case <-ctx.Done():
			return ctx.Err()
		}
	}

	var op func(ctx context.Context) error
	switch mode {
	case "call", "cast", "fanout":
		ep := messaging.NewEndpoint(messaging.Target{})
		ep.HandleRaw("echo", func(_ context.Context, a json.RawMessage) (any, error) {
			if mode != "call" {
				got()
			}
			return a, nil
		})
		srv, err := messaging.NewRPCServer(srvT, messaging.Target{Topic: topic, Server: "bench"}, []*messaging.Endpoint{ep})
		if err != nil {
			return nil, err
		}
		if err := srv.Start(ctx); err != nil {
			return nil, err
		}
		defer func() { _ = srv.Stop(context.Background()); srv.Wait() }()
		cli := messaging.NewRPCClient(cliT, messaging.Target{Topic: topic}, messaging.WithTimeout(60*time.Second),
			messaging.WithFanout(mode == "fanout"))
		if mode == "call" {
			op = func(ctx context.Context) error { _, err := cli.Call(ctx, "echo", args); return err }
		} else {
			op = func(ctx context.Context) error { return cli.Cast(ctx, "echo", args) }
		}
	case "notify":
		handler := func(context.Context, *messaging.Notification) messaging.NotificationResult {
			got()
			return messaging.Handled
		}
		l, err := messaging.NewNotificationListener(srvT, []messaging.Target{{Topic: topic}},
			[]messaging.NotificationEndpoint{{Handlers: map[messaging.Priority]messaging.NotificationHandler{messaging.PriorityInfo: handler}}})
		if err != nil {
			return nil, err
		}
		if err := l.Start(ctx); err != nil {
			return nil, err
		}
		defer func() { _ = l.Stop(context.Background()); l.Wait() }()
		n, err := messaging.NewNotifier(cliT, "bench", messaging.WithNotifyTopics(topic))
		if err != nil {
			return nil, err
		}
		op = func(ctx context.Context) error { return n.Info(ctx, "bench", args) }
	}
	// Warm up connections, queues and the reply queue.
	if _, _, err := runWorkers(ctx, conc, warm, op); err != nil {
		return nil, err
	}
	if mode != "call" {
		if err := waitAll(warm); err != nil {
			return nil, err
		}
		received.Store(0)
		target.Store(int64(count))
	}
	start := time.Now()
	_, lat, err := runWorkers(ctx, conc, count, op)
	if err != nil {
		return nil, err
	}
	if mode != "call" {
		// A cast or notification counts once the server has it.
		if err := waitAll(count); err != nil {
			return nil, err
		}
	}
	elapsed := time.Since(start)
	if mode == "notify" {
		deleteQueue(rawURL, topic+".info")
	}
	return summarize("oslogo", mode, conc, count, elapsed, lat), nil
}

// amqpURL turns a rabbit:// URL into the first host's amqp:// URL.
func amqpURL(rawURL string) (string, string, error) {
	tu, err := rabbit.ParseURL(rawURL)
	if err != nil {
		return "", "", err
	}
	h := tu.Hosts[0]
	return "amqp://" + url.UserPassword(h.Username, h.Password).String() + "@" + h.Addr + "/", tu.VirtualHost, nil
}

func deleteQueue(rawURL, name string) {
	u, vhost, err := amqpURL(rawURL)
	if err != nil {
		return
	}
	c, err := amqp.DialConfig(u, amqp.Config{Vhost: vhost})
	if err != nil {
		return
	}
	defer c.Close()
	if ch, err := c.Channel(); err == nil {
		_, _ = ch.QueueDelete(name, false, false, false)
	}
}

// benchBare is the floor: the same request/reply over the same broker
// with nothing but amqp091-go, laid out like oslogo on the wire so that
// only the driver's own work differs:
//
//   - the same number of connections: each side consumes on one connection
//     and publishes on one other, as the rabbit:// send pool does (its
//     first connection carries every publish while it keeps up);
//   - the same message sizes: the request and reply bodies are oslo 2.0
//     envelopes of the payload, byte for byte the size oslogo sends;
//   - the same broker and vhost, a server-named request queue, reply_to and
//     correlation_id in the properties, a map of pending calls, per-message
//     acks, no envelope decoding, and no publisher confirms.
//
// With wire set (--mode bare-call-wire) the loop also meets the obligations
// oslo's wire format puts on any compatible client, which the floor does
// not: requests routed through a topic exchange, persistent delivery mode,
// content encoding and per-message expiration, publisher confirms on every
// publish (the server waits for its reply's confirm; the caller waits for
// its request's confirm and the reply together), and mandatory replies. It is the floor for an oslo-compatible driver.
func benchBare(ctx context.Context, rawURL string, conc, count int, payload string, wire bool) (*benchResult, error) {
	confirms := wire
	u, vhost, err := amqpURL(rawURL)
	if err != nil {
		return nil, err
	}
	tu, err := rabbit.ParseURL(rawURL)
	if err != nil {
		return nil, err
	}
	if _, err := rabbit.ParseConfig(tu.Query); err != nil {
		return nil, err
	}
	const nsend = 1 // publishing connections per side
	var conns []*amqp.Connection
	defer func() {
		for _, c := range conns {
			_ = c.Close()
		}
	}()
	dial := func() (*amqp.Connection, error) {
		c, err := amqp.DialConfig(u, amqp.Config{Vhost: vhost})
		if err == nil {
			conns = append(conns, c)
		}
		return c, err
	}
	// sendPool opens n publishing channels, each on its own connection.
	type sendCh struct{ ch *amqp.Channel }
	sendPool := func(n int) ([]*sendCh, error) {
		var out []*sendCh
		for range n {
			c, err := dial()
			if err != nil {
				return nil, err
			}
			ch, err := c.Channel()
			if err != nil {
				return nil, err
			}
			if confirms {
				if err := ch.Confirm(false); err != nil {
					return nil, err
				}
			}
			out = append(out, &sendCh{ch: ch})
		}
		return out, nil
	}
	// publish sends p; with confirms on it returns the confirm to wait for.
	publish := func(pool []*sendCh, next *atomic.Uint64, exchange, key string, mandatory bool, p amqp.Publishing) (*amqp.DeferredConfirmation, error) {
		s := pool[next.Add(1)%uint64(len(pool))]
		if wire {
			p.ContentEncoding, p.DeliveryMode = "utf-8", amqp.Persistent
		}
		if !confirms {
			return nil, s.ch.Publish(exchange, key, mandatory, false, p)
		}
		return s.ch.PublishWithDeferredConfirm(exchange, key, mandatory, false, p)
	}
	srvConn, err := dial()
	if err != nil {
		return nil, err
	}
	srvSend, err := sendPool(nsend)
	if err != nil {
		return nil, err
	}
	cliConn, err := dial()
	if err != nil {
		return nil, err
	}
	cliSend, err := sendPool(nsend)
	if err != nil {
		return nil, err
	}

	reqBody, repBody := osloSizedBodies(payload)
	sch, err := srvConn.Channel()
	if err != nil {
		return nil, err
	}
	q, err := sch.QueueDeclare("", false, true, true, false, nil)
	if err != nil {
		return nil, err
	}
	reqExchange, reqKey := "", q.Name
	if wire {
		reqExchange, reqKey = "oslogo_bench_wire", "bench."+q.Name
		if err := sch.ExchangeDeclare(reqExchange, amqp.ExchangeTopic, false, false, false, false, nil); err != nil {
			return nil, err
		}
		if err := sch.QueueBind(q.Name, reqKey, reqExchange, false, nil); err != nil {
			return nil, err
		}
	}
	reqs, err := sch.Consume(q.Name, "", false, true, false, false, nil)
	if err != nil {
		return nil, err
	}
	var srvNext, cliNext atomic.Uint64
	var swg sync.WaitGroup
	swg.Add(1)
	go func() {
		defer swg.Done()
		for d := range reqs {
			_ = d.Ack(false)
			reply := func() {
				if dc, err := publish(srvSend, &srvNext, "", d.ReplyTo, wire, amqp.Publishing{ContentType: "application/json", CorrelationId: d.CorrelationId, Body: repBody}); err == nil && dc != nil {
					dc.Wait()
				}
			}
			if !confirms {
				reply()
				continue
			}
			swg.Add(1)
			go func() { // waiting for a confirm must not stall the consumer
				defer swg.Done()
				reply()
			}()
		}
	}()
	cch, err := cliConn.Channel()
	if err != nil {
		return nil, err
	}
	rq, err := cch.QueueDeclare("", false, true, true, false, nil)
	if err != nil {
		return nil, err
	}
	replies, err := cch.Consume(rq.Name, "", false, true, false, false, nil)
	if err != nil {
		return nil, err
	}
	var mu sync.Mutex
	pending := map[string]chan []byte{}
	var cwg sync.WaitGroup
	cwg.Add(1)
	go func() {
		defer cwg.Done()
		for d := range replies {
			_ = d.Ack(false)
			mu.Lock()
			ch := pending[d.CorrelationId]
			delete(pending, d.CorrelationId)
			mu.Unlock()
			if ch != nil {
				ch <- d.Body
			}
		}
	}()
	var seq atomic.Int64
	op := func(ctx context.Context) error {
		id := fmt.Sprint(seq.Add(1))
		ch := make(chan []byte, 1)
		mu.Lock()
		pending[id] = ch
		mu.Unlock()
		p := amqp.Publishing{ContentType: "application/json", CorrelationId: id, ReplyTo: rq.Name, Body: reqBody}
		if wire {
			p.Expiration = "60000"
		}
		dc, err := publish(cliSend, &cliNext, reqExchange, reqKey, false, p)
		if err != nil {
			return err
		}
		var confirmed <-chan struct{}
		if dc != nil {
			confirmed = dc.Done()
		}
		timeout := time.NewTimer(60 * time.Second)
		defer timeout.Stop()
		for {
			// The confirm and the reply are awaited together, in whatever
			// order they come, as oslogo does.
			select {
			case <-ch:
				return nil
			case <-confirmed:
				if !dc.Acked() {
					return errors.New("bare request nacked")
				}
				confirmed = nil
			case <-timeout.C:
				return errors.New("bare call timed out")
			case <-ctx.Done():
				return ctx.Err()
			}
		}
	}
	if _, _, err := runWorkers(ctx, conc, max(count/10, 1), op); err != nil {
		return nil, err
	}
	elapsed, lat, err := runWorkers(ctx, conc, count, op)
	if err != nil {
		return nil, err
	}
	for _, c := range conns {
		_ = c.Close()
	}
	cwg.Wait()
	swg.Wait()
	impl := "amqp091-go"
	if wire {
		impl = "amqp091-go-oslo-wire"
	}
	return summarize(impl, "call", conc, count, elapsed, lat), nil
}

// osloSizedBodies returns a request and a reply body of the size oslogo
// sends for payload: oslo 2.0 envelopes with the same keys and ids.
func osloSizedBodies(payload string) (req, rep []byte) {
	id := strings.Repeat("0", 32)
	args, _ := json.Marshal(map[string]string{"s": payload})
	inner := fmt.Sprintf(`{"method": "echo", "args": %s, "_msg_id": "%s", "_reply_q": "reply_%s", "_timeout": null, "_unique_id": "%s"}`, args, id, id, id)
	wrap := func(inner string) []byte {
		s, _ := json.Marshal(inner)
		return []byte(`{"oslo.version": "2.0", "oslo.message": ` + string(s) + `}`)
	}
	req = wrap(inner)
	rep = wrap(fmt.Sprintf(`{"result": %s, "failure": null, "ending": true, "_msg_id": "%s", "_unique_id": "%s"}`, args, id, id))
	return req, rep
}

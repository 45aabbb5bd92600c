package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/url"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/oslogo/oslogo/broker"
	"github.com/oslogo/oslogo/messaging"
)

func init() {
	register(&command{name: "demo", summary: "run the OpenStack messaging scenario of the seed documents end to end", run: runDemo})
}

// startEmbeddedBroker starts a broker on a free loopback port and returns
// its rabbit:// URL and a stop function.
func startEmbeddedBroker() (string, func(), error) {
	opts := broker.DefaultOptions()
	opts.AMQPAddr = "127.0.0.1:0"
	b, err := broker.New(opts)
	if err != nil {
		return "", nil, err
	}
	if err := b.Start(); err != nil {
		return "", nil, err
	}
	if !b.ReadyForConnections(10 * time.Second) {
		b.Shutdown(context.Background())
		return "", nil, errors.New("embedded broker did not become ready")
	}
	stop := func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		b.Shutdown(ctx)
	}
	return "rabbit://guest:guest@" + b.Addr().String() + "/", stop, nil
}

// redactedURL returns a transport URL fit to print: the password masked
// as url.URL.Redacted masks it, or nothing of a URL that does not parse.
func redactedURL(raw string) string {
	u, err := url.Parse(raw)
	if err != nil {
		return "(a transport URL that does not parse)"
	}
	return u.Redacted()
}

// transcript prints the demo's steps and counts failed checks.
type transcript struct {
	w      io.Writer
	mu     sync.Mutex
	failed []string
}

func (t *transcript) say(format string, args ...any) {
	t.mu.Lock()
	defer t.mu.Unlock()
	fmt.Fprintf(t.w, format+"\n", args...)
}

func (t *transcript) check(ok bool, what string) {
	if ok {
		t.say("    ok: %s", what)
		return
	}
	t.say("    FAILED: %s", what)
	t.mu.Lock()
	t.failed = append(t.failed, what)
	t.mu.Unlock()
}

// timeClient is one client machine of receive_*.py / send_*.py: it serves
// the time server's broadcasts and notices on its own server name.
type timeClient struct {
	name     string
	mu       sync.Mutex
	received []string
	got      chan struct{}
}

func (c *timeClient) endpoint(t *transcript) *messaging.Endpoint {
	ep := messaging.NewEndpoint(messaging.Target{})
	record := func(kind string) func(context.Context, struct {
		Hostname string `json:"hostname"`
		Now      string `json:"now"`
	}) (any, error) {
		return func(_ context.Context, a struct {
			Hostname string `json:"hostname"`
			Now      string `json:"now"`
		}) (any, error) {
			t.say("    %s received %s from %s: %s", c.name, kind, a.Hostname, a.Now)
			c.mu.Lock()
			c.received = append(c.received, kind)
			c.mu.Unlock()
			c.got <- struct{}{}
			return nil, nil
		}
	}
	messaging.Handle(ep, "broadcast_time", record("fanout broadcast_time"))
	messaging.Handle(ep, "notify_time", record("cast notify_time"))
	return ep
}

func (c *timeClient) count() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.received)
}

func waitFor(ch <-chan struct{}, n int, d time.Duration) bool {
	timer := time.NewTimer(d)
	defer timer.Stop()
	for i := 0; i < n; i++ {
		select {
		case <-ch:
		case <-timer.C:
			return false
		}
	}
	return true
}

func runDemo(ctx context.Context, env *cmdEnv, args []string) error {
	fs := newFlagSet(env, "demo", "[--url URL]")
	url := fs.String("url", "", "transport URL to run on (default: an embedded broker on a free port)")
	if err := parseNoArgs(fs, args); err != nil {
		return err
	}
	t := &transcript{w: env.stdout}
	where := *url
	if where == "" {
		u, stop, err := startEmbeddedBroker()
		if err != nil {
			return fmt.Errorf("start the embedded broker: %w", err)
		}
		defer stop()
		where = u
		t.say("oslogo demo: OpenStack messaging end to end, on the embedded AMQP broker at %s", strings.TrimSuffix(strings.TrimPrefix(u, "rabbit://guest:guest@"), "/"))
	} else {
		t.say("oslogo demo: OpenStack messaging end to end, on %s", redactedURL(where))
	}
	cfg := messaging.DefaultTransportConfig()
	cfg.ResponseTimeout = 15 * time.Second
	open := func(exchange string) (*messaging.Transport, error) {
		c := cfg
		c.ControlExchange = exchange
		tr, err := messaging.OpenTransport(ctx, where, c)
		if err != nil {
			return nil, usageError(err)
		}
		return tr, nil
	}
	// The time server and its clients use control_exchange "sdn", as
	// rpc.set_defaults(control_exchange='sdn') in the documents.
	sdn, err := open("sdn")
	if err != nil {
		return err
	}
	defer sdn.Close()

	t.say("")
	t.say("The time server (1 server machine, 2 client machines; control_exchange=sdn)")
	clients := []*timeClient{{name: "client1", got: make(chan struct{}, 8)}, {name: "client2", got: make(chan struct{}, 8)}}
	var servers []*messaging.RPCServer
	stopAll := func() {
		stopCtx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		for _, s := range servers {
			s.Stop(stopCtx)
		}
	}
	defer stopAll()
	start := func(tr *messaging.Transport, target messaging.Target, eps ...*messaging.Endpoint) error {
		s, err := messaging.NewRPCServer(tr, target, eps)
		if err != nil {
			return err
		}
		if err := s.Start(ctx); err != nil {
			return err
		}
		servers = append(servers, s)
		return nil
	}
	for _, c := range clients {
		// Each client listens on topic sample1 (fanout) and sample2 (casts to it by name).
		if err := start(sdn, messaging.Target{Topic: "sample1", Server: c.name}, c.endpoint(t)); err != nil {
			return err
		}
		if err := start(sdn, messaging.Target{Topic: "sample2", Server: c.name}, c.endpoint(t)); err != nil {
			return err
		}
	}
	serverNow := func() time.Time { return time.Now() }
	if err := start(sdn, messaging.Target{Topic: "sample3", Server: "time-server"}, exampleEndpoint("time-server", serverNow)); err != nil {
		return err
	}
	now := time.Now().Format("2006-01-02 15:04:05")

	t.say("")
	t.say("[1] fanout: the server broadcasts its time to every client (topic sample1, exchange sample1_fanout)")
	fanout := messaging.NewRPCClient(sdn, messaging.Target{Topic: "sample1", Fanout: true})
	err = fanout.Cast(ctx, "broadcast_time", map[string]string{"hostname": "time-server", "now": now})
	t.check(err == nil, "fanout cast sent")
	t.check(waitFor(clients[0].got, 1, 10*time.Second) && waitFor(clients[1].got, 1, 10*time.Second), "both clients received the broadcast")

	t.say("")
	t.say("[2] cast: the server notifies client1 only (topic sample2, server client1)")
	cast := messaging.NewRPCClient(sdn, messaging.Target{Topic: "sample2", Server: "client1"})
	err = cast.Cast(ctx, "notify_time", map[string]string{"hostname": "time-server", "now": now})
	t.check(err == nil, "cast sent")
	t.check(waitFor(clients[0].got, 1, 10*time.Second), "client1 received the notice")
	t.check(clients[1].count() == 1, "client2 received nothing more")

	t.say("")
	t.say("[3] call: client2 asks the server for its time (topic sample3, a reply queue per client)")
	call := messaging.NewRPCClient(sdn, messaging.Target{Topic: "sample3"})
	answer, err := messaging.Call[[]string](ctx, call, "func_call", map[string]string{"hostname": "client2", "getdate": "now"})
	if err == nil && len(answer) == 2 {
		t.say("    client2 got the reply: hostname=%s, nowtime=%s", answer[0], answer[1])
	}
	t.check(err == nil && len(answer) == 2 && answer[0] == "time-server", "call answered by the time server")

	// The add service of oslo_message_server.py / oslo_message_client.py:
	// Target(topic='test', server='server1') on the default exchange.
	t.say("")
	t.say("[4] the add service: server1 serves add(a, b) on topic test (control_exchange=openstack)")
	openstack, err := open(messaging.DefaultControlExchange)
	if err != nil {
		return err
	}
	defer openstack.Close()
	addEP := messaging.NewEndpoint(messaging.Target{})
	messaging.Handle(addEP, "add", func(_ context.Context, a struct{ A, B int }) (int, error) { return a.A + a.B, nil })
	if err := start(openstack, messaging.Target{Topic: "test", Server: "server1"}, addEP); err != nil {
		return err
	}
	client := messaging.NewRPCClient(openstack, messaging.Target{Topic: "test"})
	r, err := messaging.Call[int](ctx, client, "add", map[string]int{"a": 2, "b": 3})
	t.say("    result : %d", r)
	t.check(err == nil && r == 5, "client.call({}, 'add', a=2, b=3) = 5")
	r2, err := messaging.Call[int](ctx, client.Prepare(messaging.WithVersion("1.0")), "add", map[string]int{"a": 2, "b": 3})
	t.say("    result_two : %d", r2)
	t.check(err == nil && r2 == 5, "client.prepare(version='1.0').call(...) = 5")
	_, err = client.Prepare(messaging.WithVersion("2.0")).Call(ctx, "add", map[string]int{"a": 2, "b": 3})
	t.check(errors.Is(err, messaging.ErrUnsupportedVersion), "version 2.0 is refused with UnsupportedVersion")
	pong, err := messaging.Call[string](ctx, client, messaging.PingMethod, nil)
	t.check(err == nil && pong == "pong", "oslo_rpc_server_ping answers pong")

	t.say("")
	t.say("[5] notifications: a cinder-like volume.create.start / volume.create.end flow (topic notifications)")
	var mu sync.Mutex
	var events []string
	got := make(chan struct{}, 4)
	record := func(_ context.Context, n *messaging.Notification) messaging.NotificationResult {
		var payload map[string]any
		_ = json.Unmarshal(n.Payload, &payload)
		keys := make([]string, 0, len(payload))
		for k := range payload {
			keys = append(keys, fmt.Sprintf("%s=%v", k, payload[k]))
		}
		sort.Strings(keys)
		t.say("    listener received %s %s from %s (%s)", strings.ToUpper(string(n.Priority)), n.EventType, n.PublisherID, strings.Join(keys, ", "))
		mu.Lock()
		events = append(events, n.EventType)
		mu.Unlock()
		got <- struct{}{}
		return messaging.Handled
	}
	listener, err := messaging.NewNotificationListener(openstack, []messaging.Target{{Topic: "notifications"}},
		[]messaging.NotificationEndpoint{{
			Filter:   &messaging.NotificationFilter{EventType: `volume\.`},
			Handlers: map[messaging.Priority]messaging.NotificationHandler{messaging.PriorityInfo: record, messaging.PriorityError: record},
		}}, messaging.WithListenerPoolSize(1))
	if err != nil {
		return err
	}
	if err := listener.Start(ctx); err != nil {
		return err
	}
	defer listener.Stop(context.Background())
	notifier, err := messaging.NewNotifier(openstack, "volume.host1@lvm", messaging.WithNotifyDrivers(messaging.NotifyDriverMessagingV2))
	if err != nil {
		return err
	}
	reqCtx := messaging.WithRequestContext(ctx, messaging.RequestContext{"user_id": "demo", "project_id": "demo", "request_id": "req-demo-1"})
	volume := map[string]any{"volume_id": "7f3e8a52-demo", "display_name": "vol1", "size": 1, "status": "creating"}
	err = notifier.Info(reqCtx, "volume.create.start", volume)
	t.check(err == nil, "volume.create.start sent")
	volume["status"] = "available"
	err = notifier.Info(reqCtx, "volume.create.end", volume)
	t.check(err == nil, "volume.create.end sent")
	t.check(waitFor(got, 2, 10*time.Second), "listener received both")
	mu.Lock()
	t.check(len(events) == 2 && events[0] == "volume.create.start" && events[1] == "volume.create.end", "in order: start, then end")
	mu.Unlock()

	t.say("")
	if len(t.failed) > 0 {
		return fmt.Errorf("demo failed: %s", strings.Join(t.failed, "; "))
	}
	t.say("demo complete: fanout, cast, call, the add service and notifications all worked")
	return nil
}

package broker

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"

	_ "github.com/oslogo/oslogo/driver/rabbit" // registers rabbit://
	"github.com/oslogo/oslogo/messaging"
)

// osloTransport opens a messaging transport on the broker at amqpURL.
func osloTransport(t *testing.T, amqpURL string) *messaging.Transport {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	u := strings.Replace(amqpURL, "amqp://", "rabbit://", 1)
	tr, err := messaging.OpenTransport(ctx, u, messaging.DefaultTransportConfig())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = tr.Close() })
	return tr
}

func osloStart(t *testing.T, start func(context.Context) error, stop func(context.Context) error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := start(ctx); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_ = stop(ctx)
	})
}

func findTopic(z *Osloz, topic string) *OsloRPCTopic {
	for i := range z.RPCTopics {
		if z.RPCTopics[i].Topic == topic {
			return &z.RPCTopics[i]
		}
	}
	return nil
}

func findNotification(z *Osloz, key string) *OsloNotification {
	for i := range z.Notifications {
		if z.Notifications[i].RoutingKey == key {
			return &z.Notifications[i]
		}
	}
	return nil
}

func hasProblem(z *Osloz, kind, name string) bool {
	for _, p := range z.Problems {
		if p.Kind == kind && p.Name == name {
			return true
		}
	}
	return false
}

// TestOslozRealClients runs RPC servers, an RPC client, a notifier and
// notification listeners of the messaging library on the broker and
// checks the oslo view: servers under their topic with their connections
// and fanout queues, the caller's reply queue, notification queues with
// their listeners and pools, the publish rate, and the two flags (a topic
// without a server, a reply queue nobody reads, whose oldest message's
// age is reported).
func TestOslozRealClients(t *testing.T) {
	s, amqpURL, base := startMgmt(t)
	srvTr := osloTransport(t, amqpURL)
	for _, name := range []string{"host1", "host2"} {
		ep := messaging.NewEndpoint(messaging.Target{})
		messaging.Handle(ep, "echo", func(_ context.Context, a struct{ X int }) (int, error) { return a.X, nil })
		srv, err := messaging.NewRPCServer(srvTr, messaging.Target{Topic: "compute", Server: name}, []*messaging.Endpoint{ep})
		if err != nil {
			t.Fatal(err)
		}
		osloStart(t, srv.Start, srv.Stop)
	}
	cliTr := osloTransport(t, amqpURL)
	client := messaging.NewRPCClient(cliTr, messaging.Target{Topic: "compute"}, messaging.WithTimeout(10*time.Second))
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if n, err := messaging.Call[int](ctx, client, "echo", map[string]int{"x": 7}); err != nil || n != 7 {
		t.Fatalf("call: %v %v", n, err)
	}

	lisTr := osloTransport(t, amqpURL)
	info := func(context.Context, *messaging.Notification) messaging.NotificationResult { return messaging.Handled }
	plain, err := messaging.NewNotificationListener(lisTr, []messaging.Target{{Topic: "notifications"}},
		[]messaging.NotificationEndpoint{{Handlers: map[messaging.Priority]messaging.NotificationHandler{messaging.PriorityInfo: info}}})
	if err != nil {
		t.Fatal(err)
	}
	osloStart(t, plain.Start, plain.Stop)
	pooled, err := messaging.NewNotificationListener(lisTr, []messaging.Target{{Topic: "notifications"}},
		[]messaging.NotificationEndpoint{{Handlers: map[messaging.Priority]messaging.NotificationHandler{
			messaging.PriorityInfo: info, messaging.PriorityError: info}}}, messaging.WithPool("mypool"))
	if err != nil {
		t.Fatal(err)
	}
	osloStart(t, pooled.Start, pooled.Stop)
	notifier, err := messaging.NewNotifier(cliTr, "compute.host1", messaging.WithNotifyDrivers(messaging.NotifyDriverMessagingV2))
	if err != nil {
		t.Fatal(err)
	}

	// A topic queue nobody consumes, and a reply queue whose caller is gone
	// with a reply waiting in it.
	ch := openCh(t, dial(t, amqpURL))
	if _, err := ch.QueueDeclare("orphan", false, false, false, false, nil); err != nil {
		t.Fatal(err)
	}
	if err := ch.QueueBind("orphan", "orphan", "openstack", false, nil); err != nil {
		t.Fatal(err)
	}
	const lost = "reply_0123456789abcdef0123456789abcdef"
	if _, err := ch.QueueDeclare(lost, false, false, false, false, amqp.Table{"x-expires": int32(1800000)}); err != nil {
		t.Fatal(err)
	}
	if err := ch.Publish("", lost, false, false, amqp.Publishing{Body: []byte("{}")}); err != nil {
		t.Fatal(err)
	}
	const qm = "reply_node1:nova-api:3"
	if _, err := ch.QueueDeclare(qm, false, false, false, false, nil); err != nil {
		t.Fatal(err)
	}

	// Two samples a second apart give the publish rate.
	for range 5 {
		if err := notifier.Info(ctx, "compute.instance.create.end", map[string]any{"id": 1}); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := s.Osloz(OslozOptions{}); err != nil {
		t.Fatal(err)
	}
	time.Sleep(1100 * time.Millisecond)
	for range 5 {
		if err := notifier.Info(ctx, "compute.instance.create.end", map[string]any{"id": 2}); err != nil {
			t.Fatal(err)
		}
	}

	// Through the HTTP API, as the UI reads it.
	var z Osloz
	mgmtClient{t, base}.getJSON("/api/oslo/%2F", &z)

	ct := findTopic(&z, "compute")
	if ct == nil || ct.Exchange != "openstack" || ct.NoServer {
		t.Fatalf("topic compute: %+v", ct)
	}
	if ct.Queue == nil || ct.Queue.Name != "compute" || ct.Queue.Consumers != 2 {
		t.Fatalf("compute queue: %+v", ct.Queue)
	}
	if len(ct.Servers) != 2 {
		t.Fatalf("compute servers: %+v", ct.Servers)
	}
	for i, name := range []string{"host1", "host2"} {
		sv := ct.Servers[i]
		if sv.Name != name || !sv.ConsumesTopic || sv.Queue == nil || sv.Queue.Name != "compute."+name ||
			!strings.HasPrefix(sv.FanoutQueue, "compute_fanout_") || len(sv.Connections) != 1 {
			t.Fatalf("server %d: %+v", i, sv)
		}
		c := sv.Connections[0]
		if c.User != "guest" || c.PeerHost != "127.0.0.1" || c.PeerPort == 0 || !strings.Contains(c.ConnectionName, "rpc-compute") ||
			c.ClientProperties["product"] != "oslogo" {
			t.Fatalf("server %s connection: %+v", name, c)
		}
	}
	if ct.Servers[0].Connections[0].Name == ct.Servers[1].Connections[0].Name {
		t.Fatal("both servers on one connection")
	}
	if ct.Fanout == nil || ct.Fanout.Exchange != "compute_fanout" || len(ct.Fanout.Queues) != 2 {
		t.Fatalf("compute fanout: %+v", ct.Fanout)
	}

	if ot := findTopic(&z, "orphan"); ot == nil || !ot.NoServer || len(ot.Servers) != 0 {
		t.Fatalf("orphan topic: %+v", ot)
	}
	if !hasProblem(&z, "no_server", "orphan") || hasProblem(&z, "no_server", "compute") {
		t.Fatalf("problems: %+v", z.Problems)
	}
	if findTopic(&z, "notifications") != nil {
		t.Fatal("notification topic listed as an RPC topic")
	}

	var mine, gone, qmr *OsloReplyQueue
	for i := range z.ReplyQueues {
		r := &z.ReplyQueues[i]
		switch r.Queue.Name {
		case lost:
			gone = r
		case qm:
			qmr = r
		default:
			mine = r
		}
	}
	if mine == nil || mine.Style != "uuid" || mine.Unread || len(mine.Callers) != 1 ||
		!strings.Contains(mine.Callers[0].ConnectionName, "reply") {
		t.Fatalf("caller's reply queue: %+v", mine)
	}
	if gone == nil || !gone.Unread || gone.Queue.Messages != 1 || gone.Queue.OldestAgeMS < 1000 || len(gone.Callers) != 0 {
		t.Fatalf("lost reply queue: %+v", gone)
	}
	if qmr == nil || qmr.Style != "queue_manager" {
		t.Fatalf("queue manager reply queue: %+v", qmr)
	}
	if !hasProblem(&z, "reply_unread", lost) || hasProblem(&z, "reply_unread", mine.Queue.Name) {
		t.Fatalf("problems: %+v", z.Problems)
	}

	ni := findNotification(&z, "notifications.info")
	if ni == nil || ni.Topic != "notifications" || ni.Priority != "info" || ni.Exchange != "openstack" {
		t.Fatalf("notifications.info: %+v", ni)
	}
	if ni.Queue == nil || ni.Queue.Published != 10 || ni.Queue.PublishRate <= 0 || len(ni.Listeners) != 1 {
		t.Fatalf("notifications.info queue: %+v listeners %+v", ni.Queue, ni.Listeners)
	}
	if len(ni.Pools) != 1 || ni.Pools[0].Name != "mypool" || len(ni.Pools[0].Listeners) != 1 || ni.Pools[0].Queue.Published != 10 {
		t.Fatalf("notifications.info pools: %+v", ni.Pools)
	}
	ne := findNotification(&z, "notifications.error")
	if ne == nil || ne.Queue != nil || len(ne.Pools) != 1 || ne.Pools[0].Name != "mypool" {
		t.Fatalf("notifications.error: %+v", ne)
	}
}

// TestOslozHandler checks GET /api/oslo through ManagementHandler and
// httptest: the vhost in the path, 404 for an unknown vhost, 401 for a
// vhost the user has no permissions in, and the list without a vhost
// limited to the user's vhosts.
func TestOslozHandler(t *testing.T) {
	s, amqpURL, _ := startMgmt(t)
	for _, vh := range []string{"/", "other"} {
		u := strings.TrimSuffix(amqpURL, "/") + "/" + strings.ReplaceAll(vh, "/", "%2F")
		ch := openCh(t, dial(t, u))
		if err := ch.ExchangeDeclare("openstack", "topic", false, false, false, false, nil); err != nil {
			t.Fatal(err)
		}
		name := "t-" + strings.Trim(vh, "/")
		if _, err := ch.QueueDeclare(name, false, false, false, false, nil); err != nil {
			t.Fatal(err)
		}
		if err := ch.QueueBind(name, name, "openstack", false, nil); err != nil {
			t.Fatal(err)
		}
	}
	h := s.ManagementHandler()
	get := func(path, user string) (int, Osloz) {
		req := httptest.NewRequest("GET", path, nil)
		req.RemoteAddr = "127.0.0.1:40000"
		req.SetBasicAuth(user, mgmtPasswords[user])
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		var z Osloz
		if rec.Code == http.StatusOK {
			if err := json.Unmarshal(rec.Body.Bytes(), &z); err != nil {
				t.Fatal(err)
			}
		}
		return rec.Code, z
	}
	topics := func(z Osloz) []string {
		var out []string
		for _, t := range z.RPCTopics {
			out = append(out, t.VHost+":"+t.Topic)
		}
		return out
	}
	if code, z := get("/api/oslo", "guest"); code != 200 || strings.Join(topics(z), ",") != "/:t-,other:t-other" {
		t.Fatalf("guest /api/oslo: %d %v", code, topics(z))
	}
	if code, z := get("/api/oslo/other", "guest"); code != 200 || strings.Join(topics(z), ",") != "other:t-other" || z.VHost != "other" {
		t.Fatalf("guest /api/oslo/other: %d %v", code, topics(z))
	}
	if code, z := get("/api/oslo", "mgr"); code != 200 || strings.Join(topics(z), ",") != "/:t-" || len(z.Problems) != 1 {
		t.Fatalf("mgr /api/oslo: %d %v %v", code, topics(z), z.Problems)
	}
	if code, _ := get("/api/oslo/other", "mgr"); code != http.StatusUnauthorized {
		t.Fatalf("mgr /api/oslo/other: %d", code)
	}
	if code, _ := get("/api/oslo/nope", "guest"); code != http.StatusNotFound {
		t.Fatalf("/api/oslo/nope: %d", code)
	}
	if code, _ := get("/api/oslo", "notag"); code != http.StatusUnauthorized {
		t.Fatalf("notag /api/oslo: %d", code)
	}
	if _, err := s.Osloz(OslozOptions{VHost: "nope"}); err != ErrNotFound {
		t.Fatalf("Osloz(nope): %v", err)
	}
}

// TestOslozRatesBounded checks that the rate samples of deleted queues
// are dropped, so the sampler holds at most the live queues.
func TestOslozRatesBounded(t *testing.T) {
	s, amqpURL, _ := startMgmt(t)
	ch := openCh(t, dial(t, amqpURL))
	for i := range 20 {
		name := "reply_q" + string(rune('a'+i))
		if _, err := ch.QueueDeclare(name, false, false, false, false, nil); err != nil {
			t.Fatal(err)
		}
		if _, err := s.Osloz(OslozOptions{}); err != nil {
			t.Fatal(err)
		}
		if _, err := ch.QueueDelete(name, false, false, false); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := s.Osloz(OslozOptions{}); err != nil {
		t.Fatal(err)
	}
	s.mon.rates.mu.Lock()
	n := len(s.mon.rates.m)
	s.mon.rates.mu.Unlock()
	if n != 0 {
		t.Fatalf("%d rate samples kept for deleted queues", n)
	}
}

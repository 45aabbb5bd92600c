package broker

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"
)

// mgmtUsers are the accounts the management tests log in with: one per
// tag level, and one without tags.
var mgmtUsers = []User{
	{Name: "guest", Password: "guest", Tags: []string{"administrator"}, Permissions: map[string]Permission{"/": {".*", ".*", ".*"}, "other": {".*", ".*", ".*"}}},
	{Name: "mgr", Password: "mgrpw", Tags: []string{"management"}, Permissions: map[string]Permission{"/": {".*", ".*", ".*"}}},
	{Name: "mon", Password: "monpw", Tags: []string{"monitoring"}, Permissions: map[string]Permission{"/": {".*", ".*", ".*"}}},
	{Name: "notag", Password: "notagpw", Permissions: map[string]Permission{"/": {".*", ".*", ".*"}}},
}

var mgmtPasswords = map[string]string{"guest": "guest", "mgr": "mgrpw", "mon": "monpw", "notag": "notagpw"}

// startMgmt runs a broker with the management API on a free port; it
// returns the server, the AMQP URL and the API's base URL.
func startMgmt(t *testing.T) (*Server, string, string) {
	t.Helper()
	return startMgmtWith(t, nil)
}

// startMgmtWith is startMgmt with more options set by mod.
func startMgmtWith(t *testing.T, mod func(*Options)) (*Server, string, string) {
	t.Helper()
	s, u := startBroker(t, func(o *Options) {
		o.HTTPAddr = "127.0.0.1:0"
		o.Users = mgmtUsers
		o.VHosts = []string{"/", "other"}
		if mod != nil {
			mod(o)
		}
	})
	return s, u, "http://" + s.HTTPAddr().String()
}

// mgmtHTTPClient keeps no idle connections, so that no transport
// goroutine outlives a test (goleak checks in TestMain).
var mgmtHTTPClient = &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}

type mgmtClient struct {
	t    *testing.T
	base string
}

// do sends a request as user ("" for none) and returns the status, the
// headers and the body.
func (c mgmtClient) do(method, path, user string, body any, hdr ...string) (int, http.Header, []byte) {
	c.t.Helper()
	var rd io.Reader
	if body != nil {
		b, ok := body.(string)
		if !ok {
			j, err := json.Marshal(body)
			if err != nil {
				c.t.Fatal(err)
			}
			b = string(j)
		}
		rd = strings.NewReader(b)
	}
	req, err := http.NewRequest(method, c.base+path, rd)
	if err != nil {
		c.t.Fatal(err)
	}
	if user != "" {
		req.SetBasicAuth(user, mgmtPasswords[user])
	}
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	resp, err := mgmtHTTPClient.Do(req)
	if err != nil {
		c.t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		c.t.Fatal(err)
	}
	return resp.StatusCode, resp.Header, b
}

// getJSON GETs path as guest, expects 200 and decodes into v.
func (c mgmtClient) getJSON(path string, v any) {
	c.t.Helper()
	code, _, b := c.do("GET", path, "guest", nil)
	if code != http.StatusOK {
		c.t.Fatalf("GET %s: %d %s", path, code, b)
	}
	if err := json.Unmarshal(b, v); err != nil {
		c.t.Fatalf("GET %s: %v in %s", path, err, b)
	}
}

// eventually polls cond until it holds or a generous deadline passes; the
// management view follows the broker's state without delay, but
// deliveries travel through the client first.
func eventually(t *testing.T, what string, cond func() (bool, string)) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		ok, got := cond()
		if ok {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: still %s", what, got)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func TestMgmtAuthentication(t *testing.T) {
	_, _, base := startMgmt(t)
	c := mgmtClient{t, base}
	paths := []string{"/api/overview", "/api/whoami", "/api/health/checks/alarms", "/api/healthchecks/node",
		"/api/vhosts", "/api/users", "/api/permissions", "/api/nodes", "/api/queues", "/api/exchanges",
		"/api/bindings", "/api/connections", "/api/channels", "/api/consumers"}
	adminOnly := map[string]bool{"/api/users": true, "/api/permissions": true}
	monitorOnly := map[string]bool{"/api/nodes": true}
	for _, p := range paths {
		code, h, b := c.do("GET", p, "", nil)
		if code != http.StatusUnauthorized || h.Get("WWW-Authenticate") != `Basic realm="RabbitMQ Management"` {
			t.Errorf("%s without credentials: %d %q", p, code, h.Get("WWW-Authenticate"))
		}
		if len(b) != 0 {
			t.Errorf("%s without credentials: body %s, RabbitMQ sends none", p, b)
		}

		req, _ := http.NewRequest("GET", base+p, nil)
		req.SetBasicAuth("guest", "wrong")
		resp, err := mgmtHTTPClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		wb, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusUnauthorized || string(wb) != `{"error":"not_authorized","reason":"Login failed"}` ||
			resp.Header.Get("WWW-Authenticate") == "" {
			t.Errorf("%s with a wrong password: %d %s", p, resp.StatusCode, wb)
		}

		// RabbitMQ 3.10 answers 401, not 403, to a user whose tags do not
		// allow the endpoint (measured on 3.10.8).
		code, _, b = c.do("GET", p, "notag", nil)
		if code != http.StatusUnauthorized || string(b) != `{"error":"not_authorised","reason":"Not management user"}` {
			t.Errorf("%s as a user without tags: %d %s", p, code, b)
		}

		wantMgr, wantMon := http.StatusOK, http.StatusOK
		if adminOnly[p] {
			wantMgr, wantMon = http.StatusUnauthorized, http.StatusUnauthorized
		}
		if monitorOnly[p] {
			wantMgr = http.StatusUnauthorized
		}
		if code, _, b := c.do("GET", p, "mgr", nil); code != wantMgr {
			t.Errorf("%s as management user: %d %s, want %d", p, code, b, wantMgr)
		} else if adminOnly[p] && string(b) != `{"error":"not_authorised","reason":"Not administrator user"}` {
			t.Errorf("%s as management user: %s", p, b)
		} else if monitorOnly[p] && string(b) != `{"error":"not_authorised","reason":"Not monitor user"}` {
			t.Errorf("%s as management user: %s", p, b)
		}
		if code, _, b := c.do("GET", p, "mon", nil); code != wantMon {
			t.Errorf("%s as monitoring user: %d %s, want %d", p, code, b, wantMon)
		}
		if code, h, b := c.do("GET", p, "guest", nil); code != http.StatusOK || h.Get("Content-Type") != "application/json" {
			t.Errorf("%s as administrator: %d %s", p, code, b)
		}
	}
	// A vhost the user has no permissions in: 401 as RabbitMQ answers.
	code, _, b := c.do("GET", "/api/queues/other", "mgr", nil)
	if code != http.StatusUnauthorized || !strings.Contains(string(b), "User not authorised to access virtual host") {
		t.Errorf("queues of a vhost without permissions: %d %s", code, b)
	}
}

func TestMgmtNotFound(t *testing.T) {
	_, _, base := startMgmt(t)
	c := mgmtClient{t, base}
	for _, p := range []string{"/api/nosuch", "/api/queues/%2F/nope", "/api/queues/nope", "/api/exchanges/%2F/nope",
		"/api/vhosts/nope", "/api/connections/nope", "/api/bindings/nope"} {
		code, _, b := c.do("GET", p, "guest", nil)
		if code != http.StatusNotFound || string(b) != `{"error":"Object Not Found","reason":"Not Found"}` {
			t.Errorf("GET %s: %d %s", p, code, b)
		}
	}
	if code, h, b := c.do("POST", "/api/overview", "guest", "{}"); code != http.StatusMethodNotAllowed || h.Get("Allow") != "GET" {
		t.Errorf("POST /api/overview: %d %s", code, b)
	}
	for _, p := range []string{"/api/queues/%2F/nope", "/api/queues/%2F/nope/contents", "/api/exchanges/%2F/nope", "/api/connections/nope"} {
		if code, _, b := c.do("DELETE", p, "guest", nil); code != http.StatusNotFound {
			t.Errorf("DELETE %s: %d %s", p, code, b)
		}
	}
}

// TestMgmtQueueCountsFollowTraffic publishes and consumes with amqp091-go
// and watches messages, messages_ready, messages_unacknowledged and
// consumers in /api/queues, with the channel and consumer views.
func TestMgmtQueueCountsFollowTraffic(t *testing.T) {
	_, amqpURL, base := startMgmt(t)
	c := mgmtClient{t, base}
	conn := dial(t, amqpURL)
	ch := openCh(t, conn)
	if _, err := ch.QueueDeclare("mq", true, false, false, false, amqp.Table{"x-max-length": int32(100)}); err != nil {
		t.Fatal(err)
	}
	if err := ch.Confirm(false); err != nil {
		t.Fatal(err)
	}
	for i := range 3 {
		dc, err := ch.PublishWithDeferredConfirm("", "mq", false, false, amqp.Publishing{Body: []byte(fmt.Sprint("m", i))})
		if err != nil {
			t.Fatal(err)
		}
		if !dc.Wait() {
			t.Fatal("publish nacked")
		}
	}
	var q QueueInfo
	c.getJSON("/api/queues/%2F/mq", &q)
	if q.Name != "mq" || q.VHost != "/" || !q.Durable || q.AutoDelete || q.Exclusive || q.Type != "classic" ||
		q.State != "running" || q.Messages != 3 || q.MessagesReady != 3 || q.MessagesUnacknowledged != 0 || q.Consumers != 0 ||
		q.MessageBytesReady != 6 || q.Memory <= 6 {
		t.Fatalf("after 3 publishes: %+v", q)
	}
	if v, ok := q.Arguments["x-max-length"].(float64); !ok || v != 100 {
		t.Errorf("arguments: %v", q.Arguments)
	}

	cch := openCh(t, conn)
	if err := cch.Qos(10, 0, false); err != nil {
		t.Fatal(err)
	}
	dels, err := cch.Consume("mq", "ctag-1", false, false, false, false, nil)
	if err != nil {
		t.Fatal(err)
	}
	var last amqp.Delivery
	for range 3 {
		last = recv(t, dels)
	}
	eventually(t, "queue with 3 unacked", func() (bool, string) {
		var qs []QueueInfo
		c.getJSON("/api/queues/%2F", &qs)
		if len(qs) != 1 {
			return false, fmt.Sprint(qs)
		}
		q := qs[0]
		return q.Messages == 3 && q.MessagesReady == 0 && q.MessagesUnacknowledged == 3 && q.Consumers == 1, fmt.Sprintf("%+v", q)
	})
	var one QueueInfo
	c.getJSON("/api/queues/%2F/mq", &one)
	if len(one.ConsumerDetails) != 1 || one.ConsumerDetails[0].ConsumerTag != "ctag-1" || !one.ConsumerDetails[0].AckRequired ||
		one.ConsumerDetails[0].PrefetchCount != 10 || !one.ConsumerDetails[0].Active {
		t.Errorf("consumer_details: %+v", one.ConsumerDetails)
	}
	var consumers []ConsumerInfo
	c.getJSON("/api/consumers", &consumers)
	if len(consumers) != 1 || consumers[0].Queue != (QueueRef{Name: "mq", VHost: "/"}) || consumers[0].ChannelDetails.Number != 2 {
		t.Errorf("consumers: %+v", consumers)
	}
	var chans []ChannelInfo
	c.getJSON("/api/channels", &chans)
	if len(chans) != 2 {
		t.Fatalf("channels: %+v", chans)
	}
	if chans[0].Number != 1 || !chans[0].Confirm || chans[0].ConsumerCount != 0 {
		t.Errorf("publishing channel: %+v", chans[0])
	}
	if chans[1].Number != 2 || chans[1].PrefetchCount != 10 || chans[1].ConsumerCount != 1 || chans[1].MessagesUnacknowledged != 3 ||
		chans[1].User != "guest" || chans[1].VHost != "/" || !strings.HasSuffix(chans[1].Name, " (2)") {
		t.Errorf("consuming channel: %+v", chans[1])
	}
	var ov Overview
	c.getJSON("/api/overview", &ov)
	if ov.QueueTotals != (QueueTotals{Messages: 3, MessagesReady: 0, MessagesUnacknowledged: 3}) ||
		ov.ObjectTotals.Queues != 1 || ov.ObjectTotals.Consumers != 1 || ov.ObjectTotals.Connections != 1 ||
		ov.ObjectTotals.Channels != 2 || ov.ObjectTotals.Exchanges != 14 {
		t.Errorf("overview totals: %+v %+v", ov.QueueTotals, ov.ObjectTotals)
	}

	if err := last.Ack(true); err != nil {
		t.Fatal(err)
	}
	eventually(t, "queue empty after ack", func() (bool, string) {
		var q QueueInfo
		c.getJSON("/api/queues/%2F/mq", &q)
		return q.Messages == 0 && q.MessagesUnacknowledged == 0 && q.Consumers == 1, fmt.Sprintf("%+v", q)
	})
	if err := cch.Cancel("ctag-1", false); err != nil {
		t.Fatal(err)
	}
	c.getJSON("/api/queues/%2F/mq", &q)
	if q.Consumers != 0 {
		t.Errorf("consumers after cancel: %d", q.Consumers)
	}
}

// TestMgmtCloseConnection kills a connection the way amqp091-go's
// recovery tests do: find it by client_properties.connection_name in
// GET /api/connections/, then DELETE /api/connections/{name}.
func TestMgmtCloseConnection(t *testing.T) {
	s, amqpURL, base := startMgmt(t)
	c := mgmtClient{t, base}
	cfg := amqp.Config{Properties: amqp.Table{"connection_name": "victim"}, Heartbeat: 7 * time.Second}
	victim, err := amqp.DialConfig(amqpURL, cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer victim.Close()
	closed := victim.NotifyClose(make(chan *amqp.Error, 1))
	if _, err := victim.Channel(); err != nil {
		t.Fatal(err)
	}
	bystander := dial(t, amqpURL)

	var conns []ConnectionInfo
	c.getJSON("/api/connections/", &conns)
	if len(conns) != 2 {
		t.Fatalf("connections: %+v", conns)
	}
	var v *ConnectionInfo
	for i := range conns {
		if conns[i].ClientProperties["connection_name"] == "victim" {
			v = &conns[i]
		}
	}
	if v == nil {
		t.Fatalf("victim not listed: %+v", conns)
	}
	local := victim.LocalAddr().(*net.TCPAddr)
	wantName := fmt.Sprintf("127.0.0.1:%d -> %s", local.Port, s.Addr())
	if v.Name != wantName || v.PeerHost != "127.0.0.1" || v.PeerPort != local.Port || v.User != "guest" || v.VHost != "/" ||
		v.Protocol != "AMQP 0-9-1" || v.Type != "network" || v.State != "running" || v.Channels != 1 || v.SSL ||
		v.Timeout != 7 || v.FrameMax == 0 || v.ChannelMax != 2047 || v.AuthMechanism != "PLAIN" ||
		v.UserProvidedName == nil || *v.UserProvidedName != "victim" || v.RecvOct == 0 || v.SendOct == 0 ||
		time.Since(time.UnixMilli(v.ConnectedAt)) > time.Minute {
		t.Errorf("victim: %+v (want name %q)", v, wantName)
	}
	// A management user sees only its own connections; a monitoring user
	// sees guest's but, like the management user, may not close it (as
	// RabbitMQ 3.10.8 answers).
	var mine []ConnectionInfo
	code, _, b := c.do("GET", "/api/connections", "mgr", nil)
	if err := json.Unmarshal(b, &mine); code != http.StatusOK || err != nil || len(mine) != 0 {
		t.Errorf("management user's connections: %d %s", code, b)
	}
	path := "/api/connections/" + url.PathEscape(v.Name)
	denied := `{"error":"not_authorised","reason":"User not authorised to access object"}`
	if code, _, b := c.do("GET", path, "mgr", nil); code != http.StatusUnauthorized || string(b) != denied {
		t.Errorf("management user reading guest's connection: %d %s", code, b)
	}
	if code, _, b := c.do("GET", path, "mon", nil); code != http.StatusOK || !strings.Contains(string(b), `"user_provided_name":"victim"`) {
		t.Errorf("monitoring user reading guest's connection: %d %s", code, b)
	}
	for _, u := range []string{"mgr", "mon"} {
		if code, _, b := c.do("DELETE", path, u, nil); code != http.StatusUnauthorized || string(b) != denied {
			t.Errorf("%s closing guest's connection: %d %s", u, code, b)
		}
	}

	code, _, b = c.do("DELETE", path, "guest", nil, "X-Reason", "testing recovery")
	if code != http.StatusNoContent {
		t.Fatalf("DELETE: %d %s", code, b)
	}
	select {
	case e := <-closed:
		if e == nil || e.Code != amqp.ConnectionForced || e.Reason != "CONNECTION_FORCED - testing recovery" || !e.Server {
			t.Fatalf("close: %+v", e)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("connection not closed")
	}
	eventually(t, "victim gone", func() (bool, string) {
		var cs []ConnectionInfo
		c.getJSON("/api/connections", &cs)
		return len(cs) == 1 && cs[0].Name != v.Name, fmt.Sprint(cs)
	})
	if bystander.IsClosed() {
		t.Error("the other connection was closed too")
	}

	// A management user may close its own connection; without X-Reason
	// the text is RabbitMQ's default.
	own, err := amqp.DialConfig(strings.Replace(amqpURL, "guest:guest", "mgr:mgrpw", 1), amqp.Config{})
	if err != nil {
		t.Fatal(err)
	}
	defer own.Close()
	ownClosed := own.NotifyClose(make(chan *amqp.Error, 1))
	code, _, b = c.do("GET", "/api/connections", "mgr", nil)
	if err := json.Unmarshal(b, &mine); code != http.StatusOK || err != nil || len(mine) != 1 || mine[0].User != "mgr" {
		t.Fatalf("management user's own connections: %d %s", code, b)
	}
	if code, _, b := c.do("DELETE", "/api/connections/"+url.PathEscape(mine[0].Name), "mgr", nil); code != http.StatusNoContent {
		t.Fatalf("management user closing its connection: %d %s", code, b)
	}
	select {
	case e := <-ownClosed:
		if e == nil || e.Code != amqp.ConnectionForced || e.Reason != "CONNECTION_FORCED - Closed via management plugin" {
			t.Fatalf("close: %+v", e)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("own connection not closed")
	}
}

// TestMgmtQueueWrites declares, publishes to, reads, purges and deletes a
// queue through the API, checking RabbitMQ's status codes and bodies.
func TestMgmtQueueWrites(t *testing.T) {
	_, amqpURL, base := startMgmt(t)
	c := mgmtClient{t, base}
	expect := func(method, path string, body any, want int, wantBody string) []byte {
		t.Helper()
		code, _, b := c.do(method, path, "guest", body)
		if code != want || (wantBody != "" && string(b) != wantBody) {
			t.Fatalf("%s %s: %d %s, want %d %s", method, path, code, b, want, wantBody)
		}
		return b
	}
	expect("PUT", "/api/queues/%2F/wq", map[string]any{"durable": true, "arguments": map[string]any{"x-max-length": 10}}, http.StatusCreated, "")
	expect("PUT", "/api/queues/%2F/wq", map[string]any{"durable": true, "arguments": map[string]any{"x-max-length": 10}}, http.StatusNoContent, "")
	expect("PUT", "/api/queues/%2F/wq", map[string]any{"durable": false}, http.StatusBadRequest,
		`{"error":"bad_request","reason":"inequivalent arg 'durable' for queue 'wq' in vhost '/': received 'false' but current is 'true'"}`)
	expect("PUT", "/api/queues/%2F/wq2", "notjson", http.StatusBadRequest, `{"error":"bad_request","reason":"not_json"}`)
	var q QueueInfo
	c.getJSON("/api/queues/%2F/wq", &q)
	if !q.Durable || q.Arguments["x-max-length"] != float64(10) {
		t.Fatalf("declared queue: %+v", q)
	}

	expect("POST", "/api/exchanges/%2F/amq.default/publish", map[string]any{"properties": map[string]any{"delivery_mode": 2, "headers": map[string]any{"a": 1}},
		"routing_key": "wq", "payload": "hello", "payload_encoding": "string"}, http.StatusOK, `{"routed":true}`)
	expect("POST", "/api/exchanges/%2F/amq.default/publish", map[string]any{"properties": map[string]any{},
		"routing_key": "none", "payload": "aGk=", "payload_encoding": "base64"}, http.StatusOK, `{"routed":false}`)
	expect("POST", "/api/exchanges/%2F/nope/publish", map[string]any{"properties": map[string]any{},
		"routing_key": "x", "payload": "x", "payload_encoding": "string"}, http.StatusBadRequest,
		`{"error":"bad_request","reason":"404 NOT_FOUND - no exchange 'nope' in vhost '/'"}`)
	expect("POST", "/api/exchanges/%2F/amq.default/publish", map[string]any{"properties": map[string]any{},
		"routing_key": "wq", "payload": []byte{0xff, 0x00, 0x01}, "payload_encoding": "base64"}, http.StatusOK, `{"routed":true}`)

	get := func(ackmode string) []GotMessage {
		t.Helper()
		b := expect("POST", "/api/queues/%2F/wq/get", map[string]any{"count": 5, "ackmode": ackmode, "encoding": "auto", "truncate": 50000}, http.StatusOK, "")
		var got []GotMessage
		if err := json.Unmarshal(b, &got); err != nil {
			t.Fatal(err)
		}
		return got
	}
	got := get("ack_requeue_true")
	if len(got) != 2 || got[0].Payload != "hello" || got[0].PayloadEncoding != "string" || got[0].PayloadBytes != 5 ||
		got[0].Redelivered || got[0].RoutingKey != "wq" || got[0].Exchange != "" || got[0].MessageCount != 1 ||
		got[0].Properties["delivery_mode"] != float64(2) || fmt.Sprint(got[0].Properties["headers"]) != "map[a:1]" {
		t.Fatalf("get: %+v", got)
	}
	// The binary body (base64 "/wAB") is not valid UTF-8, so auto encodes it.
	if got[1].Payload != "/wAB" || got[1].PayloadEncoding != "base64" || got[1].PayloadBytes != 3 {
		t.Fatalf("binary get: %+v", got[1])
	}
	c.getJSON("/api/queues/%2F/wq", &q)
	if q.Messages != 2 || q.MessagesReady != 2 {
		t.Fatalf("after ack_requeue_true: %+v", q)
	}
	got = get("ack_requeue_false")
	if len(got) != 2 || !got[0].Redelivered {
		t.Fatalf("second get: %+v", got)
	}
	c.getJSON("/api/queues/%2F/wq", &q)
	if q.Messages != 0 {
		t.Fatalf("after ack_requeue_false: %+v", q)
	}
	expect("POST", "/api/queues/%2F/wq/get", map[string]any{"count": 1, "ackmode": "bogus", "encoding": "auto"}, http.StatusBadRequest, "")

	// Purge (DELETE .../contents) drops ready messages only.
	conn := dial(t, amqpURL)
	ch := openCh(t, conn)
	for range 4 {
		if err := ch.Publish("", "wq", false, false, amqp.Publishing{Body: []byte("x")}); err != nil {
			t.Fatal(err)
		}
	}
	eventually(t, "4 messages", func() (bool, string) {
		c.getJSON("/api/queues/%2F/wq", &q)
		return q.Messages == 4, fmt.Sprint(q.Messages)
	})
	expect("DELETE", "/api/queues/%2F/wq/contents", nil, http.StatusNoContent, "")
	c.getJSON("/api/queues/%2F/wq", &q)
	if q.Messages != 0 {
		t.Fatalf("after purge: %+v", q)
	}
	if _, err := ch.Consume("wq", "busy", true, false, false, false, nil); err != nil {
		t.Fatal(err)
	}
	code, _, b := c.do("DELETE", "/api/queues/%2F/wq?if-unused=true", "guest", nil)
	if code != http.StatusBadRequest || !strings.Contains(string(b), "in use") {
		t.Fatalf("DELETE if-unused of a queue with a consumer: %d %s", code, b)
	}
	expect("DELETE", "/api/queues/%2F/wq", nil, http.StatusNoContent, "")
	expect("GET", "/api/queues/%2F/wq", nil, http.StatusNotFound, `{"error":"Object Not Found","reason":"Not Found"}`)
	// Writes go through the broker's permission checks: mgr has none in
	// "other".
	code, _, b = c.do("PUT", "/api/queues/other/x", "mgr", map[string]any{})
	if code != http.StatusUnauthorized {
		t.Fatalf("declare without permissions: %d %s", code, b)
	}
}

func TestMgmtExchangesAndBindings(t *testing.T) {
	_, amqpURL, base := startMgmt(t)
	c := mgmtClient{t, base}
	if code, _, b := c.do("PUT", "/api/exchanges/%2F/compute", "guest", map[string]any{"type": "topic", "durable": true}); code != http.StatusCreated {
		t.Fatalf("PUT exchange: %d %s", code, b)
	}
	if code, _, b := c.do("PUT", "/api/exchanges/%2F/compute", "guest", map[string]any{"type": "fanout", "durable": true}); code != http.StatusBadRequest ||
		!strings.Contains(string(b), "inequivalent arg 'type'") {
		t.Fatalf("PUT inequivalent exchange: %d %s", code, b)
	}
	if code, _, b := c.do("PUT", "/api/exchanges/%2F/x2", "guest", map[string]any{"type": "bogus"}); code != http.StatusBadRequest ||
		string(b) != `{"error":"bad_request","reason":"unknown exchange type 'bogus'"}` {
		t.Fatalf("PUT bogus type: %d %s", code, b)
	}
	var ex ExchangeInfo
	c.getJSON("/api/exchanges/%2F/compute", &ex)
	if ex.Name != "compute" || ex.VHost != "/" || ex.Type != "topic" || !ex.Durable || ex.AutoDelete || ex.Internal || len(ex.Arguments) != 0 {
		t.Fatalf("exchange: %+v", ex)
	}
	c.getJSON("/api/exchanges/%2F/amq.default", &ex)
	if ex.Name != "" || ex.Type != "direct" || !ex.Durable {
		t.Fatalf("default exchange: %+v", ex)
	}
	var exs []ExchangeInfo
	c.getJSON("/api/exchanges/%2F", &exs)
	if len(exs) != 8 || exs[0].Name != "" || exs[1].Name != "amq.direct" {
		t.Fatalf("exchanges: %+v", exs)
	}

	conn := dial(t, amqpURL)
	ch := openCh(t, conn)
	if _, err := ch.QueueDeclare("cq", false, false, false, false, nil); err != nil {
		t.Fatal(err)
	}
	if err := ch.QueueBind("cq", "compute.*.info", "compute", false, nil); err != nil {
		t.Fatal(err)
	}
	if err := ch.QueueBind("cq", "", "amq.headers", false, amqp.Table{"x-match": "all", "k": "v"}); err != nil {
		t.Fatal(err)
	}
	var bs []BindingInfo
	c.getJSON("/api/bindings/%2F", &bs)
	if len(bs) != 3 {
		t.Fatalf("bindings: %+v", bs)
	}
	if bs[0].Source != "" || bs[0].Destination != "cq" || bs[0].RoutingKey != "cq" || bs[0].PropertiesKey != "cq" || bs[0].DestinationType != "queue" {
		t.Errorf("implicit binding: %+v", bs[0])
	}
	if bs[1].Source != "amq.headers" || !strings.HasPrefix(bs[1].PropertiesKey, "~~") || bs[1].Arguments["k"] != "v" {
		t.Errorf("headers binding: %+v", bs[1])
	}
	if bs[2].Source != "compute" || bs[2].RoutingKey != "compute.*.info" || bs[2].PropertiesKey != "compute.%2A.info" || bs[2].VHost != "/" {
		t.Errorf("topic binding: %+v", bs[2])
	}
	var all []BindingInfo
	c.getJSON("/api/bindings", &all)
	if len(all) != 3 {
		t.Errorf("all bindings: %+v", all)
	}

	// The API's publish routes through the topic exchange.
	code, _, b := c.do("POST", "/api/exchanges/%2F/compute/publish", "guest", map[string]any{"properties": map[string]any{},
		"routing_key": "compute.node1.info", "payload": "p", "payload_encoding": "string"})
	if code != http.StatusOK || string(b) != `{"routed":true}` {
		t.Fatalf("publish via topic: %d %s", code, b)
	}
	if code, _, b := c.do("DELETE", "/api/exchanges/%2F/compute", "guest", nil); code != http.StatusNoContent {
		t.Fatalf("DELETE exchange: %d %s", code, b)
	}
	if code, _, _ := c.do("GET", "/api/exchanges/%2F/compute", "guest", nil); code != http.StatusNotFound {
		t.Fatalf("deleted exchange still there: %d", code)
	}
	c.getJSON("/api/bindings/%2F", &bs)
	if len(bs) != 2 {
		t.Fatalf("bindings after exchange delete: %+v", bs)
	}
}

func TestMgmtOverviewUsersNodesHealth(t *testing.T) {
	s, _, base := startMgmt(t)
	c := mgmtClient{t, base}
	var ov Overview
	c.getJSON("/api/overview", &ov)
	amqpPort := s.Addr().(*net.TCPAddr).Port
	httpPort := s.HTTPAddr().(*net.TCPAddr).Port
	if ov.ProductName != "RabbitMQ" || ov.RabbitMQVersion != "3.10.8" || ov.ManagementVersion != ManagementVersion ||
		!strings.HasPrefix(ov.Node, "rabbit@") || len(ov.ExchangeTypes) != 4 || len(ov.Listeners) != 2 ||
		ov.Listeners[0].Node != ov.Node || ov.Listeners[0].Protocol != "amqp" || ov.Listeners[0].IPAddress != "127.0.0.1" || ov.Listeners[0].Port != amqpPort ||
		ov.Listeners[1].Protocol != "http" || ov.Listeners[1].Port != httpPort || len(ov.Contexts) != 1 ||
		ov.ObjectTotals.Exchanges != 14 || ov.ObjectTotals.Connections != 0 {
		t.Errorf("overview: %+v", ov)
	}
	var who map[string]any
	code, _, b := c.do("GET", "/api/whoami", "mgr", nil)
	if err := json.Unmarshal(b, &who); code != http.StatusOK || err != nil || fmt.Sprint(who) != "map[name:mgr tags:[management]]" {
		t.Errorf("whoami: %d %s", code, b)
	}
	var vhs []VHostInfo
	c.getJSON("/api/vhosts", &vhs)
	if len(vhs) != 2 || vhs[0].Name != "/" || vhs[1].Name != "other" || vhs[0].ClusterState[ov.Node] != "running" {
		t.Errorf("vhosts: %+v", vhs)
	}
	var one VHostInfo
	c.getJSON("/api/vhosts/other", &one)
	if one.Name != "other" || one.DefaultQueueType != "classic" {
		t.Errorf("vhost: %+v", one)
	}
	code, _, b = c.do("GET", "/api/vhosts", "mgr", nil)
	if code != http.StatusOK || strings.Contains(string(b), `"other"`) {
		t.Errorf("management user sees vhosts without permissions: %s", b)
	}
	var users []UserInfo
	c.getJSON("/api/users", &users)
	if len(users) != 4 || users[0].Name != "guest" || fmt.Sprint(users[0].Tags) != "[administrator]" ||
		users[0].HashingAlgorithm != "rabbit_password_hashing_sha256" || len(users[0].PasswordHash) != 48 ||
		strings.Contains(string(mustJSON(t, users)), "mgrpw") {
		t.Errorf("users: %+v", users)
	}
	var perms []PermissionInfo
	c.getJSON("/api/permissions", &perms)
	want := []PermissionInfo{{"guest", "/", ".*", ".*", ".*"}, {"guest", "other", ".*", ".*", ".*"},
		{"mgr", "/", ".*", ".*", ".*"}, {"mon", "/", ".*", ".*", ".*"}, {"notag", "/", ".*", ".*", ".*"}}
	if fmt.Sprint(perms) != fmt.Sprint(want) {
		t.Errorf("permissions: %+v", perms)
	}
	var nodes []NodeInfo
	c.getJSON("/api/nodes", &nodes)
	if len(nodes) != 1 || nodes[0].Name != ov.Node || !nodes[0].Running || nodes[0].MemUsed == 0 || nodes[0].MemAlarm {
		t.Errorf("nodes: %+v", nodes)
	}
	for _, p := range []string{"/api/health/checks/alarms", "/api/health/checks/local-alarms", "/api/healthchecks/node"} {
		if code, _, b := c.do("GET", p, "guest", nil); code != http.StatusOK || string(b) != `{"status":"ok"}` {
			t.Errorf("%s: %d %s", p, code, b)
		}
	}
	code, _, b = c.do("GET", fmt.Sprint("/api/health/checks/port-listener/", amqpPort), "guest", nil)
	if code != http.StatusOK || string(b) != fmt.Sprintf(`{"port":%d,"status":"ok"}`, amqpPort) {
		t.Errorf("port-listener: %d %s", code, b)
	}
	code, _, b = c.do("GET", "/api/health/checks/port-listener/1", "guest", nil)
	if code != http.StatusServiceUnavailable || !strings.Contains(string(b), `"status":"failed"`) || !strings.Contains(string(b), `"missing":1`) {
		t.Errorf("port-listener for a closed port: %d %s", code, b)
	}
}

func mustJSON(t *testing.T, v any) []byte {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// TestMgmtShutdownStopsHTTP: Shutdown closes the API's listener (and
// TestMain's goleak check finds no goroutine left).
func TestMgmtShutdownStopsHTTP(t *testing.T) {
	opts := DefaultOptions()
	opts.AMQPAddr = ""
	opts.HTTPAddr = "127.0.0.1:0"
	s, err := New(opts)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Start(); err != nil {
		t.Fatal(err)
	}
	addr := s.HTTPAddr().String()
	c := mgmtClient{t, "http://" + addr}
	if code, _, _ := c.do("GET", "/api/overview", "guest", nil); code != http.StatusOK {
		t.Fatalf("overview: %d", code)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := s.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}
	if nc, err := net.DialTimeout("tcp", addr, 2*time.Second); err == nil {
		nc.Close()
		t.Fatal("management listener still accepts after Shutdown")
	}
	// A port already taken makes Start fail and leaves nothing running.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	opts.HTTPAddr = ln.Addr().String()
	opts.AMQPAddr = "127.0.0.1:0"
	s2, err := New(opts)
	if err != nil {
		t.Fatal(err)
	}
	if err := s2.Start(); err == nil || !strings.Contains(err.Error(), "listen http") {
		t.Fatalf("Start on a taken port: %v", err)
	}
	if err := s2.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}
}

// TestMgmtAlarmHealthCheck: while the memory alarm is raised the alarm
// health checks answer 503 and connections show as blocked.
func TestMgmtAlarmHealthCheck(t *testing.T) {
	_, amqpURL, base := startMgmtWith(t, func(o *Options) { o.MemoryHighWatermark = 1024 })
	c := mgmtClient{t, base}
	conn := dial(t, amqpURL)
	ch := openCh(t, conn)
	if _, err := ch.QueueDeclare("big", false, false, false, false, nil); err != nil {
		t.Fatal(err)
	}
	if err := ch.Publish("", "big", false, false, amqp.Publishing{Body: make([]byte, 4096)}); err != nil {
		t.Fatal(err)
	}
	eventually(t, "alarm check failing", func() (bool, string) {
		code, _, b := c.do("GET", "/api/health/checks/alarms", "guest", nil)
		return code == http.StatusServiceUnavailable && strings.Contains(string(b), `"resource":"memory"`), fmt.Sprint(code, string(b))
	})
	var conns []ConnectionInfo
	c.getJSON("/api/connections", &conns)
	if len(conns) != 1 || conns[0].State != "blocked" {
		t.Errorf("connections during the alarm: %+v", conns)
	}
	var nodes []NodeInfo
	c.getJSON("/api/nodes", &nodes)
	if !nodes[0].MemAlarm || nodes[0].MemLimit != 1024 {
		t.Errorf("nodes during the alarm: %+v", nodes)
	}
	if code, _, b := c.do("DELETE", "/api/queues/%2F/big/contents", "guest", nil); code != http.StatusNoContent {
		t.Fatalf("purge: %d %s", code, b)
	}
	if code, _, b := c.do("GET", "/api/health/checks/local-alarms", "guest", nil); code != http.StatusOK {
		t.Errorf("alarm check after purge: %d %s", code, b)
	}
}

// TestMgmtLoopbackUserOverHTTP uses the handler with httptest: a request
// from a non-loopback address (httptest's 192.0.2.1) is refused for a
// loopback-only user, as over AMQP, and served for the others.
func TestMgmtLoopbackUserOverHTTP(t *testing.T) {
	s, _, _ := startMgmt(t)
	h := s.ManagementHandler()
	for _, tc := range []struct {
		user, pass string
		code       int
		body       string
	}{
		{"guest", "guest", http.StatusUnauthorized, `{"error":"not_authorised","reason":"User can only log in via localhost"}`},
		{"mgr", "mgrpw", http.StatusOK, `{"name":"mgr","tags":["management"]}`},
	} {
		req := httptest.NewRequest("GET", "/api/whoami", nil)
		req.SetBasicAuth(tc.user, tc.pass)
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		if rec.Code != tc.code || rec.Body.String() != tc.body {
			t.Errorf("%s from %s: %d %s", tc.user, req.RemoteAddr, rec.Code, rec.Body.String())
		}
	}
}

// TestMgmtBindingEndpoints creates, reads and deletes queue and exchange
// bindings through the API, with arguments, by their properties_key.
func TestMgmtBindingEndpoints(t *testing.T) {
	_, amqpURL, base := startMgmt(t)
	c := mgmtClient{t, base}
	expect := func(method, path string, body any, want int) (http.Header, []byte) {
		t.Helper()
		code, h, b := c.do(method, path, "guest", body)
		if code != want {
			t.Fatalf("%s %s: %d %s, want %d", method, path, code, b, want)
		}
		return h, b
	}
	expect("PUT", "/api/exchanges/%2F/ex", map[string]any{"type": "topic"}, http.StatusCreated)
	expect("PUT", "/api/exchanges/%2F/ex2", map[string]any{"type": "fanout"}, http.StatusCreated)
	expect("PUT", "/api/queues/%2F/bq", map[string]any{}, http.StatusCreated)

	h, _ := expect("POST", "/api/bindings/%2F/e/ex/q/bq", map[string]any{"routing_key": "a.*", "arguments": map[string]any{}}, http.StatusCreated)
	loc := h.Get("Location")
	if loc != "/api/bindings/%2F/e/ex/q/bq/a.%252A" {
		t.Fatalf("Location: %q", loc)
	}
	var one BindingInfo
	c.getJSON(loc, &one)
	if one.Source != "ex" || one.Destination != "bq" || one.RoutingKey != "a.*" || one.PropertiesKey != "a.%2A" {
		t.Fatalf("binding: %+v", one)
	}
	h, _ = expect("POST", "/api/bindings/%2F/e/ex/q/bq", map[string]any{"routing_key": "a.*", "arguments": map[string]any{"x": 1, "y": "z"}}, http.StatusCreated)
	withArgs := h.Get("Location")
	if !strings.HasPrefix(withArgs, "/api/bindings/%2F/e/ex/q/bq/a.%252A~") {
		t.Fatalf("Location of a binding with arguments: %q", withArgs)
	}
	var bs []BindingInfo
	c.getJSON("/api/bindings/%2F/e/ex/q/bq", &bs)
	if len(bs) != 2 {
		t.Fatalf("bindings between ex and bq: %+v", bs)
	}
	c.getJSON("/api/queues/%2F/bq/bindings", &bs)
	if len(bs) != 3 || bs[0].Source != "" {
		t.Fatalf("bindings of bq: %+v", bs)
	}
	h, _ = expect("POST", "/api/bindings/%2F/e/ex/e/ex2", map[string]any{"routing_key": "k"}, http.StatusCreated)
	e2e := h.Get("Location")
	c.getJSON("/api/exchanges/%2F/ex/bindings/source", &bs)
	if len(bs) != 3 {
		t.Fatalf("bindings from ex: %+v", bs)
	}
	c.getJSON("/api/exchanges/%2F/ex2/bindings/destination", &bs)
	if len(bs) != 1 || bs[0].DestinationType != "exchange" || bs[0].Source != "ex" {
		t.Fatalf("bindings to ex2: %+v", bs)
	}

	// Deleting the binding with arguments leaves the other one routing.
	expect("DELETE", withArgs, nil, http.StatusNoContent)
	expect("GET", withArgs, nil, http.StatusNotFound)
	expect("DELETE", withArgs, nil, http.StatusNotFound)
	c.getJSON("/api/bindings/%2F/e/ex/q/bq", &bs)
	if len(bs) != 1 || len(bs[0].Arguments) != 0 {
		t.Fatalf("bindings after unbinding one: %+v", bs)
	}
	expect("DELETE", e2e, nil, http.StatusNoContent)
	c.getJSON("/api/exchanges/%2F/ex2/bindings/destination", &bs)
	if len(bs) != 0 {
		t.Fatalf("e2e binding not removed: %+v", bs)
	}
	conn := dial(t, amqpURL)
	ch := openCh(t, conn)
	if err := ch.Publish("ex", "a.b", false, false, amqp.Publishing{Body: []byte("routed")}); err != nil {
		t.Fatal(err)
	}
	eventually(t, "message routed through the remaining binding", func() (bool, string) {
		var q QueueInfo
		c.getJSON("/api/queues/%2F/bq", &q)
		return q.Messages == 1, fmt.Sprint(q.Messages)
	})

	expect("POST", "/api/bindings/%2F/e/ex/q/nope", map[string]any{"routing_key": "k"}, http.StatusNotFound)
	expect("POST", "/api/bindings/%2F/e/nope/q/bq", map[string]any{"routing_key": "k"}, http.StatusNotFound)
	expect("POST", "/api/bindings/%2F/e/ex/x/bq", map[string]any{"routing_key": "k"}, http.StatusNotFound)

	_, b := expect("GET", "/api/aliveness-test/%2F", nil, http.StatusOK)
	if string(b) != `{"status":"ok"}` {
		t.Fatalf("aliveness-test: %s", b)
	}
	var q QueueInfo
	c.getJSON("/api/queues/%2F/aliveness-test", &q)
	if q.Messages != 0 {
		t.Fatalf("aliveness-test queue: %+v", q)
	}
}

// TestMgmtQueriesDuringChurn reads every list while clients open and
// close connections and channels, declare and delete queues, publish,
// consume and acknowledge; the race detector checks the query methods'
// locking, and every answer must be a well-formed list.
func TestMgmtQueriesDuringChurn(t *testing.T) {
	s, amqpURL, base := startMgmt(t)
	c := mgmtClient{t, base}
	stop := make(chan struct{})
	errs := make(chan error, 4)
	for w := range 3 {
		go func() {
			errs <- func() error {
				for i := 0; ; i++ {
					select {
					case <-stop:
						return nil
					default:
					}
					conn, err := amqp.Dial(amqpURL)
					if err != nil {
						return err
					}
					ch, err := conn.Channel()
					if err != nil {
						conn.Close()
						return err
					}
					q := fmt.Sprintf("churn-%d-%d", w, i)
					if _, err := ch.QueueDeclare(q, false, true, false, false, nil); err != nil {
						conn.Close()
						return err
					}
					_ = ch.Qos(5, 0, false)
					_ = ch.Confirm(false)
					for range 5 {
						_ = ch.Publish("", q, false, false, amqp.Publishing{Body: []byte("x")})
					}
					dels, err := ch.Consume(q, "", false, false, false, false, nil)
					if err != nil {
						conn.Close()
						return err
					}
					d := <-dels
					_ = d.Ack(false)
					if i%2 == 0 {
						_ = ch.Close()
					}
					conn.Close()
				}
			}()
		}()
	}
	// The in-process connections of the API itself churn too.
	go func() {
		errs <- func() error {
			for {
				select {
				case <-stop:
					return nil
				default:
				}
				code, _, b := c.do("PUT", "/api/queues/%2F/api-churn", "guest", map[string]any{})
				if code != http.StatusCreated && code != http.StatusNoContent {
					return fmt.Errorf("PUT: %d %s", code, b)
				}
				if code, _, b := c.do("DELETE", "/api/queues/%2F/api-churn", "guest", nil); code != http.StatusNoContent && code != http.StatusNotFound {
					return fmt.Errorf("DELETE: %d %s", code, b)
				}
			}
		}()
	}()
	deadline := time.Now().Add(2 * time.Second)
	for n := 0; time.Now().Before(deadline) || n < 20; n++ {
		for _, p := range []string{"/api/overview", "/api/queues", "/api/connections", "/api/channels", "/api/consumers", "/api/bindings", "/api/exchanges"} {
			code, _, b := c.do("GET", p, "guest", nil)
			var v any
			if code != http.StatusOK || json.Unmarshal(b, &v) != nil {
				t.Fatalf("GET %s during churn: %d %s", p, code, b)
			}
		}
		_ = s.Overview()
	}
	close(stop)
	for range 4 {
		if err := <-errs; err != nil {
			t.Error(err)
		}
	}
}

// TestMgmtAdminWrites creates a vhost, a user and its permissions through
// the API, uses them over AMQP, changes the password, deletes the vhost
// (closing the user's connection) and the user.
func TestMgmtAdminWrites(t *testing.T) {
	_, amqpURL, base := startMgmt(t)
	c := mgmtClient{t, base}
	mgmtPasswords["bob"] = "bobpw"
	defer delete(mgmtPasswords, "bob")
	expect := func(method, path, user string, body any, want int) []byte {
		t.Helper()
		code, _, b := c.do(method, path, user, body)
		if code != want {
			t.Fatalf("%s %s as %s: %d %s, want %d", method, path, user, code, b, want)
		}
		return b
	}
	expect("PUT", "/api/vhosts/v2", "mgr", nil, http.StatusUnauthorized)
	expect("PUT", "/api/vhosts/v2", "guest", nil, http.StatusCreated)
	expect("PUT", "/api/vhosts/v2", "guest", map[string]any{"description": "x"}, http.StatusNoContent)
	expect("PUT", "/api/users/bob", "guest", map[string]any{"tags": "management"}, http.StatusBadRequest)
	expect("PUT", "/api/users/bob", "guest", map[string]any{"password": "bobpw", "tags": "management"}, http.StatusCreated)
	expect("GET", "/api/whoami", "bob", nil, http.StatusOK)
	bobURL := strings.Replace(amqpURL, "guest:guest", "bob:bobpw", 1)
	if _, err := amqp.Dial(bobURL + "v2"); err == nil {
		t.Fatal("a new user without permissions opened vhost v2")
	}
	expect("PUT", "/api/permissions/v2/bob", "guest", map[string]any{"configure": ".*", "write": ".*"}, http.StatusBadRequest)
	expect("PUT", "/api/permissions/v2/bob", "guest", map[string]any{"configure": "(", "write": ".*", "read": ".*"}, http.StatusBadRequest)
	expect("PUT", "/api/permissions/nope/bob", "guest", map[string]any{"configure": ".*", "write": ".*", "read": ".*"}, http.StatusNotFound)
	expect("PUT", "/api/permissions/v2/bob", "guest", map[string]any{"configure": "^bob\\..*", "write": ".*", "read": ".*"}, http.StatusCreated)
	var p PermissionInfo
	c.getJSON("/api/permissions/v2/bob", &p)
	if p != (PermissionInfo{User: "bob", VHost: "v2", Configure: "^bob\\..*", Write: ".*", Read: ".*"}) {
		t.Fatalf("permission: %+v", p)
	}
	var ps []PermissionInfo
	c.getJSON("/api/users/bob/permissions", &ps)
	if len(ps) != 1 {
		t.Fatalf("bob's permissions: %+v", ps)
	}

	conn, err := amqp.Dial(bobURL + "v2")
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	closed := conn.NotifyClose(make(chan *amqp.Error, 1))
	ch := openCh(t, conn)
	if _, err := ch.QueueDeclare("bob.q", false, false, false, false, nil); err != nil {
		t.Fatal(err)
	}
	if _, err := ch.QueueDeclare("other.q", false, false, false, false, nil); err == nil {
		t.Fatal("configure permission not applied")
	}
	b := expect("GET", "/api/queues/v2", "bob", nil, http.StatusOK)
	if !strings.Contains(string(b), `"name":"bob.q"`) {
		t.Fatalf("bob's queues: %s", b)
	}

	expect("PUT", "/api/users/bob", "guest", map[string]any{"password": "newpw", "tags": []string{"monitoring"}}, http.StatusNoContent)
	expect("GET", "/api/whoami", "bob", nil, http.StatusUnauthorized)
	mgmtPasswords["bob"] = "newpw"
	if b := expect("GET", "/api/whoami", "bob", nil, http.StatusOK); string(b) != `{"name":"bob","tags":["monitoring"]}` {
		t.Fatalf("whoami after the change: %s", b)
	}
	c.getJSON("/api/permissions/v2/bob", &p)
	if p.Configure != "^bob\\..*" {
		t.Fatalf("permissions lost with the password change: %+v", p)
	}

	expect("DELETE", "/api/vhosts/v2", "guest", nil, http.StatusNoContent)
	select {
	case e := <-closed:
		if e == nil || e.Code != amqp.ConnectionForced || e.Reason != "CONNECTION_FORCED - vhost 'v2' is deleted" {
			t.Fatalf("close: %+v", e)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("connection to the deleted vhost not closed")
	}
	expect("GET", "/api/vhosts/v2", "guest", nil, http.StatusNotFound)
	expect("DELETE", "/api/vhosts/v2", "guest", nil, http.StatusNotFound)
	expect("DELETE", "/api/permissions/v2/bob", "guest", nil, http.StatusNotFound)
	var qs []QueueInfo
	c.getJSON("/api/queues", &qs)
	if len(qs) != 0 {
		t.Fatalf("queues of the deleted vhost remain: %+v", qs)
	}
	// Deleting a user closes its connections, as RabbitMQ 3.10.8 does.
	if c, err := amqp.Dial(strings.Replace(amqpURL, "guest:guest", "bob:newpw", 1)); err == nil {
		c.Close()
		t.Fatal("bob opened / without permissions there")
	}
	expect("PUT", "/api/permissions/%2F/bob", "guest", map[string]any{"configure": ".*", "write": ".*", "read": ".*"}, http.StatusCreated)
	conn2, err := amqp.Dial(strings.Replace(amqpURL, "guest:guest", "bob:newpw", 1))
	if err != nil {
		t.Fatal(err)
	}
	defer conn2.Close()
	closed2 := conn2.NotifyClose(make(chan *amqp.Error, 1))
	expect("DELETE", "/api/users/bob", "guest", nil, http.StatusNoContent)
	select {
	case e := <-closed2:
		if e == nil || e.Code != amqp.ConnectionForced || e.Reason != "CONNECTION_FORCED - user 'bob' is deleted" {
			t.Fatalf("close: %+v", e)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("deleted user's connection not closed")
	}
	expect("GET", "/api/users/bob", "guest", nil, http.StatusNotFound)
	expect("GET", "/api/whoami", "bob", nil, http.StatusUnauthorized)
	expect("DELETE", "/api/users/bob", "guest", nil, http.StatusNotFound)

	// guest was configured without permissions (everything everywhere):
	// clearing one vhost keeps the others.
	expect("DELETE", "/api/permissions/other/guest", "guest", nil, http.StatusNoContent)
	c.getJSON("/api/users/guest/permissions", &ps)
	if len(ps) != 1 || ps[0].VHost != "/" {
		t.Fatalf("guest's permissions: %+v", ps)
	}
}

// TestMgmtVHostSurvivesRestart: a vhost created through the API is part
// of the durable definitions.
func TestMgmtVHostSurvivesRestart(t *testing.T) {
	dir := t.TempDir()
	for i, want := range []int{http.StatusCreated, http.StatusNoContent} {
		s, _ := startBroker(t, func(o *Options) {
			o.HTTPAddr = "127.0.0.1:0"
			o.DataDir = dir
		})
		c := mgmtClient{t, "http://" + s.HTTPAddr().String()}
		if code, _, b := c.do("PUT", "/api/vhosts/kept", "guest", nil); code != want {
			t.Fatalf("start %d: PUT vhost: %d %s", i, code, b)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		err := s.Shutdown(ctx)
		cancel()
		if err != nil {
			t.Fatal(err)
		}
	}
}

// TestMgmtListParameters: name filter, sort, sort_reverse, page,
// page_size and columns, with the answers and errors RabbitMQ 3.10.8 gave
// for the same requests on the same five queues (measured).
func TestMgmtListParameters(t *testing.T) {
	_, _, base := startMgmt(t)
	c := mgmtClient{t, base}
	for _, q := range []string{"qa", "qb", "qc", "qd", "qe"} {
		if code, _, b := c.do("PUT", "/api/queues/%2F/"+q, "guest", map[string]any{}); code != http.StatusCreated {
			t.Fatalf("PUT %s: %d %s", q, code, b)
		}
	}
	for _, tc := range []struct {
		query string
		code  int
		body  string
	}{
		{"page=1&page_size=2&columns=name", 200, `{"filtered_count":5,"item_count":2,"items":[{"name":"qa"},{"name":"qb"}],"page":1,"page_count":3,"page_size":2,"total_count":5}`},
		{"page=3&page_size=2&columns=name", 200, `{"filtered_count":5,"item_count":1,"items":[{"name":"qe"}],"page":3,"page_count":3,"page_size":2,"total_count":5}`},
		{"page=4&page_size=2", 400, `{"error":"page_out_of_range","reason":"Page out of range, page: 4 page size: 2, len: 5"}`},
		{"page=1&page_size=501", 400, `{"error":"invalid_pagination_parameters","reason":"Invalid pagination parameters: page number 1, page size 501"}`},
		{"page=0", 400, `{"error":"invalid_pagination_parameters","reason":"Invalid pagination parameters: page number 0, page size undefined"}`},
		{"page=1&page_size=0", 400, `{"error":"invalid_pagination_parameters","reason":"Invalid pagination parameters: page number 1, page size 0"}`},
		{"page=x", 400, `{"error":"bad_request","reason":"Pagination parameters are invalid"}`},
		{"page=1&page_size=2&name=q%5Bbd%5D&use_regex=true&columns=name", 200, `{"filtered_count":2,"item_count":2,"items":[{"name":"qb"},{"name":"qd"}],"page":1,"page_count":1,"page_size":2,"total_count":5}`},
		{"page=1&name=%5Bq&use_regex=true", 400, `{"error":"bad_request","reason":"Pagination parameters are invalid"}`},
		{"page=1&name=QB&columns=name", 200, `{"filtered_count":1,"item_count":1,"items":[{"name":"qb"}],"page":1,"page_count":1,"page_size":100,"total_count":5}`},
		{"page=1&name=zzz", 200, `{"filtered_count":0,"item_count":0,"items":[],"page":1,"page_count":0,"page_size":100,"total_count":5}`},
		{"page=2&name=zzz", 400, `{"error":"page_out_of_range","reason":"Page out of range, page: 2 page size: 100, len: 0"}`},
		{"columns=name,vhost", 200, `[{"name":"qa","vhost":"/"},{"name":"qb","vhost":"/"},{"name":"qc","vhost":"/"},{"name":"qd","vhost":"/"},{"name":"qe","vhost":"/"}]`},
		{"columns=nosuch,name", 200, `[{"name":"qa"},{"name":"qb"},{"name":"qc"},{"name":"qd"},{"name":"qe"}]`},
		{"columns=name&name=qa", 200, `[{"name":"qa"},{"name":"qb"},{"name":"qc"},{"name":"qd"},{"name":"qe"}]`},
		{"sort=name&sort_reverse=true&columns=name", 200, `[{"name":"qe"},{"name":"qd"},{"name":"qc"},{"name":"qb"},{"name":"qa"}]`},
		{"page=1&page_size=2&sort=name&sort_reverse=true&columns=name", 200, `{"filtered_count":5,"item_count":2,"items":[{"name":"qe"},{"name":"qd"}],"page":1,"page_count":3,"page_size":2,"total_count":5}`},
	} {
		code, _, b := c.do("GET", "/api/queues?"+tc.query, "guest", nil)
		if code != tc.code || string(b) != tc.body {
			t.Errorf("%s: %d %s\nwant %d %s", tc.query, code, b, tc.code, tc.body)
		}
	}
	code, _, b := c.do("GET", "/api/exchanges/%2F?columns=name,type&sort=type", "guest", nil)
	want := `[{"name":"","type":"direct"},{"name":"amq.direct","type":"direct"},{"name":"amq.fanout","type":"fanout"},{"name":"amq.headers","type":"headers"},{"name":"amq.match","type":"headers"},{"name":"amq.rabbitmq.trace","type":"topic"},{"name":"amq.topic","type":"topic"}]`
	if code != http.StatusOK || string(b) != want {
		t.Errorf("exchanges sorted by type: %d %s", code, b)
	}
	// Numeric sort: 3 messages in qc, 1 in qa, the others keep their order.
	for _, q := range []string{"qc", "qc", "qc", "qa"} {
		if code, _, b := c.do("POST", "/api/exchanges/%2F/amq.default/publish", "guest", map[string]any{"properties": map[string]any{},
			"routing_key": q, "payload": "x", "payload_encoding": "string"}); code != http.StatusOK {
			t.Fatalf("publish: %d %s", code, b)
		}
	}
	code, _, b = c.do("GET", "/api/queues?sort=messages&sort_reverse=true&columns=name,messages", "guest", nil)
	if want := `[{"messages":3,"name":"qc"},{"messages":1,"name":"qa"},{"messages":0,"name":"qe"},{"messages":0,"name":"qd"},{"messages":0,"name":"qb"}]`; code != http.StatusOK || string(b) != want {
		t.Errorf("queues by messages: %d %s", code, b)
	}
	// Nested columns keep their nesting.
	got := projectColumns([]any{map[string]any{"a": map[string]any{"b": 1, "c": 2}, "d": 3, "e": nil}}, "a.b,d,e,x.y")
	if fmt.Sprint(got) != "[map[a:map[b:1] d:3 e:<nil>]]" {
		t.Errorf("nested columns: %v", got)
	}
}

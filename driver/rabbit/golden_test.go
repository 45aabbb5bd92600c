package rabbit

import (
	"bufio"
	"encoding/json"
	"os"
	"reflect"
	"regexp"
	"strings"
	"testing"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/oslogo/oslogo/driver"
)

// capture is one line of the RabbitMQ firehose captures of Python
// oslo.messaging 14.0.3 in testdata/.
type capture struct {
	RK      string `json:"rk"`
	Headers struct {
		Exchange    string         `json:"exchange_name"`
		RoutingKeys []string       `json:"routing_keys"`
		Properties  map[string]any `json:"properties"`
	} `json:"headers"`
	Body string `json:"body"`
}

func loadCaptures(t *testing.T) []capture {
	t.Helper()
	var out []capture
	for _, f := range []string{"testdata/oslo14-trace_rpc.jsonl", "testdata/oslo14-trace_notify.jsonl"} {
		fh, err := os.Open(f)
		if err != nil {
			t.Fatal(err)
		}
		sc := bufio.NewScanner(fh)
		sc.Buffer(make([]byte, 1<<20), 1<<20)
		for sc.Scan() {
			var c capture
			if err := json.Unmarshal(sc.Bytes(), &c); err != nil {
				t.Fatalf("%s: %v", f, err)
			}
			if strings.HasPrefix(c.RK, "publish.") {
				out = append(out, c)
			}
		}
		_ = fh.Close()
	}
	if len(out) < 30 {
		t.Fatalf("only %d publishes in the captures", len(out))
	}
	return out
}

func (c capture) kind(m message) string {
	switch {
	case m["method"] != nil:
		return "request"
	case m["event_type"] != nil:
		return "notification"
	case m["ending"] != nil:
		return "reply"
	}
	return ""
}

// innerOf returns the oslo.message string of an enveloped body, or the
// body itself for a v1 notification.
func innerOf(t *testing.T, body string) string {
	var env map[string]any
	if err := json.Unmarshal([]byte(body), &env); err != nil {
		t.Fatal(err)
	}
	if s, ok := env["oslo.message"].(string); ok {
		return s
	}
	return body
}

var contextSegment = regexp.MustCompile(`, "_context_[a-z_]+": ("[^"]*"|\[[^\]]*\]|true|false|null|[0-9.]+)`)

func jsonEqual(t *testing.T, a, b []byte) bool {
	t.Helper()
	var x, y any
	if err := json.Unmarshal(a, &x); err != nil {
		t.Fatalf("%v: %s", err, a)
	}
	if err := json.Unmarshal(b, &y); err != nil {
		t.Fatalf("%v: %s", err, b)
	}
	return reflect.DeepEqual(x, y)
}

// TestGoldenReencode decodes every message Python published and writes it
// again with the Go encoder and the same ids: replies, heartbeats and
// failures come out byte for byte identical; requests and notifications
// too once their context (a Go map, written sorted) is left out, and field
// by field with it.
func TestGoldenReencode(t *testing.T) {
	counts := map[string]int{}
	for i, c := range loadCaptures(t) {
		m, err := decodeBody(c.Headers.Properties["content_type"].(string), nil, []byte(c.Body))
		if err != nil {
			t.Fatalf("capture %d: decode: %v", i, err)
		}
		enveloped := strings.HasPrefix(c.Body, `{"oslo.version": "2.0", "oslo.message": `)
		kind := c.kind(m)
		counts[kind]++
		var got []byte
		var gotBare []byte
		switch kind {
		case "request":
			in, err := decodeRequest(m)
			if err != nil {
				t.Fatal(err)
			}
			var call *callInfo
			if in.msgID != "" {
				call = &callInfo{msgID: in.msgID, replyQ: in.replyQ, monitor: in.monitor}
			}
			ctx := in.req.Context
			delete(ctx, "client_timeout")
			if got, err = encodeRequest(&in.req, call, in.uniqueID); err != nil {
				t.Fatal(err)
			}
			bare := in.req
			bare.Context = nil
			gotBare, _ = encodeRequest(&bare, call, in.uniqueID)
		case "reply":
			r, err := decodeReply(m)
			if err != nil {
				t.Fatal(err)
			}
			var rep *driver.Reply
			if r.ending || r.result != nil || r.failure != nil {
				rep = &driver.Reply{Result: r.result, Failure: r.failure}
			}
			if got, err = encodeReply(rep, r.ending, r.msgID, m.str("_unique_id")); err != nil {
				t.Fatal(err)
			}
			gotBare = got
		case "notification":
			n, uid, err := decodeNotification(m)
			if err != nil {
				t.Fatal(err)
			}
			delete(n.Context, "client_timeout")
			if got, err = encodeNotification(n, enveloped, uid); err != nil {
				t.Fatal(err)
			}
			n.Context = nil
			gotBare, _ = encodeNotification(n, enveloped, uid)
		default:
			t.Fatalf("capture %d: unknown message %s", i, c.Body)
		}
		// Field by field, with the context.
		if !jsonEqual(t, []byte(innerOf(t, string(got))), []byte(innerOf(t, c.Body))) {
			t.Errorf("capture %d (%s): fields differ\n got %s\nwant %s", i, kind, innerOf(t, string(got)), innerOf(t, c.Body))
		}
		// Byte for byte without the context.
		wantBare := contextSegment.ReplaceAllString(innerOf(t, c.Body), "")
		if g := innerOf(t, string(gotBare)); g != wantBare {
			t.Errorf("capture %d (%s): bytes differ\n got %s\nwant %s", i, kind, g, wantBare)
		}
		if enveloped {
			want := contextSegment.ReplaceAllString(c.Body, "")
			_ = want // the outer envelope is checked through the inner string and its prefix
			if !strings.HasPrefix(string(got), `{"oslo.version": "2.0", "oslo.message": "`) {
				t.Errorf("capture %d: envelope %q", i, got[:40])
			}
		}
	}
	for _, k := range []string{"request", "reply", "notification"} {
		if counts[k] == 0 {
			t.Errorf("no %s in the captures", k)
		}
	}
}

// TestGoldenDecodeFields checks what a Go server and listener see of the
// captured Python messages.
func TestGoldenDecodeFields(t *testing.T) {
	caps := loadCaptures(t)
	m, err := decodeBody("application/json", nil, []byte(caps[0].Body))
	if err != nil {
		t.Fatal(err)
	}
	in, err := decodeRequest(m)
	if err != nil {
		t.Fatal(err)
	}
	if in.req.Method != "echo" || string(in.req.Args) != `{"x": [1, "a", null]}` || in.msgID != "d7f04e2d01ec4b7a8949f3830b5af6e5" || in.replyQ != "reply_58765fd076554515bd711494d24f38c3" || in.monitor != 0 {
		t.Fatalf("request %+v", in)
	}
	keys := make([]string, 0)
	for k := range in.req.Context {
		keys = append(keys, k)
	}
	if len(keys) != 5 || in.req.Context["client_timeout"] != nil || in.req.Context["user_id"] != "u1" || in.req.Context["is_admin"] != true {
		t.Fatalf("context %v", in.req.Context)
	}
	var sawMonitor, sawFailure, sawHeartbeat, sawNS bool
	for _, c := range caps {
		m, _ := decodeBody("application/json", nil, []byte(c.Body))
		switch c.kind(m) {
		case "request":
			in, _ := decodeRequest(m)
			if in.monitor == 2*time.Second {
				sawMonitor = true
				if in.req.Context["client_timeout"] != float64(2) {
					t.Errorf("client_timeout %v", in.req.Context["client_timeout"])
				}
			}
			if in.req.Namespace == "ns1" && in.req.Version != "" {
				sawNS = true
			}
		case "reply":
			r, _ := decodeReply(m)
			if r.failure != nil && r.failure.Class == "ValueError" {
				sawFailure = true
				if r.failure.Module != "builtins" || r.failure.Message != "('bad value', 42)" || !reflect.DeepEqual(r.failure.Args, []any{"bad value", float64(42)}) || len(r.failure.Traceback) == 0 {
					t.Errorf("failure %+v", r.failure)
				}
			}
			if !r.ending && r.result == nil && r.failure == nil {
				sawHeartbeat = true
			}
		}
	}
	if !sawMonitor || !sawFailure || !sawHeartbeat || !sawNS {
		t.Fatalf("monitor %v failure %v heartbeat %v namespace %v", sawMonitor, sawFailure, sawHeartbeat, sawNS)
	}
}

// TestGoldenProperties publishes every kind of message with the driver on
// the broker, reads each back with a raw consumer, and compares its AMQP
// properties with those Python set in the captures.
func TestGoldenProperties(t *testing.T) {
	caps := loadCaptures(t)
	want := func(pred func(c capture, m message) bool) map[string]any {
		for _, c := range caps {
			m, _ := decodeBody("application/json", nil, []byte(c.Body))
			if pred(c, m) {
				return c.Headers.Properties
			}
		}
		t.Fatal("no such capture")
		return nil
	}
	callProps := want(func(c capture, m message) bool { return c.kind(m) == "request" && m["_msg_id"] != nil })
	castProps := want(func(c capture, m message) bool { return c.kind(m) == "request" && m["_msg_id"] == nil })
	replyProps := want(func(c capture, m message) bool { return c.kind(m) == "reply" })
	notifyProps := want(func(c capture, m message) bool { return c.kind(m) == "notification" })

	d := openTest(t, nil)
	conn := amqpConn(t)
	ch, err := conn.Channel()
	if err != nil {
		t.Fatal(err)
	}
	topic := uniqueTopic(t)
	exchange := "oslogo_golden"
	if err := ch.ExchangeDeclare(exchange, "topic", false, false, false, false, nil); err != nil {
		t.Fatal(err)
	}
	q, err := ch.QueueDeclare("", false, true, true, false, nil)
	if err != nil {
		t.Fatal(err)
	}
	for _, key := range []string{topic, topic + ".info"} {
		if err := ch.QueueBind(q.Name, key, exchange, false, nil); err != nil {
			t.Fatal(err)
		}
	}
	dels, err := ch.Consume(q.Name, "", true, true, false, false, nil)
	if err != nil {
		t.Fatal(err)
	}
	next := func() amqp.Delivery {
		select {
		case dl := <-dels:
			return dl
		case <-time.After(10 * time.Second):
			t.Fatal("no message")
		}
		return amqp.Delivery{}
	}
	check := func(name string, dl amqp.Delivery, want map[string]any) {
		t.Helper()
		if dl.ContentType != want["content_type"] || dl.ContentEncoding != want["content_encoding"] ||
			float64(dl.DeliveryMode) != want["delivery_mode"] || float64(dl.Priority) != want["priority"] {
			t.Errorf("%s: properties %q %q %d %d, want %v", name, dl.ContentType, dl.ContentEncoding, dl.DeliveryMode, dl.Priority, want)
		}
		// Python sends an empty headers table; amqp091-go leaves an empty
		// table out, which kombu reads as the same {} (docs/RABBIT.md).
		if len(dl.Headers) != 0 {
			t.Errorf("%s: headers %v, want {}", name, dl.Headers)
		}
		_, wantExp := want["expiration"]
		if (dl.Expiration != "") != wantExp {
			t.Errorf("%s: expiration %q, capture has %v", name, dl.Expiration, want["expiration"])
		}
		if dl.ReplyTo != "" || dl.CorrelationId != "" || dl.MessageId != "" || !dl.Timestamp.IsZero() || dl.Type != "" || dl.AppId != "" || dl.UserId != "" {
			t.Errorf("%s: unexpected property set: %+v", name, dl)
		}
	}
	ctx := ctxT(t, 90*time.Second)
	target := driver.Target{Exchange: exchange, Topic: topic}
	callDone := make(chan error, 1)
	go func() {
		_, err := d.Call(ctx, target, &driver.Request{Method: "m", Context: map[string]any{"a": 1}}, driver.SendOptions{Timeout: 60 * time.Second})
		callDone <- err
	}()
	dl := next()
	check("call", dl, callProps)
	if dl.Expiration != "60000" {
		t.Errorf("call expiration %q, want 60000", dl.Expiration)
	}
	// Answer it through the driver's reply path, as a server would.
	m, err := decodeBody(dl.ContentType, dl.Headers, dl.Body)
	if err != nil {
		t.Fatal(err)
	}
	in, _ := decodeRequest(m)
	if in.replyQ != replyName(t, d) || len(in.msgID) != 32 || len(in.uniqueID) != 32 {
		t.Fatalf("call ids %+v", in)
	}
	// A raw consumer on a copy of the reply: bind nothing, read the reply
	// properties through a second driver's reply queue instead.
	d2 := openTest(t, nil)
	if err := d2.waiter.ready(ctx, -1); err != nil {
		t.Fatal(err)
	}
	rq, err := ch.QueueDeclarePassive(replyName(t, d2), false, false, false, false, d.cfg.transientQueueArgs())
	if err != nil {
		t.Fatalf("reply queue flags differ from oslo's: %v", err)
	}
	_ = rq
	d2.waiter.close()
	if err := d.sendReply(ctx, replyName(t, d2), in.msgID, &driver.Reply{Result: json.RawMessage(`1`)}, true); err != nil {
		t.Fatal(err)
	}
	got, ok, err := ch.Get(replyName(t, d2), true)
	for i := 0; err == nil && !ok && i < 100; i++ {
		time.Sleep(50 * time.Millisecond)
		got, ok, err = ch.Get(replyName(t, d2), true)
	}
	if !ok || err != nil {
		t.Fatalf("no reply in the queue (%v)", err)
	}
	check("reply", amqp.Delivery{ContentType: got.ContentType, ContentEncoding: got.ContentEncoding, DeliveryMode: got.DeliveryMode, Priority: got.Priority, Headers: got.Headers, Expiration: got.Expiration}, replyProps)
	if err := d.sendReply(ctx, replyName(t, d), in.msgID, &driver.Reply{Result: json.RawMessage(`1`)}, true); err != nil {
		t.Fatal(err)
	}
	if err := <-callDone; err != nil {
		t.Fatalf("call: %v", err)
	}
	if err := d.Cast(ctx, target, &driver.Request{Method: "m"}, driver.SendOptions{}); err != nil {
		t.Fatal(err)
	}
	check("cast", next(), castProps)
	n := &driver.Notification{MessageID: NewMessageID(), Priority: "INFO", Payload: json.RawMessage(`{}`), Timestamp: PythonTimestamp(time.Now())}
	if err := d.Notify(ctx, target, n, driver.NotifyOptions{Envelope: true}); err != nil {
		t.Fatal(err)
	}
	check("notification", next(), notifyProps)
	_, _ = ch.QueueDelete(topic+".info", false, false, false)
	_, _ = ch.QueueDelete(replyName(t, d2), false, false, false)
}

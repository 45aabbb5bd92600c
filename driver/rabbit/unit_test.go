package rabbit

import (
	"encoding/json"
	"net/url"
	"reflect"
	"strings"
	"testing"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/oslogo/oslogo/driver"
)

func TestParseURL(t *testing.T) {
	guest := func(addr string) Host { return Host{"guest", "guest", addr} }
	tests := []struct {
		raw   string
		hosts []Host
		vhost string
		query map[string]string
		err   string
	}{
		{raw: "rabbit://", hosts: []Host{guest("localhost:5672")}, vhost: "/"},
		{raw: "rabbit://h/", hosts: []Host{guest("h:5672")}, vhost: "/"},
		{raw: "rabbit://h", hosts: []Host{guest("h:5672")}, vhost: "/"},
		{raw: "rabbit://h//", hosts: []Host{guest("h:5672")}, vhost: "/"},
		{raw: "rabbit://h/my%2Fvhost", hosts: []Host{guest("h:5672")}, vhost: "my/vhost"},
		{raw: "kombu://u:p@h:5673/v", hosts: []Host{{"u", "p", "h:5673"}}, vhost: "v"},
		{raw: "rabbit+kombu://h/", hosts: []Host{guest("h:5672")}, vhost: "/"},
		{
			raw:   "rabbit://u:p%40ss@h1:5672,u2:p2@h2:5673/my%2Fvhost",
			hosts: []Host{{"u", "p@ss", "h1:5672"}, {"u2", "p2", "h2:5673"}},
			vhost: "my/vhost",
		},
		{raw: "rabbit://h1,h2:5673/", hosts: []Host{guest("h1:5672"), guest("h2:5673")}, vhost: "/"},
		{raw: "rabbit://[::1]:5671/", hosts: []Host{guest("[::1]:5671")}, vhost: "/"},
		{raw: "rabbit://h/?ssl=1&heartbeat_timeout_threshold=10", hosts: []Host{guest("h:5672")}, vhost: "/", query: map[string]string{"ssl": "1", "heartbeat_timeout_threshold": "10"}},
		{raw: "rabbit://h:notaport/", err: "invalid port"},
		{raw: "amqp://h/", err: "scheme"},
		{raw: "rabbit:h", err: "://"},
	}
	for _, tt := range tests {
		t.Run(tt.raw, func(t *testing.T) {
			tu, err := ParseURL(tt.raw)
			if tt.err != "" {
				if err == nil || !strings.Contains(err.Error(), tt.err) {
					t.Fatalf("want error containing %q, got %v", tt.err, err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(tu.Hosts, tt.hosts) || tu.VirtualHost != tt.vhost {
				t.Fatalf("got %+v %q", tu.Hosts, tu.VirtualHost)
			}
			if tt.query == nil {
				tt.query = map[string]string{}
			}
			if !reflect.DeepEqual(tu.Query, tt.query) {
				t.Fatalf("query %v", tu.Query)
			}
			// The same URL through net/url (as the messaging layer passes it).
			if u, err := url.Parse(tt.raw); err == nil {
				tu2, err := fromURL(u)
				if err != nil {
					t.Fatal(err)
				}
				if !reflect.DeepEqual(tu2.Hosts, tt.hosts) || tu2.VirtualHost != tt.vhost {
					t.Fatalf("via url.URL: got %+v %q", tu2.Hosts, tu2.VirtualHost)
				}
			}
		})
	}
}

func TestOptions(t *testing.T) {
	c, err := ParseConfig(nil)
	if err != nil || !reflect.DeepEqual(c, DefaultConfig()) {
		t.Fatalf("defaults: %v", err)
	}
	c, err = ParseConfig(map[string]string{
		"amqp_durable_queues": "True", "rabbit_quorum_queue": "yes", "rabbit_quorum_delivery_limit": "5",
		"rabbit_quorum_max_memory_length": "10", "rabbit_quorum_max_memory_bytes": "1024",
		"rabbit_transient_queues_ttl": "60", "kombu_reconnect_delay": "0.5", "kombu_reconnect_timeout": "7",
		"rabbit_use_ssl": "true", "heartbeat_timeout_threshold": "0",
	})
	if err != nil {
		t.Fatal(err)
	}
	if !c.DurableQueues || !c.QuorumQueue || c.QuorumDelivery != 5 || c.TransientTTL != 60 || c.ReconnectDelay != 500*time.Millisecond || c.MissingConsumer != 7*time.Second || c.SSL {
		t.Fatalf("%+v", c)
	}
	if got := c.topicQueueArgs(); !reflect.DeepEqual(got, amqp.Table{"x-queue-type": "quorum", "x-delivery-limit": int32(5), "x-max-in-memory-length": int32(10), "x-max-in-memory-bytes": int32(1024)}) {
		t.Fatalf("topic args %v", got)
	}
	if got := c.transientQueueArgs(); !reflect.DeepEqual(got, amqp.Table{"x-expires": int32(60000)}) {
		t.Fatalf("transient args %v", got)
	}
	if !c.durable() {
		t.Fatal("quorum queues are durable")
	}
	for _, bad := range []map[string]string{
		{"no_such_option": "1"},
		{"rabbit_ha_queues": "true", "rabbit_quorum_queue": "true"},
		{"rabbit_transient_queues_ttl": "-1"},
		{"rabbit_stream_fanout": "true", "rabbit_transient_quorum_queue": "true"},
		{"rabbit_stream_fanout": "true", "rabbit_qos_prefetch_count": "10"},
		{"rabbit_ha_queues": "true", "rabbit_transient_quorum_queue": "true"},
		{"rpc_conn_pool_size": "1", "conn_pool_min_size": "2"},
		{"kombu_reconnect_splay": "-1"},
		{"rabbit_retry_interval": "0"},
		{"kombu_failover_strategy": "random"},
		{"rabbit_login_method": "CRAM"},
		{"ssl": "maybe"},
		{"kombu_reconnect_delay": "5"},
	} {
		if _, err := ParseConfig(bad); err == nil {
			t.Errorf("%v: want an error", bad)
		}
	}
	// Unknown URL query keys are an error when the driver opens, as oslo's
	// NoSuchOptError.
	if _, err := OpenString("rabbit://h/?bogus=1", driver.Options{}); err == nil {
		t.Fatal("unknown query key accepted")
	}
	d, err := OpenString("rabbit://h/?rabbit_ha_queues=1", driver.Options{Config: map[string]string{"rabbit_ha_queues": "false"}})
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	if !d.Config().HAQueues {
		t.Fatal("the URL query must override the config")
	}
	if got := d.cfg.transientQueueArgs(); !reflect.DeepEqual(got, amqp.Table{"x-ha-policy": "all", "x-expires": int32(1800000)}) {
		t.Fatalf("%v", got)
	}
}

func TestBackoff(t *testing.T) {
	c := DefaultConfig()
	for n, want := range map[int]time.Duration{1: 2 * time.Second, 2: 4 * time.Second, 15: 30 * time.Second, 100: 31 * time.Second} {
		if got := c.backoff(n); got != want {
			t.Errorf("backoff(%d) = %v, want %v", n, got, want)
		}
	}
}

func TestPyJSON(t *testing.T) {
	tests := []struct{ in, want string }{
		{`{"a":1,"b":[1,2,{"c":null}]}`, `{"a": 1, "b": [1, 2, {"c": null}]}`},
		{`"h\u00e9llo \ud83d\ude00"`, `"h\u00e9llo \ud83d\ude00"`},
		{`"héllo 😀"`, `"h\u00e9llo \ud83d\ude00"`},
		{`"\u003c\u0026\u003e \/"`, `"<&> /"`},
		{`"a\"b\\c\n\t\u0001\u007f"`, `"a\"b\\c\n\t\u0001\u007f"`},
		{`{"k": "v" , "x" : [ ] }`, `{"k": "v", "x": []}`},
		{`{"s": "a,b:c"}`, `{"s": "a,b:c"}`},
	}
	for _, tt := range tests {
		got, err := appendPyJSON(nil, []byte(tt.in))
		if err != nil || string(got) != tt.want {
			t.Errorf("%s: got %s (%v), want %s", tt.in, got, err, tt.want)
		}
	}
	if _, err := appendPyJSON(nil, []byte(`{"a":`)); err == nil {
		t.Error("invalid JSON accepted")
	}
	if got := PythonTimestamp(time.Date(2026, 11, 22, 4, 59, 27, 0, time.UTC)); got != "2026-11-22 04:59:27" {
		t.Error(got)
	}
	if got := PythonTimestamp(time.Date(2026, 11, 22, 4, 59, 27, 565233000, time.UTC)); got != "2026-11-22 04:59:27.565233" {
		t.Error(got)
	}
	if id := NewMessageID(); len(id) != 36 || id[14] != '4' {
		t.Error(id)
	}
}

func TestDecodeEdgeCases(t *testing.T) {
	for name, tc := range map[string]struct {
		ctype string
		body  string
		ok    bool
	}{
		"legacy 1.0 dict":     {"application/json", `{"method": "m", "args": {}}`, true},
		"2.0.0":               {"application/json", `{"oslo.version": "2.0.0", "oslo.message": "{\"method\": \"m\"}"}`, true},
		"2.1 refused":         {"application/json", `{"oslo.version": "2.1", "oslo.message": "{\"method\": \"m\"}"}`, false},
		"3.0 refused":         {"application/json", `{"oslo.version": "3.0", "oslo.message": "{}"}`, false},
		"no content type":     {"", `{"method": "m"}`, false},
		"not an object":       {"application/json", `[1]`, false},
		"NaN tolerated":       {"application/json", `{"method": "m", "args": {"x": NaN, "s": "NaN"}}`, true},
		"message not string":  {"application/json", `{"oslo.version": "2.0", "oslo.message": {}}`, false},
		"truncated":           {"application/json", `{"oslo.version": "2.0", "oslo.mes`, false},
		"inner not an object": {"application/json", `{"oslo.version": "2.0", "oslo.message": "3"}`, false},
	} {
		m, err := decodeBody(tc.ctype, nil, []byte(tc.body))
		if err == nil {
			_, err = decodeRequest(m)
		}
		if (err == nil) != tc.ok {
			t.Errorf("%s: err %v", name, err)
		}
	}
	// Compressed bodies, as kombu_compression=gzip writes them (zlib).
	body, headers, err := compressBody("gzip", []byte(`{"method": "m"}`))
	if err != nil {
		t.Fatal(err)
	}
	if m, err := decodeBody(contentType, headers, body); err != nil || m.str("method") != "m" {
		t.Fatalf("zlib: %v", err)
	}
	// A reply failure given as an object is accepted too.
	m, _ := decodeEnvelope([]byte(`{"_msg_id": "x", "failure": {"class": "E", "module": "m", "message": "boom", "tb": [], "args": [], "kwargs": {}}, "ending": true}`))
	if r, err := decodeReply(m); err != nil || r.failure.Message != "boom" {
		t.Fatalf("%+v %v", r, err)
	}
	if uniqueIDOf([]byte(`{"oslo.message": "{\"_unique_id\": \"0123456789abcdef0123456789abcdef\"}"}`)) != "0123456789abcdef0123456789abcdef" {
		t.Fatal("uniqueIDOf")
	}
}

func TestRequestEncoding(t *testing.T) {
	req := &driver.Request{Method: "m", Args: json.RawMessage(`{"x":"é"}`), Namespace: "ns", Version: "2.1", Context: map[string]any{"b": 1, "a": []string{"r"}}}
	body, err := encodeRequest(req, &callInfo{msgID: "id", replyQ: "reply_q", monitor: 2500 * time.Millisecond}, "uid")
	if err != nil {
		t.Fatal(err)
	}
	want := `{"oslo.version": "2.0", "oslo.message": "{\"method\": \"m\", \"args\": {\"x\": \"\\u00e9\"}, \"namespace\": \"ns\", \"version\": \"2.1\", \"_msg_id\": \"id\", \"_reply_q\": \"reply_q\", \"_timeout\": 2.5, \"_unique_id\": \"uid\", \"_context_a\": [\"r\"], \"_context_b\": 1}"}`
	if string(body) != want {
		t.Fatalf("got  %s\nwant %s", body, want)
	}
	if _, err := encodeRequest(&driver.Request{Method: "m", Args: json.RawMessage(`[1]`)}, nil, "u"); err == nil {
		t.Fatal("non-object args accepted")
	}
	dd := newDedup()
	for i := range 17 {
		dd.add(string(rune('a' + i)))
	}
	if dd.seen("a") || !dd.seen("b") || !dd.seen("q") {
		t.Fatal("dedup keeps the last 16")
	}
}

// FuzzDecodeEnvelope feeds arbitrary bodies to the decoders a listener
// runs: they must return an error or a value, never panic, and anything
// decoded must survive a re-encode.
func FuzzDecodeEnvelope(f *testing.F) {
	f.Add([]byte(`{"oslo.version": "2.0", "oslo.message": "{\"method\": \"echo\", \"args\": {\"x\": [1, \"a\", null]}, \"_msg_id\": \"d7\", \"_reply_q\": \"reply_5\", \"_timeout\": 2, \"_unique_id\": \"01\", \"_context_user_id\": \"u1\"}"}`))
	f.Add([]byte(`{"result": null, "failure": "{\"class\": \"E\", \"module\": \"m\", \"message\": \"x\", \"tb\": [], \"args\": [], \"kwargs\": {}}", "ending": true, "_msg_id": "a"}`))
	f.Add([]byte(`{"message_id": "m", "priority": "INFO", "payload": NaN, "_context_x": 1}`))
	f.Add([]byte(`{"oslo.version": "2.1", "oslo.message": ""}`))
	f.Fuzz(func(t *testing.T, body []byte) {
		m, err := decodeBody(contentType, nil, body)
		if err != nil {
			return
		}
		if in, err := decodeRequest(m); err == nil {
			if _, err := encodeRequest(&in.req, &callInfo{msgID: in.msgID, replyQ: in.replyQ, monitor: in.monitor}, in.uniqueID); err != nil {
				t.Fatalf("decoded request does not re-encode: %v", err)
			}
		}
		if r, err := decodeReply(m); err == nil {
			if _, err := encodeReply(&driver.Reply{Result: r.result, Failure: r.failure}, r.ending, r.msgID, "u"); err != nil {
				t.Fatalf("decoded reply does not re-encode: %v", err)
			}
		}
		if n, uid, err := decodeNotification(m); err == nil {
			if _, err := encodeNotification(n, true, uid); err != nil {
				t.Fatalf("decoded notification does not re-encode: %v", err)
			}
		}
	})
}

// TestOpenRawURL: with driver.Options.RawURL set, per-host credentials come
// from the raw text, so a password holding ',' (percent-encoded) survives;
// without it, the url.URL fallback applies.
func TestOpenRawURL(t *testing.T) {
	raw := "rabbit://u1:p%2Cw%40x@h1:5672,u2:p2@h2:5673/vh"
	u, err := url.Parse(raw)
	if err != nil {
		t.Fatal(err)
	}
	hostsOf := func(d *Driver) map[string]Host {
		m := map[string]Host{}
		for _, h := range d.dialer.hosts {
			m[h.Addr] = h
		}
		return m
	}
	d, err := OpenURL(u, driver.Options{RawURL: raw})
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	want := map[string]Host{"h1:5672": {"u1", "p,w@x", "h1:5672"}, "h2:5673": {"u2", "p2", "h2:5673"}}
	if got := hostsOf(d); !reflect.DeepEqual(got, want) {
		t.Fatalf("with RawURL: got %+v, want %+v", got, want)
	}
	// The fallback cannot tell the decoded ',' from a host separator,
	// which is why RawURL exists.
	if d2, err := OpenURL(u, driver.Options{}); err == nil {
		defer d2.Close()
		if got := hostsOf(d2); reflect.DeepEqual(got, want) {
			t.Fatalf("fallback unexpectedly exact: %+v", got)
		}
	}
	// Plain credentials are the same either way.
	plain := "rabbit://a:b@h1,c:d@h2:5673/"
	pu, _ := url.Parse(plain)
	d3, err := OpenURL(pu, driver.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer d3.Close()
	d4, err := OpenURL(pu, driver.Options{RawURL: plain})
	if err != nil {
		t.Fatal(err)
	}
	defer d4.Close()
	if !reflect.DeepEqual(hostsOf(d3), hostsOf(d4)) {
		t.Fatalf("fallback %+v != raw %+v", hostsOf(d3), hostsOf(d4))
	}
	if _, err := OpenURL(u, driver.Options{RawURL: "rabbit://h:bad/"}); err == nil {
		t.Fatal("a bad RawURL must be an error")
	}
}

// The fast path of decodeEnvelope must decide exactly as the general one:
// every body it takes decodes to the same message, and bodies that are
// not one well-formed literal fall through to the general path's error.
func TestPlainInnerAgreesWithGeneralPath(t *testing.T) {
	bodies := []string{
		envelopeHead + `{\"method\": \"m\", \"args\": {}}"}`,
		envelopeHead + `{\"method\": \"a\\\\\"b\", \"args\": {}}"}`,
		envelopeHead + `{\"method\": \"\u00e9\", \"args\": {}}"}`,
		envelopeHead + `{\"method\": \"m\"}", "x": "y"}`,
		envelopeHead + `{\"method\": \"m\"}\"}`,
		envelopeHead + `{\"method\": \"m\"}\\"}`,
		envelopeHead + `{\"method\": "m"}"}`,
		envelopeHead + "{\\\"method\\\": \\\"\x01\\\"}\"}",
		envelopeHead + `{\"method\": \"m\", \"args\": [}"}`,
		envelopeHead + `\ud800"}`,
		envelopeHead + `"}`,
	}
	for _, b := range bodies {
		got, gotErr := decodeEnvelope([]byte(b))
		var want message
		var wantErr error
		if inner, ok := generalInner(t, []byte(b)); ok {
			want, wantErr = decodeInner(inner)
		} else {
			wantErr = errMalformed
		}
		if (gotErr == nil) != (wantErr == nil) {
			t.Errorf("%s: error %v, the general path says %v", b, gotErr, wantErr)
			continue
		}
		if len(got) != len(want) {
			t.Errorf("%s: %d keys, the general path has %d", b, len(got), len(want))
		}
		for k, v := range want {
			if string(got[k]) != string(v) {
				t.Errorf("%s: %s = %s, the general path has %s", b, k, got[k], v)
			}
		}
	}
}

// generalInner reads oslo.message the way the general path does: the whole
// body validated by encoding/json first.
func generalInner(t *testing.T, body []byte) ([]byte, bool) {
	t.Helper()
	var env map[string]json.RawMessage
	if err := json.Unmarshal(body, &env); err != nil {
		return nil, false
	}
	return rawStringBytes(env["oslo.message"])
}

package broker

import (
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"
)

// TestMemoryWatermarkAtRuntime: PUT /api/nodes/{node}/memory-high-watermark
// (oslogo's extension) sets the watermark while the broker runs. A fraction
// below the process's own memory raises the alarm at once, as rabbitmqctl
// set_vm_memory_high_watermark 0.0001 does on RabbitMQ: a publisher gets
// connection.blocked and is not read from; setting it back clears the alarm
// and the blocked publish goes through.
func TestMemoryWatermarkAtRuntime(t *testing.T) {
	s, amqpURL, base := startMgmt(t)
	c := mgmtClient{t, base}
	path := "/api/nodes/" + url.PathEscape(s.NodeName()) + "/memory-high-watermark"

	for _, tc := range []struct {
		user, body string
		want       int
	}{
		{"mgr", `{"fraction":0.0001}`, http.StatusUnauthorized},
		{"mon", `{"fraction":0.0001}`, http.StatusUnauthorized},
		{"guest", `{"fraction":1.5}`, http.StatusBadRequest},
		{"guest", `{"fraction":-0.1}`, http.StatusBadRequest},
		{"guest", `{"bytes":-1}`, http.StatusBadRequest},
		{"guest", `{}`, http.StatusBadRequest},
		{"guest", `{"bytes":1,"fraction":0.1}`, http.StatusBadRequest},
		{"guest", `not json`, http.StatusBadRequest},
	} {
		if code, _, b := c.do("PUT", path, tc.user, tc.body); code != tc.want {
			t.Errorf("PUT %s as %s: %d %s, want %d", tc.body, tc.user, code, b, tc.want)
		}
	}
	if code, _, _ := c.do("PUT", "/api/nodes/nosuch@node/memory-high-watermark", "guest", `{"bytes":1}`); code != http.StatusNotFound {
		t.Errorf("unknown node: %d, want 404", code)
	}
	if s.alarm.Load() || s.highWatermark() != DefaultOptions().MemoryHighWatermark {
		t.Fatalf("refused requests changed the watermark: %d, alarm %v", s.highWatermark(), s.alarm.Load())
	}

	conn := dial(t, amqpURL)
	blocked := conn.NotifyBlocked(make(chan amqp.Blocking, 4))
	ch := openCh(t, conn)
	if _, err := ch.QueueDeclare("wm", false, false, false, false, nil); err != nil {
		t.Fatal(err)
	}

	if code, _, b := c.do("PUT", path, "guest", `{"fraction":0.0001}`); code != http.StatusNoContent {
		t.Fatalf("PUT fraction: %d %s", code, b)
	}
	var wi WatermarkInfo
	c.getJSON(path, &wi)
	total, err := totalMemory()
	if err != nil {
		t.Fatal(err)
	}
	if want := int64(0.0001 * float64(total)); wi.Bytes != want || wi.Fraction == nil || *wi.Fraction != 0.0001 || !wi.Alarm {
		t.Fatalf("after 0.0001: %+v, want %d bytes and the alarm (process memory %d)", wi, want, processMemory())
	}
	var nodes []NodeInfo
	c.getJSON("/api/nodes", &nodes)
	if !nodes[0].MemAlarm || nodes[0].MemLimit != wi.Bytes {
		t.Errorf("nodes: %+v", nodes[0])
	}

	published := make(chan error, 1)
	go func() { published <- ch.Publish("", "wm", false, false, amqp.Publishing{Body: []byte("x")}) }()
	select {
	case b := <-blocked:
		if !b.Active || b.Reason != "low on memory" {
			t.Fatalf("blocking: %+v", b)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("no connection.blocked after the watermark was lowered")
	}
	time.Sleep(100 * time.Millisecond)
	if n := queueLen(t, c, "wm"); n != 0 {
		t.Fatalf("a message was taken in under the alarm: %d", n)
	}

	if code, _, b := c.do("PUT", path, "guest", `{"fraction":0.4}`); code != http.StatusNoContent {
		t.Fatalf("PUT 0.4: %d %s", code, b)
	}
	select {
	case b := <-blocked:
		if b.Active {
			t.Fatalf("unblocking: %+v", b)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("no connection.unblocked after the watermark was raised")
	}
	if err := <-published; err != nil {
		t.Fatal(err)
	}
	eventually(t, "the blocked message queued", func() (bool, string) {
		n := queueLen(t, c, "wm")
		return n == 1, fmt.Sprint(n)
	})

	// Bytes: counted memory only, as Options.MemoryHighWatermark.
	if err := s.SetMemoryHighWatermark(1); err != nil {
		t.Fatal(err)
	}
	if !s.alarm.Load() {
		t.Error("1 byte with a message queued: no alarm")
	}
	if code, _, b := c.do("PUT", path, "guest", `{"bytes":0}`); code != http.StatusNoContent || s.alarm.Load() {
		t.Errorf("0 bytes (off): %d %s, alarm %v", code, b, s.alarm.Load())
	}
	wi = WatermarkInfo{}
	c.getJSON(path, &wi)
	if wi.Bytes != 0 || wi.Fraction != nil {
		t.Errorf("after bytes 0: %+v", wi)
	}
}

func queueLen(t *testing.T, c mgmtClient, name string) int {
	var q QueueInfo
	c.getJSON("/api/queues/%2F/"+name, &q)
	return q.Messages
}

// TestMemoryWatermarkSamplerStops: the sampler started by a relative
// watermark is owned by the server and ends with Shutdown (goleak in
// TestMain checks it).
func TestMemoryWatermarkSamplerStops(t *testing.T) {
	s, _ := startBroker(t, nil)
	if _, err := s.SetMemoryHighWatermarkRelative(0.5); err != nil {
		t.Fatal(err)
	}
	if !s.wm.sampling.Load() || s.alarm.Load() {
		t.Fatalf("sampling %v alarm %v", s.wm.sampling.Load(), s.alarm.Load())
	}
	if _, err := s.SetMemoryHighWatermarkRelative(2); err == nil || !strings.Contains(err.Error(), "between 0 and 1") {
		t.Errorf("fraction 2: %v", err)
	}
}

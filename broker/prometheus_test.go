package broker

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/oslogo/oslogo/messaging"
)

// scrape GETs url (as user when not "") and parses the text exposition.
func scrape(t *testing.T, url, user string) map[string]*dto.MetricFamily {
	t.Helper()
	req, err := http.NewRequest("GET", url, nil)
	if err != nil {
		t.Fatal(err)
	}
	if user != "" {
		req.SetBasicAuth(user, mgmtPasswords[user])
	}
	resp, err := mgmtHTTPClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(resp.Body)
		t.Fatalf("GET %s: %d %s", url, resp.StatusCode, b)
	}
	if ct := resp.Header.Get("Content-Type"); !strings.HasPrefix(ct, "text/plain") {
		t.Fatalf("GET %s: content type %q", url, ct)
	}
	p := expfmt.NewTextParser(model.UTF8Validation)
	mfs, err := p.TextToMetricFamilies(resp.Body)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	return mfs
}

// metricValue returns the value of the sample of family name whose labels
// include want (name=value pairs), and whether there is one.
func metricValue(mfs map[string]*dto.MetricFamily, name string, want ...string) (float64, bool) {
	mf := mfs[name]
	if mf == nil {
		return 0, false
	}
next:
	for _, m := range mf.GetMetric() {
		for i := 0; i+1 < len(want); i += 2 {
			found := false
			for _, lp := range m.GetLabel() {
				if lp.GetName() == want[i] && lp.GetValue() == want[i+1] {
					found = true
				}
			}
			if !found {
				continue next
			}
		}
		switch {
		case m.Counter != nil:
			return m.Counter.GetValue(), true
		case m.Gauge != nil:
			return m.Gauge.GetValue(), true
		case m.Untyped != nil:
			return m.Untyped.GetValue(), true
		}
	}
	return 0, false
}

// TestPrometheusMetrics: a client publishes 137 messages and consumes
// 100; /metrics (on the management listener, monitoring users only, and
// on the unauthenticated Prometheus listener) and /metrics/per-object
// report those counts under rabbitmq_prometheus's names, and the oslo
// metrics report an RPC topic with its server.
func TestPrometheusMetrics(t *testing.T) {
	s, amqpURL, base := startMgmtWith(t, func(o *Options) { o.PrometheusAddr = "127.0.0.1:0" })
	promBase := "http://" + s.PrometheusAddr().String()

	pc := dial(t, amqpURL)
	pch := openCh(t, pc)
	if _, err := pch.QueueDeclare("pm", false, false, false, false, nil); err != nil {
		t.Fatal(err)
	}
	if err := pch.Confirm(false); err != nil {
		t.Fatal(err)
	}
	var dcs []*amqp.DeferredConfirmation
	for i := range 137 {
		dc, err := pch.PublishWithDeferredConfirm("", "pm", false, false, amqp.Publishing{Body: []byte(fmt.Sprint(i))})
		if err != nil {
			t.Fatal(err)
		}
		dcs = append(dcs, dc)
	}
	for _, dc := range dcs {
		if !dc.Wait() {
			t.Fatal("nacked")
		}
	}
	cc := dial(t, amqpURL)
	cch := openCh(t, cc)
	consumeN(t, cch, "pm", 100)
	// The ack is asynchronous: a synchronous method after it on the same
	// connection is processed after it.
	if _, err := cch.QueueDeclarePassive("pm", false, false, false, false, nil); err != nil {
		t.Fatal(err)
	}

	// An oslo RPC server on topic "compute".
	tr := osloTransport(t, amqpURL)
	ep := messaging.NewEndpoint(messaging.Target{})
	messaging.Handle(ep, "echo", func(_ context.Context, a struct{ X int }) (int, error) { return a.X, nil })
	srv, err := messaging.NewRPCServer(tr, messaging.Target{Topic: "compute", Server: "host1"}, []*messaging.Endpoint{ep})
	if err != nil {
		t.Fatal(err)
	}
	osloStart(t, srv.Start, srv.Stop)

	// Monitoring is required on the management listener.
	c := mgmtClient{t, base}
	if code, _, _ := c.do("GET", "/metrics", "mgr", nil); code != http.StatusUnauthorized {
		t.Errorf("/metrics as a management user: %d, want 401", code)
	}
	for _, src := range []struct{ url, user string }{{base + "/metrics", "mon"}, {promBase + "/metrics", ""}} {
		mfs := scrape(t, src.url, src.user)
		want := map[string]float64{
			"rabbitmq_channel_messages_published_total":          137,
			"rabbitmq_channel_messages_confirmed_total":          137,
			"rabbitmq_channel_messages_delivered_ack_total":      100,
			"rabbitmq_channel_messages_acked_total":              100,
			"rabbitmq_channel_messages_unroutable_dropped_total": 0,
			"rabbitmq_queue_messages_published_total":            137,
			"rabbitmq_queue_messages_ready":                      37,
			"rabbitmq_queue_messages_unacked":                    0,
			"rabbitmq_queue_messages":                            37,
			"rabbitmq_alarms_memory_used_watermark":              0,
			"rabbitmq_resident_memory_limit_bytes":               float64(s.opts.MemoryHighWatermark),
		}
		for name, v := range want {
			if got, ok := metricValue(mfs, name); !ok || got != v {
				t.Errorf("%s: %s = %v (present %v), want %v", src.url, name, got, ok, v)
			}
		}
		// The oslo server's connection(s) and ours.
		for _, name := range []string{"rabbitmq_connections", "rabbitmq_channels", "rabbitmq_connections_opened_total",
			"rabbitmq_queues", "rabbitmq_consumers", "rabbitmq_process_resident_memory_bytes", "rabbitmq_build_info",
			"rabbitmq_identity_info", "rabbitmq_queues_declared_total", "rabbitmq_channels_opened_total"} {
			if v, ok := metricValue(mfs, name); !ok || v < 1 {
				t.Errorf("%s: %s = %v (present %v), want at least 1", src.url, name, v, ok)
			}
		}
		if _, ok := metricValue(mfs, "rabbitmq_build_info", "rabbitmq_version", "3.10.8"); !ok {
			t.Errorf("%s: rabbitmq_build_info without rabbitmq_version 3.10.8: %v", src.url, mfs["rabbitmq_build_info"])
		}
		if v, ok := metricValue(mfs, "oslogo_oslo_rpc_topic_servers", "topic", "compute", "exchange", "openstack"); !ok || v != 1 {
			t.Errorf("%s: oslo servers of compute = %v (present %v), want 1", src.url, v, ok)
		}
		if v, ok := metricValue(mfs, "oslogo_oslo_rpc_topic_no_server", "topic", "compute"); !ok || v != 0 {
			t.Errorf("%s: oslo no_server of compute = %v (present %v)", src.url, v, ok)
		}
	}

	per := scrape(t, promBase+"/metrics/per-object", "")
	if v, ok := metricValue(per, "rabbitmq_queue_messages_ready", "vhost", "/", "queue", "pm"); !ok || v != 37 {
		t.Errorf("per-object ready of pm = %v (present %v), want 37", v, ok)
	}
	if v, ok := metricValue(per, "rabbitmq_queue_messages_published_total", "vhost", "/", "queue", "pm"); !ok || v != 137 {
		t.Errorf("per-object published of pm = %v (present %v), want 137", v, ok)
	}
	var pubChan float64
	for _, m := range per["rabbitmq_channel_messages_published_total"].GetMetric() {
		pubChan = max(pubChan, m.GetCounter().GetValue())
	}
	if pubChan != 137 {
		t.Errorf("per-object: largest channel published_total %v, want 137", pubChan)
	}

	// Counters of /metrics do not go down when the publisher goes.
	if err := pc.Close(); err != nil {
		t.Fatal(err)
	}
	eventually(t, "publisher's connection closed", func() (bool, string) {
		cr := s.Overview().ChurnRates
		return cr.ConnectionClosed >= 1, fmt.Sprint(cr.ConnectionClosed)
	})
	mfs := scrape(t, promBase+"/metrics", "")
	if v, _ := metricValue(mfs, "rabbitmq_channel_messages_published_total"); v != 137 {
		t.Errorf("after close: published_total %v, want 137", v)
	}
	if v, _ := metricValue(mfs, "rabbitmq_connections_closed_total"); v < 1 {
		t.Errorf("after close: connections_closed_total %v", v)
	}
}

// TestPrometheusCollectorConsistent: the collector describes every metric
// it collects (a pedantic registry checks it) on both endpoints' forms,
// and the metrics pass the linter of client_golang's testutil.
func TestPrometheusCollectorConsistent(t *testing.T) {
	s, amqpURL := startBroker(t, nil)
	conn := dial(t, amqpURL)
	ch := openCh(t, conn)
	if _, err := ch.QueueDeclare("x", false, false, false, false, nil); err != nil {
		t.Fatal(err)
	}
	for _, per := range []bool{false, true} {
		reg := prometheus.NewPedanticRegistry()
		reg.MustRegister(s.PrometheusCollector(per))
		if _, err := reg.Gather(); err != nil {
			t.Fatalf("perObject %v: %v", per, err)
		}
		problems, err := testutil.GatherAndLint(reg)
		if err != nil {
			t.Fatal(err)
		}
		for _, p := range problems {
			t.Errorf("perObject %v: lint: %s: %s", per, p.Metric, p.Text)
		}
	}
}

package prommetrics_test

import (
	"context"
	"errors"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"go.uber.org/goleak"

	"github.com/oslogo/oslogo/messaging"
	"github.com/oslogo/oslogo/messaging/prommetrics"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// TestMetricsCountWhatWasSent: over the memory:// driver, 5 good calls,
// 2 calls the server fails, 1 call nobody answers, 3 casts, 2 info and 1
// error notification sent and received: the metrics count exactly these.
func TestMetricsCountWhatWasSent(t *testing.T) {
	reg := prometheus.NewPedanticRegistry()
	m, err := prommetrics.New(reg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	cfg := messaging.DefaultTransportConfig()
	cfg.Observer = m
	cfg.Notifications.Drivers = []string{messaging.NotifyDriverMessagingV2}
	tr, err := messaging.OpenTransport(ctx, "memory://prommetrics", cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer tr.Close()

	casts := make(chan struct{}, 3)
	ep := messaging.NewEndpoint(messaging.Target{})
	messaging.Handle(ep, "echo", func(_ context.Context, a struct{ X int }) (int, error) { return a.X, nil })
	messaging.Handle(ep, "fail", func(context.Context, struct{}) (any, error) { return nil, errors.New("no") })
	messaging.Handle(ep, "poke", func(context.Context, struct{}) (any, error) { casts <- struct{}{}; return nil, nil })
	srv, err := messaging.NewRPCServer(tr, messaging.Target{Topic: "compute", Server: "h1"}, []*messaging.Endpoint{ep})
	if err != nil {
		t.Fatal(err)
	}
	if err := srv.Start(ctx); err != nil {
		t.Fatal(err)
	}
	defer srv.Stop(ctx)

	received := make(chan struct{}, 3)
	h := func(context.Context, *messaging.Notification) messaging.NotificationResult {
		received <- struct{}{}
		return messaging.Handled
	}
	lis, err := messaging.NewNotificationListener(tr, []messaging.Target{{Topic: "notifications"}},
		[]messaging.NotificationEndpoint{{Handlers: map[messaging.Priority]messaging.NotificationHandler{
			messaging.PriorityInfo: h, messaging.PriorityError: h}}})
	if err != nil {
		t.Fatal(err)
	}
	if err := lis.Start(ctx); err != nil {
		t.Fatal(err)
	}
	defer lis.Stop(ctx)

	client := messaging.NewRPCClient(tr, messaging.Target{Topic: "compute"})
	for i := range 5 {
		if n, err := messaging.Call[int](ctx, client, "echo", map[string]int{"x": i}); err != nil || n != i {
			t.Fatalf("echo: %v %v", n, err)
		}
	}
	for range 2 {
		var re *messaging.RemoteError
		if _, err := client.Call(ctx, "fail", nil); !errors.As(err, &re) {
			t.Fatalf("fail: %v", err)
		}
	}
	nobody := messaging.NewRPCClient(tr, messaging.Target{Topic: "nobody"}, messaging.WithTimeout(100*time.Millisecond))
	if _, err := nobody.Call(ctx, "echo", nil); !errors.Is(err, messaging.ErrTimeout) {
		t.Fatalf("call to nobody: %v", err)
	}
	for range 3 {
		if err := client.Cast(ctx, "poke", nil); err != nil {
			t.Fatal(err)
		}
	}
	for range 3 {
		<-casts
	}
	notifier, err := messaging.NewNotifier(tr, "compute.h1")
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range []messaging.Priority{messaging.PriorityInfo, messaging.PriorityInfo, messaging.PriorityError} {
		if err := notifier.Notify(ctx, p, "compute.instance.create.end", map[string]string{"id": "1"}); err != nil {
			t.Fatal(err)
		}
	}
	for range 3 {
		select {
		case <-received:
		case <-ctx.Done():
			t.Fatal("notifications not received")
		}
	}

	want := `
# HELP oslogo_messaging_notifications_received_total Notifications received by listeners, by priority.
# TYPE oslogo_messaging_notifications_received_total counter
oslogo_messaging_notifications_received_total{priority="error"} 1
oslogo_messaging_notifications_received_total{priority="info"} 2
# HELP oslogo_messaging_notifications_sent_total Notifications sent (Notify calls with a driver), by priority and outcome (ok, error).
# TYPE oslogo_messaging_notifications_sent_total counter
oslogo_messaging_notifications_sent_total{outcome="ok",priority="error"} 1
oslogo_messaging_notifications_sent_total{outcome="ok",priority="info"} 2
# HELP oslogo_messaging_rpc_calls_total RPC calls made, by topic, method and outcome (ok, timeout, remote_error, error).
# TYPE oslogo_messaging_rpc_calls_total counter
oslogo_messaging_rpc_calls_total{method="echo",outcome="ok",topic="compute"} 5
oslogo_messaging_rpc_calls_total{method="echo",outcome="timeout",topic="nobody"} 1
oslogo_messaging_rpc_calls_total{method="fail",outcome="remote_error",topic="compute"} 2
# HELP oslogo_messaging_rpc_casts_total RPC casts sent, by topic, method and outcome (ok, error).
# TYPE oslogo_messaging_rpc_casts_total counter
oslogo_messaging_rpc_casts_total{method="poke",outcome="ok",topic="compute"} 3
`
	if err := testutil.GatherAndCompare(reg, strings.NewReader(want),
		"oslogo_messaging_rpc_calls_total", "oslogo_messaging_rpc_casts_total",
		"oslogo_messaging_notifications_sent_total", "oslogo_messaging_notifications_received_total"); err != nil {
		t.Error(err)
	}
	// One latency observation per call; the timed-out one took its 100 ms.
	if n := testutil.CollectAndCount(reg, "oslogo_messaging_rpc_call_duration_seconds"); n != 3 {
		t.Errorf("%d latency series, want 3 (topic/method pairs)", n)
	}
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	var count uint64
	for _, mf := range mfs {
		if mf.GetName() != "oslogo_messaging_rpc_call_duration_seconds" {
			continue
		}
		for _, s := range mf.GetMetric() {
			count += s.GetHistogram().GetSampleCount()
			if lv := s.GetLabel(); len(lv) == 2 && lv[1].GetValue() == "nobody" && s.GetHistogram().GetSampleSum() < 0.1 {
				t.Errorf("timed-out call observed %v s, want at least 0.1", s.GetHistogram().GetSampleSum())
			}
		}
	}
	if count != 8 {
		t.Errorf("%d latency observations, want 8 calls", count)
	}
}

// TestMessagingDoesNotImportPrometheus: applications that do not ask for
// metrics do not link Prometheus: package messaging's dependencies
// (go list -deps) hold no Prometheus package; this one's do.
func TestMessagingDoesNotImportPrometheus(t *testing.T) {
	for _, tc := range []struct {
		pkg  string
		want bool
	}{{"github.com/oslogo/oslogo/messaging", false}, {"github.com/oslogo/oslogo/messaging/prommetrics", true}} {
		out, err := exec.Command("go", "list", "-deps", tc.pkg).CombinedOutput()
		if err != nil {
			t.Fatalf("go list: %v\n%s", err, out)
		}
		if got := strings.Contains(string(out), "github.com/prometheus/"); got != tc.want {
			t.Errorf("%s depends on Prometheus: %v, want %v", tc.pkg, got, tc.want)
		}
	}
}

package messaging

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/oslogo/oslogo/driver"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func TestVersionIsCompatible(t *testing.T) {
	cases := []struct {
		impl, req string
		want      bool
	}{
		{"2.3", "2.1", true},
		{"2.3", "2.3", true},
		{"2.3", "2.4", false},
		{"2.3", "3.0", false},
		{"1.0", "3.0", false},
		{"2.3", "1.9", false},
		{"2.3.1", "2.3.1", true},
		{"2.3.1", "2.3.2", false},
		{"2.3", "2.2.9", true},
		{"2.3", "2.3.1", false},
		{"", "9.9", true},
		{"1.0", "", false},
		{"1.0", "x.y", false},
		{"1.0", "1", false},
	}
	for _, tc := range cases {
		if got := VersionIsCompatible(tc.impl, tc.req); got != tc.want {
			t.Errorf("VersionIsCompatible(%q, %q) = %v, want %v", tc.impl, tc.req, got, tc.want)
		}
	}
}

func TestPythonTimestamp(t *testing.T) {
	at := time.Date(2026, 11, 22, 4, 59, 27, 576091000, time.FixedZone("x", 3600))
	if got := PythonTimestamp(at); got != "2026-11-22 03:59:27.576091" {
		t.Errorf("with microseconds: %q", got)
	}
	if got := PythonTimestamp(at.Truncate(time.Second)); got != "2026-11-22 03:59:27" {
		t.Errorf("without microseconds: %q", got)
	}
	if got := PythonTimestamp(at.Truncate(time.Second).Add(500)); got != "2026-11-22 03:59:27" {
		t.Errorf("sub-microsecond: %q", got)
	}
}

func TestEncodeArgs(t *testing.T) {
	cases := []struct {
		in      any
		want    string
		wantErr bool
	}{
		{nil, "{}", false},
		{map[string]int{"a": 1}, `{"a":1}`, false},
		{struct {
			A int `json:"a"`
		}{2}, `{"a":2}`, false},
		{json.RawMessage(`{"x": [1]}`), `{"x":[1]}`, false},
		{[]int{1}, "", true},
		{"s", "", true},
		{func() {}, "", true},
	}
	for _, tc := range cases {
		got, err := encodeArgs(tc.in)
		if (err != nil) != tc.wantErr || (!tc.wantErr && string(got) != tc.want) {
			t.Errorf("encodeArgs(%#v) = %s, %v", tc.in, got, err)
		}
	}
}

func TestFailureOf(t *testing.T) {
	f := failureOf(errors.New("plain"))
	if f.Module != "builtins" || f.Class != "Exception" || f.Message != "plain" || len(f.Args) != 1 || f.Kwargs == nil || f.Traceback == nil {
		t.Errorf("plain error: %+v", f)
	}
	f = failureOf(&RemoteError{Module: "nova.exception_Remote", Class: "InstanceNotFound_Remote", Message: "gone", Kwargs: map[string]any{"instance_id": "i1"}})
	if f.Module != "nova.exception" || f.Class != "InstanceNotFound" || f.Kwargs["instance_id"] != "i1" {
		t.Errorf("re-raised remote error: %+v", f)
	}
	wrapped := failureOf(errors.Join(errors.New("context"), NewRemoteError("builtins", "KeyError", "k")))
	if wrapped.Class != "KeyError" {
		t.Errorf("wrapped remote error: %+v", wrapped)
	}
}

func TestRemoteErrorIs(t *testing.T) {
	if !errors.Is(noSuchMethod("x"), ErrNoSuchMethod) || errors.Is(noSuchMethod("x"), ErrUnsupportedVersion) {
		t.Error("NoSuchMethod classification")
	}
	if !errors.Is(unsupportedVersion("3.0", "x"), ErrUnsupportedVersion) {
		t.Error("UnsupportedVersion classification")
	}
	if got := unsupportedVersion("3.0", "echo").Message; got != "Endpoint does not support RPC version 3.0. Attempted method: echo" {
		t.Errorf("message %q differs from oslo's", got)
	}
}

func TestTranslateTimeout(t *testing.T) {
	err := translate(driver.ErrTimeout)
	if !errors.Is(err, ErrTimeout) || !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("timeout: %v", err)
	}
	if !errors.Is(translate(driver.ErrUndeliverable), ErrUndeliverable) {
		t.Error("undeliverable")
	}
}

func TestTranslateUnreachable(t *testing.T) {
	cases := []struct {
		name string
		in   error
		want []error
	}{
		{"retries exhausted", fmt.Errorf("%w: %w: dial: refused", driver.ErrDeliveryFailure, driver.ErrUnreachable),
			[]error{ErrUnreachable, ErrDeliveryFailure}},
		{"deadline while connecting", fmt.Errorf("%w: %w", driver.ErrUnreachable, context.DeadlineExceeded),
			[]error{ErrUnreachable, ErrTimeout, context.DeadlineExceeded}},
		{"driver timeout while connecting", fmt.Errorf("%w: %w", driver.ErrTimeout, driver.ErrUnreachable),
			[]error{ErrUnreachable, ErrTimeout, context.DeadlineExceeded}},
	}
	for _, tc := range cases {
		got := translate(tc.in)
		for _, w := range tc.want {
			if !errors.Is(got, w) {
				t.Errorf("%s: %v does not match %v", tc.name, got, w)
			}
		}
	}
	if errors.Is(translate(driver.ErrDeliveryFailure), ErrUnreachable) {
		t.Error("a plain delivery failure matched ErrUnreachable")
	}
}

func TestFilterMatch(t *testing.T) {
	n := &Notification{PublisherID: "compute.host1", EventType: "compute.instance.create.end",
		Context: RequestContext{"user_id": "u1", "n": 3}, MessageID: "m-1", Timestamp: "2026-11-22 01:02:03",
		Payload: json.RawMessage(`{"state": "active", "size": 1}`)}
	cases := []struct {
		f    NotificationFilter
		want bool
	}{
		{NotificationFilter{}, true},
		{NotificationFilter{PublisherID: "compute"}, true}, // re.match: prefix
		{NotificationFilter{PublisherID: "host1"}, false},  // not a search
		{NotificationFilter{EventType: `compute\..*\.end$`}, true},
		{NotificationFilter{Context: map[string]string{"user_id": "u"}}, true},
		{NotificationFilter{Context: map[string]string{"missing": ".*"}}, false},
		{NotificationFilter{Context: map[string]string{"n": ".*"}}, false}, // non-string value
		{NotificationFilter{Payload: map[string]string{"state": "act"}}, true},
		{NotificationFilter{Payload: map[string]string{"size": "1"}}, false},
		{NotificationFilter{Metadata: map[string]string{"message_id": "m-"}}, true},
		{NotificationFilter{Metadata: map[string]string{"timestamp": "2025"}}, false},
	}
	for i, tc := range cases {
		cf, err := compileFilter(&tc.f)
		if err != nil {
			t.Fatal(err)
		}
		if got := cf.match(n); got != tc.want {
			t.Errorf("case %d %+v: match = %v, want %v", i, tc.f, got, tc.want)
		}
	}
	if _, err := compileFilter(&NotificationFilter{EventType: "("}); err == nil {
		t.Error("invalid regex accepted")
	}
}

func TestParsePriority(t *testing.T) {
	for in, want := range map[string]Priority{"INFO": PriorityInfo, "warning": PriorityWarn, "WARN": PriorityWarn, "sample": PrioritySample} {
		if got, err := ParsePriority(in); err != nil || got != want {
			t.Errorf("ParsePriority(%q) = %q, %v", in, got, err)
		}
	}
	if _, err := ParsePriority("loud"); err == nil {
		t.Error("unknown priority accepted")
	}
}

func openMemory(t *testing.T, cfg TransportConfig) *Transport {
	t.Helper()
	tr, err := OpenTransport(context.Background(), "memory://"+t.Name(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { tr.Close() })
	return tr
}

func TestNotifierDrivers(t *testing.T) {
	dir := t.TempDir()
	routing := filepath.Join(dir, "routing.yaml")
	if err := os.WriteFile(routing, []byte(`
group_1:
  test:
    accepted_events:
      - compute.instance.*
    accepted_priorities:
      - error
      - critical
`), 0o600); err != nil {
		t.Fatal(err)
	}
	tr := openMemory(t, DefaultTransportConfig())
	n, err := NewNotifier(tr, "p1", WithNotifyDrivers(NotifyDriverRouting, NotifyDriverTest, NotifyDriverNoop, NotifyDriverLog), WithRoutingConfig(routing))
	if err != nil {
		t.Fatal(err)
	}
	ctx := WithRequestContext(context.Background(), RequestContext{"user": "u"})
	_ = n.Info(ctx, "compute.instance.create", 1)  // test driver only
	_ = n.Error(ctx, "compute.instance.create", 2) // routing (to test) and test
	_ = n.Error(ctx, "volume.create", 3)           // test driver only
	got := n.Captured()
	if len(got) != 4 {
		t.Fatalf("captured %d notifications, want 4 (3 direct + 1 routed)", len(got))
	}
	if got[0].Priority != PriorityInfo || got[0].PublisherID != "p1" || got[0].Context["user"] != "u" {
		t.Errorf("first captured: %+v", got[0])
	}
	routed := 0
	for _, c := range got {
		if string(c.Payload) == "2" {
			routed++
		}
	}
	if routed != 2 {
		t.Errorf("routed notification captured %d times, want 2", routed)
	}
	n.ResetCaptured()
	if len(n.Captured()) != 0 {
		t.Error("ResetCaptured kept notifications")
	}
	if _, err := NewNotifier(tr, "p", WithNotifyDrivers("carrier-pigeon")); err == nil {
		t.Error("unknown driver accepted")
	}
	off, _ := NewNotifier(tr, "p")
	if off.IsEnabled() {
		t.Error("a notifier with no drivers is enabled; oslo sends nothing then")
	}
}

func TestClientValidation(t *testing.T) {
	tr := openMemory(t, DefaultTransportConfig())
	ctx := context.Background()
	if _, err := NewRPCClient(tr, Target{}).Call(ctx, "m", nil); !errors.Is(err, ErrInvalidTarget) {
		t.Errorf("no topic: %v", err)
	}
	if err := NewRPCClient(tr, Target{Topic: "t"}, WithVersion("abc")).Cast(ctx, "m", nil); err == nil || !strings.Contains(err.Error(), "invalid version") {
		t.Errorf("bad version: %v", err)
	}
	if _, err := NewRPCServer(tr, Target{Topic: "t"}, nil); !errors.Is(err, ErrInvalidTarget) {
		t.Errorf("server without a name: %v", err)
	}
	if _, err := OpenTransport(ctx, "nosuch://x", DefaultTransportConfig()); err == nil {
		t.Error("unknown scheme accepted")
	}
	if _, err := OpenTransport(ctx, "memory://?bogus=1", DefaultTransportConfig()); err == nil {
		t.Error("unknown URL option accepted")
	}
	bad := DefaultTransportConfig()
	bad.ExecutorThreadPoolSize = 0
	if _, err := OpenTransport(ctx, "memory://", bad); err == nil {
		t.Error("zero pool size accepted")
	}
	tr.Close()
	if _, err := NewRPCClient(tr, Target{Topic: "t"}).Call(ctx, "m", nil); !errors.Is(err, ErrClosed) {
		t.Errorf("call on a closed transport: %v", err)
	}
}

func TestBoundedPool(t *testing.T) {
	tr := openMemory(t, DefaultTransportConfig())
	release := make(chan struct{})
	running := make(chan struct{}, 10)
	ep := NewEndpoint(Target{})
	Handle(ep, "block", func(context.Context, struct{}) (int, error) {
		running <- struct{}{}
		<-release
		return 1, nil
	})
	srv, err := NewRPCServer(tr, Target{Topic: "pool", Server: "s"}, []*Endpoint{ep}, WithExecutorThreadPoolSize(2))
	if err != nil {
		t.Fatal(err)
	}
	if err := srv.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	c := NewRPCClient(tr, Target{Topic: "pool"})
	for i := 0; i < 3; i++ {
		if err := c.Cast(context.Background(), "block", nil); err != nil {
			t.Fatal(err)
		}
	}
	<-running
	<-running
	select {
	case <-running:
		t.Fatal("a third handler ran with a pool of 2")
	case <-time.After(100 * time.Millisecond):
	}
	close(release)
	<-running
	if err := srv.Stop(context.Background()); err != nil {
		t.Fatal(err)
	}
	srv.Wait()
}

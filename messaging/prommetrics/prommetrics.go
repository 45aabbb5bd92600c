// Package prommetrics exports the messaging library's client metrics to
// Prometheus: RPC calls with their latency and outcome, casts, and
// notifications sent and received. It implements messaging.Observer;
// messaging itself does not import Prometheus.
//
//	m, err := prommetrics.New(prometheus.DefaultRegisterer)
//	...
//	cfg := messaging.DefaultTransportConfig()
//	cfg.Observer = m
//	tr, err := messaging.OpenTransport(ctx, "rabbit://...", cfg)
//
// Metrics (namespace "oslogo_messaging" unless WithNamespace changes it):
//
//	rpc_calls_total{topic,method,outcome}       counter: outcome is ok, timeout, remote_error or error
//	rpc_call_duration_seconds{topic,method}     histogram of call latency (all outcomes)
//	rpc_casts_total{topic,method,outcome}       counter: outcome is ok or error
//	notifications_sent_total{priority,outcome}  counter: Notify calls, outcome ok or error
//	notifications_received_total{priority}      counter: notifications listeners received
//
// Labels are the target's topic and the method name, which the
// application chooses; notifications are labelled by priority only,
// since event types are open-ended.
package prommetrics

import (
	"errors"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/oslogo/oslogo/messaging"
)

// Metrics is a messaging.Observer that counts into Prometheus metrics.
type Metrics struct {
	calls         *prometheus.CounterVec
	callDuration  *prometheus.HistogramVec
	casts         *prometheus.CounterVec
	notesSent     *prometheus.CounterVec
	notesReceived *prometheus.CounterVec
}

var _ messaging.Observer = (*Metrics)(nil)

type settings struct {
	namespace string
	buckets   []float64
}

// Option changes a setting of New.
type Option func(*settings)

// WithNamespace sets the metric name prefix (default "oslogo_messaging").
func WithNamespace(ns string) Option { return func(s *settings) { s.namespace = ns } }

// WithBuckets sets the call latency histogram's buckets in seconds
// (default 1 ms to 60 s, oslo's rpc_response_timeout).
func WithBuckets(b []float64) Option { return func(s *settings) { s.buckets = b } }

// DefaultBuckets are the default call latency buckets, in seconds.
var DefaultBuckets = []float64{.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60}

// New creates the metrics and registers them with reg.
func New(reg prometheus.Registerer, opts ...Option) (*Metrics, error) {
	s := settings{namespace: "oslogo_messaging", buckets: DefaultBuckets}
	for _, o := range opts {
		o(&s)
	}
	m := &Metrics{
		calls: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: s.namespace, Name: "rpc_calls_total",
			Help: "RPC calls made, by topic, method and outcome (ok, timeout, remote_error, error)."}, []string{"topic", "method", "outcome"}),
		callDuration: prometheus.NewHistogramVec(prometheus.HistogramOpts{Namespace: s.namespace, Name: "rpc_call_duration_seconds",
			Help: "Time from sending an RPC call to its reply, timeout or error.", Buckets: s.buckets}, []string{"topic", "method"}),
		casts: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: s.namespace, Name: "rpc_casts_total",
			Help: "RPC casts sent, by topic, method and outcome (ok, error)."}, []string{"topic", "method", "outcome"}),
		notesSent: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: s.namespace, Name: "notifications_sent_total",
			Help: "Notifications sent (Notify calls with a driver), by priority and outcome (ok, error)."}, []string{"priority", "outcome"}),
		notesReceived: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: s.namespace, Name: "notifications_received_total",
			Help: "Notifications received by listeners, by priority."}, []string{"priority"}),
	}
	for _, c := range []prometheus.Collector{m.calls, m.callDuration, m.casts, m.notesSent, m.notesReceived} {
		if err := reg.Register(c); err != nil {
			return nil, err
		}
	}
	return m, nil
}

// callOutcome classifies a call's error.
func callOutcome(err error) string {
	var re *messaging.RemoteError
	switch {
	case err == nil:
		return "ok"
	case errors.Is(err, messaging.ErrTimeout):
		return "timeout"
	case errors.As(err, &re):
		return "remote_error"
	}
	return "error"
}

func okOrError(err error) string {
	if err == nil {
		return "ok"
	}
	return "error"
}

// CallDone counts a call and observes its latency.
func (m *Metrics) CallDone(topic, method string, elapsed time.Duration, err error) {
	m.calls.WithLabelValues(topic, method, callOutcome(err)).Inc()
	m.callDuration.WithLabelValues(topic, method).Observe(elapsed.Seconds())
}

// CastDone counts a cast.
func (m *Metrics) CastDone(topic, method string, err error) {
	m.casts.WithLabelValues(topic, method, okOrError(err)).Inc()
}

// NotificationSent counts a sent notification.
func (m *Metrics) NotificationSent(priority messaging.Priority, _ string, err error) {
	m.notesSent.WithLabelValues(string(priority), okOrError(err)).Inc()
}

// NotificationReceived counts a received notification.
func (m *Metrics) NotificationReceived(priority messaging.Priority, _ string) {
	m.notesReceived.WithLabelValues(string(priority)).Inc()
}

package messaging

import (
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path"
	"strings"
	"sync"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/oslogo/oslogo/driver"
)

// Priority is a notification priority, lower case as in oslo's method names.
type Priority string

// The notification priorities of oslo.messaging.
const (
	PriorityAudit    Priority = "audit"
	PriorityDebug    Priority = "debug"
	PriorityInfo     Priority = "info"
	PriorityWarn     Priority = "warn"
	PriorityError    Priority = "error"
	PriorityCritical Priority = "critical"
	PrioritySample   Priority = "sample"
)

// Priorities lists every priority, in oslo's order.
var Priorities = []Priority{PriorityAudit, PriorityDebug, PriorityInfo, PriorityWarn, PriorityError, PriorityCritical, PrioritySample}

// ParsePriority accepts a priority in any case; "warning" is "warn".
func ParsePriority(s string) (Priority, error) {
	p := Priority(strings.ToLower(s))
	if p == "warning" {
		return PriorityWarn, nil
	}
	for _, known := range Priorities {
		if p == known {
			return p, nil
		}
	}
	return "", fmt.Errorf("messaging: unknown notification priority %q", s)
}

// Notification is one notification as a listener receives it (and as the
// test driver captures it).
type Notification struct {
	Priority    Priority
	PublisherID string
	EventType   string
	Payload     json.RawMessage
	Context     RequestContext
	MessageID   string // dashed uuid, the same for every copy
	Timestamp   string // "2006-01-02 15:04:05.999999" UTC, as Python writes it
}

// Notification drivers: how a Notifier emits.
const (
	NotifyDriverMessaging   = "messaging"   // oslo format 1.0: the raw dict
	NotifyDriverMessagingV2 = "messagingv2" // oslo format 2.0: enveloped
	NotifyDriverRouting     = "routing"     // forwards by the rules of routing_config
	NotifyDriverLog         = "log"         // writes to the logger
	NotifyDriverTest        = "test"        // keeps notifications in memory
	NotifyDriverNoop        = "noop"        // discards
)

var notifyDriverNames = map[string]struct{}{
	NotifyDriverMessaging: {}, NotifyDriverMessagingV2: {}, NotifyDriverRouting: {},
	NotifyDriverLog: {}, NotifyDriverTest: {}, NotifyDriverNoop: {},
}

// notifyDriver emits one notification to the given topics.
type notifyDriver interface {
	notify(ctx context.Context, n *driver.Notification, topics []string) error
}

// NotifierOption configures a Notifier.
type NotifierOption func(*notifierSettings)

type notifierSettings struct {
	cfg NotificationConfig
}

// WithNotifyDrivers replaces the configured notification drivers.
func WithNotifyDrivers(names ...string) NotifierOption {
	return func(s *notifierSettings) { s.cfg.Drivers = names }
}

// WithNotifyTopics replaces the configured topics.
func WithNotifyTopics(topics ...string) NotifierOption {
	return func(s *notifierSettings) { s.cfg.Topics = topics }
}

// WithNotifyRetry sets the send retry count (-1 forever).
func WithNotifyRetry(n int) NotifierOption { return func(s *notifierSettings) { s.cfg.Retry = n } }

// WithRoutingConfig sets the YAML file of the routing driver.
func WithRoutingConfig(file string) NotifierOption {
	return func(s *notifierSettings) { s.cfg.RoutingConfig = file }
}

// Notifier sends notifications, as oslo's Notifier. Its drivers and topics
// come from the transport's [oslo_messaging_notifications] settings unless
// overridden. Safe for concurrent use.
type Notifier struct {
	tr          *Transport
	publisherID string
	topics      []string
	drivers     []notifyDriver
	capture     *captureDriver // the test driver, if configured
	logger      *slog.Logger
}

// NewNotifier returns a notifier publishing as publisherID (e.g.
// "compute.host1").
func NewNotifier(tr *Transport, publisherID string, opts ...NotifierOption) (*Notifier, error) {
	s := notifierSettings{cfg: tr.cfg.Notifications}
	for _, o := range opts {
		o(&s)
	}
	n := &Notifier{tr: tr, publisherID: publisherID, topics: s.cfg.Topics, logger: tr.logger.With("component", "notifier")}
	if len(n.topics) == 0 {
		n.topics = []string{DefaultNotificationTopic}
	}
	for _, name := range s.cfg.Drivers {
		d, err := n.newDriver(name, s.cfg)
		if err != nil {
			return nil, err
		}
		n.drivers = append(n.drivers, d)
	}
	return n, nil
}

func (n *Notifier) newDriver(name string, cfg NotificationConfig) (notifyDriver, error) {
	switch name {
	case NotifyDriverMessaging, NotifyDriverMessagingV2:
		return &wireDriver{tr: n.tr, envelope: name == NotifyDriverMessagingV2, retry: cfg.Retry}, nil
	case NotifyDriverLog:
		return &logDriver{logger: n.tr.logger}, nil
	case NotifyDriverTest:
		if n.capture == nil {
			n.capture = &captureDriver{}
		}
		return n.capture, nil
	case NotifyDriverNoop:
		return noopDriver{}, nil
	case NotifyDriverRouting:
		return n.newRoutingDriver(cfg)
	}
	return nil, fmt.Errorf("messaging: unknown notification driver %q", name)
}

// Prepare returns a notifier that publishes as another publisher id.
func (n *Notifier) Prepare(publisherID string) *Notifier {
	cp := *n
	cp.publisherID = publisherID
	return &cp
}

// IsEnabled reports whether any driver is configured; with none, oslo sends
// nothing.
func (n *Notifier) IsEnabled() bool { return len(n.drivers) > 0 }

// Audit sends an audit notification.
func (n *Notifier) Audit(ctx context.Context, eventType string, payload any) error {
	return n.Notify(ctx, PriorityAudit, eventType, payload)
}

// Debug sends a debug notification.
func (n *Notifier) Debug(ctx context.Context, eventType string, payload any) error {
	return n.Notify(ctx, PriorityDebug, eventType, payload)
}

// Info sends an info notification.
func (n *Notifier) Info(ctx context.Context, eventType string, payload any) error {
	return n.Notify(ctx, PriorityInfo, eventType, payload)
}

// Warn sends a warn notification (oslo's warn and warning).
func (n *Notifier) Warn(ctx context.Context, eventType string, payload any) error {
	return n.Notify(ctx, PriorityWarn, eventType, payload)
}

// Error sends an error notification.
func (n *Notifier) Error(ctx context.Context, eventType string, payload any) error {
	return n.Notify(ctx, PriorityError, eventType, payload)
}

// Critical sends a critical notification.
func (n *Notifier) Critical(ctx context.Context, eventType string, payload any) error {
	return n.Notify(ctx, PriorityCritical, eventType, payload)
}

// Sample sends a sample notification (metering).
func (n *Notifier) Sample(ctx context.Context, eventType string, payload any) error {
	return n.Notify(ctx, PrioritySample, eventType, payload)
}

// Notify sends a notification with the request context of ctx to every
// driver and topic. oslo only logs send failures; Notify logs them too and
// also returns them, joined.
func (n *Notifier) Notify(ctx context.Context, priority Priority, eventType string, payload any) error {
	if _, err := ParsePriority(string(priority)); err != nil {
		return err
	}
	body, err := json.Marshal(payload)
	if err != nil {
		return fmt.Errorf("messaging: encode payload of %s: %w", eventType, err)
	}
	msg := &driver.Notification{
		MessageID:   newUUID(),
		PublisherID: n.publisherID,
		EventType:   eventType,
		Priority:    strings.ToUpper(string(priority)),
		Payload:     body,
		Timestamp:   PythonTimestamp(time.Now()),
		Context:     RequestContextFrom(ctx),
	}
	var errs []error
	for _, d := range n.drivers {
		if err := d.notify(ctx, msg, n.topics); err != nil {
			n.logger.Error("notification not sent", "event_type", eventType, "priority", priority, "err", err)
			errs = append(errs, translate(err))
		}
	}
	err = errors.Join(errs...)
	if obs := n.tr.cfg.Observer; obs != nil && len(n.drivers) > 0 {
		obs.NotificationSent(priority, eventType, err)
	}
	return err
}

// Captured returns the notifications kept by the test driver, oldest first.
func (n *Notifier) Captured() []Notification {
	if n.capture == nil {
		return nil
	}
	return n.capture.list()
}

// ResetCaptured forgets what the test driver kept.
func (n *Notifier) ResetCaptured() {
	if n.capture != nil {
		n.capture.reset()
	}
}

// PythonTimestamp formats t as Python's str(datetime.utcnow()): UTC, a space
// separator, microseconds only when not zero.
func PythonTimestamp(t time.Time) string {
	t = t.UTC()
	if t.Nanosecond()/1000 == 0 {
		return t.Format("2006-01-02 15:04:05")
	}
	return t.Format("2006-01-02 15:04:05.000000")
}

// newUUID returns a random dashed uuid4, as Python's str(uuid4()).
func newUUID() string {
	var b [16]byte
	_, _ = rand.Read(b[:])
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	return fmt.Sprintf("%x-%x-%x-%x-%x", b[0:4], b[4:6], b[6:8], b[8:10], b[10:])
}

type wireDriver struct {
	tr       *Transport
	envelope bool
	retry    int
}

func (d *wireDriver) notify(ctx context.Context, n *driver.Notification, topics []string) error {
	var errs []error
	for _, topic := range topics {
		target := driver.Target{Exchange: d.tr.cfg.ControlExchange, Topic: topic}
		if err := d.tr.drv.Notify(ctx, target, n, driver.NotifyOptions{Envelope: d.envelope, Retry: d.retry}); err != nil {
			errs = append(errs, fmt.Errorf("topic %s: %w", topic, err))
		}
	}
	return errors.Join(errs...)
}

type logDriver struct{ logger *slog.Logger }

func (d *logDriver) notify(ctx context.Context, n *driver.Notification, _ []string) error {
	level := slog.LevelInfo
	switch strings.ToLower(n.Priority) {
	case "debug":
		level = slog.LevelDebug
	case "warn":
		level = slog.LevelWarn
	case "error", "critical":
		level = slog.LevelError
	}
	body, err := json.Marshal(map[string]any{
		"message_id": n.MessageID, "publisher_id": n.PublisherID, "event_type": n.EventType,
		"priority": n.Priority, "payload": n.Payload, "timestamp": n.Timestamp,
	})
	if err != nil {
		return err
	}
	d.logger.Log(ctx, level, string(body), "logger", "oslo.messaging.notification."+n.EventType)
	return nil
}

type noopDriver struct{}

func (noopDriver) notify(context.Context, *driver.Notification, []string) error { return nil }

type captureDriver struct {
	mu   sync.Mutex
	kept []Notification
}

func (d *captureDriver) notify(_ context.Context, n *driver.Notification, _ []string) error {
	p, _ := ParsePriority(n.Priority)
	d.mu.Lock()
	d.kept = append(d.kept, Notification{
		Priority: p, PublisherID: n.PublisherID, EventType: n.EventType, Payload: n.Payload,
		Context: RequestContext(n.Context), MessageID: n.MessageID, Timestamp: n.Timestamp,
	})
	d.mu.Unlock()
	return nil
}

func (d *captureDriver) list() []Notification {
	d.mu.Lock()
	defer d.mu.Unlock()
	return append([]Notification(nil), d.kept...)
}

func (d *captureDriver) reset() {
	d.mu.Lock()
	d.kept = nil
	d.mu.Unlock()
}

// routingDriver is oslo's routing notifier: routing_config maps groups to
// drivers, each with accepted_events and/or accepted_priorities glob lists;
// a notification goes to every driver whose rules all match.
type routingDriver struct{ routes []route }

type route struct {
	drv        notifyDriver
	events     []string
	priorities []string
}

func (n *Notifier) newRoutingDriver(cfg NotificationConfig) (notifyDriver, error) {
	if cfg.RoutingConfig == "" {
		return &routingDriver{}, nil
	}
	raw, err := os.ReadFile(cfg.RoutingConfig)
	if err != nil {
		return nil, fmt.Errorf("messaging: routing_config: %w", err)
	}
	var groups map[string]map[string]map[string][]string
	if err := yaml.Unmarshal(raw, &groups); err != nil {
		return nil, fmt.Errorf("messaging: routing_config %s: %w", cfg.RoutingConfig, err)
	}
	rd := &routingDriver{}
	for _, drivers := range groups {
		for name, rules := range drivers {
			if name == NotifyDriverRouting {
				return nil, fmt.Errorf("messaging: routing_config %s: the routing driver cannot route to itself", cfg.RoutingConfig)
			}
			d, err := n.newDriver(name, cfg)
			if err != nil {
				return nil, fmt.Errorf("messaging: routing_config %s: %w", cfg.RoutingConfig, err)
			}
			rd.routes = append(rd.routes, route{drv: d, events: rules["accepted_events"], priorities: rules["accepted_priorities"]})
		}
	}
	return rd, nil
}

func (d *routingDriver) notify(ctx context.Context, n *driver.Notification, topics []string) error {
	var errs []error
	for _, r := range d.routes {
		if globMatch(r.events, n.EventType) && globMatch(r.priorities, strings.ToLower(n.Priority)) {
			errs = append(errs, r.drv.notify(ctx, n, topics))
		}
	}
	return errors.Join(errs...)
}

// globMatch: an absent rule matches everything; otherwise any glob matches.
func globMatch(globs []string, s string) bool {
	if globs == nil {
		return true
	}
	for _, g := range globs {
		if ok, _ := path.Match(strings.ToLower(g), strings.ToLower(s)); ok {
			return true
		}
	}
	return false
}

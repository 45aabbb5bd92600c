// Package driver is the contract between the public messaging API and a
// transport (memory://, rabbit://, ...).
//
// The contract sits at the level of oslo.messaging's own driver interface:
// the messaging package resolves defaults (control exchange, timeouts) and
// does dispatch; a driver moves requests, replies and notifications and
// owns everything about the wire (envelopes, _unique_id, reply queues,
// acknowledgements). Application code never imports this package; drivers
// and their conformance suite (driver/drivertest) do.
package driver

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"sort"
	"strings"
	"sync"
	"time"
)

// Sentinel errors a driver returns so that the messaging package can
// classify failures without knowing the transport.
var (
	// ErrClosed: the driver, listener or connection was closed.
	ErrClosed = errors.New("driver: closed")
	// ErrTimeout: no final reply arrived before the deadline or the
	// call-monitor timeout. Drivers wrap context.DeadlineExceeded with it
	// when the deadline came from the context.
	ErrTimeout = errors.New("driver: timed out waiting for a reply")
	// ErrUndeliverable: the broker returned a mandatory message (no queue
	// bound to the routing key, or the reply queue is gone).
	ErrUndeliverable = errors.New("driver: message undeliverable")
	// ErrDeliveryFailure: the send retries were exhausted.
	ErrDeliveryFailure = errors.New("driver: delivery failed after retries")
	// ErrUnreachable: no connection to any broker could be made. Drivers
	// wrap it together with ErrDeliveryFailure (retries exhausted) or
	// ErrTimeout (the deadline passed while connecting).
	ErrUnreachable = errors.New("driver: cannot connect to the broker")
)

// Target addresses a message. The messaging package always fills Exchange
// (with the control exchange when the application left it empty).
type Target struct {
	Exchange string
	Topic    string
	Server   string // "" addresses the shared topic queue
	Fanout   bool   // casts only: every server listening on Topic
}

// String is the oslo routing key of t: "topic" or "topic.server".
func (t Target) String() string {
	if t.Server != "" {
		return t.Topic + "." + t.Server
	}
	return t.Topic
}

// Request is an RPC request as oslo puts it in its message dict.
type Request struct {
	Method    string
	Args      json.RawMessage // a JSON object of keyword arguments; nil means {}
	Namespace string          // "" when absent (the key is omitted on the wire)
	Version   string          // "" when absent (the server then assumes "1.0")
	Context   map[string]any  // oslo's ctxt dict, flattened to _context_* keys on the wire
}

// SendOptions carry per-send settings the messaging layer resolved.
type SendOptions struct {
	// Timeout is the overall call timeout; rabbit:// writes it as the AMQP
	// expiration (milliseconds). Zero for casts.
	Timeout time.Duration
	// CallMonitorTimeout, when > 0, is sent as _timeout and asks the server
	// for heartbeats; the caller fails if none arrives within it.
	CallMonitorTimeout time.Duration
	// Retry: -1 retries connection errors forever, 0 never, N at most N times.
	Retry int
	// Mandatory is oslo's TransportOptions(at_least_once=True): an unrouted
	// request fails with ErrUndeliverable at once instead of timing out.
	Mandatory bool
}

// Failure is a remote exception as oslo serialises it.
type Failure struct {
	Class     string         `json:"class"`
	Module    string         `json:"module"`
	Message   string         `json:"message"`
	Traceback []string       `json:"tb"`
	Args      []any          `json:"args"`
	Kwargs    map[string]any `json:"kwargs"`
}

// Reply is the final answer to a call: either Result or Failure.
type Reply struct {
	Result  json.RawMessage // JSON value; nil means null
	Failure *Failure
}

// Driver is a transport. Implementations must be safe for concurrent use.
type Driver interface {
	// Call publishes req to target and waits for the final reply, ctx's
	// deadline or opts.CallMonitorTimeout without heartbeat (ErrTimeout).
	// A remote failure comes back as Reply.Failure with a nil error.
	Call(ctx context.Context, target Target, req *Request, opts SendOptions) (*Reply, error)
	// Cast publishes req and returns once the transport accepted it.
	Cast(ctx context.Context, target Target, req *Request, opts SendOptions) error
	// Listen consumes RPC requests for target (Topic and Server set):
	// the shared topic queue, the server queue and the fanout queue.
	Listen(ctx context.Context, target Target) (RPCListener, error)
	// Notify publishes one notification to target.Exchange with routing key
	// "<target.Topic>.<lower-case priority>".
	Notify(ctx context.Context, target Target, n *Notification, opts NotifyOptions) error
	// ListenNotifications consumes notifications for every (target,
	// priority) pair. An empty pool consumes the shared "<topic>.<priority>"
	// queues; a named pool consumes one queue of that name.
	ListenNotifications(ctx context.Context, targets []NotificationTarget, pool string) (NotificationListener, error)
	// Close releases every connection. Listeners and calls in flight end
	// with ErrClosed.
	Close() error
}

// RPCListener delivers incoming requests. Receive is called by several
// goroutines at once (the server's workers).
type RPCListener interface {
	// Receive blocks for the next request. It returns ErrClosed once the
	// listener was stopped and its buffered requests are drained.
	Receive(ctx context.Context) (IncomingRequest, error)
	// Stop stops consuming; requests already received stay readable.
	Stop()
	// Close stops consuming and releases the listener's resources
	// (fanout queues are deleted).
	Close() error
}

// IncomingRequest is one request taken from a listener. The transport has
// already acknowledged it (oslo's at-most-once RPC).
type IncomingRequest interface {
	Request() *Request
	// ClientTimeout is the caller's call-monitor timeout (_timeout), zero
	// when the caller did not ask for heartbeats.
	ClientTimeout() time.Duration
	// IsCall reports whether the caller waits for a reply (_msg_id set).
	IsCall() bool
	// Heartbeat tells the caller the call is still running.
	Heartbeat(ctx context.Context) error
	// Reply sends the final reply. It does nothing for casts.
	Reply(ctx context.Context, r *Reply) error
}

// Notification is one notification as oslo's Notifier builds it.
type Notification struct {
	MessageID   string          // dashed uuid4, shared by every copy of one notification
	PublisherID string          //
	EventType   string          //
	Priority    string          // upper case, as on the wire: INFO, WARN, ...
	Payload     json.RawMessage // any JSON value
	Timestamp   string          // Python str(datetime.utcnow()): "2006-01-02 15:04:05.000000"
	Context     map[string]any  // flattened to _context_* keys on the wire
}

// NotifyOptions carry per-publish notification settings.
type NotifyOptions struct {
	// Envelope selects oslo's messagingv2 format (the 2.0 envelope); false
	// writes the v1 raw dict of the "messaging" driver.
	Envelope bool
	// Retry as in SendOptions.
	Retry int
}

// NotificationTarget is one (exchange, topic, priority) a listener consumes.
type NotificationTarget struct {
	Exchange string
	Topic    string
	Priority string // lower case: audit, debug, info, warn, error, critical, sample
}

// NotificationListener delivers incoming notifications.
type NotificationListener interface {
	// Receive blocks for the next notification; ErrClosed after Stop once
	// drained.
	Receive(ctx context.Context) (IncomingNotification, error)
	Stop()
	Close() error
}

// IncomingNotification is one notification awaiting Ack or Requeue.
type IncomingNotification interface {
	Notification() *Notification
	// Ack acknowledges (the notification is done).
	Ack() error
	// Requeue returns the notification to its queue for redelivery.
	Requeue() error
}

// Options are what an Opener receives besides the URL.
type Options struct {
	// Config holds the [oslo_messaging_rabbit]-style options of the driver's
	// INI group, by their oslo names (values as written in the file). URL
	// query parameters override them.
	Config map[string]string
	// Logger receives the driver's logs; never nil.
	Logger *slog.Logger
	// LockPath is oslo.concurrency's lock_path ([oslo_concurrency]
	// lock_path), the folder of external lock files; rabbit://'s
	// use_queue_manager needs it. Empty: $OSLO_LOCK_PATH.
	LockPath string
	// RawURL is the transport URL exactly as configured. Multi-host URLs
	// ("rabbit://u1:p1@h1,u2:p2@h2/") do not survive net/url intact, so
	// drivers that accept them parse this instead. Never log it.
	RawURL string
}

// Opener builds a driver from a transport URL. It must not do network I/O
// that can block for long; connecting lazily is preferred.
type Opener func(ctx context.Context, u *url.URL, opts Options) (Driver, error)

var (
	registryMu sync.RWMutex
	registry   = map[string]Opener{}
)

// Register makes a driver available for a URL scheme. Registering a scheme
// twice panics, as database/sql does.
func Register(scheme string, open Opener) {
	registryMu.Lock()
	defer registryMu.Unlock()
	if open == nil {
		panic("driver: Register opener is nil")
	}
	if _, dup := registry[scheme]; dup {
		panic("driver: Register called twice for scheme " + scheme)
	}
	registry[scheme] = open
}

// Lookup returns the opener for the scheme of a transport URL. As in oslo,
// the driver name is the part of the scheme before any '+'.
func Lookup(scheme string) (Opener, error) {
	name, _, _ := strings.Cut(scheme, "+")
	registryMu.RLock()
	defer registryMu.RUnlock()
	if open, ok := registry[name]; ok {
		return open, nil
	}
	return nil, fmt.Errorf("driver: no transport for scheme %q (registered: %s)", scheme, strings.Join(schemesLocked(), ", "))
}

// Schemes lists the registered schemes, sorted.
func Schemes() []string {
	registryMu.RLock()
	defer registryMu.RUnlock()
	return schemesLocked()
}

func schemesLocked() []string {
	names := make([]string, 0, len(registry))
	for name := range registry {
		names = append(names, name)
	}
	sort.Strings(names)
	return names
}

package messaging

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/url"
	"sync"
	"time"

	"github.com/oslogo/oslogo/driver"
	_ "github.com/oslogo/oslogo/driver/memory" // memory:// and fake:// are always available
)

// Defaults of oslo.messaging's [DEFAULT] and [oslo_messaging_notifications]
// options.
const (
	DefaultControlExchange        = "openstack"
	DefaultResponseTimeout        = 60 * time.Second
	DefaultExecutorThreadPoolSize = 64
	DefaultNotificationTopic      = "notifications"
)

// TransportConfig holds the options oslo reads from [DEFAULT] and
// [oslo_messaging_notifications]. Start from DefaultTransportConfig.
type TransportConfig struct {
	// ControlExchange is the exchange used when a Target leaves Exchange
	// empty (control_exchange).
	ControlExchange string
	// ResponseTimeout is the default call timeout (rpc_response_timeout).
	ResponseTimeout time.Duration
	// ExecutorThreadPoolSize bounds the handlers a server or listener runs
	// at once (executor_thread_pool_size).
	ExecutorThreadPoolSize int
	// Notifications are the [oslo_messaging_notifications] settings used
	// by notifiers on this transport.
	Notifications NotificationConfig
	// DriverConfig is the driver's own INI group ([oslo_messaging_rabbit]
	// for rabbit://), by oslo option names.
	DriverConfig map[string]string
	// LockPath is [oslo_concurrency] lock_path, for drivers that take
	// external locks (rabbit:// with use_queue_manager); empty means
	// $OSLO_LOCK_PATH.
	LockPath string
	// Logger receives logs of every component; nil discards them.
	Logger *slog.Logger
	// Observer receives the calls, casts and notifications of the
	// transport's clients, notifiers and listeners, for metrics (see
	// messaging/prommetrics); nil observes nothing.
	Observer Observer
}

// NotificationConfig is oslo's [oslo_messaging_notifications] group.
type NotificationConfig struct {
	// Drivers lists notification drivers (messaging, messagingv2, routing,
	// log, test, noop). Empty means notifications are not sent, as in oslo.
	Drivers []string
	// Topics are the topics notifications are sent to.
	Topics []string
	// Retry: -1 retries forever, 0 never, N at most N times.
	Retry int
	// RoutingConfig is the YAML file of the routing driver.
	RoutingConfig string
}

// DefaultTransportConfig returns oslo's defaults.
func DefaultTransportConfig() TransportConfig {
	return TransportConfig{
		ControlExchange:        DefaultControlExchange,
		ResponseTimeout:        DefaultResponseTimeout,
		ExecutorThreadPoolSize: DefaultExecutorThreadPoolSize,
		Notifications:          NotificationConfig{Topics: []string{DefaultNotificationTopic}, Retry: -1},
	}
}

// Validate reports the first invalid setting.
func (c TransportConfig) Validate() error {
	switch {
	case c.ControlExchange == "":
		return errors.New("messaging: control_exchange must not be empty")
	case c.ResponseTimeout <= 0:
		return fmt.Errorf("messaging: rpc_response_timeout must be positive, got %v", c.ResponseTimeout)
	case c.ExecutorThreadPoolSize < 1:
		return fmt.Errorf("messaging: executor_thread_pool_size must be at least 1, got %d", c.ExecutorThreadPoolSize)
	}
	for _, d := range c.Notifications.Drivers {
		if _, ok := notifyDriverNames[d]; !ok {
			return fmt.Errorf("messaging: unknown notification driver %q", d)
		}
	}
	return nil
}

// Transport is a connection to a messaging backend, shared by any number of
// clients, servers, notifiers and listeners. It is oslo's Transport.
type Transport struct {
	drv    driver.Driver
	cfg    TransportConfig
	url    string // redacted
	logger *slog.Logger

	closeOnce sync.Once
	closeErr  error
}

// OpenTransport opens the transport named by a transport URL such as
// "rabbit://user:pass@host:5672/vhost" or "memory://". The scheme picks the
// driver; the driver package must be imported (rabbit:// lives in
// oslogo/driver/rabbit; memory:// is built in).
func OpenTransport(ctx context.Context, rawURL string, cfg TransportConfig) (*Transport, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	u, err := url.Parse(rawURL)
	if err != nil {
		return nil, fmt.Errorf("messaging: invalid transport_url: %w", redactURLError(err))
	}
	if u.Scheme == "" {
		return nil, fmt.Errorf("messaging: invalid transport_url %q: no scheme (want e.g. rabbit:// or memory://)", u.Redacted())
	}
	open, err := driver.Lookup(u.Scheme)
	if err != nil {
		return nil, err
	}
	logger := loggerOrDiscard(cfg.Logger)
	drv, err := open(ctx, u, driver.Options{Config: cfg.DriverConfig, LockPath: cfg.LockPath, Logger: logger.With("component", "driver", "scheme", u.Scheme), RawURL: rawURL})
	if err != nil {
		return nil, fmt.Errorf("messaging: open %s: %w", u.Redacted(), err)
	}
	t, err := NewTransport(drv, cfg)
	if err != nil {
		drv.Close()
		return nil, err
	}
	t.url = u.Redacted()
	return t, nil
}

// NewTransport wraps an already opened driver. It is how the conformance
// suite and tests give the public API a driver of their own.
func NewTransport(d driver.Driver, cfg TransportConfig) (*Transport, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	return &Transport{drv: d, cfg: cfg, logger: loggerOrDiscard(cfg.Logger)}, nil
}

// Config returns the transport's settings.
func (t *Transport) Config() TransportConfig { return t.cfg }

// String returns the transport URL with the password redacted.
func (t *Transport) String() string { return t.url }

// Close closes the driver; clients, servers and listeners on the transport
// fail with ErrClosed afterwards.
func (t *Transport) Close() error {
	t.closeOnce.Do(func() { t.closeErr = t.drv.Close() })
	return t.closeErr
}

// exchange resolves an empty target exchange to the control exchange.
func (t *Transport) exchange(e string) string {
	if e == "" {
		return t.cfg.ControlExchange
	}
	return e
}

func loggerOrDiscard(l *slog.Logger) *slog.Logger {
	if l == nil {
		return slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	return l
}

// redactURLError drops the URL text from a parse error: it may hold a password.
func redactURLError(err error) error {
	var ue *url.Error
	if errors.As(err, &ue) {
		return ue.Err
	}
	return err
}

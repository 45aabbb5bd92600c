package messaging

import (
	"context"
	"fmt"
	"log/slog"

	"github.com/oslogo/oslogo/config"
)

// DefaultTransportURL is used when no transport_url is configured. It is
// oslo's default, RabbitMQ as guest on localhost; the oslogo command points
// its own default at the embedded broker instead.
const DefaultTransportURL = "rabbit://"

// TransportConfigFrom reads [DEFAULT], [oslo_messaging_notifications] and
// the driver group ([oslo_messaging_rabbit]) from conf, which must have the
// messaging options registered (config.RegisterMessagingOpts) and be valid.
func TransportConfigFrom(conf *config.Config, logger *slog.Logger) (TransportConfig, error) {
	if err := conf.Validate(); err != nil {
		return TransportConfig{}, err
	}
	d := config.DefaultGroup
	n := config.NotificationsGroup
	cfg := TransportConfig{
		ControlExchange:        conf.String(d, "control_exchange"),
		ResponseTimeout:        conf.Duration(d, "rpc_response_timeout"),
		ExecutorThreadPoolSize: conf.Int(d, "executor_thread_pool_size"),
		Notifications: NotificationConfig{
			Drivers:       conf.Strings(n, "driver"),
			Topics:        conf.List(n, "topics"),
			Retry:         conf.Int(n, "retry"),
			RoutingConfig: conf.String(n, "routing_config"),
		},
		DriverConfig: setOnly(conf, config.RabbitGroup),
		Logger:       logger,
	}
	cfg.LockPath, _ = conf.Lookup(config.ConcurrencyGroup, "lock_path")
	log := loggerOrDiscard(logger)
	for _, r := range config.RemovedMessagingOpts() {
		if _, set := conf.Lookup(r.Group, r.Name); set {
			log.Warn("configuration option ignored: " + r.String())
		}
	}
	return cfg, cfg.Validate()
}

// setOnly returns the keys of group that a file or Set gave a value, so
// drivers apply their own defaults to the rest.
func setOnly(conf *config.Config, group string) map[string]string {
	out := map[string]string{}
	for k := range conf.Section(group) {
		if v, set := conf.Lookup(group, k); set {
			out[k] = v
		}
	}
	return out
}

// OpenConfigured opens the RPC transport described by conf: its [DEFAULT]
// transport_url (DefaultTransportURL when empty) with the settings of
// TransportConfigFrom.
func OpenConfigured(ctx context.Context, conf *config.Config, logger *slog.Logger) (*Transport, error) {
	cfg, err := TransportConfigFrom(conf, logger)
	if err != nil {
		return nil, err
	}
	url := conf.String(config.DefaultGroup, "transport_url")
	if url == "" {
		url = DefaultTransportURL
	}
	return OpenTransport(ctx, url, cfg)
}

// OpenNotificationTransport opens the transport notifications use:
// [oslo_messaging_notifications] transport_url when set, else the RPC one,
// as oslo's get_notification_transport does.
func OpenNotificationTransport(ctx context.Context, conf *config.Config, logger *slog.Logger) (*Transport, error) {
	url, set := conf.Lookup(config.NotificationsGroup, "transport_url")
	if !set || url == "" {
		return OpenConfigured(ctx, conf, logger)
	}
	cfg, err := TransportConfigFrom(conf, logger)
	if err != nil {
		return nil, err
	}
	tr, err := OpenTransport(ctx, url, cfg)
	if err != nil {
		return nil, fmt.Errorf("notification transport: %w", err)
	}
	return tr, nil
}

package config

import "strings"

// Groups oslo.messaging reads. DefaultGroup holds its general options.
const (
	// NotificationsGroup is [oslo_messaging_notifications].
	NotificationsGroup = "oslo_messaging_notifications"
	// RabbitGroup is [oslo_messaging_rabbit].
	RabbitGroup = "oslo_messaging_rabbit"
	// ConcurrencyGroup is [oslo_concurrency] (lock_path).
	ConcurrencyGroup = "oslo_concurrency"
)

// MessagingOpts returns oslo.messaging 18.1's options of [DEFAULT] with its
// names, defaults and deprecated names, except that transport_url defaults
// to "" instead of oslo's "rabbit://": with no URL configured the messaging
// package picks oslogo's default transport, and an explicit "rabbit://"
// still means guest@localhost:5672 as in oslo. rpc_response_timeout is a
// Duration (oslo's integer seconds read as such).
func MessagingOpts() []Opt {
	return []Opt{
		{Name: "transport_url", Type: String, Secret: true,
			Help: "The network address and optional user credentials for connecting to the messaging backend, in URL format (driver://[user:pass@]host:port[,[userN:passN@]hostN:portN]/virtual_host?query). Empty: oslogo's default transport."},
		{Name: "control_exchange", Type: String, Default: "openstack",
			Help: "The default exchange under which topics are scoped."},
		{Name: "rpc_response_timeout", Type: Duration, Default: "60",
			Help: "Seconds to wait for a response from a call."},
		{Name: "executor_thread_pool_size", Type: Int, Default: "64", Min: Bound(1),
			DeprecatedNames: []string{"rpc_thread_pool_size"},
			Help:            "Size of the pool of workers that run RPC handlers."},
		{Name: "rpc_ping_enabled", Type: Bool, Default: "False",
			Help: "Add an endpoint to answer to ping calls. Endpoint is named oslo_rpc_server_ping."},
	}
}

// NotificationOpts returns the options of [oslo_messaging_notifications].
// An empty driver list means no notifications are sent.
func NotificationOpts() []Opt {
	return []Opt{
		{Name: "driver", Type: MultiString,
			Help: "The driver(s) to handle sending notifications: messaging, messagingv2, routing, log, test, noop. Repeat the key for several."},
		{Name: "transport_url", Type: String, Secret: true,
			Help: "A URL representing the messaging driver to use for notifications. Empty: the RPC transport_url of [DEFAULT]."},
		{Name: "topics", Type: List, Default: "notifications",
			Help: "AMQP topic used for OpenStack notifications."},
		{Name: "retry", Type: Int, Default: "-1",
			Help: "The maximum number of attempts to re-send a notification that failed to be delivered; 0 means no retry, -1 means forever."},
		{Name: "routing_config", Type: String,
			Help: "RoutingNotifier configuration file location."},
	}
}

// RabbitOpts returns the 37 options of [oslo_messaging_rabbit] of
// oslo.messaging 18.1.0 with their defaults, bounds, choices and deprecated
// names (the deprecated names 16.0 removed are gone: see
// RemovedMessagingOpts). Options that hold seconds are of type Duration
// (read them with Config.Duration); their defaults stay oslo's plain
// numbers. hostname and processname default to "" here: the driver fills
// in the host name and the program's name, as 18.1 does.
func RabbitOpts() []Opt {
	return []Opt{
		{Name: "rpc_conn_pool_size", Type: Int, Default: "30", Min: Bound(1),
			Help: "Size of RPC connection pool."},
		{Name: "conn_pool_min_size", Type: Int, Default: "2",
			Help: "The pool size limit for connections expiration policy."},
		{Name: "conn_pool_ttl", Type: Duration, Default: "1200",
			Help: "The time-to-live in sec of idle connections in the pool."},
		{Name: "amqp_durable_queues", Type: Bool, Default: "False",
			Help: "Use durable queues in AMQP. If rabbit_quorum_queue is enabled, queues will be durable and this value will be ignored."},
		{Name: "amqp_auto_delete", Type: Bool, Default: "False",
			Help: "Auto-delete queues in AMQP."},
		{Name: "ssl", Type: Bool, Default: "False",
			Help: "Connect over SSL."},
		{Name: "ssl_version", Type: String,
			Help: "SSL version to use (valid only if SSL enabled): TLSv1, SSLv23, TLSv1_1, TLSv1_2."},
		{Name: "ssl_key_file", Type: String,
			Help: "SSL key file (valid only if SSL enabled)."},
		{Name: "ssl_cert_file", Type: String,
			Help: "SSL cert file (valid only if SSL enabled)."},
		{Name: "ssl_ca_file", Type: String,
			Help: "SSL certification authority file (valid only if SSL enabled)."},
		{Name: "ssl_enforce_hostname_verification", Type: Bool, Default: "True",
			Help: "(Deprecated for removal) When true, verify the broker hostname against the certificate when ssl_ca_file is set."},
		{Name: "ssl_enforce_fips_mode", Type: Bool, Default: "False",
			Help: "(Deprecated for removal, no effect) Global toggle for enforcing the OpenSSL FIPS mode."},
		{Name: "kombu_reconnect_delay", Type: Duration, Default: "1.0", Min: Bound(0), Max: Bound(4.5),
			Help: "How long to wait (in seconds) before reconnecting in response to an AMQP consumer cancel notification."},
		{Name: "kombu_reconnect_splay", Type: Duration, Default: "0.0", Min: Bound(0),
			Help: "Random time to wait for when reconnecting in response to an AMQP consumer cancel notification."},
		{Name: "kombu_compression", Type: String,
			Help: "EXPERIMENTAL: gzip or bz2; unset means no compression."},
		{Name: "kombu_missing_consumer_retry_timeout", Type: Duration, Default: "60",
			DeprecatedNames: []string{"kombu_reconnect_timeout"},
			Help:            "How long to wait for a missing client before abandoning to send it its replies."},
		{Name: "kombu_failover_strategy", Type: String, Default: "round-robin",
			Choices: []string{"round-robin", "shuffle"},
			Help:    "Determines how the next RabbitMQ node is chosen when the current one becomes unavailable."},
		{Name: "rabbit_login_method", Type: String, Default: "AMQPLAIN",
			Choices: []string{"PLAIN", "AMQPLAIN", "EXTERNAL", "RABBIT-CR-DEMO"},
			Help:    "The RabbitMQ login method."},
		{Name: "rabbit_retry_interval", Type: Duration, Default: "1", Min: Bound(1),
			Help: "How frequently to retry connecting with RabbitMQ."},
		{Name: "rabbit_retry_backoff", Type: Duration, Default: "2", Min: Bound(0),
			Help: "How long to backoff for between retries when connecting to RabbitMQ."},
		{Name: "rabbit_interval_max", Type: Duration, Default: "30", Min: Bound(1),
			Help: "Maximum interval of RabbitMQ connection retries."},
		{Name: "rabbit_ha_queues", Type: Bool, Default: "False",
			Help: "Try to use HA queues in RabbitMQ (x-ha-policy: all)."},
		{Name: "rabbit_quorum_queue", Type: Bool, Default: "False",
			Help: "Use quorum queues in RabbitMQ (x-queue-type: quorum)."},
		{Name: "rabbit_transient_quorum_queue", Type: Bool, Default: "False",
			Help: "Use quorum queues for transients queues (reply and fanout) in RabbitMQ."},
		{Name: "rabbit_quorum_delivery_limit", Type: Int, Default: "0",
			Help: "Redeliveries after which a quorum queue drops or dead-letters a message; 0 means no limit."},
		{Name: "rabbit_quorum_max_memory_length", Type: Int, Default: "0",
			Help: "Maximum number of messages a quorum queue keeps in memory; 0 means no limit."},
		{Name: "rabbit_quorum_max_memory_bytes", Type: Int, Default: "0",
			Help: "Maximum bytes a quorum queue keeps in memory; 0 means no limit."},
		{Name: "rabbit_transient_queues_ttl", Type: Duration, Default: "1800", Min: Bound(0),
			Help: "Seconds for queue TTL (x-expires) of reply and fanout queues, or the retention (x-max-age) of the fanout stream with rabbit_stream_fanout; 0 disables it."},
		{Name: "rabbit_qos_prefetch_count", Type: Int, Default: "0",
			Help: "Specifies the number of messages to prefetch; 0 means unlimited."},
		{Name: "heartbeat_timeout_threshold", Type: Duration, Default: "60",
			Help: "Seconds after which the broker is considered down if heartbeat's keep-alive fails (0 disables heartbeat)."},
		{Name: "heartbeat_rate", Type: Int, Default: "3",
			Help: "How often times during the heartbeat_timeout_threshold we check the heartbeat."},
		{Name: "direct_mandatory_flag", Type: Bool, Default: "True",
			Help: "(DEPRECATED) Enable/Disable the RabbitMQ mandatory flag for direct send."},
		{Name: "enable_cancel_on_failover", Type: Bool, Default: "False",
			Help: "Enable x-cancel-on-ha-failover flag so that rabbitmq server will cancel and notify consumers when queue is down."},
		{Name: "use_queue_manager", Type: Bool, Default: "False",
			Help: "Should we use consistant queue names or random ones."},
		{Name: "hostname", Type: String,
			Help: "Hostname used by queue manager. Defaults to the value returned by socket.gethostname()."},
		{Name: "processname", Type: String,
			Help: "Process name used by queue manager. Defaults to the program's base name."},
		{Name: "rabbit_stream_fanout", Type: Bool, Default: "False",
			Help: "Use stream queues in RabbitMQ (x-queue-type: stream) for fanout: one stream queue per topic."},
	}
}

// Removed is an option oslo.messaging 16.0 or later no longer has.
type Removed struct {
	Group, Name string
	// Replacement is "group/name" of what replaces it, "" when nothing does.
	Replacement string
}

// String is the warning oslogo logs when the option is set.
func (r Removed) String() string {
	g := r.Group
	if g == "" {
		g = DefaultGroup
	}
	s := "[" + g + "] " + r.Name + " is not an option of oslo.messaging 18.1 (removed)"
	if r.Replacement != "" {
		rg, rn, _ := strings.Cut(r.Replacement, "/")
		s += ", use [" + rg + "] " + rn
	}
	return s
}

// RemovedMessagingOpts lists the [DEFAULT] and [oslo_messaging_notifications]
// names oslo.messaging 14 still read (deprecated names) and 18.1 does not:
// oslo.config ignores them in a file, so a service on 18.1 no longer sees
// them; oslogo does the same and warns (messaging.TransportConfigFrom).
// The [oslo_messaging_rabbit] ones are the driver's (rabbit.RemovedOptions).
func RemovedMessagingOpts() []Removed {
	return []Removed{
		{DefaultGroup, "notification_driver", NotificationsGroup + "/driver"},
		{DefaultGroup, "notification_transport_url", NotificationsGroup + "/transport_url"},
		{DefaultGroup, "notification_topics", NotificationsGroup + "/topics"},
		{"rpc_notifier2", "topics", NotificationsGroup + "/topics"},
		{DefaultGroup, "rpc_conn_pool_size", RabbitGroup + "/rpc_conn_pool_size"},
		{DefaultGroup, "amqp_auto_delete", RabbitGroup + "/amqp_auto_delete"},
		{DefaultGroup, "kombu_reconnect_delay", RabbitGroup + "/kombu_reconnect_delay"},
		{DefaultGroup, "rabbit_login_method", RabbitGroup + "/rabbit_login_method"},
		{DefaultGroup, "rabbit_retry_backoff", RabbitGroup + "/rabbit_retry_backoff"},
		{DefaultGroup, "rabbit_ha_queues", RabbitGroup + "/rabbit_ha_queues"},
	}
}

// RabbitDefaults returns the default of every [oslo_messaging_rabbit]
// option, keyed by name, written as in a file ("" for unset).
func RabbitDefaults() map[string]string {
	opts := RabbitOpts()
	m := make(map[string]string, len(opts))
	for _, o := range opts {
		m[o.Name] = o.Default
	}
	return m
}

// RegisterMessagingOpts registers the options of oslo.messaging's
// [DEFAULT], [oslo_messaging_notifications] and [oslo_messaging_rabbit]
// groups on c. Calling it twice is harmless.
func RegisterMessagingOpts(c *Config) error {
	if err := c.Register(DefaultGroup, MessagingOpts()...); err != nil {
		return err
	}
	if err := c.Register(NotificationsGroup, NotificationOpts()...); err != nil {
		return err
	}
	return c.Register(RabbitGroup, RabbitOpts()...)
}

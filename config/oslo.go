package config

// Groups oslo.messaging reads. DefaultGroup holds its general options.
const (
	// NotificationsGroup is [oslo_messaging_notifications].
	NotificationsGroup = "oslo_messaging_notifications"
	// RabbitGroup is [oslo_messaging_rabbit].
	RabbitGroup = "oslo_messaging_rabbit"
)

// MessagingOpts returns oslo.messaging 14's options of [DEFAULT] with its
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
			DeprecatedNames: []string{"DEFAULT/notification_driver"},
			Help:            "The driver(s) to handle sending notifications: messaging, messagingv2, routing, log, test, noop. Repeat the key for several."},
		{Name: "transport_url", Type: String, Secret: true,
			DeprecatedNames: []string{"DEFAULT/notification_transport_url"},
			Help:            "A URL representing the messaging driver to use for notifications. Empty: the RPC transport_url of [DEFAULT]."},
		{Name: "topics", Type: List, Default: "notifications",
			DeprecatedNames: []string{"rpc_notifier2/topics", "DEFAULT/notification_topics"},
			Help:            "AMQP topic used for OpenStack notifications."},
		{Name: "retry", Type: Int, Default: "-1",
			Help: "The maximum number of attempts to re-send a notification that failed to be delivered; 0 means no retry, -1 means forever."},
		{Name: "routing_config", Type: String,
			Help: "RoutingNotifier configuration file location."},
	}
}

// RabbitOpts returns the 32 options of [oslo_messaging_rabbit] of
// oslo.messaging 14.0.3 with their defaults, bounds, choices and deprecated
// names. Options that hold seconds are of type Duration (read them with
// Config.Duration); their defaults stay oslo's plain numbers.
func RabbitOpts() []Opt {
	return []Opt{
		{Name: "rpc_conn_pool_size", Type: Int, Default: "30", Min: Bound(1),
			DeprecatedNames: []string{"DEFAULT/rpc_conn_pool_size"},
			Help:            "Size of RPC connection pool."},
		{Name: "conn_pool_min_size", Type: Int, Default: "2",
			Help: "The pool size limit for connections expiration policy."},
		{Name: "conn_pool_ttl", Type: Duration, Default: "1200",
			Help: "The time-to-live in sec of idle connections in the pool."},
		{Name: "amqp_durable_queues", Type: Bool, Default: "False",
			Help: "Use durable queues in AMQP."},
		{Name: "amqp_auto_delete", Type: Bool, Default: "False",
			DeprecatedNames: []string{"DEFAULT/amqp_auto_delete"},
			Help:            "Auto-delete queues in AMQP."},
		{Name: "ssl", Type: Bool, Default: "False",
			DeprecatedNames: []string{"rabbit_use_ssl"},
			Help:            "Connect over SSL."},
		{Name: "ssl_version", Type: String,
			DeprecatedNames: []string{"kombu_ssl_version"},
			Help:            "SSL version to use (valid only if SSL enabled): TLSv1, SSLv23, TLSv1_1, TLSv1_2."},
		{Name: "ssl_key_file", Type: String,
			DeprecatedNames: []string{"kombu_ssl_keyfile"},
			Help:            "SSL key file (valid only if SSL enabled)."},
		{Name: "ssl_cert_file", Type: String,
			DeprecatedNames: []string{"kombu_ssl_certfile"},
			Help:            "SSL cert file (valid only if SSL enabled)."},
		{Name: "ssl_ca_file", Type: String,
			DeprecatedNames: []string{"kombu_ssl_ca_certs"},
			Help:            "SSL certification authority file (valid only if SSL enabled)."},
		{Name: "ssl_enforce_hostname_verification", Type: Bool, Default: "False",
			Help: "When true, verify the broker hostname against the certificate when ssl_ca_file is set."},
		{Name: "ssl_enforce_fips_mode", Type: Bool, Default: "False",
			Help: "Global toggle for enforcing the OpenSSL FIPS mode."},
		{Name: "heartbeat_in_pthread", Type: Bool, Default: "False",
			Help: "Run the health check heartbeat in a native thread (Python only; no effect in Go)."},
		{Name: "kombu_reconnect_delay", Type: Duration, Default: "1.0", Min: Bound(0), Max: Bound(4.5),
			DeprecatedNames: []string{"DEFAULT/kombu_reconnect_delay"},
			Help:            "How long to wait (in seconds) before reconnecting in response to an AMQP consumer cancel notification."},
		{Name: "kombu_compression", Type: String,
			Help: "EXPERIMENTAL: gzip or bz2; unset means no compression."},
		{Name: "kombu_missing_consumer_retry_timeout", Type: Duration, Default: "60",
			DeprecatedNames: []string{"kombu_reconnect_timeout"},
			Help:            "How long to wait for a missing client before abandoning to send it its replies."},
		{Name: "kombu_failover_strategy", Type: String, Default: "round-robin",
			Choices: []string{"round-robin", "shuffle"},
			Help:    "Determines how the next RabbitMQ node is chosen when the current one becomes unavailable."},
		{Name: "rabbit_login_method", Type: String, Default: "AMQPLAIN",
			Choices:         []string{"PLAIN", "AMQPLAIN", "EXTERNAL", "RABBIT-CR-DEMO"},
			DeprecatedNames: []string{"DEFAULT/rabbit_login_method"},
			Help:            "The RabbitMQ login method."},
		{Name: "rabbit_retry_interval", Type: Duration, Default: "1",
			Help: "How frequently to retry connecting with RabbitMQ."},
		{Name: "rabbit_retry_backoff", Type: Duration, Default: "2",
			DeprecatedNames: []string{"DEFAULT/rabbit_retry_backoff"},
			Help:            "How long to backoff for between retries when connecting to RabbitMQ."},
		{Name: "rabbit_interval_max", Type: Duration, Default: "30",
			Help: "Maximum interval of RabbitMQ connection retries."},
		{Name: "rabbit_ha_queues", Type: Bool, Default: "False",
			DeprecatedNames: []string{"DEFAULT/rabbit_ha_queues"},
			Help:            "Try to use HA queues in RabbitMQ (x-ha-policy: all)."},
		{Name: "rabbit_quorum_queue", Type: Bool, Default: "False",
			Help: "Use quorum queues in RabbitMQ (x-queue-type: quorum)."},
		{Name: "rabbit_quorum_delivery_limit", Type: Int, Default: "0",
			Help: "Redeliveries after which a quorum queue drops or dead-letters a message; 0 means no limit."},
		{Name: "rabbit_quroum_max_memory_length", Type: Int, Default: "0",
			Help: "Maximum number of messages a quorum queue keeps in memory; 0 means no limit (the misspelling is oslo's)."},
		{Name: "rabbit_quroum_max_memory_bytes", Type: Int, Default: "0",
			Help: "Maximum bytes a quorum queue keeps in memory; 0 means no limit (the misspelling is oslo's)."},
		{Name: "rabbit_transient_queues_ttl", Type: Duration, Default: "1800", Min: Bound(1),
			Help: "Positive integer representing duration in seconds for queue TTL (x-expires)."},
		{Name: "rabbit_qos_prefetch_count", Type: Int, Default: "0",
			Help: "Specifies the number of messages to prefetch; 0 means unlimited."},
		{Name: "heartbeat_timeout_threshold", Type: Duration, Default: "60",
			Help: "Seconds after which the broker is considered down if heartbeat's keep-alive fails (0 disables heartbeat)."},
		{Name: "heartbeat_rate", Type: Int, Default: "2",
			Help: "How often times during the heartbeat_timeout_threshold we check the heartbeat."},
		{Name: "direct_mandatory_flag", Type: Bool, Default: "True",
			Help: "(DEPRECATED) Enable/Disable the RabbitMQ mandatory flag for direct send."},
		{Name: "enable_cancel_on_failover", Type: Bool, Default: "False",
			Help: "Enable x-cancel-on-ha-failover flag so that rabbitmq server will cancel and notify consumers when queue is down."},
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

package config

import (
	"strings"
	"testing"
	"time"
)

func TestMessagingOpts(t *testing.T) {
	c := New()
	if err := RegisterMessagingOpts(c); err != nil {
		t.Fatal(err)
	}
	if err := RegisterMessagingOpts(c); err != nil {
		t.Fatalf("second registration: %v", err)
	}
	if err := c.Validate(); err != nil {
		t.Fatalf("defaults do not validate: %v", err)
	}
	if n := len(RabbitOpts()); n != 37 {
		t.Errorf("%d rabbit options, want 18.1's 37", n)
	}
	checks := []struct {
		group, name string
		got, want   any
	}{
		{"", "transport_url", c.String("", "transport_url"), ""},
		{"", "control_exchange", c.String("", "control_exchange"), "openstack"},
		{"", "rpc_response_timeout", c.Duration("", "rpc_response_timeout"), 60 * time.Second},
		{"", "executor_thread_pool_size", c.Int("", "executor_thread_pool_size"), 64},
		{"", "rpc_ping_enabled", c.Bool("", "rpc_ping_enabled"), false},
		{NotificationsGroup, "driver", len(c.Strings(NotificationsGroup, "driver")), 0},
		{NotificationsGroup, "topics", strings.Join(c.List(NotificationsGroup, "topics"), ","), "notifications"},
		{NotificationsGroup, "retry", c.Int(NotificationsGroup, "retry"), -1},
		{RabbitGroup, "rpc_conn_pool_size", c.Int(RabbitGroup, "rpc_conn_pool_size"), 30},
		{RabbitGroup, "kombu_reconnect_delay", c.Duration(RabbitGroup, "kombu_reconnect_delay"), time.Second},
		{RabbitGroup, "kombu_failover_strategy", c.String(RabbitGroup, "kombu_failover_strategy"), "round-robin"},
		{RabbitGroup, "rabbit_login_method", c.String(RabbitGroup, "rabbit_login_method"), "AMQPLAIN"},
		{RabbitGroup, "rabbit_transient_queues_ttl", c.Duration(RabbitGroup, "rabbit_transient_queues_ttl"), 30 * time.Minute},
		{RabbitGroup, "heartbeat_timeout_threshold", c.Duration(RabbitGroup, "heartbeat_timeout_threshold"), time.Minute},
		{RabbitGroup, "direct_mandatory_flag", c.Bool(RabbitGroup, "direct_mandatory_flag"), true},
		{RabbitGroup, "rabbit_quorum_max_memory_bytes", c.Int(RabbitGroup, "rabbit_quorum_max_memory_bytes"), 0},
		{RabbitGroup, "heartbeat_rate", c.Int(RabbitGroup, "heartbeat_rate"), 3},
		{RabbitGroup, "ssl_enforce_hostname_verification", c.Bool(RabbitGroup, "ssl_enforce_hostname_verification"), true},
		{RabbitGroup, "rabbit_stream_fanout", c.Bool(RabbitGroup, "rabbit_stream_fanout"), false},
		{RabbitGroup, "kombu_reconnect_splay", c.Duration(RabbitGroup, "kombu_reconnect_splay"), time.Duration(0)},
	}
	for _, ck := range checks {
		if ck.got != ck.want {
			t.Errorf("[%s] %s = %v, want %v", ck.group, ck.name, ck.got, ck.want)
		}
	}
}

func TestMessagingDeprecatedNames(t *testing.T) {
	c := New()
	if err := RegisterMessagingOpts(c); err != nil {
		t.Fatal(err)
	}
	mustLoad(t, c, `[DEFAULT]
rpc_thread_pool_size = 8
notification_driver = messaging
notification_topics = a, b
rpc_conn_pool_size = 5
kombu_reconnect_delay = 2.5
[oslo_messaging_notifications]
driver = messagingv2
driver = log
[oslo_messaging_rabbit]
kombu_ssl_ca_certs = /ca.pem
kombu_reconnect_timeout = 9
`)
	if got := c.Int("", "executor_thread_pool_size"); got != 8 {
		t.Errorf("executor_thread_pool_size = %d", got)
	}
	// oslo.messaging 16.0 removed the [DEFAULT] fallbacks and the kombu_ssl_*
	// names: 18.1 no longer reads them (RemovedMessagingOpts).
	if got := strings.Join(c.Strings(NotificationsGroup, "driver"), ","); got != "messagingv2,log" {
		t.Errorf("driver = %s", got)
	}
	if got := strings.Join(c.List(NotificationsGroup, "topics"), ","); got != "notifications" {
		t.Errorf("topics = %s", got)
	}
	if got := c.Int(RabbitGroup, "rpc_conn_pool_size"); got != 30 {
		t.Errorf("rpc_conn_pool_size = %d", got)
	}
	if got := c.Duration(RabbitGroup, "kombu_reconnect_delay"); got != time.Second {
		t.Errorf("kombu_reconnect_delay = %v", got)
	}
	if got := c.String(RabbitGroup, "ssl_ca_file"); got != "" {
		t.Errorf("ssl_ca_file = %q", got)
	}
	var removed []string
	for _, r := range RemovedMessagingOpts() {
		if _, set := c.Lookup(r.Group, r.Name); set {
			removed = append(removed, r.String())
		}
	}
	want := []string{
		"[DEFAULT] notification_driver is not an option of oslo.messaging 18.1 (removed), use [oslo_messaging_notifications] driver",
		"[DEFAULT] notification_topics is not an option of oslo.messaging 18.1 (removed), use [oslo_messaging_notifications] topics",
		"[DEFAULT] rpc_conn_pool_size is not an option of oslo.messaging 18.1 (removed), use [oslo_messaging_rabbit] rpc_conn_pool_size",
		"[DEFAULT] kombu_reconnect_delay is not an option of oslo.messaging 18.1 (removed), use [oslo_messaging_rabbit] kombu_reconnect_delay",
	}
	if strings.Join(removed, "\n") != strings.Join(want, "\n") {
		t.Errorf("removed options found:\n%s\nwant\n%s", strings.Join(removed, "\n"), strings.Join(want, "\n"))
	}
	if got := c.Duration(RabbitGroup, "kombu_missing_consumer_retry_timeout"); got != 9*time.Second {
		t.Errorf("kombu_missing_consumer_retry_timeout = %v", got)
	}
	if err := c.Validate(); err != nil {
		t.Error(err)
	}
	mustLoad(t, c, "[oslo_messaging_rabbit]\nkombu_reconnect_delay = 5\nrabbit_login_method = plain\n")
	err := c.Validate()
	if err == nil || !strings.Contains(err.Error(), "kombu_reconnect_delay: 5 is greater than the maximum 4.5") ||
		!strings.Contains(err.Error(), `rabbit_login_method: "plain" is not one of PLAIN`) {
		t.Errorf("Validate = %v", err)
	}
}

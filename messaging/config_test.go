package messaging

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/oslogo/oslogo/config"
)

func TestTransportConfigFrom(t *testing.T) {
	conf := config.New()
	if err := config.RegisterMessagingOpts(conf); err != nil {
		t.Fatal(err)
	}
	ini := `[DEFAULT]
transport_url = memory://configured
control_exchange = nova
rpc_response_timeout = 30
executor_thread_pool_size = 8

[oslo_messaging_notifications]
driver = messagingv2
driver = log
topics = notifications, versioned_notifications
transport_url = memory://notify

[oslo_messaging_rabbit]
amqp_durable_queues = true
`
	if err := conf.LoadReader("nova.conf", strings.NewReader(ini)); err != nil {
		t.Fatal(err)
	}
	cfg, err := TransportConfigFrom(conf, nil)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.ControlExchange != "nova" || cfg.ResponseTimeout != 30*time.Second || cfg.ExecutorThreadPoolSize != 8 {
		t.Errorf("DEFAULT options: %+v", cfg)
	}
	if strings.Join(cfg.Notifications.Drivers, ",") != "messagingv2,log" || strings.Join(cfg.Notifications.Topics, ",") != "notifications,versioned_notifications" || cfg.Notifications.Retry != -1 {
		t.Errorf("notification options: %+v", cfg.Notifications)
	}
	if cfg.DriverConfig["amqp_durable_queues"] != "true" || len(cfg.DriverConfig) != 1 {
		t.Errorf("driver options: %v (only options set in files are passed)", cfg.DriverConfig)
	}
	rpc, err := OpenConfigured(context.Background(), conf, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer rpc.Close()
	notify, err := OpenNotificationTransport(context.Background(), conf, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer notify.Close()
	if rpc.String() != "memory://configured" || notify.String() != "memory://notify" {
		t.Errorf("transports: rpc %q, notifications %q", rpc, notify)
	}
	if err := conf.Set(config.DefaultGroup, "rpc_response_timeout", "soon"); err == nil {
		if _, err := TransportConfigFrom(conf, nil); err == nil {
			t.Error("an invalid timeout was accepted")
		}
	}
}

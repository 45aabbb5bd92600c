package messaging

import (
	"log/slog"
	"slices"
	"strings"
	"testing"

	"github.com/oslogo/oslogo/config"
)

// TestTransportConfigRemovedOptions: the [DEFAULT] fallbacks oslo.messaging
// 16.0 removed are not read any more (as 18.1's oslo.config ignores them)
// and each one set gets a warning naming its replacement; lock_path comes
// from [oslo_concurrency].
func TestTransportConfigRemovedOptions(t *testing.T) {
	conf := config.New()
	if err := config.RegisterMessagingOpts(conf); err != nil {
		t.Fatal(err)
	}
	ini := `[DEFAULT]
notification_driver = messaging
notification_topics = old_topic
rabbit_ha_queues = true

[oslo_concurrency]
lock_path = /var/lib/nova/tmp
`
	if err := conf.LoadReader("nova.conf", strings.NewReader(ini)); err != nil {
		t.Fatal(err)
	}
	var logs strings.Builder
	cfg, err := TransportConfigFrom(conf, slog.New(slog.NewTextHandler(&logs, nil)))
	if err != nil {
		t.Fatal(err)
	}
	if len(cfg.Notifications.Drivers) != 0 || !slices.Equal(cfg.Notifications.Topics, []string{"notifications"}) || cfg.DriverConfig["rabbit_ha_queues"] != "" {
		t.Errorf("a removed option took effect: %+v", cfg)
	}
	if cfg.LockPath != "/var/lib/nova/tmp" {
		t.Errorf("lock path %q", cfg.LockPath)
	}
	for _, want := range []string{
		"[DEFAULT] notification_driver is not an option of oslo.messaging 18.1 (removed), use [oslo_messaging_notifications] driver",
		"[DEFAULT] notification_topics is not an option of oslo.messaging 18.1 (removed), use [oslo_messaging_notifications] topics",
		"[DEFAULT] rabbit_ha_queues is not an option of oslo.messaging 18.1 (removed), use [oslo_messaging_rabbit] rabbit_ha_queues",
	} {
		if !strings.Contains(logs.String(), want) {
			t.Errorf("no warning %q in\n%s", want, logs.String())
		}
	}
}

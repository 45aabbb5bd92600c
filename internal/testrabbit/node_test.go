package testrabbit

import (
	"strings"
	"testing"
)

// TestNodeFiles: the node's rabbitmq.conf listens on loopback on the
// given ports, the management plugin is enabled exactly when a MgmtPort
// is given, extra config and plugins are kept, and options that would
// clash with the system node are refused.
func TestNodeFiles(t *testing.T) {
	conf, plugins, err := NodeOptions{Name: "n", AMQPPort: 5800, MgmtPort: 15800, DistPort: 25800,
		Plugins: []string{"rabbitmq_amqp1_0"}, Config: "collect_statistics_interval = 1000"}.files()
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range []string{"listeners.tcp.default = 127.0.0.1:5800", "loopback_users = none",
		"management.tcp.port = 15800", "management.tcp.ip = 127.0.0.1", "collect_statistics_interval = 1000"} {
		if !strings.Contains(conf, line+"\n") {
			t.Errorf("rabbitmq.conf lacks %q:\n%s", line, conf)
		}
	}
	if plugins != "[rabbitmq_management,rabbitmq_amqp1_0].\n" {
		t.Errorf("enabled_plugins %q", plugins)
	}

	conf, plugins, err = NodeOptions{Name: "n", AMQPPort: 5801, DistPort: 25801}.files()
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(conf, "management") || plugins != "[].\n" {
		t.Errorf("without MgmtPort: %q %q", conf, plugins)
	}

	for _, o := range []NodeOptions{
		{Name: "n", AMQPPort: 5801, DistPort: 25801, Plugins: []string{"rabbitmq_management"}},
		{AMQPPort: 5801, DistPort: 25801},
		{Name: "n", DistPort: 25801},
		{Name: "n", AMQPPort: 5801},
	} {
		if _, _, err := o.files(); err == nil {
			t.Errorf("%+v accepted", o)
		}
	}
}

package broker

import (
	"testing"

	amqp "github.com/rabbitmq/amqp091-go"
)

// TestAdvertisedCapabilities: connection.start lists every capability the
// broker implements, so clients that look before using one (consumer
// priorities, confirms, cancel notifications) use it.
func TestAdvertisedCapabilities(t *testing.T) {
	_, url := startBroker(t, nil)
	c := dial(t, url)
	caps, ok := c.Properties["capabilities"].(amqp.Table)
	if !ok {
		t.Fatalf("no capabilities table in %v", c.Properties)
	}
	for _, name := range []string{"publisher_confirms", "exchange_exchange_bindings", "basic.nack",
		"consumer_cancel_notify", "connection.blocked", "consumer_priorities",
		"authentication_failure_close", "per_consumer_qos"} {
		if caps[name] != true {
			t.Errorf("capability %s = %v, want true", name, caps[name])
		}
	}
}

package main

import (
	"testing"

	"github.com/oslogo/oslogo/internal/testrabbit"
)

// startCtlRabbit starts the RabbitMQ node of the ctl tests, with the
// management plugin, on ports of its own (AMQP 5790, management 15790,
// Erlang distribution 25790; the shared node on 5672 has no management
// plugin and must not be changed). Statistics are collected every second
// rather than every 5 s, so the API's message counts follow sooner. The
// test's cleanup stops the node.
func startCtlRabbit(t *testing.T) *testrabbit.Node {
	t.Helper()
	return testrabbit.StartNode(t, testrabbit.NodeOptions{Name: "oslogo-ctl",
		AMQPPort: 5790, MgmtPort: 15790, DistPort: 25790, Config: "collect_statistics_interval = 1000"})
}

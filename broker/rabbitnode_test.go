package broker

import (
	"strings"
	"testing"

	"github.com/oslogo/oslogo/internal/testrabbit"
)

// startRabbitNode starts the RabbitMQ 3.10 node of the tests that compare
// the broker's administration with RabbitMQ's, with the management
// plugin, on the ports of the defs task (AMQP 5800, management 15800,
// Erlang distribution 25800); the test's cleanup stops it.
func startRabbitNode(t testing.TB) *testrabbit.Node {
	t.Helper()
	return testrabbit.StartNode(t, testrabbit.NodeOptions{Name: "oslogo-defs@localhost",
		AMQPPort: 5800, MgmtPort: 15800, DistPort: 25800})
}

// rabbitEval runs an Erlang expression on the node (rabbitmqctl eval).
func rabbitEval(t testing.TB, n *testrabbit.Node, expr string) string {
	t.Helper()
	out, err := n.Ctl("-q", "eval", expr)
	if err != nil {
		t.Fatalf("rabbitmqctl eval %s: %v: %s", expr, err, out)
	}
	return strings.TrimSpace(out)
}

package rabbit

import (
	"context"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/oslogo/oslogo/broker"
)

// startEmbeddedServer is startEmbeddedBroker returning the broker itself,
// for tests that act on it from the broker's side.
func startEmbeddedServer(t testing.TB) *broker.Server {
	t.Helper()
	opts := broker.DefaultOptions()
	opts.AMQPAddr = "127.0.0.1:0"
	b, err := broker.New(opts)
	if err != nil {
		t.Fatal(err)
	}
	if err := b.Start(); err != nil {
		t.Fatal(err)
	}
	if !b.ReadyForConnections(10 * time.Second) {
		t.Fatal("embedded broker not ready")
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := b.Shutdown(ctx); err != nil {
			t.Errorf("broker shutdown: %v", err)
		}
	})
	return b
}

// closeEmbeddedConnectionsNamed is closeConnectionsNamed on the embedded
// broker: every connection of this process whose connection_name holds
// purpose is closed by the broker (Server.CloseConnection, what DELETE
// /api/connections/{name} does: connection.close 320 CONNECTION_FORCED).
func closeEmbeddedConnectionsNamed(t testing.TB, b *broker.Server, purpose string) int {
	t.Helper()
	conns, err := b.Connections(broker.ConnectionsOptions{})
	if err != nil {
		t.Fatal(err)
	}
	marker := ":" + strconv.Itoa(os.Getpid()) + ":" + purpose + ":"
	n := 0
	for _, c := range conns {
		name, _ := c.ClientProperties["connection_name"].(string)
		if !strings.Contains(name, marker) {
			continue
		}
		if err := b.CloseConnection(c.Name, "oslogo reliability test"); err != nil {
			t.Errorf("close %s: %v", c.Name, err)
			continue
		}
		n++
	}
	return n
}

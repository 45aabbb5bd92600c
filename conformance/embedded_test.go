package conformance

import (
	"context"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/oslogo/oslogo/broker"
	"github.com/oslogo/oslogo/driver"
	"github.com/oslogo/oslogo/driver/drivertest"
	"github.com/oslogo/oslogo/driver/rabbit"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// startBroker starts an embedded broker on a free loopback port.
func startBroker(tb testing.TB) string {
	tb.Helper()
	opts := broker.DefaultOptions()
	opts.AMQPAddr = "127.0.0.1:0"
	b, err := broker.New(opts)
	if err != nil {
		tb.Fatal(err)
	}
	if err := b.Start(); err != nil {
		tb.Fatal(err)
	}
	if !b.ReadyForConnections(10 * time.Second) {
		tb.Fatal("embedded broker not ready")
	}
	tb.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := b.Shutdown(ctx); err != nil {
			tb.Errorf("broker shutdown: %v", err)
		}
	})
	return "rabbit://guest:guest@" + b.Addr().String() + "/"
}

func harness(url string) drivertest.Harness {
	return drivertest.Harness{
		Open: func(t testing.TB) driver.Driver {
			d, err := rabbit.OpenString(url, driver.Options{})
			if err != nil {
				t.Fatal(err)
			}
			return d
		},
		Features: drivertest.Features{Durable: true},
	}
}

// TestRabbitDriverOnEmbeddedBroker: the rabbit:// driver passes the whole
// suite against oslogo's own broker, as it does against RabbitMQ.
func TestRabbitDriverOnEmbeddedBroker(t *testing.T) {
	drivertest.RunConformanceTests(t, harness(startBroker(t)))
}

func BenchmarkRabbitDriverOnEmbeddedBroker(b *testing.B) {
	drivertest.RunBenchmarks(b, harness(startBroker(b)))
}

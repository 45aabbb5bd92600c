package rabbit

import (
	"testing"

	"github.com/oslogo/oslogo/driver"
	"github.com/oslogo/oslogo/driver/drivertest"
)

// TestKollaConformanceEmbedded runs the conformance suite in the kolla
// configuration on the embedded broker (stream and quorum queues).
func TestKollaConformanceEmbedded(t *testing.T) {
	env := kollaEnv{url: "rabbit://guest:guest@" + startEmbeddedBroker(t, nil) + "/", lock: t.TempDir()}
	drivertest.RunConformanceTests(t, drivertest.Harness{
		Open:     func(t testing.TB) driver.Driver { return env.open(t, nil) },
		Features: drivertest.Features{Durable: true},
	})
}

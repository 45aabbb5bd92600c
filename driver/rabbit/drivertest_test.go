package rabbit

import (
	"testing"

	"github.com/oslogo/oslogo/driver"
	"github.com/oslogo/oslogo/driver/drivertest"
)

func harness() drivertest.Harness {
	return drivertest.Harness{
		Open:     func(t testing.TB) driver.Driver { return openTest(t, nil) },
		Features: drivertest.Features{Durable: true},
	}
}

// TestConformance runs the transport conformance suite on rabbit://.
func TestConformance(t *testing.T) { drivertest.RunConformanceTests(t, harness()) }

// BenchmarkConformance runs the suite's benchmarks on rabbit://.
func BenchmarkConformance(b *testing.B) { drivertest.RunBenchmarks(b, harness()) }

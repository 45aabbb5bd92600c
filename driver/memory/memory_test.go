package memory_test

import (
	"testing"

	"go.uber.org/goleak"

	"github.com/oslogo/oslogo/driver"
	"github.com/oslogo/oslogo/driver/drivertest"
	"github.com/oslogo/oslogo/driver/memory"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func harness() drivertest.Harness {
	return drivertest.Harness{
		Open: func(t testing.TB) driver.Driver {
			d, err := memory.Open("memory://" + t.Name())
			if err != nil {
				t.Fatal(err)
			}
			return d
		},
		Features: drivertest.Features{Durable: true},
	}
}

func TestConformance(t *testing.T) { drivertest.RunConformanceTests(t, harness()) }

func BenchmarkMemory(b *testing.B) { drivertest.RunBenchmarks(b, harness()) }

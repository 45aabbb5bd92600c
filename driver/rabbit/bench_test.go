package rabbit

import (
	"context"
	"encoding/json"
	"testing"
	"time"

	"github.com/oslogo/oslogo/driver"
)

// BenchmarkDriverCall measures calls through the driver alone (no
// messaging layer), to compare with `oslogo bench --mode bare-call`.
func BenchmarkDriverCall(b *testing.B) {
	srv := openTest(b, nil)
	cli := openTest(b, nil)
	topic := uniqueTopic(b)
	l, err := srv.Listen(context.Background(), driver.Target{Exchange: "oslogo_x", Topic: topic, Server: "s"})
	if err != nil {
		b.Fatal(err)
	}
	wg := serve(b, l, echoHandler)
	defer func() { _ = l.Close(); wg.Wait() }()
	target := driver.Target{Exchange: "oslogo_x", Topic: topic}
	req := &driver.Request{Method: "echo", Args: json.RawMessage(`{"s": "xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx"}`)}
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if _, err := cli.Call(context.Background(), target, req, driver.SendOptions{Timeout: 30 * time.Second}); err != nil {
				b.Error(err)
				return
			}
		}
	})
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "calls/s")
}

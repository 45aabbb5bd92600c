package rabbit_test

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/oslogo/oslogo/driver/rabbit"
	"github.com/oslogo/oslogo/messaging"
)

// BenchmarkMessagingCall measures calls through the public API on
// rabbit://, the path `oslogo bench --mode call` takes (client and server
// on separate transports, 64-byte payload).
func BenchmarkMessagingCall(b *testing.B) {
	ctx := context.Background()
	url := rabbit.TestURL()
	srvT, err := messaging.OpenTransport(ctx, url, messaging.DefaultTransportConfig())
	if err != nil {
		b.Fatal(err)
	}
	defer srvT.Close()
	cliT, err := messaging.OpenTransport(ctx, url, messaging.DefaultTransportConfig())
	if err != nil {
		b.Fatal(err)
	}
	defer cliT.Close()
	topic := "bench_" + rabbit.NewMessageID()[:8]
	ep := messaging.NewEndpoint(messaging.Target{})
	ep.HandleRaw("echo", func(_ context.Context, a json.RawMessage) (any, error) { return a, nil })
	srv, err := messaging.NewRPCServer(srvT, messaging.Target{Topic: topic, Server: "bench"}, []*messaging.Endpoint{ep})
	if err != nil {
		b.Fatal(err)
	}
	if err := srv.Start(ctx); err != nil {
		b.Fatal(err)
	}
	defer func() { _ = srv.Stop(context.Background()); srv.Wait() }()
	cli := messaging.NewRPCClient(cliT, messaging.Target{Topic: topic}, messaging.WithTimeout(60*time.Second))
	args := map[string]any{"s": strings.Repeat("x", 64)}
	for _, callers := range []int{1, 8} {
		b.Run(fmt.Sprintf("callers=%d", callers), func(b *testing.B) {
			var next atomic.Int64
			var wg sync.WaitGroup
			for range callers {
				wg.Add(1)
				go func() {
					defer wg.Done()
					for next.Add(1) <= int64(b.N) {
						if _, err := cli.Call(ctx, "echo", args); err != nil {
							b.Error(err)
							return
						}
					}
				}()
			}
			wg.Wait()
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "calls/s")
		})
	}
}

// BenchmarkMessagingCast measures casts through the public API with 8
// callers; a cast counts once the broker confirmed it.
func BenchmarkMessagingCast(b *testing.B) {
	ctx := context.Background()
	url := rabbit.TestURL()
	srvT, err := messaging.OpenTransport(ctx, url, messaging.DefaultTransportConfig())
	if err != nil {
		b.Fatal(err)
	}
	defer srvT.Close()
	cliT, err := messaging.OpenTransport(ctx, url, messaging.DefaultTransportConfig())
	if err != nil {
		b.Fatal(err)
	}
	defer cliT.Close()
	topic := "bench_" + rabbit.NewMessageID()[:8]
	var got atomic.Int64
	ep := messaging.NewEndpoint(messaging.Target{})
	ep.HandleRaw("record", func(_ context.Context, a json.RawMessage) (any, error) { got.Add(1); return nil, nil })
	srv, err := messaging.NewRPCServer(srvT, messaging.Target{Topic: topic, Server: "bench"}, []*messaging.Endpoint{ep})
	if err != nil {
		b.Fatal(err)
	}
	if err := srv.Start(ctx); err != nil {
		b.Fatal(err)
	}
	defer func() { _ = srv.Stop(context.Background()); srv.Wait() }()
	cli := messaging.NewRPCClient(cliT, messaging.Target{Topic: topic})
	args := map[string]any{"s": strings.Repeat("x", 64)}
	b.ResetTimer()
	var next atomic.Int64
	var wg sync.WaitGroup
	for range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for next.Add(1) <= int64(b.N) {
				if err := cli.Cast(ctx, "record", args); err != nil {
					b.Error(err)
					return
				}
			}
		}()
	}
	wg.Wait()
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "casts/s")
}

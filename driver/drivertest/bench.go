package drivertest

import (
	"context"
	"strings"
	"testing"

	"github.com/oslogo/oslogo/messaging"
)

// RunBenchmarks measures calls (sequential and parallel), casts and
// notifications over the driver.
func RunBenchmarks(b *testing.B, h Harness) {
	b.Run("Call", func(b *testing.B) { benchCall(b, h, false, 100) })
	b.Run("CallParallel", func(b *testing.B) { benchCall(b, h, true, 100) })
	b.Run("Call4KB", func(b *testing.B) { benchCall(b, h, false, 4096) })
	b.Run("Cast", func(b *testing.B) { benchCast(b, h) })
	b.Run("Notify", func(b *testing.B) { benchNotify(b, h) })
}

func benchCall(b *testing.B, h Harness, parallel bool, size int) {
	tr := newTransport(b, h)
	topic := unique("bcall")
	newServer(b, tr, topic, "s1")
	c := messaging.NewRPCClient(tr, messaging.Target{Topic: topic})
	args := map[string]any{"data": strings.Repeat("x", size)}
	ctx := context.Background()
	b.SetBytes(int64(size))
	b.ReportAllocs()
	b.ResetTimer()
	if parallel {
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				if _, err := c.Call(ctx, "echo", args); err != nil {
					b.Error(err)
					return
				}
			}
		})
		return
	}
	for i := 0; i < b.N; i++ {
		if _, err := c.Call(ctx, "echo", args); err != nil {
			b.Fatal(err)
		}
	}
}

func benchCast(b *testing.B, h Harness) {
	tr := newTransport(b, h)
	topic := unique("bcast")
	s := newServer(b, tr, topic, "s1")
	c := messaging.NewRPCClient(tr, messaging.Target{Topic: topic})
	ctx := context.Background()
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if err := c.Cast(ctx, "count", nil); err != nil {
			b.Fatal(err)
		}
	}
	eventually(b, "every cast to be served", func() bool { return s.casts.Load() == int64(b.N) })
}

func benchNotify(b *testing.B, h Harness) {
	tr := newTransport(b, h)
	topic := unique("bnotify")
	var col collector
	l, err := messaging.NewNotificationListener(tr, []messaging.Target{{Topic: topic}},
		[]messaging.NotificationEndpoint{{Handlers: map[messaging.Priority]messaging.NotificationHandler{messaging.PriorityInfo: col.handler("l")}}})
	if err != nil {
		b.Fatal(err)
	}
	startListener(b, l)
	n := newNotifier(b, tr, topic, messaging.NotifyDriverMessagingV2)
	ctx := context.Background()
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if err := n.Info(ctx, "bench.event", i); err != nil {
			b.Fatal(err)
		}
	}
	eventually(b, "every notification to be handled", func() bool { return col.count() >= b.N })
}

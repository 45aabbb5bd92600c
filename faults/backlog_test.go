//go:build faults

package faults

import (
	"context"
	"fmt"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/oslogo/oslogo/messaging"
)

// fillDuration is how long the notification queue fills
// (FAULTS_FILL=2m to change it; 90 s by default, 30 s with -short).
func fillDuration(t *testing.T) time.Duration {
	if v := os.Getenv("FAULTS_FILL"); v != "" {
		d, err := time.ParseDuration(v)
		if err != nil {
			t.Fatalf("FAULTS_FILL: %v", err)
		}
		return d
	}
	if testing.Short() {
		return 30 * time.Second
	}
	return 90 * time.Second
}

// TestNotificationBacklog fills a notification queue nobody consumes (1 KB
// persistent notifications, up to 200/s, each waiting for its confirm) for FAULTS_FILL while calls run on the
// same broker, sampling every second the broker's RSS and the calls'
// latency. Both should stay flat: a backlog on one queue must not slow
// RPC or grow the broker's memory with the queue.
func TestNotificationBacklog(t *testing.T) {
	b := startBroker(t, t.TempDir())
	topic := fmt.Sprintf("faults_backlog_%d", time.Now().UnixNano())
	led := newLedger()
	srvTr := openTransport(t, b.url(), durableOpts)
	defer srvTr.Close()
	srv := startServer(t, srvTr, messaging.Target{Topic: topic, Server: "s1"}, recordEndpoint(led, 0))
	defer stopServer(srv)
	cliTr := openTransport(t, b.url(), durableOpts)
	defer cliTr.Close()
	cli := messaging.NewRPCClient(cliTr, messaging.Target{Topic: topic})
	warmUp(t, cli)

	// A listener declares the notification queue, then goes away.
	notifTopic := topic + "_notif"
	ln, err := messaging.NewNotificationListener(srvTr, []messaging.Target{{Topic: notifTopic}},
		[]messaging.NotificationEndpoint{{Handlers: map[messaging.Priority]messaging.NotificationHandler{
			messaging.PriorityInfo: func(context.Context, *messaging.Notification) messaging.NotificationResult { return messaging.Handled },
		}}})
	if err != nil {
		t.Fatal(err)
	}
	if err := ln.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	stopCtx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	_ = ln.Stop(stopCtx)
	cancel()
	ln.Wait()

	ntr := openTransport(t, b.url(), durableOpts)
	defer ntr.Close()
	notifier, err := messaging.NewNotifier(ntr, "faults.backlog", messaging.WithNotifyDrivers(messaging.NotifyDriverMessagingV2), messaging.WithNotifyTopics(notifTopic))
	if err != nil {
		t.Fatal(err)
	}

	fill := fillDuration(t)
	payload := map[string]any{"data": strings.Repeat("n", 1000)}
	var notified, notifyFailed atomic.Int64
	stop := make(chan struct{})
	var wg sync.WaitGroup
	const publishers, perPublisher = 4, 50 // 200/s
	for range publishers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			tick := time.NewTicker(time.Second / perPublisher)
			defer tick.Stop()
			for {
				select {
				case <-stop:
					return
				case <-tick.C:
				}
				ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
				if err := notifier.Info(ctx, "faults.fill", payload); err != nil {
					notifyFailed.Add(1)
				} else {
					notified.Add(1)
				}
				cancel()
			}
		}()
	}

	// Calls, one at a time, 10/s; latency bucketed by second.
	type sample struct {
		rssMB     float64
		p50ms     float64
		calls     int
		failed    int
		queuedMsg int64
	}
	var (
		mu      sync.Mutex
		lat     []time.Duration
		failedN int
	)
	wg.Add(1)
	go func() {
		defer wg.Done()
		tick := time.NewTicker(100 * time.Millisecond)
		defer tick.Stop()
		for {
			select {
			case <-stop:
				return
			case <-tick.C:
			}
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			start := time.Now()
			_, err := cli.Call(ctx, "echo", map[string]any{"n": 1})
			el := time.Since(start)
			cancel()
			mu.Lock()
			if err != nil {
				failedN++
			} else {
				lat = append(lat, el)
			}
			mu.Unlock()
		}
	}()
	var samples []sample
	begin := time.Now()
	sec := time.NewTicker(time.Second)
	for time.Since(begin) < fill {
		<-sec.C
		mu.Lock()
		s := sample{rssMB: float64(b.rssKB()) / 1024, p50ms: float64(percentile(lat, 50).Microseconds()) / 1000, calls: len(lat), failed: failedN, queuedMsg: notified.Load()}
		lat, failedN = lat[:0], 0
		mu.Unlock()
		samples = append(samples, s)
	}
	sec.Stop()
	close(stop)
	wg.Wait()

	// Early: seconds 3..12 (after warm-up); late: the last ten.
	window := func(from, to int) (rss, p50 float64) {
		from, to = max(0, min(from, len(samples))), max(0, min(to, len(samples)))
		var rs, ls []float64
		for _, s := range samples[from:to] {
			rs = append(rs, s.rssMB)
			if s.calls > 0 {
				ls = append(ls, s.p50ms)
			}
		}
		return median(rs), median(ls)
	}
	earlyRSS, earlyLat := window(2, 12)
	lateRSS, lateLat := window(len(samples)-10, len(samples))
	var rssSeries, latSeries []string
	totalCalls, totalFailed := 0, 0
	for i, s := range samples {
		totalCalls += s.calls
		totalFailed += s.failed
		if i%5 == 4 || i == len(samples)-1 {
			rssSeries = append(rssSeries, fmt.Sprintf("%d:%.0f", i+1, s.rssMB))
			latSeries = append(latSeries, fmt.Sprintf("%d:%.1f", i+1, s.p50ms))
		}
	}
	t.Logf("broker RSS MB by second: %s", strings.Join(rssSeries, " "))
	t.Logf("call p50 ms by second: %s", strings.Join(latSeries, " "))

	queued := notified.Load()
	r := &Result{Scenario: "notification-backlog", Broker: "oslogo embedded (--data on disk)",
		Load: "up to 200 notifications/s (4 publishers) of 1 KB to a queue with no consumer + 10 calls/s", Fault: fmt.Sprintf("backlog grows for %s", fill),
		DurationS: time.Since(begin).Seconds(), Sent: int(queued + notifyFailed.Load()), Confirmed: int(queued), RecoveryS: -1}
	r.extra("queued_mb", round2(float64(queued)*1.2/1024))
	r.extra("notify_rate_per_s", round2(float64(queued)/time.Since(begin).Seconds()))
	r.extra("notify_failures", notifyFailed.Load())
	r.extra("calls_ok", totalCalls)
	r.extra("calls_failed", totalFailed)
	r.extra("rss_mb_early_late", fmt.Sprintf("%.0f -> %.0f", earlyRSS, lateRSS))
	r.extra("call_p50_ms_early_late", fmt.Sprintf("%.1f -> %.1f", earlyLat, lateLat))
	r.extra("rss_mb_every_5s", strings.Join(rssSeries, " "))
	r.extra("call_p50_ms_every_5s", strings.Join(latSeries, " "))
	r.check(totalFailed == 0, "%d calls failed", totalFailed)
	r.check(lateLat <= 3*earlyLat+5, "call latency grew with the backlog: p50 %.1f ms -> %.1f ms", earlyLat, lateLat)
	r.check(lateRSS <= 2*earlyRSS, "broker RSS grew with the backlog: %.0f MB -> %.0f MB (%d notifications queued)", earlyRSS, lateRSS, queued)
	report(t, r)
}

func median(xs []float64) float64 {
	if len(xs) == 0 {
		return 0
	}
	s := append([]float64(nil), xs...)
	for i := range s { // small: insertion sort
		for j := i; j > 0 && s[j] < s[j-1]; j-- {
			s[j], s[j-1] = s[j-1], s[j]
		}
	}
	return s[len(s)/2]
}

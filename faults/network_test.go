//go:build faults

package faults

import (
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/oslogo/oslogo/internal/faultproxy"
	"github.com/oslogo/oslogo/messaging"
)

// heartbeatS is heartbeat_timeout_threshold for the network scenarios.
const heartbeatS = 2

// TestNetworkFaults runs call and cast load through a proxy the test
// controls, in front of the embedded broker, and injects in turn: delay,
// drop (blackhole), half-open, reset, and refused connections. Dead peers
// must be noticed within two heartbeat intervals, calls must end by their
// deadline (no hang), clients must come back after the fault with backoff
// (and splay) between attempts, and nothing may leak after Close.
func TestNetworkFaults(t *testing.T) {
	leaks := goleak.IgnoreCurrent()
	b := startBroker(t, t.TempDir())
	p, err := faultproxy.New(b.addr)
	if err != nil {
		t.Fatal(err)
	}
	url := "rabbit://guest:guest@" + p.Addr() + "/"
	opts := map[string]string{"amqp_durable_queues": "true", "heartbeat_timeout_threshold": fmt.Sprint(heartbeatS)}
	topic := fmt.Sprintf("faults_net_%d", time.Now().UnixNano())
	led := newLedger()
	srvTr := openTransport(t, url, opts)
	srv := startServer(t, srvTr, messaging.Target{Topic: topic, Server: "s1"}, recordEndpoint(led, 0))
	cliTr := openTransport(t, url, opts)
	cli := messaging.NewRPCClient(cliTr, messaging.Target{Topic: topic})
	warmUp(t, cli)
	// Idle listeners on three more transports, so several connections
	// reconnect at once (their spread is the splay).
	var idle []*messaging.Transport
	var idleSrv []*messaging.RPCServer
	for i := range 3 {
		tr := openTransport(t, url, opts)
		idle = append(idle, tr)
		idleSrv = append(idleSrv, startServer(t, tr, messaging.Target{Topic: topic + "_idle", Server: fmt.Sprint(i)}, recordEndpoint(newLedger(), 0)))
	}

	const callTimeout = 5 * time.Second
	hangBound := callTimeout + 2*time.Second
	detectBound := time.Duration(2*heartbeatS) * time.Second
	faults := []struct {
		name   string
		inject func()
		heal   func()
		hold   time.Duration
		dead   bool // the peer is gone: clients must notice
	}{
		{"delay 300 ms each way", func() { p.SetDelay(300 * time.Millisecond) }, func() { p.SetDelay(0) }, scale(6 * time.Second), false},
		{"drop (blackhole both ways)", func() { p.SetMode(faultproxy.Drop) }, func() { p.SetMode(faultproxy.Forward) }, scale(8 * time.Second), true},
		{"half-open (broker side closed, client side silent)", p.HalfOpen, func() {}, scale(8 * time.Second), true},
		{"reset (RST on every connection)", p.Reset, func() {}, 0, false},
		{"refuse new connections after a reset", func() { p.SetMode(faultproxy.Refuse); p.Reset() }, func() { p.SetMode(faultproxy.Forward) }, scale(10 * time.Second), false},
	}
	for _, f := range faults {
		g := &loadGen{cli: cli, led: led, callRate: 10, castRate: 20, callTimeout: callTimeout, castTimeout: 10 * time.Second}
		lo := led.peekSeq()
		begin := time.Now()
		g.start()
		time.Sleep(2 * time.Second)
		openBefore := p.Open()
		histBefore := len(p.Conns())
		faultAt := time.Now()
		f.inject()
		time.Sleep(f.hold)
		healAt := time.Now()
		f.heal()
		// Load goes on until a call succeeds again (or 60 s).
		deadline := healAt.Add(60 * time.Second)
		for g.firstGoodAfter(healAt).IsZero() && time.Now().Before(deadline) {
			time.Sleep(100 * time.Millisecond)
		}
		time.Sleep(2 * time.Second)
		g.halt()
		hi := led.peekSeq()
		led.waitDrainedRange(lo, hi, 30*time.Second)

		sent, confirmed, received, lost, dup := led.countsRange(lo, hi)
		calls, ok, failed, _ := g.callStats(time.Time{})
		first := g.firstGoodAfter(healAt)
		r := &Result{Scenario: "network", Broker: "oslogo embedded via a TCP fault proxy", Load: "10 calls/s (5 s timeout) + 20 casts/s; 5 transports",
			Fault: f.name, DurationS: time.Since(begin).Seconds(), Sent: sent, Confirmed: confirmed, Received: received, Lost: lost, Duplicated: dup, RecoveryS: -1}
		if !first.IsZero() {
			r.RecoveryS = first.Sub(healAt).Seconds()
		}
		r.extra("calls", calls)
		r.extra("calls_ok", ok)
		r.extra("call_failures", failed)
		r.extra("cast_failures", led.failuresSince(lo))
		hung := g.longerThan(hangBound)
		r.extra("calls_over_deadline", hung)
		r.extra("slowest_call_s", secs(g.slowest()))
		r.check(hung == 0, "%d calls took longer than %s (deadline %s)", hung, hangBound, callTimeout)
		r.check(lost == 0, "%d confirmed casts lost", lost)
		r.check(!first.IsZero(), "no call succeeded within 60 s after the fault ended")
		hist := p.Conns()
		if f.dead {
			// Connections open at the fault: when did each client close its own?
			var detect []time.Duration
			var undetectedAge []string
			undetected := 0
			for _, c := range hist[:histBefore] {
				if c.Accepted.After(faultAt) || (!c.ClientClosed.IsZero() && c.ClientClosed.Before(faultAt)) {
					continue
				}
				if c.ClientClosed.IsZero() || c.ClientClosed.After(healAt) {
					undetected++
					// How long before the fault it was opened: one
					// opened during an earlier fault may be stuck in
					// its handshake.
					undetectedAge = append(undetectedAge, fmt.Sprintf("%.1f", faultAt.Sub(c.Accepted).Seconds()))
					continue
				}
				detect = append(detect, c.ClientClosed.Sub(faultAt))
			}
			r.extra("connections_at_fault", openBefore)
			r.extra("detect_max_s", secs(slices.Max(append(detect, 0))))
			r.extra("detect_median_s", secs(percentile(detect, 50)))
			r.extra("undetected_during_fault", undetected)
			if undetected > 0 {
				r.extra("undetected_opened_s_before_fault", strings.Join(undetectedAge, " "))
			}
			r.check(undetected == 0 && slices.Max(append(detect, 0)) <= detectBound+time.Second,
				"dead peer: %d of %d connections not closed during the fault, slowest closed after %s (bound: 2 heartbeats = %s)",
				undetected, len(detect)+undetected, slices.Max(append(detect, 0)), detectBound)
		}
		if strings.HasPrefix(f.name, "reset") || strings.HasPrefix(f.name, "refuse") {
			// Reconnect attempts after the fault: their spread and pace.
			var attempts []time.Duration
			for _, c := range hist[histBefore:] {
				attempts = append(attempts, c.Accepted.Sub(faultAt))
			}
			slices.Sort(attempts)
			r.extra("connections_at_fault", openBefore)
			r.extra("reconnect_attempts", len(attempts))
			if len(attempts) > 1 && openBefore > 1 {
				wave := attempts[:min(openBefore, len(attempts))]
				spread := wave[len(wave)-1] - wave[0]
				r.extra("first_wave_s", fmt.Sprintf("%.2f..%.2f", wave[0].Seconds(), wave[len(wave)-1].Seconds()))
				r.extra("first_wave_spread_s", secs(spread))
				// Splay: connections that dropped together must not all
				// come back in the same instant.
				r.check(spread >= 500*time.Millisecond,
					"no splay: the first %d reconnect attempts all came within %s", len(wave), spread)
			}
			if strings.HasPrefix(f.name, "refuse") {
				perConnPerS := float64(countBefore(attempts, f.hold)) / float64(openBefore) / f.hold.Seconds()
				r.extra("attempts_per_conn_per_s_while_refused", round2(perConnPerS))
				r.extra("attempts_while_refused", countBefore(attempts, f.hold))
				r.check(perConnPerS <= 1, "no backoff: %.1f connection attempts per connection per second while refused", perConnPerS)
			}
		}
		report(t, r)
	}

	for _, s := range idleSrv {
		stopServer(s)
	}
	stopServer(srv)
	for _, tr := range append(idle, srvTr, cliTr) {
		_ = tr.Close()
	}
	_ = p.Close()
	if err := goleak.Find(leaks); err != nil {
		t.Errorf("goroutines left after Close: %v", err)
	}
}

func countBefore(ds []time.Duration, d time.Duration) int {
	n := 0
	for _, x := range ds {
		if x < d {
			n++
		}
	}
	return n
}

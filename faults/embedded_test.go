//go:build faults

package faults

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/oslogo/oslogo/messaging"
)

// durableOpts are driver options for load that must survive a broker
// restart: durable queues (so persistent casts are kept).
var durableOpts = map[string]string{"amqp_durable_queues": "true"}

// TestBrokerKill9 kills the embedded broker with SIGKILL under confirmed,
// persistent cast load and call load, restarts it on the same address and
// data directory, and expects every confirmed cast to reach the server
// (which, like the client, reconnects by itself).
func TestBrokerKill9(t *testing.T) {
	b := startBroker(t, t.TempDir())
	topic := fmt.Sprintf("faults_kill9_%d", time.Now().UnixNano())
	led := newLedger()
	srvTr := openTransport(t, b.url(), durableOpts)
	defer srvTr.Close()
	srv := startServer(t, srvTr, messaging.Target{Topic: topic, Server: "s1"}, recordEndpoint(led, 0))
	defer stopServer(srv)
	cliTr := openTransport(t, b.url(), durableOpts)
	defer cliTr.Close()
	cli := messaging.NewRPCClient(cliTr, messaging.Target{Topic: topic})
	warmUp(t, cli)

	g := &loadGen{cli: cli, led: led, callRate: 10, castRate: 100, callTimeout: 10 * time.Second, castTimeout: 10 * time.Second}
	begin := time.Now()
	g.start()
	time.Sleep(scale(6 * time.Second))
	killAt := time.Now()
	b.kill9()
	time.Sleep(time.Second)
	b.start()
	upAt := time.Now()
	time.Sleep(scale(12 * time.Second))
	g.halt()
	led.waitDrained(30 * time.Second)

	sent, confirmed, received, lost, dup := led.counts()
	calls, ok, failed, _ := g.callStats(time.Time{})
	first := g.firstGoodAfter(upAt)
	r := &Result{Scenario: "broker-kill9", Broker: "oslogo embedded (--data on disk)",
		Load: "100 casts/s (persistent, confirmed, durable queue) + 10 calls/s", Fault: "SIGKILL of the broker, restart after 1 s",
		DurationS: time.Since(begin).Seconds(), Sent: sent, Confirmed: confirmed, Received: received, Lost: lost, Duplicated: dup, RecoveryS: -1}
	if !first.IsZero() {
		r.RecoveryS = first.Sub(upAt).Seconds()
	}
	r.extra("cast_failures", led.failures())
	r.extra("calls", calls)
	r.extra("calls_ok", ok)
	r.extra("call_failures", failed)
	r.extra("down_s", secs(upAt.Sub(killAt)))
	r.check(lost == 0, "%d confirmed casts lost", lost)
	r.check(!first.IsZero(), "no call succeeded after the restart (clients or server did not reconnect)")
	r.check(confirmed > sent/2, "only %d of %d casts confirmed", confirmed, sent)
	report(t, r)
}

// TestDiskFull runs the embedded broker on an 8 MiB tmpfs mostly taken by
// a ballast file. Casts past the limit must fail (nack or refusal), never
// be confirmed and then lost; after the ballast is removed, casts are
// confirmed again; after a SIGKILL and restart every confirmed cast is
// still there.
func TestDiskFull(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("mounting a tmpfs needs root")
	}
	// The name is what faults/cleanup.sh looks for after a run that
	// ended without its cleanups (a test timeout).
	mnt, err := os.MkdirTemp("", "oslogo-faults-tmpfs-")
	if err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command("mount", "-t", "tmpfs", "-o", "size=8m", "tmpfs", mnt).CombinedOutput(); err != nil {
		_ = os.Remove(mnt)
		t.Fatalf("mount tmpfs: %v: %s", err, out)
	}
	// Cleanups run last-in first-out: the broker (registered later) is
	// killed before the unmount.
	t.Cleanup(func() {
		if out, err := exec.Command("umount", mnt).CombinedOutput(); err != nil {
			t.Errorf("umount %s: %v: %s", mnt, err, out)
			return
		}
		_ = os.Remove(mnt)
	})
	// Leave 2 MiB to the broker.
	ballast := filepath.Join(mnt, "ballast")
	if err := os.WriteFile(ballast, make([]byte, 6<<20), 0o644); err != nil {
		t.Fatal(err)
	}
	b := startBroker(t, mnt)
	topic := fmt.Sprintf("faults_diskfull_%d", time.Now().UnixNano())
	led := newLedger()
	// The server declares the durable queue, then stops: the casts pile up
	// on disk.
	srvTr := openTransport(t, b.url(), durableOpts)
	srv := startServer(t, srvTr, messaging.Target{Topic: topic, Server: "s1"}, recordEndpoint(led, 0))
	stopServer(srv)
	_ = srvTr.Close()
	cliTr := openTransport(t, b.url(), durableOpts)
	defer cliTr.Close()
	cli := messaging.NewRPCClient(cliTr, messaging.Target{Topic: topic})

	begin := time.Now()
	pad := strings.Repeat("x", 4000)
	castOne := func() error {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		seq := led.newSeq()
		err := cli.Cast(ctx, "record", map[string]any{"seq": seq, "pad": pad})
		led.done(seq, err)
		return err
	}
	// Fill: 4 KB casts until 20 in a row fail (or 4000 casts, 16 MB, twice
	// what the tmpfs holds).
	var firstErr error
	fullAt := time.Time{}
	streak := 0
	for i := 0; i < 4000 && streak < 20; i++ {
		if err := castOne(); err != nil {
			streak++
			if firstErr == nil {
				firstErr, fullAt = err, time.Now()
			}
		} else {
			streak = 0
		}
	}
	_, confirmedFull, _, _, _ := led.counts()
	failedFull := led.failures()
	// Free space and cast again.
	if err := os.Remove(ballast); err != nil {
		t.Fatal(err)
	}
	freedAt := time.Now()
	var recovered time.Time
	okAfter := 0
	// The broker retries its store once a second after a write error:
	// keep casting (a failed one is refused at once) for up to a minute.
	for okAfter < 50 && time.Since(freedAt) < 60*time.Second {
		if err := castOne(); err != nil {
			time.Sleep(100 * time.Millisecond)
			continue
		}
		okAfter++
		if recovered.IsZero() {
			recovered = time.Now()
		}
	}
	// Crash and restart: everything confirmed must come back.
	b.kill9()
	b.start()
	srvTr2 := openTransport(t, b.url(), durableOpts)
	defer srvTr2.Close()
	srv2 := startServer(t, srvTr2, messaging.Target{Topic: topic, Server: "s1"}, recordEndpoint(led, 0))
	defer stopServer(srv2)
	led.waitDrained(60 * time.Second)

	sent, confirmed, received, lost, dup := led.counts()
	r := &Result{Scenario: "disk-full", Broker: "oslogo embedded (--data on an 8 MiB tmpfs, 2 MiB free)",
		Load: "4 KB persistent casts, one at a time, confirmed", Fault: "data directory full; ballast removed; then SIGKILL and restart",
		DurationS: time.Since(begin).Seconds(), Sent: sent, Confirmed: confirmed, Received: received, Lost: lost, Duplicated: dup, RecoveryS: -1}
	if !recovered.IsZero() && firstErr != nil {
		// Recovery: from freeing space to the next confirmed cast (only
		// meaningful when casts failed first).
		r.RecoveryS = recovered.Sub(freedAt).Seconds()
	}
	r.extra("confirmed_before_full", confirmedFull)
	r.extra("cast_failures_while_full", failedFull)
	r.extra("cast_failures_total", led.failures())
	r.extra("confirmed_after_freeing", okAfter)
	if firstErr != nil {
		r.extra("first_error", errClass(firstErr))
		r.extra("full_after_s", secs(fullAt.Sub(begin)))
	}
	r.check(firstErr != nil, "no cast failed on a full disk: %d casts (%d KB) all confirmed on a 2 MiB tmpfs", sent, sent*4)
	r.check(lost == 0, "%d confirmed casts lost", lost)
	r.check(okAfter > 0, "no cast confirmed after space was freed")
	if lost > 0 || firstErr == nil {
		r.extra("broker_log_tail", lastLines(b.logTail(), 5))
	}
	report(t, r)
}

func lastLines(s string, n int) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, " | ")
}

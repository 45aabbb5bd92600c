package rabbit

import (
	"bufio"
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/oslogo/oslogo/driver"
)

// staleLeaderProxy forwards AMQP connections to a broker and plays
// RabbitMQ 3.10's answer to publishes on a channel whose first publish
// came while a quorum queue's leader was down and not yet replaced (see
// nack.go): from poison() on, a channel whose first basic.publish passes
// through the proxy within the given window has every publish nacked (the
// broker's basic.ack rewritten into basic.nack, same layout) until
// heal(); channels that published before, or first publish after the
// window, are untouched.
type staleLeaderProxy struct {
	ln     net.Listener
	target string
	wg     sync.WaitGroup

	mu        sync.Mutex
	freshTill time.Time // channels whose first publish comes before this are poisoned
	healed    bool
	conns     map[net.Conn]struct{}

	nacked atomic.Int64 // acks turned into nacks
}

func newStaleLeaderProxy(t *testing.T, target string) *staleLeaderProxy {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &staleLeaderProxy{ln: ln, target: target, conns: map[net.Conn]struct{}{}}
	p.wg.Add(1)
	go p.accept()
	t.Cleanup(func() {
		_ = ln.Close()
		p.cut()
		p.wg.Wait()
	})
	return p
}

func (p *staleLeaderProxy) addr() string { return p.ln.Addr().String() }

// poison starts the window: channels that publish for the first time
// within window from now are nacked until heal.
func (p *staleLeaderProxy) poison(window time.Duration) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.freshTill, p.healed = time.Now().Add(window), false
}

// heal ends the nacks (the old leader's node is back).
func (p *staleLeaderProxy) heal() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.healed = true
}

// cut closes every connection, as the death of the node they were on.
func (p *staleLeaderProxy) cut() {
	p.mu.Lock()
	defer p.mu.Unlock()
	for c := range p.conns {
		_ = c.Close()
	}
	clear(p.conns)
}

func (p *staleLeaderProxy) accept() {
	defer p.wg.Done()
	for {
		c, err := p.ln.Accept()
		if err != nil {
			return
		}
		up, err := net.DialTimeout("tcp", p.target, 5*time.Second)
		if err != nil {
			_ = c.Close()
			continue
		}
		p.mu.Lock()
		p.conns[c], p.conns[up] = struct{}{}, struct{}{}
		p.mu.Unlock()
		// Channel state of this connection: the client's goroutine
		// writes it, the broker's reads it.
		var mu sync.Mutex
		poisoned := map[uint16]bool{}  // channel -> nacked
		published := map[uint16]bool{} // channel -> has published
		toBroker := func(ch uint16, class, method uint16, _ []byte) {
			mu.Lock()
			defer mu.Unlock()
			switch {
			case class == 20 && method == 10: // channel.open: a new channel
				delete(poisoned, ch)
				delete(published, ch)
			case class == 60 && method == 40 && !published[ch]: // first basic.publish
				published[ch] = true
				p.mu.Lock()
				poisoned[ch] = time.Now().Before(p.freshTill)
				p.mu.Unlock()
			}
		}
		toClient := func(ch uint16, class, method uint16, payload []byte) {
			if class != 60 || method != 80 { // basic.ack
				return
			}
			mu.Lock()
			bad := poisoned[ch]
			mu.Unlock()
			p.mu.Lock()
			bad = bad && !p.healed
			p.mu.Unlock()
			if bad {
				binary.BigEndian.PutUint16(payload[2:4], 120) // basic.nack: tag, then bits
				p.nacked.Add(1)
			}
		}
		p.wg.Add(2)
		go p.pipe(up, c, true, toBroker)
		go p.pipe(c, up, false, toClient)
	}
}

// pipe copies AMQP frames from src to dst, showing each method frame to
// inspect (which may rewrite it) first.
func (p *staleLeaderProxy) pipe(dst, src net.Conn, fromClient bool, inspect func(ch, class, method uint16, payload []byte)) {
	defer p.wg.Done()
	defer func() { _ = dst.Close(); _ = src.Close() }()
	r := bufio.NewReader(src)
	if fromClient { // "AMQP" 0 0 9 1
		hdr := make([]byte, 8)
		if _, err := io.ReadFull(r, hdr); err != nil {
			return
		}
		if _, err := dst.Write(hdr); err != nil {
			return
		}
	}
	head := make([]byte, 7)
	for {
		if _, err := io.ReadFull(r, head); err != nil {
			return
		}
		size := binary.BigEndian.Uint32(head[3:7])
		if size > 1<<20 {
			return
		}
		frame := make([]byte, 7+int(size)+1)
		copy(frame, head)
		if _, err := io.ReadFull(r, frame[7:]); err != nil {
			return
		}
		if head[0] == 1 && size >= 4 { // a method frame
			payload := frame[7 : 7+size]
			inspect(binary.BigEndian.Uint16(head[1:3]), binary.BigEndian.Uint16(payload[0:2]), binary.BigEndian.Uint16(payload[2:4]), payload)
		}
		if _, err := dst.Write(frame); err != nil {
			return
		}
	}
}

// TestNackedPublishRetriedOnNewChannel: the cluster failover of issue 10
// without a cluster. The client's send connection dies with its node and
// comes back at once on another; the broker then nacks every publish of
// a channel whose first publish came in the next 400 ms (the leader of
// the quorum queue not yet replaced), and keeps nacking it for as long as
// the old node is down (here, the rest of the test). Calls and casts made
// meanwhile must all succeed, the first within a second: a nack retires
// its channel, and the nacked message is published again on a new one.
// Before the fix every call and cast failed with "broker refused the
// message (basic.nack)" until the old node came back.
func TestNackedPublishRetriedOnNewChannel(t *testing.T) {
	broker := startEmbeddedBroker(t, nil)
	p := newStaleLeaderProxy(t, broker)
	srv := openString(t, "rabbit://guest:guest@"+broker+"/", nil)
	cli := openString(t, "rabbit://guest:guest@"+p.addr()+"/", nil)
	topic := uniqueTopic(t)
	ctx := ctxT(t, time.Minute)
	l, err := srv.Listen(ctx, driver.Target{Exchange: "oslogo_x", Topic: topic, Server: "s"})
	if err != nil {
		t.Fatal(err)
	}
	wg := serve(t, l, echoHandler)
	defer func() { _ = l.Close(); wg.Wait() }()
	target := driver.Target{Exchange: "oslogo_x", Topic: topic}
	call := func(retry int) error {
		cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		defer cancel()
		rep, err := cli.Call(cctx, target, &driver.Request{Method: "echo", Args: json.RawMessage(`{"i": 1}`)}, driver.SendOptions{Timeout: 5 * time.Second, Retry: retry})
		if err == nil && (rep.Failure != nil || string(rep.Result) != `{"i": 1}`) {
			err = fmt.Errorf("unexpected reply %+v", rep)
		}
		return err
	}
	cast := func(retry int) error {
		cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		defer cancel()
		return cli.Cast(cctx, target, &driver.Request{Method: "echo", Args: json.RawMessage(`{}`)}, driver.SendOptions{Retry: retry})
	}
	if err := call(-1); err != nil {
		t.Fatalf("warm-up call: %v", err)
	}
	defer p.heal()

	// load runs calls and casts, 20 a second each, for d, and returns
	// their errors and when the first call after start succeeded.
	load := func(d time.Duration, retry int) (errs []error, firstGood time.Duration) {
		var mu sync.Mutex
		var lwg sync.WaitGroup
		start := time.Now()
		tick := time.NewTicker(50 * time.Millisecond)
		defer tick.Stop()
		for time.Since(start) < d {
			<-tick.C
			lwg.Add(2)
			go func() {
				defer lwg.Done()
				err := call(retry)
				mu.Lock()
				defer mu.Unlock()
				if err != nil {
					errs = append(errs, fmt.Errorf("call: %w", err))
				} else if firstGood == 0 {
					firstGood = time.Since(start)
				}
			}()
			go func() {
				defer lwg.Done()
				if err := cast(retry); err != nil {
					mu.Lock()
					errs = append(errs, fmt.Errorf("cast: %w", err))
					mu.Unlock()
				}
			}()
		}
		lwg.Wait()
		return errs, firstGood
	}

	t.Run("retried", func(t *testing.T) {
		p.poison(400 * time.Millisecond)
		p.cut()
		errs, first := load(2*time.Second, -1)
		t.Logf("%d nacks, %d failures, first good call %s after the cut", p.nacked.Load(), len(errs), first.Round(time.Millisecond))
		if p.nacked.Load() == 0 {
			t.Fatal("the broker nacked nothing: the scenario did not happen")
		}
		for i, err := range errs {
			if i < 3 {
				t.Errorf("%v", err)
			}
		}
		if len(errs) > 0 {
			t.Errorf("%d calls and casts failed, want none", len(errs))
		}
		if first <= 0 || first > time.Second {
			t.Errorf("first good call %s after the cut (0: none), want within 1 s", first)
		}
		// The retired channels are closed once their confirms came.
		snd := cli.pool.senders[0]
		snd.mu.Lock()
		s := snd.cur
		snd.mu.Unlock()
		deadline := time.Now().Add(5 * time.Second)
		for s.retired.Load() != 0 && time.Now().Before(deadline) {
			time.Sleep(10 * time.Millisecond) // polling a counter, nothing to wait on
		}
		if n := s.retired.Load(); n != 0 {
			t.Errorf("%d retired channels still open", n)
		}
	})

	// Without retries a nacked publish fails, as in Python; its channel
	// is retired all the same, so that publishes after the window go
	// through.
	t.Run("no retry", func(t *testing.T) {
		before := p.nacked.Load()
		p.poison(400 * time.Millisecond)
		p.cut()
		errs, _ := load(600*time.Millisecond, 0)
		for _, err := range errs {
			if !errors.Is(err, driver.ErrDeliveryFailure) {
				t.Errorf("a failure that is not the nack: %v", err)
			}
		}
		if p.nacked.Load() == before {
			t.Fatal("the broker nacked nothing: the scenario did not happen")
		}
		errs, _ = load(time.Second, 0)
		t.Logf("%d nacks; after the window %d failures", p.nacked.Load()-before, len(errs))
		if len(errs) > 0 {
			t.Errorf("%d calls and casts failed after the window, want none (first: %v)", len(errs), errs[0])
		}
	})
}

// TestNackRetryHonoursBudget: a publish nacked again and again is
// published again at most Retry times, then fails with the nack, and
// never past its deadline.
func TestNackRetryHonoursBudget(t *testing.T) {
	broker := startEmbeddedBroker(t, nil)
	p := newStaleLeaderProxy(t, broker)
	cli := openString(t, "rabbit://guest:guest@"+p.addr()+"/", nil)
	target := driver.Target{Exchange: "oslogo_x", Topic: uniqueTopic(t)}
	p.poison(time.Hour) // every new channel is nacked
	defer p.heal()
	before := p.nacked.Load()
	ctx := ctxT(t, 20*time.Second)
	err := cli.Cast(ctx, target, &driver.Request{Method: "m"}, driver.SendOptions{Retry: 2})
	if !errors.Is(err, driver.ErrDeliveryFailure) {
		t.Fatalf("cast with 2 retries: %v, want ErrDeliveryFailure", err)
	}
	if n := p.nacked.Load() - before; n != 3 {
		t.Errorf("%d publishes nacked, want 3 (the first and 2 retries)", n)
	}
	short, cancel := context.WithTimeout(ctx, 300*time.Millisecond)
	defer cancel()
	start := time.Now()
	err = cli.Cast(short, target, &driver.Request{Method: "m"}, driver.SendOptions{Retry: -1})
	if !errors.Is(err, context.DeadlineExceeded) || time.Since(start) > time.Second {
		t.Fatalf("cast with retries and a 300 ms deadline: %v after %s, want the deadline within 1 s", err, time.Since(start))
	}
	var ae *amqp.Error
	if errors.As(err, &ae) {
		t.Errorf("unexpected channel error %v", ae)
	}
	// Without a deadline, retries stop after the driver's patience
	// (30 s; shortened here).
	cli.nackPatience = 500 * time.Millisecond
	start = time.Now()
	err = cli.Cast(context.Background(), target, &driver.Request{Method: "m"}, driver.SendOptions{Retry: -1})
	if !errors.Is(err, driver.ErrDeliveryFailure) || time.Since(start) > 2*time.Second {
		t.Fatalf("cast with retries and no deadline: %v after %s, want the nack within the patience", err, time.Since(start))
	}
}

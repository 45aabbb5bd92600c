package broker

import (
	"bufio"
	"context"
	"crypto/tls"
	"errors"
	"io"
	"log/slog"
	"net"
	"os"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/oslogo/oslogo/broker/internal/amqp091"
)

// Tests of the connection layer against clients that misbehave: each
// expects the close code RabbitMQ sends and checks that other clients are
// still served. docs/BROKER.md ("Connections and limits") lists them.

// rawOpen does the AMQP handshake by hand on nc (TCP or TLS) with the given
// client capabilities and heartbeat, and returns the client.
func rawOpen(t *testing.T, nc net.Conn, caps amqp091.Table, heartbeat uint16) *rawConn {
	t.Helper()
	t.Cleanup(func() { _ = nc.Close() })
	_ = nc.SetDeadline(time.Now().Add(10 * time.Second))
	r := &rawConn{t: t, nc: nc, fr: amqp091.NewFrameReader(bufio.NewReaderSize(nc, 64<<10), 1<<20)}
	r.write(amqp091.ProtocolHeader)
	r.expect(&amqp091.ConnectionStart{})
	props := amqp091.Table{}
	if caps != nil {
		props["capabilities"] = caps
	}
	r.send(0, &amqp091.ConnectionStartOk{ClientProperties: props, Mechanism: "PLAIN", Response: "\x00guest\x00guest", Locale: "en_US"})
	r.expect(&amqp091.ConnectionTune{})
	r.send(0, &amqp091.ConnectionTuneOk{ChannelMax: 10, FrameMax: 4096, Heartbeat: heartbeat})
	r.send(0, &amqp091.ConnectionOpen{VirtualHost: "/"})
	r.expect(&amqp091.ConnectionOpenOk{})
	return r
}

func tcpDial(t *testing.T, s *Server) net.Conn {
	t.Helper()
	nc, err := net.Dial("tcp", s.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	return nc
}

// expectClose reads up to connection.close and checks its code.
func (r *rawConn) expectClose(code uint16) {
	r.t.Helper()
	cc := r.expect(&amqp091.ConnectionClose{}).(*amqp091.ConnectionClose)
	if cc.ReplyCode != code {
		r.t.Fatalf("connection.close %d %q, want %d", cc.ReplyCode, cc.ReplyText, code)
	}
}

// expectEOF reads until the broker closes the socket; a read deadline
// means it did not.
func (r *rawConn) expectEOF() {
	r.t.Helper()
	_ = r.nc.SetReadDeadline(time.Now().Add(10 * time.Second))
	_, err := io.Copy(io.Discard, r.nc)
	if err != nil && errors.Is(err, os.ErrDeadlineExceeded) {
		r.t.Fatal("broker did not close the socket within 10 s")
	}
}

// connCount is the number of connections the server still tracks.
func connCount(s *Server) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.conns)
}

// waitConns waits until the server tracks at most n connections.
func waitConns(t *testing.T, s *Server, n int) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for connCount(s) > n {
		if time.Now().After(deadline) {
			t.Fatalf("%d connections still open, want %d", connCount(s), n)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// stillServes checks that a well-behaved client gets a reply.
func stillServes(t *testing.T, url string) {
	t.Helper()
	c, err := amqp.Dial(url)
	if err != nil {
		t.Fatalf("another client cannot connect: %v", err)
	}
	defer c.Close()
	ch, err := c.Channel()
	if err != nil {
		t.Fatalf("another client cannot open a channel: %v", err)
	}
	if _, err := ch.QueueDeclare("", false, true, true, false, nil); err != nil {
		t.Fatalf("another client's declare failed: %v", err)
	}
}

// TestOversizedFrameInsideABatch sends a frame over frame_max in the same
// write as a valid frame, so the broker meets it in the middle of an input
// batch, with heartbeats off: the broker must still answer channel.open,
// send connection.close 501 and close the socket.
func TestOversizedFrameInsideABatch(t *testing.T) {
	s, url := startBroker(t, nil)
	r := rawOpen(t, tcpDial(t, s), nil, 0)
	b := amqp091.AppendMethodFrame(nil, 1, &amqp091.ChannelOpen{})
	b = amqp091.AppendBodyFrames(b, 1, make([]byte, 5000), 0)
	r.write(b)
	r.expect(&amqp091.ChannelOpenOk{})
	r.expectClose(amqp091.FrameError)
	r.expectEOF()
	waitConns(t, s, 0)
	stillServes(t, url)
}

// TestHeartbeatOnChannelOne: a heartbeat frame on a channel other than 0
// is 505 UNEXPECTED_FRAME, as from RabbitMQ.
func TestHeartbeatOnChannelOne(t *testing.T) {
	s, url := startBroker(t, nil)
	r := rawOpen(t, tcpDial(t, s), nil, 0)
	r.send(1, &amqp091.ChannelOpen{})
	r.expect(&amqp091.ChannelOpenOk{})
	r.write([]byte{amqp091.FrameHeartbeat, 0, 1, 0, 0, 0, 0, amqp091.FrameEnd})
	r.expectClose(amqp091.UnexpectedFrame)
	r.send(0, &amqp091.ConnectionCloseOk{})
	r.expectEOF()
	stillServes(t, url)
}

// TestConnectionBlockedIsPrompt: with heartbeats off, connection.blocked
// reaches the client while its publish is held by the memory alarm (not
// at some later wake-up), and connection.unblocked once the alarm clears.
func TestConnectionBlockedIsPrompt(t *testing.T) {
	s, url := startBroker(t, func(o *Options) { o.MemoryHighWatermark = 1000 })
	r := rawOpen(t, tcpDial(t, s), amqp091.Table{"connection.blocked": true}, 0)
	r.send(1, &amqp091.ChannelOpen{})
	r.expect(&amqp091.ChannelOpenOk{})
	r.send(1, &amqp091.QueueDeclare{Queue: "blocked-q"})
	r.expect(&amqp091.QueueDeclareOk{})
	publish := func() {
		b := amqp091.AppendMethodFrame(nil, 1, &amqp091.BasicPublish{RoutingKey: "blocked-q"})
		b = amqp091.AppendHeaderFrame(b, 1, amqp091.ClassBasic, 2000, []byte{0, 0})
		b = amqp091.AppendBodyFrames(b, 1, make([]byte, 2000), 4096)
		r.write(b)
	}
	publish() // queued: 2000 bytes, over the watermark
	publish() // held until the alarm clears
	_ = r.nc.SetReadDeadline(time.Now().Add(5 * time.Second))
	r.expect(&amqp091.ConnectionBlocked{})
	// Another client empties the queue; the alarm clears.
	c := dial(t, url)
	ch := openCh(t, c)
	if _, err := ch.QueuePurge("blocked-q", false); err != nil {
		t.Fatal(err)
	}
	_ = r.nc.SetReadDeadline(time.Now().Add(5 * time.Second))
	r.expect(&amqp091.ConnectionUnblocked{})
}

// TestTLSConsumerSurvivesFullSocket: a TLS consumer that stops reading for
// a while (its socket fills, so the publisher's reader cannot write it
// inline) then resumes keeps its connection and gets every message.
func TestTLSConsumerSurvivesFullSocket(t *testing.T) {
	cert := selfSigned(t)
	s, url := startBroker(t, func(o *Options) {
		o.TLSAddr = "127.0.0.1:0"
		o.TLSConfig = &tls.Config{Certificates: []tls.Certificate{cert}}
	})
	tc, err := tls.Dial("tcp", s.TLSAddr().String(), &tls.Config{InsecureSkipVerify: true})
	if err != nil {
		t.Fatal(err)
	}
	r := rawOpen(t, tc, nil, 0)
	r.send(1, &amqp091.ChannelOpen{})
	r.expect(&amqp091.ChannelOpenOk{})
	r.send(1, &amqp091.QueueDeclare{Queue: "tls-q"})
	r.expect(&amqp091.QueueDeclareOk{})
	r.send(1, &amqp091.BasicConsume{Queue: "tls-q", ConsumerTag: "c", NoAck: true})
	r.expect(&amqp091.BasicConsumeOk{})

	// One message per input batch (each publish waits for its confirm),
	// so the publisher's reader writes each delivery to the consumer's
	// socket itself until that socket is full.
	const n, size = 600, 32 << 10 // 19 MiB, more than the socket buffers
	pub := dial(t, url)
	pch := openCh(t, pub)
	if err := pch.Confirm(false); err != nil {
		t.Fatal(err)
	}
	confirms := pch.NotifyPublish(make(chan amqp.Confirmation, 1))
	body := make([]byte, size)
	for i := 0; i < n; i++ {
		if err := pch.Publish("", "tls-q", false, false, amqp.Publishing{Body: body}); err != nil {
			t.Fatal(err)
		}
		select {
		case <-confirms:
		case <-time.After(10 * time.Second):
			t.Fatalf("no confirm for publish %d", i)
		}
	}
	// Not reading yet: the broker meets a full socket many times over.
	time.Sleep(300 * time.Millisecond)
	_ = r.nc.SetReadDeadline(time.Now().Add(30 * time.Second))
	got := 0
	for got < n {
		f, err := r.fr.ReadFrame()
		if err != nil {
			t.Fatalf("after %d of %d deliveries: %v", got, n, err)
		}
		if f.Type == amqp091.FrameMethod {
			cid, mid, _, _ := amqp091.ParseMethodFrame(f.Payload)
			if cid == amqp091.ClassBasic && mid == 60 {
				got++
			} else {
				t.Fatalf("unexpected method %d.%d after %d deliveries", cid, mid, got)
			}
		}
	}
	// The connection still works.
	r.send(1, &amqp091.QueueDeclare{Queue: "tls-q2"})
	r.expect(&amqp091.QueueDeclareOk{})
}

// TestClientThatNeverReads: a client publishing unroutable mandatory
// messages (each comes back whole as basic.return) and never reading. The
// broker stops reading from it once its output backlog passes outReadStop,
// disconnects it after WriteTimeout without progress, serves others
// meanwhile and keeps nothing of it afterwards.
func TestClientThatNeverReads(t *testing.T) {
	s, url := startBroker(t, func(o *Options) { o.WriteTimeout = time.Second })
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	heapBefore := ms.HeapAlloc

	nc := tcpDial(t, s)
	r := rawOpen(t, nc, nil, 0)
	r.send(1, &amqp091.ChannelOpen{})
	r.expect(&amqp091.ChannelOpenOk{})
	r.send(1, &amqp091.ConfirmSelect{})
	r.expect(&amqp091.ConfirmSelectOk{})
	var bc *conn
	s.mu.Lock()
	for c := range s.conns {
		bc = c
	}
	s.mu.Unlock()

	const n, size = 1024, 64 << 10 // 64 MiB of returns if all were read
	msg := amqp091.AppendMethodFrame(nil, 1, &amqp091.BasicPublish{RoutingKey: "nowhere", Mandatory: true})
	msg = amqp091.AppendHeaderFrame(msg, 1, amqp091.ClassBasic, size, []byte{0, 0})
	msg = amqp091.AppendBodyFrames(msg, 1, make([]byte, size), 4096)
	writerDone := make(chan error, 1)
	go func() {
		_ = nc.SetWriteDeadline(time.Now().Add(60 * time.Second))
		var err error
		for i := 0; i < n && err == nil; i++ {
			_, err = nc.Write(msg)
		}
		writerDone <- err
	}()
	var peak int64
	var werr error
	sampled := false
poll:
	for deadline := time.After(60 * time.Second); ; {
		select {
		case werr = <-writerDone:
			break poll
		case <-deadline:
			t.Fatal("publisher neither finished nor was disconnected in 60 s")
		case <-time.After(2 * time.Millisecond):
			if b := bc.backlog(); b > peak {
				peak = b
			}
			if !sampled && bc.backlog() > outReadStop {
				// Others are served while this one is held.
				sampled = true
				stillServes(t, url)
			}
		}
	}
	if werr == nil {
		t.Fatalf("the broker read all %d MiB from a client that never reads (peak backlog %d MiB)", n*size>>20, peak>>20)
	}
	if limit := int64(outReadStop + 4<<20); peak > limit {
		t.Fatalf("output backlog reached %d bytes, want at most %d", peak, limit)
	}
	t.Logf("peak backlog %.1f MiB; publisher's write failed: %v", float64(peak)/(1<<20), werr)
	waitConns(t, s, 0)
	if !sampled {
		t.Fatal("the backlog never reached the read stop")
	}
	runtime.GC()
	runtime.ReadMemStats(&ms)
	if grown := int64(ms.HeapAlloc) - int64(heapBefore); grown > 16<<20 {
		t.Fatalf("heap grew %d MiB and stayed after the connection closed", grown>>20)
	}
}

// TestMethodsAfterClose: after the broker sent connection.close (here for
// a method on an unopened channel, 504), further methods are ignored until
// close-ok, which ends the connection.
func TestMethodsAfterClose(t *testing.T) {
	s, url := startBroker(t, nil)
	r := rawOpen(t, tcpDial(t, s), nil, 0)
	r.send(3, &amqp091.QueueDeclare{Queue: "x"})
	r.expectClose(amqp091.ChannelError)
	r.send(1, &amqp091.ChannelOpen{})
	r.send(0, &amqp091.ConnectionCloseOk{})
	// Nothing comes for the channel.open: the next thing is the socket's
	// end.
	_ = r.nc.SetReadDeadline(time.Now().Add(10 * time.Second))
	if f, err := r.fr.ReadFrame(); err == nil {
		t.Fatalf("frame type %d after close-ok, want the socket closed", f.Type)
	} else if errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatal("socket still open 10 s after close-ok")
	}
	stillServes(t, url)
}

// TestBodyWithoutHeader: a body frame on an open channel with no publish
// before it is 505 UNEXPECTED_FRAME.
func TestBodyWithoutHeader(t *testing.T) {
	s, url := startBroker(t, nil)
	r := rawOpen(t, tcpDial(t, s), nil, 0)
	r.send(1, &amqp091.ChannelOpen{})
	r.expect(&amqp091.ChannelOpenOk{})
	r.write(amqp091.AppendBodyFrames(nil, 1, []byte("abc"), 4096))
	r.expectClose(amqp091.UnexpectedFrame)
	stillServes(t, url)
}

// TestHandshakeTimeout: a client that connects and sends nothing, or
// stops after the protocol header, has its socket closed after
// HandshakeTimeout (RabbitMQ's handshake_timeout).
func TestHandshakeTimeout(t *testing.T) {
	s, url := startBroker(t, func(o *Options) { o.HandshakeTimeout = 300 * time.Millisecond })
	silent := tcpDial(t, s)
	defer silent.Close()
	halfway := tcpDial(t, s)
	defer halfway.Close()
	if _, err := halfway.Write(amqp091.ProtocolHeader); err != nil {
		t.Fatal(err)
	}
	for name, nc := range map[string]net.Conn{"silent": silent, "after the header": halfway} {
		_ = nc.SetReadDeadline(time.Now().Add(10 * time.Second))
		if _, err := io.Copy(io.Discard, nc); errors.Is(err, os.ErrDeadlineExceeded) {
			t.Fatalf("%s client still connected after 10 s", name)
		}
	}
	waitConns(t, s, 0)
	stillServes(t, url)
}

// TestMaxConnectionsRefusesCleanly: past MaxConnections a client gets
// connection.close 530 at connection.open; once one leaves, a new one
// gets in.
func TestMaxConnectionsRefusesCleanly(t *testing.T) {
	_, url := startBroker(t, func(o *Options) { o.MaxConnections = 2 })
	a := dial(t, url)
	dial(t, url)
	_, err := amqp.Dial(url)
	var ae *amqp.Error
	if !errors.As(err, &ae) || ae.Code != amqp.NotAllowed || !strings.Contains(ae.Reason, "connection limit (2)") {
		t.Fatalf("third connection: %v, want 530 NOT_ALLOWED naming the limit", err)
	}
	_ = a.Close()
	stillServes(t, url)
}

// blockingLog is log output that stops draining after 64 KiB, as a
// stderr pipe no one reads, until released.
type blockingLog struct {
	mu       sync.Mutex
	n        int
	released chan struct{}
}

func (b *blockingLog) Write(p []byte) (int, error) {
	b.mu.Lock()
	b.n += len(p)
	full := b.n > 64<<10
	b.mu.Unlock()
	if full {
		<-b.released
	}
	return len(p), nil
}

// TestShutdownManyIdleConnections: Shutdown with 2,000 idle connections
// (heartbeats off) and log output that does not drain sends each
// connection.close 320, closes every socket, returns within its context
// and leaves no goroutine behind.
func TestShutdownManyIdleConnections(t *testing.T) {
	before := runtime.NumGoroutine()
	logOut := &blockingLog{released: make(chan struct{})}
	var release sync.Once
	defer release.Do(func() { close(logOut.released) })
	opts := DefaultOptions()
	opts.AMQPAddr = "127.0.0.1:0"
	opts.Logger = slog.New(slog.NewTextHandler(logOut, nil))
	s, err := New(opts)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Start(); err != nil {
		t.Fatal(err)
	}
	const n = 2000
	ensureNofile(t, 2*n+256) // two descriptors per connection here
	conns := make([]*rawConn, n)
	for i := range conns {
		conns[i] = rawOpen(t, tcpDial(t, s), nil, 0)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	done := make(chan error, 1)
	start := time.Now()
	go func() { done <- s.Shutdown(ctx) }()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("Shutdown: %v", err)
		}
		t.Logf("Shutdown with %d idle connections took %v", n, time.Since(start).Round(time.Millisecond))
	case <-time.After(30 * time.Second):
		release.Do(func() { close(logOut.released) })
		<-done
		t.Fatal("Shutdown had not returned 30 s after it started (15 s context)")
	}
	for i, r := range conns {
		_ = r.nc.SetReadDeadline(time.Now().Add(10 * time.Second))
		r.expectClose(amqp091.ConnectionForced)
		if _, err := r.fr.ReadFrame(); err == nil || errors.Is(err, os.ErrDeadlineExceeded) {
			t.Fatalf("connection %d: %v after connection.close, want the socket closed", i, err)
		}
	}
	if c := connCount(s); c != 0 {
		t.Fatalf("%d connections tracked after Shutdown", c)
	}
	for _, r := range conns {
		_ = r.nc.Close()
	}
	deadline := time.Now().Add(10 * time.Second)
	for runtime.NumGoroutine() > before {
		if time.Now().After(deadline) {
			buf := make([]byte, 1<<16)
			t.Fatalf("%d goroutines after Shutdown, %d before:\n%s", runtime.NumGoroutine(), before, buf[:runtime.Stack(buf, true)])
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// TestHeartbeatFloodDuringHandshake: heartbeats before connection.start-ok
// are skipped one after another. They used to be skipped by recursion, one
// stack frame each, so that a client sending millions of them overflowed
// the stack and crashed the broker process; here one million of them must
// not grow the stacks in use by more than 32 MiB, and the handshake then
// completes.
func TestHeartbeatFloodDuringHandshake(t *testing.T) {
	s, url := startBroker(t, func(o *Options) { o.HandshakeTimeout = time.Minute })
	nc := tcpDial(t, s)
	defer nc.Close()
	_ = nc.SetDeadline(time.Now().Add(time.Minute))
	r := &rawConn{t: t, nc: nc, fr: amqp091.NewFrameReader(bufio.NewReader(nc), 1<<20)}
	r.write(amqp091.ProtocolHeader)
	r.expect(&amqp091.ConnectionStart{})
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	stackBefore := ms.StackInuse
	beats := make([]byte, 0, 8<<20)
	for len(beats)+8 <= cap(beats) {
		beats = amqp091.AppendHeartbeat(beats)
	}
	r.write(beats) // 1 M heartbeats
	r.send(0, &amqp091.ConnectionStartOk{Mechanism: "PLAIN", Response: "\x00guest\x00guest", Locale: "en_US"})
	r.expect(&amqp091.ConnectionTune{})
	// Every heartbeat has been read; a grown stack has not shrunk yet
	// (that takes garbage collections).
	runtime.ReadMemStats(&ms)
	if grown := int64(ms.StackInuse) - int64(stackBefore); grown > 32<<20 {
		t.Fatalf("stacks grew by %d MiB while the broker skipped heartbeats", grown>>20)
	}
	r.send(0, &amqp091.ConnectionTuneOk{ChannelMax: 10, FrameMax: 4096})
	r.send(0, &amqp091.ConnectionOpen{VirtualHost: "/"})
	r.expect(&amqp091.ConnectionOpenOk{})
	stillServes(t, url)
}

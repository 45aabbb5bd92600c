package broker

import (
	"bufio"
	"context"
	"crypto/rand"
	"crypto/rsa"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"math/big"
	"net"
	"os"
	"slices"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/oslogo/oslogo/broker/internal/amqp091"

	amqp "github.com/rabbitmq/amqp091-go"
)

func publish(t *testing.T, ch *amqp.Channel, ex, rk string, p amqp.Publishing) {
	t.Helper()
	if err := ch.PublishWithContext(context.Background(), ex, rk, false, false, p); err != nil {
		t.Fatal(err)
	}
}

func getOne(t *testing.T, ch *amqp.Channel, q string) amqp.Delivery {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		m, ok, err := ch.Get(q, false)
		if err != nil {
			t.Fatal(err)
		}
		if ok {
			return m
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Fatalf("queue %s stayed empty", q)
	return amqp.Delivery{}
}

func TestDeadLetteringTTLAndReject(t *testing.T) {
	_, url := startBroker(t, nil)
	ch := openCh(t, dial(t, url))
	if err := ch.ExchangeDeclare("dlx", "fanout", false, false, false, false, nil); err != nil {
		t.Fatal(err)
	}
	if _, err := ch.QueueDeclare("dead", false, false, false, false, nil); err != nil {
		t.Fatal(err)
	}
	if err := ch.QueueBind("dead", "", "dlx", false, nil); err != nil {
		t.Fatal(err)
	}
	if _, err := ch.QueueDeclare("ttl", false, false, false, false, amqp.Table{"x-message-ttl": int32(50), "x-dead-letter-exchange": "dlx"}); err != nil {
		t.Fatal(err)
	}
	publish(t, ch, "", "ttl", amqp.Publishing{Body: []byte("expired")})
	m := getOne(t, ch, "dead")
	deaths, _ := m.Headers["x-death"].([]any)
	if string(m.Body) != "expired" || len(deaths) != 1 {
		t.Fatalf("dead letter %q headers %v", m.Body, m.Headers)
	}
	d0 := deaths[0].(amqp.Table)
	if d0["reason"] != "expired" || d0["queue"] != "ttl" || m.Headers["x-first-death-reason"] != "expired" {
		t.Fatalf("x-death %v", d0)
	}
	_ = m.Ack(false)
	// Rejection without requeue dead-letters with reason "rejected".
	if _, err := ch.QueueDeclare("rej", false, false, false, false, amqp.Table{"x-dead-letter-exchange": "dlx"}); err != nil {
		t.Fatal(err)
	}
	publish(t, ch, "", "rej", amqp.Publishing{Body: []byte("bad")})
	r := getOne(t, ch, "rej")
	if err := r.Reject(false); err != nil {
		t.Fatal(err)
	}
	m = getOne(t, ch, "dead")
	if m.Headers["x-first-death-reason"] != "rejected" {
		t.Fatalf("headers %v", m.Headers)
	}
}

func TestMaxLengthOverflow(t *testing.T) {
	_, url := startBroker(t, nil)
	ch := openCh(t, dial(t, url))
	if _, err := ch.QueueDeclare("ml", false, false, false, false, amqp.Table{"x-max-length": int32(2)}); err != nil {
		t.Fatal(err)
	}
	for _, b := range []string{"1", "2", "3"} {
		publish(t, ch, "", "ml", amqp.Publishing{Body: []byte(b)})
	}
	if m := getOne(t, ch, "ml"); string(m.Body) != "2" {
		t.Fatalf("drop-head kept %q first", m.Body)
	}
	if _, err := ch.QueueDeclare("rp", false, false, false, false, amqp.Table{"x-max-length": int32(1), "x-overflow": "reject-publish"}); err != nil {
		t.Fatal(err)
	}
	if err := ch.Confirm(false); err != nil {
		t.Fatal(err)
	}
	confirms := ch.NotifyPublish(make(chan amqp.Confirmation, 2))
	publish(t, ch, "", "rp", amqp.Publishing{Body: []byte("a")})
	publish(t, ch, "", "rp", amqp.Publishing{Body: []byte("b")})
	if c := <-confirms; !c.Ack {
		t.Fatal("first publish nacked")
	}
	if c := <-confirms; c.Ack {
		t.Fatal("publish over max-length with reject-publish was acked")
	}
}

func TestPriorityQueue(t *testing.T) {
	_, url := startBroker(t, nil)
	ch := openCh(t, dial(t, url))
	if _, err := ch.QueueDeclare("prio", false, false, false, false, amqp.Table{"x-max-priority": int32(9)}); err != nil {
		t.Fatal(err)
	}
	for i, p := range []uint8{1, 9, 5} {
		publish(t, ch, "", "prio", amqp.Publishing{Priority: p, Body: []byte{byte(i)}})
	}
	var got []uint8
	for range 3 {
		got = append(got, getOne(t, ch, "prio").Priority)
	}
	if got[0] != 9 || got[1] != 5 || got[2] != 1 {
		t.Fatalf("priority order %v", got)
	}
}

func TestQuorumDeliveryLimit(t *testing.T) {
	_, url := startBroker(t, nil)
	ch := openCh(t, dial(t, url))
	var ae *amqp.Error
	if _, err := ch.QueueDeclare("qq-bad", false, false, false, false, amqp.Table{"x-queue-type": "quorum"}); !asErr(err, &ae) || ae.Code != 406 {
		t.Fatalf("non-durable quorum queue: %v", err)
	}
	ch = openCh(t, dial(t, url))
	if _, err := ch.QueueDeclare("poison", false, false, false, false, nil); err != nil {
		t.Fatal(err)
	}
	if _, err := ch.QueueDeclare("qq", true, false, false, false, amqp.Table{"x-queue-type": "quorum", "x-delivery-limit": int32(2),
		"x-dead-letter-exchange": "", "x-dead-letter-routing-key": "poison"}); err != nil {
		t.Fatal(err)
	}
	publish(t, ch, "", "qq", amqp.Publishing{Body: []byte("p")})
	for i := range 3 {
		m := getOne(t, ch, "qq")
		cnt, _ := m.Headers["x-delivery-count"].(int64)
		if int(cnt) != i {
			t.Fatalf("delivery %d: x-delivery-count %v", i, m.Headers["x-delivery-count"])
		}
		if err := m.Nack(false, true); err != nil {
			t.Fatal(err)
		}
	}
	m := getOne(t, ch, "poison")
	if string(m.Body) != "p" || m.Headers["x-first-death-reason"] != "delivery_limit" {
		t.Fatalf("poison message %q %v", m.Body, m.Headers)
	}
}

func TestSingleActiveConsumerAndTx(t *testing.T) {
	_, url := startBroker(t, nil)
	c := dial(t, url)
	ch := openCh(t, c)
	if _, err := ch.QueueDeclare("sac", false, false, false, false, amqp.Table{"x-single-active-consumer": true}); err != nil {
		t.Fatal(err)
	}
	ch1, ch2 := openCh(t, c), openCh(t, c)
	d1, err := ch1.Consume("sac", "one", true, false, false, false, nil)
	if err != nil {
		t.Fatal(err)
	}
	d2, err := ch2.Consume("sac", "two", true, false, false, false, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := ch.Tx(); err != nil {
		t.Fatal(err)
	}
	publish(t, ch, "", "sac", amqp.Publishing{Body: []byte("rolled back")})
	if err := ch.TxRollback(); err != nil {
		t.Fatal(err)
	}
	for i := range 3 {
		publish(t, ch, "", "sac", amqp.Publishing{Body: []byte{byte(i)}})
	}
	if err := ch.TxCommit(); err != nil {
		t.Fatal(err)
	}
	for i := range 3 {
		if m := recv(t, d1); m.Body[0] != byte(i) {
			t.Fatalf("got %q", m.Body)
		}
	}
	select {
	case m := <-d2:
		t.Fatalf("inactive consumer got %q", m.Body)
	default:
	}
	if err := ch1.Cancel("one", false); err != nil {
		t.Fatal(err)
	}
	publish(t, ch, "", "sac", amqp.Publishing{Body: []byte("next")})
	if err := ch.TxCommit(); err != nil {
		t.Fatal(err)
	}
	if m := recv(t, d2); string(m.Body) != "next" {
		t.Fatalf("got %q", m.Body)
	}
}

func TestMemoryAlarmBlocksPublishers(t *testing.T) {
	_, url := startBroker(t, func(o *Options) { o.MemoryHighWatermark = 10000 })
	c := dial(t, url)
	blocked := c.NotifyBlocked(make(chan amqp.Blocking, 4))
	ch := openCh(t, c)
	if _, err := ch.QueueDeclare("fill", false, false, false, false, nil); err != nil {
		t.Fatal(err)
	}
	big := make([]byte, 20000)
	publish(t, ch, "", "fill", amqp.Publishing{Body: big})
	publish(t, ch, "", "fill", amqp.Publishing{Body: []byte("x")})
	select {
	case b := <-blocked:
		if !b.Active {
			t.Fatalf("got %+v", b)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("no connection.blocked")
	}
	// Drain from another connection; the alarm clears and the publisher resumes.
	ch2 := openCh(t, dial(t, url))
	if _, err := ch2.QueuePurge("fill", false); err != nil {
		t.Fatal(err)
	}
	select {
	case b := <-blocked:
		if b.Active {
			t.Fatalf("got %+v", b)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("no connection.unblocked")
	}
}

func selfSigned(t *testing.T) tls.Certificate {
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "127.0.0.1"},
		IPAddresses: []net.IP{net.ParseIP("127.0.0.1")}, NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour)}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}
}

func TestTLSListener(t *testing.T) {
	cert := selfSigned(t)
	s, _ := startBroker(t, func(o *Options) {
		o.TLSAddr = "127.0.0.1:0"
		o.TLSConfig = &tls.Config{Certificates: []tls.Certificate{cert}}
	})
	c, err := amqp.DialTLS("amqps://guest:guest@"+s.TLSAddr().String()+"/", &tls.Config{InsecureSkipVerify: true})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	ch := openCh(t, c)
	if _, err := ch.QueueDeclare("tls", false, true, false, false, nil); err != nil {
		t.Fatal(err)
	}
}

// rawConn speaks the protocol by hand for malformed-input tests.
type rawConn struct {
	t  *testing.T
	nc net.Conn
	fr *amqp091.FrameReader
	d  amqp091.Decoder
}

func rawDial(t *testing.T, s *Server) *rawConn {
	nc, err := net.Dial("tcp", s.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = nc.Close() })
	_ = nc.SetDeadline(time.Now().Add(10 * time.Second))
	r := &rawConn{t: t, nc: nc, fr: amqp091.NewFrameReader(bufio.NewReader(nc), 1<<20)}
	r.write(amqp091.ProtocolHeader)
	r.expect(&amqp091.ConnectionStart{})
	r.send(0, &amqp091.ConnectionStartOk{Mechanism: "PLAIN", Response: "\x00guest\x00guest", Locale: "en_US"})
	r.expect(&amqp091.ConnectionTune{})
	r.send(0, &amqp091.ConnectionTuneOk{ChannelMax: 10, FrameMax: 4096})
	r.send(0, &amqp091.ConnectionOpen{VirtualHost: "/"})
	r.expect(&amqp091.ConnectionOpenOk{})
	return r
}

func (r *rawConn) write(b []byte) {
	if _, err := r.nc.Write(b); err != nil {
		r.t.Fatal(err)
	}
}

func (r *rawConn) send(ch uint16, m amqp091.Method) { r.write(amqp091.AppendMethodFrame(nil, ch, m)) }

func (r *rawConn) next() (uint16, amqp091.Method) {
	r.t.Helper()
	for {
		f, err := r.fr.ReadFrame()
		if err != nil {
			r.t.Fatal(err)
		}
		if f.Type != amqp091.FrameMethod {
			continue
		}
		c, m, args, _ := amqp091.ParseMethodFrame(f.Payload)
		meth, err := r.d.Decode(c, m, args)
		if err != nil {
			r.t.Fatal(err)
		}
		return f.Channel, meth
	}
}

func (r *rawConn) expect(want amqp091.Method) amqp091.Method {
	r.t.Helper()
	_, m := r.next()
	if m.ClassID() != want.ClassID() || m.MethodID() != want.MethodID() {
		r.t.Fatalf("got %s (%+v), want %s", m.Name(), m, want.Name())
	}
	return m
}

func TestBadInput(t *testing.T) {
	s, _ := startBroker(t, nil)
	r := rawDial(t, s)
	r.send(1, &amqp091.ChannelOpen{})
	r.expect(&amqp091.ChannelOpenOk{})
	// A publish to a missing exchange: the channel closes with 404 and the
	// header and body frames that follow are discarded, not escalated.
	var b []byte
	b = amqp091.AppendMethodFrame(b, 1, &amqp091.BasicPublish{Exchange: "nope", RoutingKey: "x"})
	b = amqp091.AppendHeaderFrame(b, 1, amqp091.ClassBasic, 3, []byte{0, 0})
	b = amqp091.AppendBodyFrames(b, 1, []byte("abc"), 4096)
	r.write(b)
	cl := r.expect(&amqp091.ChannelClose{}).(*amqp091.ChannelClose)
	if cl.ReplyCode != 404 || cl.ClassId != 60 || cl.MethodId != 40 {
		t.Fatalf("channel.close %+v", cl)
	}
	r.send(1, &amqp091.ChannelCloseOk{})
	// The connection still works.
	r.send(2, &amqp091.ChannelOpen{})
	r.expect(&amqp091.ChannelOpenOk{})
	r.send(2, &amqp091.QueueDeclare{Queue: "ok"})
	r.expect(&amqp091.QueueDeclareOk{})
	// A content header with no publish is a connection error (505).
	r.write(amqp091.AppendHeaderFrame(nil, 2, amqp091.ClassBasic, 1, []byte{0, 0}))
	cc := r.expect(&amqp091.ConnectionClose{}).(*amqp091.ConnectionClose)
	if cc.ReplyCode != 505 {
		t.Fatalf("connection.close %+v", cc)
	}
	r.send(0, &amqp091.ConnectionCloseOk{})

	// A frame above frame_max is 501; an unopened channel is 504.
	r = rawDial(t, s)
	r.write(amqp091.AppendBodyFrames(nil, 1, make([]byte, 5000), 0))
	if cc := r.expect(&amqp091.ConnectionClose{}).(*amqp091.ConnectionClose); cc.ReplyCode != 501 {
		t.Fatalf("oversized frame: %+v", cc)
	}
	r = rawDial(t, s)
	r.send(3, &amqp091.QueueDeclare{Queue: "x"})
	if cc := r.expect(&amqp091.ConnectionClose{}).(*amqp091.ConnectionClose); cc.ReplyCode != 504 {
		t.Fatalf("unopened channel: %+v", cc)
	}
	// Garbage instead of the protocol header gets the header back.
	nc, err := net.Dial("tcp", s.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	_, _ = nc.Write([]byte("GET / HTTP/1.1\r\n\r\n"))
	buf := make([]byte, 8)
	_ = nc.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := nc.Read(buf); err != nil || string(buf) != string(amqp091.ProtocolHeader) {
		t.Fatalf("protocol header reply %q %v", buf, err)
	}
}

func TestHeartbeatDeadPeer(t *testing.T) {
	s, _ := startBroker(t, func(o *Options) { o.Heartbeat = time.Second })
	nc, err := net.Dial("tcp", s.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	r := &rawConn{t: t, nc: nc, fr: amqp091.NewFrameReader(bufio.NewReader(nc), 1<<20)}
	r.write(amqp091.ProtocolHeader)
	r.expect(&amqp091.ConnectionStart{})
	r.send(0, &amqp091.ConnectionStartOk{Mechanism: "AMQPLAIN", Response: string(amqp091.AppendTable(nil, amqp091.Table{"LOGIN": "guest", "PASSWORD": "guest"})[4:]), Locale: "en_US"})
	r.expect(&amqp091.ConnectionTune{})
	r.send(0, &amqp091.ConnectionTuneOk{ChannelMax: 10, FrameMax: 4096, Heartbeat: 1})
	r.send(0, &amqp091.ConnectionOpen{VirtualHost: "/"})
	r.expect(&amqp091.ConnectionOpenOk{})
	// Stay silent: the broker sends heartbeats, then drops us after two
	// missed intervals.
	_ = nc.SetDeadline(time.Now().Add(15 * time.Second))
	sawHeartbeat := false
	for {
		f, err := r.fr.ReadFrame()
		if err != nil {
			if errors.Is(err, os.ErrDeadlineExceeded) {
				t.Fatal("broker did not drop a silent peer within 15 s")
			}
			break
		}
		if f.Type == amqp091.FrameHeartbeat {
			sawHeartbeat = true
		}
	}
	if !sawHeartbeat {
		t.Fatal("no heartbeat from broker")
	}
	// The socket closes before the connection is unregistered (the reader
	// still releases its channels): wait for the count to reach zero.
	deadline := time.Now().Add(30 * time.Second)
	for {
		s.mu.Lock()
		n := len(s.conns)
		s.mu.Unlock()
		if n == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d connections left 30 s after dead peer", n)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// remoteConn makes an in-process pipe look like a connection from another
// host.
type remoteConn struct{ net.Conn }

func (remoteConn) RemoteAddr() net.Addr {
	return &net.TCPAddr{IP: net.ParseIP("192.0.2.1"), Port: 40000}
}

func TestGuestOnlyFromLoopback(t *testing.T) {
	s, _ := startBroker(t, func(o *Options) {
		o.AMQPAddr = ""
		o.Users = append(o.Users, User{Name: "remote", Password: "pw", Permissions: map[string]Permission{"/": {Configure: ".*", Write: ".*", Read: ".*"}}})
	})
	open := func(user, pw string) (*amqp.Connection, error) {
		client, server := net.Pipe()
		s.mu.Lock()
		s.serveLocked(remoteConn{server})
		s.mu.Unlock()
		return amqp.Open(client, amqp.Config{SASL: []amqp.Authentication{&amqp.PlainAuth{Username: user, Password: pw}}, Vhost: "/"})
	}
	if c, err := open("guest", "guest"); err == nil {
		c.Close()
		t.Fatal("guest accepted from a remote address")
	}
	c, err := open("remote", "pw")
	if err != nil {
		t.Fatalf("non-loopback user refused: %v", err)
	}
	c.Close()
}

// TestCloseOkAfterRequeue: once connection.close-ok reaches the client,
// the messages it had not acknowledged are back in their queue, as with
// RabbitMQ (amqp091-go's TestIntegrationGetEmpty relies on it).
func TestCloseOkAfterRequeue(t *testing.T) {
	_, url := startBroker(t, nil)
	other := openCh(t, dial(t, url))
	if _, err := other.QueueDeclare("requeue.q", false, false, false, false, nil); err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 50; i++ {
		c, err := amqp.Dial(url)
		if err != nil {
			t.Fatal(err)
		}
		ch := openCh(t, c)
		if err := ch.PublishWithContext(context.Background(), "", "requeue.q", false, false, amqp.Publishing{Body: []byte("m")}); err != nil {
			t.Fatal(err)
		}
		var got bool
		for deadline := time.Now().Add(5 * time.Second); !got && time.Now().Before(deadline); {
			_, got, err = ch.Get("requeue.q", false)
			if err != nil {
				t.Fatal(err)
			}
		}
		if !got {
			t.Fatal("published message never arrived")
		}
		if err := c.Close(); err != nil {
			t.Fatal(err)
		}
		m, ok, err := other.Get("requeue.q", true)
		if err != nil || !ok || !m.Redelivered {
			t.Fatalf("round %d: right after close-ok the unacknowledged message is not back (ok=%v err=%v)", i, ok, err)
		}
	}
}

// TestConsumerPriority: a consumer with a higher x-priority receives while
// it has capacity (its prefetch); lower ones get what it cannot take.
func TestConsumerPriority(t *testing.T) {
	_, url := startBroker(t, nil)
	c := dial(t, url)
	chA, chB, chP := openCh(t, c), openCh(t, c), openCh(t, c)
	if _, err := chP.QueueDeclare("cprio", false, false, false, false, nil); err != nil {
		t.Fatal(err)
	}
	if err := chA.Qos(2, 0, false); err != nil {
		t.Fatal(err)
	}
	if err := chP.Confirm(false); err != nil {
		t.Fatal(err)
	}
	// The low-priority consumer registers first, so order alone would favour it.
	low, err := chB.Consume("cprio", "low", false, false, false, false, amqp.Table{"x-priority": int32(1)})
	if err != nil {
		t.Fatal(err)
	}
	high, err := chA.Consume("cprio", "high", false, false, false, false, amqp.Table{"x-priority": int32(10)})
	if err != nil {
		t.Fatal(err)
	}
	publish := func(n int) {
		for i := 0; i < n; i++ {
			dc, err := chP.PublishWithDeferredConfirm("", "cprio", false, false, amqp.Publishing{Body: []byte("m")})
			if err != nil {
				t.Fatal(err)
			}
			if ok, err := dc.WaitContext(context.Background()); !ok || err != nil {
				t.Fatalf("confirm: %v", err)
			}
		}
	}
	// count takes what arrived on d within a short quiet period.
	count := func(d <-chan amqp.Delivery) []amqp.Delivery {
		var got []amqp.Delivery
		for {
			select {
			case m := <-d:
				got = append(got, m)
			case <-time.After(200 * time.Millisecond):
				return got
			}
		}
	}
	publish(2)
	h, l := count(high), count(low)
	if len(h) != 2 || len(l) != 0 {
		t.Fatalf("2 messages: high got %d, low %d; want 2, 0", len(h), len(l))
	}
	publish(3) // high is at its prefetch of 2
	if h2, l2 := count(high), count(low); len(h2) != 0 || len(l2) != 3 {
		t.Fatalf("3 more: high got %d, low %d; want 0, 3", len(h2), len(l2))
	}
	if err := h[0].Ack(false); err != nil {
		t.Fatal(err)
	}
	publish(1) // high has room for one again
	if h3, l3 := count(high), count(low); len(h3) != 1 || len(l3) != 0 {
		t.Fatalf("after an ack: high got %d, low %d; want 1, 0", len(h3), len(l3))
	}
	// A priority that is not an integer is refused, as RabbitMQ does.
	bad := openCh(t, c)
	if _, err := bad.Consume("cprio", "bad", false, false, false, false, amqp.Table{"x-priority": "high"}); err == nil {
		t.Fatal("non-integer x-priority accepted")
	}
}

// TestRoundRobinAmongEqualConsumers: consumers of one priority (none given)
// take turns, in registration order.
func TestRoundRobinAmongEqualConsumers(t *testing.T) {
	_, url := startBroker(t, nil)
	c := dial(t, url)
	chP := openCh(t, c)
	if _, err := chP.QueueDeclare("rr", false, false, false, false, nil); err != nil {
		t.Fatal(err)
	}
	var got []string
	var mu sync.Mutex
	var wg sync.WaitGroup
	for _, tag := range []string{"a", "b", "c"} {
		d, err := openCh(t, c).Consume("rr", tag, true, false, false, false, nil)
		if err != nil {
			t.Fatal(err)
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			for m := range d {
				mu.Lock()
				got = append(got, m.ConsumerTag+":"+string(m.Body))
				mu.Unlock()
			}
		}()
	}
	if err := chP.Confirm(false); err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 6; i++ {
		dc, err := chP.PublishWithDeferredConfirm("", "rr", false, false, amqp.Publishing{Body: []byte(strconv.Itoa(i))})
		if err != nil {
			t.Fatal(err)
		}
		if ok, err := dc.WaitContext(context.Background()); !ok || err != nil {
			t.Fatalf("confirm: %v", err)
		}
	}
	deadline := time.Now().Add(5 * time.Second)
	for {
		mu.Lock()
		n := len(got)
		mu.Unlock()
		if n == 6 || time.Now().After(deadline) {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	c.Close()
	wg.Wait()
	slices.Sort(got)
	want := []string{"a:0", "a:3", "b:1", "b:4", "c:2", "c:5"}
	if !slices.Equal(got, want) {
		t.Fatalf("deliveries %v, want %v", got, want)
	}
}

package broker

import (
	"context"
	"fmt"
	"os"
	"testing"
	"time"

	"github.com/oslogo/oslogo/internal/testrabbit"

	amqp "github.com/rabbitmq/amqp091-go"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	if os.Getenv(childEnv) != "" {
		runChild()
		return
	}
	// A vhost of the system RabbitMQ for the tests that compare with it.
	goleak.VerifyTestMain(testrabbit.Wrap(m))
}

// startBroker runs a broker on a free loopback port for the test.
func startBroker(t testing.TB, mod func(*Options)) (*Server, string) {
	t.Helper()
	opts := DefaultOptions()
	opts.AMQPAddr = "127.0.0.1:0"
	if mod != nil {
		mod(&opts)
	}
	s, err := New(opts)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Start(); err != nil {
		t.Fatal(err)
	}
	if !s.ReadyForConnections(5 * time.Second) {
		t.Fatal("broker not ready")
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := s.Shutdown(ctx); err != nil {
			t.Errorf("shutdown: %v", err)
		}
	})
	url := ""
	if s.Addr() != nil {
		url = fmt.Sprintf("amqp://guest:guest@%s/", s.Addr())
	}
	return s, url
}

func dial(t testing.TB, url string) *amqp.Connection {
	t.Helper()
	c, err := amqp.Dial(url)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	return c
}

func openCh(t testing.TB, c *amqp.Connection) *amqp.Channel {
	t.Helper()
	ch, err := c.Channel()
	if err != nil {
		t.Fatal(err)
	}
	return ch
}

func recv(t testing.TB, d <-chan amqp.Delivery) amqp.Delivery {
	t.Helper()
	select {
	case m, ok := <-d:
		if !ok {
			t.Fatal("deliveries closed")
		}
		return m
	case <-time.After(10 * time.Second):
		t.Fatal("no delivery within 10s")
	}
	return amqp.Delivery{}
}

func TestPublishConsumeAck(t *testing.T) {
	_, url := startBroker(t, nil)
	c := dial(t, url)
	ch := openCh(t, c)
	q, err := ch.QueueDeclare("", false, true, true, false, nil)
	if err != nil {
		t.Fatal(err)
	}
	if len(q.Name) < 8 || q.Name[:8] != "amq.gen-" {
		t.Fatalf("server-named queue %q", q.Name)
	}
	if err := ch.Confirm(false); err != nil {
		t.Fatal(err)
	}
	confirms := ch.NotifyPublish(make(chan amqp.Confirmation, 100))
	for i := range 10 {
		if err := ch.PublishWithContext(context.Background(), "", q.Name, false, false, amqp.Publishing{Body: []byte{byte(i)}}); err != nil {
			t.Fatal(err)
		}
	}
	for i := range 10 {
		cf := <-confirms
		if !cf.Ack || cf.DeliveryTag != uint64(i+1) {
			t.Fatalf("confirm %d: %+v", i, cf)
		}
	}
	if err := ch.Qos(3, 0, false); err != nil {
		t.Fatal(err)
	}
	d, err := ch.Consume(q.Name, "c1", false, false, false, false, nil)
	if err != nil {
		t.Fatal(err)
	}
	for i := range 10 {
		m := recv(t, d)
		if m.Body[0] != byte(i) {
			t.Fatalf("message %d out of order: %v", i, m.Body)
		}
		if err := m.Ack(false); err != nil {
			t.Fatal(err)
		}
	}
}

func TestChannelErrorsKeepConnection(t *testing.T) {
	_, url := startBroker(t, nil)
	c := dial(t, url)
	ch := openCh(t, c)
	_, err := ch.QueueDeclarePassive("missing", false, false, false, false, nil)
	var ae *amqp.Error
	if !asErr(err, &ae) || ae.Code != 404 {
		t.Fatalf("passive declare of missing queue: %v", err)
	}
	ch = openCh(t, c)
	if err := ch.ExchangeDeclare("x", "nonsense", false, false, false, false, nil); !asErr(err, &ae) || ae.Code != 503 {
		t.Fatalf("bad exchange type: %v", err)
	}
	// 503 is a connection error; a new connection works.
	c = dial(t, url)
	ch = openCh(t, c)
	if _, err := ch.QueueDeclare("q1", true, false, false, false, nil); err != nil {
		t.Fatal(err)
	}
	if _, err := ch.QueueDeclare("q1", false, false, false, false, nil); !asErr(err, &ae) || ae.Code != 406 {
		t.Fatalf("inequivalent redeclare: %v", err)
	}
	ch = openCh(t, c)
	if err := ch.Ack(99, false); err != nil {
		t.Fatal(err) // async; the error arrives as a channel close
	}
	closed := ch.NotifyClose(make(chan *amqp.Error, 1))
	select {
	case e := <-closed:
		if e == nil || e.Code != 406 {
			t.Fatalf("unknown delivery tag: %v", e)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("no channel close for unknown delivery tag")
	}
	if c.IsClosed() {
		t.Fatal("connection closed by a channel error")
	}
}

func asErr(err error, target **amqp.Error) bool {
	e, ok := err.(*amqp.Error)
	if ok {
		*target = e
	}
	return ok
}

func TestInProcessConn(t *testing.T) {
	s, _ := startBroker(t, func(o *Options) { o.AMQPAddr = "" })
	nc, err := s.InProcessConn()
	if err != nil {
		t.Fatal(err)
	}
	c, err := amqp.Open(nc, amqp.Config{SASL: []amqp.Authentication{&amqp.PlainAuth{Username: "guest", Password: "guest"}}, Vhost: "/"})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	ch := openCh(t, c)
	q, err := ch.QueueDeclare("inproc", false, false, true, false, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := ch.PublishWithContext(context.Background(), "", q.Name, false, false, amqp.Publishing{Body: []byte("hi")}); err != nil {
		t.Fatal(err)
	}
	m, ok, err := ch.Get(q.Name, true)
	for i := 0; err == nil && !ok && i < 100; i++ {
		time.Sleep(10 * time.Millisecond)
		m, ok, err = ch.Get(q.Name, true)
	}
	if err != nil || !ok || string(m.Body) != "hi" {
		t.Fatalf("get: %v %v %q", err, ok, m.Body)
	}
}

func TestAuth(t *testing.T) {
	_, url := startBroker(t, func(o *Options) {
		o.Users = append(o.Users, User{Name: "alice", PasswordHash: HashPassword("s3cret"),
			Permissions: map[string]Permission{"/": {Configure: "^alice\\..*", Write: ".*", Read: ".*"}}})
	})
	if _, err := amqp.Dial(url[:len("amqp://")] + "guest:wrong@" + url[len("amqp://guest:guest@"):]); err == nil {
		t.Fatal("wrong password accepted")
	}
	base := url[len("amqp://guest:guest@"):]
	c := dial(t, "amqp://alice:s3cret@"+base)
	ch := openCh(t, c)
	if _, err := ch.QueueDeclare("alice.q", false, true, false, false, nil); err != nil {
		t.Fatal(err)
	}
	var ae *amqp.Error
	if _, err := ch.QueueDeclare("bob.q", false, true, false, false, nil); !asErr(err, &ae) || ae.Code != 403 {
		t.Fatalf("declare outside configure permission: %v", err)
	}
}

// consumeN consumes n messages of queue on ch (consumer tag "c", prefetch
// 1), acking each, and cancels the consumer before it acks the n-th: the
// prefetch holds the next message back, so exactly n are delivered.
func consumeN(t testing.TB, ch *amqp.Channel, queue string, n int) {
	t.Helper()
	if err := ch.Qos(1, 0, false); err != nil {
		t.Fatal(err)
	}
	d, err := ch.Consume(queue, "c", false, false, false, false, nil)
	if err != nil {
		t.Fatal(err)
	}
	for i := range n {
		m := recv(t, d)
		if i == n-1 {
			if err := ch.Cancel("c", false); err != nil {
				t.Fatal(err)
			}
		}
		if err := m.Ack(false); err != nil {
			t.Fatal(err)
		}
	}
}

package broker

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"
)

// childEnv makes the test binary run a broker instead of the tests, so a
// test can kill it with SIGKILL.
const childEnv = "OSLOGO_BROKER_TEST_CHILD_DATA"

// childSegmentEnv sets the child's segment size (small ones make the
// tests rotate and compact the log).
const childSegmentEnv = "OSLOGO_BROKER_TEST_CHILD_SEGMENT"

func runChild() {
	opts := DefaultOptions()
	opts.AMQPAddr = "127.0.0.1:0"
	opts.DataDir = os.Getenv(childEnv)
	if n, err := strconv.ParseInt(os.Getenv(childSegmentEnv), 10, 64); err == nil {
		opts.segmentLimit = n
	}
	s, err := New(opts)
	if err == nil {
		err = s.Start()
	}
	if err != nil {
		fmt.Println("ERR", err)
		os.Exit(1)
	}
	fmt.Println("ADDR", s.Addr())
	select {}
}

func startChild(t *testing.T, dir string) (*exec.Cmd, string) {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), childEnv+"="+dir)
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	line, err := bufio.NewReader(out).ReadString('\n')
	if err != nil || !strings.HasPrefix(line, "ADDR ") {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
		t.Fatalf("child broker: %q %v", line, err)
	}
	return cmd, "amqp://guest:guest@" + strings.TrimSpace(line[5:]) + "/"
}

// dialChild connects to the child broker, killing it if that fails.
func dialChild(t *testing.T, cmd *exec.Cmd, url string) *amqp.Connection {
	t.Helper()
	c, err := amqp.Dial(url)
	if err != nil {
		kill9(t, cmd)
		t.Fatal(err)
	}
	return c
}

func kill9(t *testing.T, cmd *exec.Cmd) {
	t.Helper()
	if err := cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	_ = cmd.Wait()
}

// TestPersistenceSurvivesKill9 publishes persistent messages with confirms
// to a durable queue, kills the broker with SIGKILL right after the last
// confirm, restarts it and expects every confirmed message back, along
// with durable exchanges and bindings.
func TestPersistenceSurvivesKill9(t *testing.T) {
	dir := t.TempDir()
	cmd, url := startChild(t, dir)
	c := dialChild(t, cmd, url)
	ch, _ := c.Channel()
	must := func(err error) {
		t.Helper()
		if err != nil {
			kill9(t, cmd)
			t.Fatal(err)
		}
	}
	must(ch.ExchangeDeclare("dur.topic", "topic", true, false, false, false, nil))
	_, err := ch.QueueDeclare("dur.q", true, false, false, false, amqp.Table{"x-max-priority": int32(5)})
	must(err)
	_, err = ch.QueueDeclare("transient.q", false, false, false, false, nil)
	must(err)
	must(ch.QueueBind("dur.q", "orders.#", "dur.topic", false, nil))
	must(ch.Confirm(false))
	confirms := ch.NotifyPublish(make(chan amqp.Confirmation, 2000))
	const n = 1000
	for i := range n {
		must(ch.PublishWithContext(context.Background(), "dur.topic", "orders.new", false, false,
			amqp.Publishing{DeliveryMode: amqp.Persistent, Body: fmt.Appendf(nil, "m%04d", i)}))
	}
	// A transient message on a durable queue is not kept.
	must(ch.PublishWithContext(context.Background(), "dur.topic", "orders.new", false, false, amqp.Publishing{Body: []byte("transient")}))
	for i := range n + 1 {
		select {
		case cf := <-confirms:
			if !cf.Ack {
				must(fmt.Errorf("nack for %d", cf.DeliveryTag))
			}
		case <-time.After(20 * time.Second):
			must(fmt.Errorf("confirm %d missing", i))
		}
	}
	// Consume and ack the first 100 so acks are persisted too.
	must(ch.Qos(100, 0, false))
	d, err := ch.Consume("dur.q", "c1", false, false, false, false, nil)
	must(err)
	for range 100 {
		m := recv(t, d)
		must(m.Ack(false))
	}
	// Make sure the acks reached the broker before the crash: a synchronous
	// round trip on the same channel follows them.
	must(ch.Cancel("c1", false))
	_, err = ch.QueueDeclarePassive("dur.q", true, false, false, false, amqp.Table{"x-max-priority": int32(5)})
	must(err)
	kill9(t, cmd)
	_ = c.Close()

	cmd, url = startChild(t, dir)
	defer kill9(t, cmd)
	c2, err := amqp.Dial(url)
	must(err)
	defer c2.Close()
	ch2, _ := c2.Channel()
	q, err := ch2.QueueDeclarePassive("dur.q", true, false, false, false, amqp.Table{"x-max-priority": int32(5)})
	must(err)
	// Acks are written before the next fsync; the 100 acked may or may not
	// be on disk, but every unacked confirmed message must be.
	if q.Messages < n-100 || q.Messages > n {
		t.Fatalf("recovered %d messages, want %d..%d", q.Messages, n-100, n)
	}
	if _, err := ch2.QueueDeclarePassive("transient.q", false, false, false, false, nil); err == nil {
		t.Fatal("transient queue survived restart")
	}
	ch2, _ = c2.Channel()
	// The binding survived: a new publish routes to dur.q.
	must(ch2.PublishWithContext(context.Background(), "dur.topic", "orders.x", true, false, amqp.Publishing{DeliveryMode: amqp.Persistent, Body: []byte("after")}))
	d, err = ch2.Consume("dur.q", "", true, false, false, false, nil)
	must(err)
	got := map[string]bool{}
	for len(got) < q.Messages+1 {
		m := recv(t, d)
		if string(m.Body) == "transient" {
			t.Fatal("transient message survived restart")
		}
		got[string(m.Body)] = true
	}
	for i := 100; i < n; i++ {
		if !got[fmt.Sprintf("m%04d", i)] {
			t.Fatalf("confirmed message m%04d lost", i)
		}
	}
	if !got["after"] {
		t.Fatal("binding lost")
	}
}

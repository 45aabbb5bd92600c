package rabbit

import (
	"context"
	"encoding/json"
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/oslogo/oslogo/messaging"
)

// TestStreamFanoutMessagingServer: fanout casts, one at a time, to an RPC
// server of the messaging package in the kolla configuration, whose 64
// workers take requests from the listener at once (so they are handed
// over out of order): every cast arrives. Before the stream cursor
// admitted messages in delivery order, 68 of 100 arrived and the server
// then stalled, as `oslogo bench --mode fanout` did on RabbitMQ 3.10.
func TestStreamFanoutMessagingServer(t *testing.T) {
	env := newKollaEnv(t, "kolla_msgsrv")
	cfg := messaging.DefaultTransportConfig()
	cfg.DriverConfig = map[string]string{"rabbit_quorum_queue": "true", "rabbit_transient_quorum_queue": "true", "rabbit_stream_fanout": "true", "rabbit_qos_prefetch_count": "10"}
	ctx := context.Background()
	srvT, err := messaging.OpenTransport(ctx, env.url, cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer srvT.Close()
	cliT, err := messaging.OpenTransport(ctx, env.url, cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer cliT.Close()
	var n atomic.Int64
	ep := messaging.NewEndpoint(messaging.Target{})
	ep.HandleRaw("echo", func(_ context.Context, a json.RawMessage) (any, error) { n.Add(1); return a, nil })
	topic := uniqueTopic(t)
	srv, err := messaging.NewRPCServer(srvT, messaging.Target{Topic: topic, Server: "bench"}, []*messaging.Endpoint{ep})
	if err != nil {
		t.Fatal(err)
	}
	if err := srv.Start(ctx); err != nil {
		t.Fatal(err)
	}
	defer func() { _ = srv.Stop(context.Background()); srv.Wait() }()
	cli := messaging.NewRPCClient(cliT, messaging.Target{Topic: topic}, messaging.WithFanout(true))
	const casts = 300
	for i := 0; i < casts; i++ {
		if err := cli.Cast(ctx, "echo", map[string]any{"s": "x"}); err != nil {
			t.Fatal(err)
		}
	}
	deadline := time.Now().Add(10 * time.Second)
	for n.Load() < casts && time.Now().Before(deadline) {
		time.Sleep(50 * time.Millisecond)
	}
	time.Sleep(300 * time.Millisecond) // one too many would show now
	if got := n.Load(); got != casts {
		t.Fatalf("the server handled %d of %d fanout casts", got, casts)
	}
}

// TestStreamCursor: messages handed over out of order; a new subscription
// starts at the lowest one admitted and not handed over, and drops what
// it reads again before that or was handed over already.
func TestStreamCursor(t *testing.T) {
	c := newStreamCursor()
	if got := c.offsetArg(); got != "last" {
		t.Fatalf("first offset %v", got)
	}
	open := new(amqp.Channel) // a channel that is not closed
	for o := int64(10); o < 16; o++ {
		if !c.admit(o) {
			t.Fatalf("admit %d", o)
		}
	}
	for _, o := range []int64{10, 12, 13, 15} { // 11 and 14 still with the workers
		if !c.take(open, o) {
			t.Fatalf("take %d", o)
		}
	}
	// The channel drops with 11 and 14 not handed over.
	if got := c.offsetArg(); got != int64(11) {
		t.Fatalf("resume at %v, want 11", got)
	}
	var admitted []int64
	for o := int64(8); o < 18; o++ { // RabbitMQ starts at the chunk holding 11
		if c.admit(o) {
			admitted = append(admitted, o)
		}
	}
	if fmt.Sprint(admitted) != "[11 14 16 17]" {
		t.Fatalf("admitted %v, want [11 14 16 17]", admitted)
	}
	for _, o := range admitted {
		c.take(open, o)
	}
	if got := c.offsetArg(); got != int64(18) {
		t.Fatalf("resume at %v, want 18", got)
	}
	c.reset()
	if got := c.offsetArg(); got != "last" || !c.admit(0) {
		t.Fatalf("after a reset: %v", got)
	}
}

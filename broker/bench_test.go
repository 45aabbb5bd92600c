package broker

import (
	"context"
	"testing"

	amqp "github.com/rabbitmq/amqp091-go"
)

// BenchmarkPublishConsume moves 100-byte transient messages through one
// queue from one connection to another.
func BenchmarkPublishConsume(b *testing.B) {
	_, url := startBroker(b, nil)
	pc, cc := dial(b, url), dial(b, url)
	pch, cch := openCh(b, pc), openCh(b, cc)
	if _, err := pch.QueueDeclare("bench", false, false, false, false, nil); err != nil {
		b.Fatal(err)
	}
	if err := cch.Qos(2000, 0, false); err != nil {
		b.Fatal(err)
	}
	d, err := cch.Consume("bench", "", false, false, false, false, nil)
	if err != nil {
		b.Fatal(err)
	}
	body := make([]byte, 100)
	done := make(chan struct{})
	go func() {
		defer close(done)
		for i := 0; i < b.N; i++ {
			m := <-d
			if i%100 == 99 || i == b.N-1 {
				_ = m.Ack(true)
			}
		}
	}()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if err := pch.PublishWithContext(context.Background(), "", "bench", false, false, amqp.Publishing{Body: body}); err != nil {
			b.Fatal(err)
		}
	}
	<-done
}

// BenchmarkRoundTrip measures request/reply round trips through a server
// queue and a reply queue, one caller, the latency path of RPC.
func BenchmarkRoundTrip(b *testing.B) {
	_, url := startBroker(b, nil)
	sc, cc := dial(b, url), dial(b, url)
	sch, cch := openCh(b, sc), openCh(b, cc)
	if _, err := sch.QueueDeclare("rpc", false, false, false, false, nil); err != nil {
		b.Fatal(err)
	}
	reqs, err := sch.Consume("rpc", "", true, false, false, false, nil)
	if err != nil {
		b.Fatal(err)
	}
	go func() {
		for m := range reqs {
			_ = sch.PublishWithContext(context.Background(), "", m.ReplyTo, false, false, amqp.Publishing{Body: m.Body})
		}
	}()
	rq, err := cch.QueueDeclare("", false, true, true, false, nil)
	if err != nil {
		b.Fatal(err)
	}
	replies, err := cch.Consume(rq.Name, "", true, false, false, false, nil)
	if err != nil {
		b.Fatal(err)
	}
	body := make([]byte, 100)
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if err := cch.PublishWithContext(context.Background(), "", "rpc", false, false, amqp.Publishing{ReplyTo: rq.Name, Body: body}); err != nil {
			b.Fatal(err)
		}
		<-replies
	}
}

package broker_test

import (
	"context"
	"fmt"
	"time"

	"github.com/oslogo/oslogo/broker"

	amqp "github.com/rabbitmq/amqp091-go"
)

// Start an embedded broker on a free port, use it with amqp091-go and shut
// it down. A rabbit:// transport URL for oslo-style drivers is
// "rabbit://guest:guest@" + srv.Addr().String() + "/".
func Example() {
	opts := broker.DefaultOptions()
	opts.AMQPAddr = "127.0.0.1:0"
	srv, err := broker.New(opts)
	if err != nil {
		panic(err)
	}
	if err := srv.Start(); err != nil {
		panic(err)
	}
	defer func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = srv.Shutdown(ctx)
	}()
	srv.ReadyForConnections(5 * time.Second)

	conn, err := amqp.Dial("amqp://guest:guest@" + srv.Addr().String() + "/")
	if err != nil {
		panic(err)
	}
	defer conn.Close()
	ch, _ := conn.Channel()
	q, _ := ch.QueueDeclare("hello", false, true, false, false, nil)
	_ = ch.PublishWithContext(context.Background(), "", q.Name, false, false, amqp.Publishing{Body: []byte("Hello World!")})
	msgs, _ := ch.Consume(q.Name, "", true, false, false, false, nil)
	fmt.Println(string((<-msgs).Body))
	// Output: Hello World!
}

// InProcessConn serves a net.Pipe like a TCP connection: no port at all.
func ExampleServer_InProcessConn() {
	opts := broker.DefaultOptions()
	opts.AMQPAddr = ""
	srv, _ := broker.New(opts)
	_ = srv.Start()
	defer srv.Shutdown(context.Background())

	nc, _ := srv.InProcessConn()
	conn, err := amqp.Open(nc, amqp.Config{SASL: []amqp.Authentication{&amqp.PlainAuth{Username: "guest", Password: "guest"}}, Vhost: "/"})
	if err != nil {
		panic(err)
	}
	defer conn.Close()
	fmt.Println(conn.Properties["product"])
	// Output: RabbitMQ
}

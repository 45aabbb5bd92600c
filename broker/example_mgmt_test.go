package broker_test

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"

	"github.com/oslogo/oslogo/broker"

	amqp "github.com/rabbitmq/amqp091-go"
)

// The query methods behind the management API return structs: here the
// message counts of a queue after two publishes.
func ExampleServer_Queues() {
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
	ch, _ := conn.Channel()
	_, _ = ch.QueueDeclare("work", true, false, false, false, nil)
	_ = ch.Confirm(false)
	for range 2 {
		dc, _ := ch.PublishWithDeferredConfirm("", "work", false, false, amqp.Publishing{Body: []byte("job")})
		dc.Wait()
	}

	qs, _ := srv.Queues(broker.QueuesOptions{VHost: "/", Name: "work"})
	fmt.Println(qs[0].Name, qs[0].Messages, qs[0].MessagesReady, qs[0].Consumers)
	// Output: work 2 2 0
}

// ManagementHandler is the RabbitMQ-compatible HTTP API as an
// http.Handler; Options.HTTPAddr serves the same handler on a listener.
func ExampleServer_ManagementHandler() {
	opts := broker.DefaultOptions()
	opts.AMQPAddr = ""
	srv, _ := broker.New(opts)
	_ = srv.Start()
	defer srv.Shutdown(context.Background())

	req := httptest.NewRequest("GET", "/api/whoami", nil)
	req.RemoteAddr = "127.0.0.1:40000" // guest may log in from loopback only
	req.SetBasicAuth("guest", "guest")
	rec := httptest.NewRecorder()
	srv.ManagementHandler().ServeHTTP(rec, req)
	body, _ := io.ReadAll(rec.Result().Body)
	fmt.Println(rec.Code == http.StatusOK, string(body))
	// Output: true {"name":"guest","tags":["administrator"]}
}

package broker_test

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/oslogo/oslogo/broker"

	amqp "github.com/rabbitmq/amqp091-go"
)

// A broker with its own account: nova may use only names starting
// "nova." on the vhost "nova"; a wrong password is refused with 403 and
// counted.
func ExampleServer_Stats() {
	opts := broker.DefaultOptions()
	opts.AMQPAddr = "127.0.0.1:0"
	opts.VHosts = []string{"nova"}
	opts.Users = []broker.User{{Name: "nova", PasswordHash: broker.HashPassword("s3cret"),
		Permissions: map[string]broker.Permission{"nova": {Configure: `nova\..*`, Write: `nova\..*`, Read: `nova\..*`}}}}
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
	addr := srv.Addr().String()

	_, err = amqp.Dial("amqp://nova:wrong@" + addr + "/nova")
	var ae *amqp.Error
	fmt.Println("wrong password:", errors.As(err, &ae) && ae.Code == amqp.AccessRefused)

	conn, err := amqp.Dial("amqp://nova:s3cret@" + addr + "/nova")
	if err != nil {
		panic(err)
	}
	defer conn.Close()
	ch, _ := conn.Channel()
	_, err = ch.QueueDeclare("nova.compute", false, true, false, false, nil)
	fmt.Println("declare nova.compute:", err == nil)
	ch, _ = conn.Channel()
	_, err = ch.QueueDeclare("cinder.volume", false, true, false, false, nil)
	fmt.Println("declare cinder.volume refused:", errors.As(err, &ae) && ae.Code == amqp.AccessRefused)
	fmt.Println("login failures:", srv.Stats().LoginFailures)
	// Output:
	// wrong password: true
	// declare nova.compute: true
	// declare cinder.volume refused: true
	// login failures: 1
}

package broker_test

import (
	"context"
	"encoding/json"
	"fmt"

	"github.com/oslogo/oslogo/broker"
)

// A policy limits the queues whose names match its pattern, those declared
// before it and after; the lower of a queue argument and the policy's value
// applies.
func ExampleServer_SetPolicy() {
	opts := broker.DefaultOptions()
	opts.AMQPAddr = ""
	srv, _ := broker.New(opts)
	_ = srv.Start()
	defer srv.Shutdown(context.Background())

	created, err := srv.SetPolicy(broker.Policy{VHost: "/", Name: "short-lived", Pattern: `^reply_`,
		ApplyTo: "queues", Priority: 1, Definition: map[string]any{"expires": 60000, "max-length": 1000}})
	fmt.Println(created, err)
	_, err = srv.SetPolicy(broker.Policy{VHost: "/", Name: "bad", Pattern: ".*", Definition: map[string]any{"max-length": -1}})
	fmt.Println(err)
	ps, _ := srv.Policies("/")
	fmt.Println(ps[0].Name, ps[0].Pattern, ps[0].ApplyTo, ps[0].Priority)
	// Output:
	// true <nil>
	// broker: policy: -1 is not a valid maximum length
	// short-lived ^reply_ queues 1
}

// ExportDefinitions gives the definitions in RabbitMQ 3.10's format;
// ImportDefinitions loads such a file (here from JSON, as exported by
// RabbitMQ or by this broker).
func ExampleServer_ImportDefinitions() {
	opts := broker.DefaultOptions()
	opts.AMQPAddr = ""
	srv, _ := broker.New(opts)
	_ = srv.Start()
	defer srv.Shutdown(context.Background())

	var d broker.Definitions
	_ = json.Unmarshal([]byte(`{"vhosts":[{"name":"nova"}],
		"users":[{"name":"nova","password":"secret","tags":""}],
		"permissions":[{"user":"nova","vhost":"nova","configure":".*","write":".*","read":".*"}],
		"queues":[{"name":"compute","vhost":"nova","durable":true,"auto_delete":false,"arguments":{}}]}`), &d)
	fmt.Println(srv.ImportDefinitions(d))
	out := srv.ExportDefinitions()
	for _, q := range out.Queues {
		fmt.Println(q.VHost, q.Name, q.Durable)
	}
	// Output:
	// <nil>
	// nova compute true
}

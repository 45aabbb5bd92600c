package main

import (
	"context"
	"fmt"
	"os"
	"sync/atomic"
	"time"

	"github.com/oslogo/oslogo/messaging"
)

func init() {
	register(&command{name: "serve", summary: "serve the example RPC endpoints (echo, add, func_call, fail, sleep, count, counted)", run: runServe})
}

// exampleEndpoint is what `oslogo serve` and the demo serve: the add service
// of oslo_message_server.py, the time server of receive_call.py, and a few
// methods for trying things out.
func exampleEndpoint(hostname string, now func() time.Time) *messaging.Endpoint {
	ep := messaging.NewEndpoint(messaging.Target{})
	var casts atomic.Int64
	messaging.Handle(ep, "echo", func(_ context.Context, a struct {
		Data any `json:"data"`
	}) (any, error) {
		return a.Data, nil
	})
	messaging.Handle(ep, "add", func(_ context.Context, a struct {
		A float64 `json:"a"`
		B float64 `json:"b"`
	}) (float64, error) {
		return a.A + a.B, nil
	})
	messaging.Handle(ep, "func_call", func(_ context.Context, a struct {
		Hostname string `json:"hostname"`
		Getdate  string `json:"getdate"`
	}) ([]string, error) {
		// receive_call.py returns (my_host, datetime.today()); oslo's JSON
		// writes the datetime as an ISO string.
		return []string{hostname, now().Format("2006-01-02T15:04:05.000000")}, nil
	})
	messaging.Handle(ep, "fail", func(_ context.Context, a struct {
		Message string `json:"message"`
	}) (any, error) {
		return nil, messaging.NewRemoteError("builtins", "ValueError", a.Message)
	})
	messaging.Handle(ep, "sleep", func(ctx context.Context, a struct {
		Seconds float64 `json:"seconds"`
	}) (float64, error) {
		time.Sleep(time.Duration(a.Seconds * float64(time.Second)))
		return a.Seconds, nil
	})
	messaging.Handle(ep, "count", func(context.Context, struct{}) (any, error) {
		casts.Add(1)
		return nil, nil
	})
	messaging.Handle(ep, "counted", func(context.Context, struct{}) (int64, error) {
		return casts.Load(), nil
	})
	return ep
}

func runServe(ctx context.Context, env *cmdEnv, args []string) error {
	var tf transportFlags
	fs := newFlagSet(env, "serve", "[--url URL | --config-file F] --topic T [--server S] [--exchange E]")
	tf.register(fs)
	host, _ := os.Hostname()
	topic := fs.String("topic", "", "topic to serve (required)")
	server := fs.String("server", host, "server name (the T.S queue)")
	exchange := fs.String("exchange", "", "exchange (default: control_exchange)")
	if err := parseNoArgs(fs, args); err != nil {
		return err
	}
	if *topic == "" {
		return usageError(fmt.Errorf("--topic is required"))
	}
	tr, _, err := tf.open(ctx, env)
	if err != nil {
		return err
	}
	defer tr.Close()
	srv, err := messaging.NewRPCServer(tr, messaging.Target{Exchange: *exchange, Topic: *topic, Server: *server},
		[]*messaging.Endpoint{exampleEndpoint(*server, time.Now)})
	if err != nil {
		return usageError(err)
	}
	if err := srv.Start(ctx); err != nil {
		return tf.classify(err)
	}
	fmt.Fprintf(env.stdout, "serving topic %s as server %s on %s; Ctrl-C stops\n", *topic, *server, tr)
	<-ctx.Done()
	stopCtx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	return srv.Stop(stopCtx)
}

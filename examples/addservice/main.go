// Command addservice is oslo_message_server.py and oslo_message_client.py
// in Go: an RPC server on Target(topic='test', server='server1') with an
// "add" method and a ServerControlEndpoint, and a client that calls
// add(a=2, b=3) directly and through prepare(version='1.0'). The transport
// URL comes from the application's own option "url" in my.conf, read the
// way oslo.config reads it.
//
//	go run ./examples/addservice -config-file examples/addservice/my.conf
//	go run ./examples/addservice -config-file my.conf -role server   # one machine
//	go run ./examples/addservice -config-file my.conf -role client   # another
package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"

	"github.com/oslogo/oslogo/config"
	_ "github.com/oslogo/oslogo/driver/rabbit"
	"github.com/oslogo/oslogo/messaging"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	if err := run(ctx, os.Args[1:], os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "addservice:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, args []string, out io.Writer) error {
	fs := flag.NewFlagSet("addservice", flag.ContinueOnError)
	var files config.FileList
	fs.Var(&files, "config-file", "oslo.config file with [DEFAULT] url (repeatable)")
	role := fs.String("role", "both", "both, server or client")
	if err := fs.Parse(args); err != nil {
		return err
	}
	// opts = [cfg.StrOpt('url', default='0.0.0.0')]; CONF.register_opts(opts)
	conf := config.New()
	if err := config.RegisterMessagingOpts(conf); err != nil {
		return err
	}
	if err := conf.Register(config.DefaultGroup, config.Opt{Name: "url", Type: config.String, Default: "0.0.0.0", Help: "transport URL of the add service"}); err != nil {
		return err
	}
	if err := conf.LoadFiles(files...); err != nil {
		return err
	}
	cfg, err := messaging.TransportConfigFrom(conf, nil)
	if err != nil {
		return err
	}
	transport, err := messaging.OpenTransport(ctx, conf.String(config.DefaultGroup, "url"), cfg)
	if err != nil {
		return err
	}
	defer transport.Close()

	if *role != "client" {
		var server *messaging.RPCServer
		// ServerControlEndpoint: stop(ctx) stops the server.
		control := messaging.NewEndpoint(messaging.Target{Namespace: "control", Version: "2.0"})
		stopped := make(chan struct{})
		messaging.Handle(control, "stop", func(context.Context, struct{}) (any, error) {
			close(stopped)
			return nil, nil
		})
		add := messaging.NewEndpoint(messaging.Target{})
		messaging.Handle(add, "add", func(_ context.Context, a struct{ A, B int }) (int, error) {
			fmt.Fprintln(out, "receive message")
			return a.A + a.B, nil
		})
		server, err = messaging.NewRPCServer(transport, messaging.Target{Topic: "test", Server: "server1"}, []*messaging.Endpoint{control, add})
		if err != nil {
			return err
		}
		if err := server.Start(ctx); err != nil {
			return err
		}
		defer server.Stop(context.Background())
		fmt.Fprintln(out, "The Server!")
		if *role == "server" {
			select {
			case <-ctx.Done():
			case <-stopped:
			}
			fmt.Fprintln(out, "Stopping server")
			return nil
		}
	}
	client := messaging.NewRPCClient(transport, messaging.Target{Topic: "test"})
	r, err := messaging.Call[int](ctx, client, "add", map[string]int{"a": 2, "b": 3})
	if err != nil {
		return err
	}
	fmt.Fprintln(out, "result :", r)
	cctxt := client.Prepare(messaging.WithVersion("1.0"))
	r2, err := messaging.Call[int](ctx, cctxt, "add", map[string]int{"a": 2, "b": 3})
	if err != nil {
		return err
	}
	fmt.Fprintln(out, "result_two :", r2)
	return nil
}

// Command timeserver is the time server of "Exploring OpenStack's messaging"
// (receive_fanout.py / send_fanout.py, receive_cast.py / send_cast.py,
// receive_call.py / send_call.py) in Go: one server machine and two client
// machines, control_exchange "sdn".
//
//   - fanout (topic sample1): the server broadcasts its time to every client;
//   - cast (topic sample2): the server tells one client its time;
//   - call (topic sample3): a client asks the server for its time.
//
// Run both sides in one process (any transport, memory:// included):
//
//	go run ./examples/timeserver -url memory://
//
// or on separate machines over RabbitMQ or `oslogo broker`:
//
//	go run ./examples/timeserver -url rabbit://guest:guest@host:5672/ -role server
//	go run ./examples/timeserver -url rabbit://guest:guest@host:5672/ -role client -name client1
package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"sync"
	"time"

	_ "github.com/oslogo/oslogo/driver/rabbit"
	"github.com/oslogo/oslogo/messaging"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	if err := run(ctx, os.Args[1:], os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "timeserver:", err)
		os.Exit(1)
	}
}

type timeArgs struct {
	Hostname string `json:"hostname"`
	Now      string `json:"now"`
}

// clientEndpoint is what a client machine serves: the server's broadcasts
// and notices arrive as casts.
func clientEndpoint(name string, out io.Writer, mu *sync.Mutex, got chan<- string) *messaging.Endpoint {
	ep := messaging.NewEndpoint(messaging.Target{})
	for _, method := range []string{"broadcast_time", "notify_time"} {
		messaging.Handle(ep, method, func(_ context.Context, a timeArgs) (any, error) {
			mu.Lock()
			fmt.Fprintf(out, "%s: received %s [ hostname=%s, now=%s ]\n", name, method, a.Hostname, a.Now)
			mu.Unlock()
			if got != nil {
				got <- name
			}
			return nil, nil
		})
	}
	return ep
}

// serverEndpoint answers func_call(hostname, getdate) with its host name and
// time, as receive_call.py does.
func serverEndpoint(host string) *messaging.Endpoint {
	ep := messaging.NewEndpoint(messaging.Target{})
	messaging.Handle(ep, "func_call", func(_ context.Context, a struct {
		Hostname string `json:"hostname"`
		Getdate  string `json:"getdate"`
	}) ([]string, error) {
		return []string{host, time.Now().Format("2006-01-02 15:04:05")}, nil
	})
	return ep
}

func serve(ctx context.Context, tr *messaging.Transport, target messaging.Target, ep *messaging.Endpoint) (*messaging.RPCServer, error) {
	srv, err := messaging.NewRPCServer(tr, target, []*messaging.Endpoint{ep})
	if err != nil {
		return nil, err
	}
	return srv, srv.Start(ctx)
}

func run(ctx context.Context, args []string, out io.Writer) error {
	fs := flag.NewFlagSet("timeserver", flag.ContinueOnError)
	url := fs.String("url", "memory://", "transport URL")
	role := fs.String("role", "both", "both (everything in this process), server or client")
	name := fs.String("name", "client1", "client name (role client)")
	rounds := fs.Int("rounds", 1, "rounds of fanout, cast and call (0: until interrupted)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	cfg := messaging.DefaultTransportConfig()
	cfg.ControlExchange = "sdn" // rpc.set_defaults(control_exchange='sdn')
	cfg.ResponseTimeout = 10 * time.Second
	tr, err := messaging.OpenTransport(ctx, *url, cfg)
	if err != nil {
		return err
	}
	defer tr.Close()
	host, _ := os.Hostname()
	var mu sync.Mutex
	var servers []*messaging.RPCServer
	defer func() {
		for _, s := range servers {
			s.Stop(context.Background())
		}
	}()
	got := make(chan string, 16)
	clients := []string{*name}
	if *role == "both" {
		clients = []string{"client1", "client2"}
	}
	if *role == "both" || *role == "client" {
		for _, c := range clients {
			for _, topic := range []string{"sample1", "sample2"} {
				s, err := serve(ctx, tr, messaging.Target{Topic: topic, Server: c}, clientEndpoint(c, out, &mu, got))
				if err != nil {
					return err
				}
				servers = append(servers, s)
			}
		}
	}
	if *role == "both" || *role == "server" {
		s, err := serve(ctx, tr, messaging.Target{Topic: "sample3", Server: host}, serverEndpoint(host))
		if err != nil {
			return err
		}
		servers = append(servers, s)
	}
	for i := 0; *rounds == 0 || i < *rounds; i++ {
		now := time.Now().Format("2006-01-02 15:04:05")
		if *role != "client" {
			// The server side: broadcast to all, then tell one client.
			fanout := messaging.NewRPCClient(tr, messaging.Target{Topic: "sample1", Fanout: true})
			if err := fanout.Cast(ctx, "broadcast_time", timeArgs{host, now}); err != nil {
				return err
			}
			cast := messaging.NewRPCClient(tr, messaging.Target{Topic: "sample2", Server: clients[0]})
			if err := cast.Cast(ctx, "notify_time", timeArgs{host, now}); err != nil {
				return err
			}
		}
		if *role != "server" {
			// The client side: ask the server for its time.
			call := messaging.NewRPCClient(tr, messaging.Target{Topic: "sample3"})
			reply, err := messaging.Call[[]string](ctx, call, "func_call", map[string]string{"hostname": *name, "getdate": "now"})
			if err != nil {
				return err
			}
			mu.Lock()
			fmt.Fprintf(out, "%s: received call_reply [ hostname=%s, nowtime=%s ]\n", *name, reply[0], reply[1])
			mu.Unlock()
		}
		if *role == "both" {
			// Two broadcasts and one notice per round.
			for j := 0; j < 3; j++ {
				select {
				case <-got:
				case <-time.After(10 * time.Second):
					return fmt.Errorf("a client did not receive the server's message")
				}
			}
		}
		if *rounds == 0 || i+1 < *rounds {
			select {
			case <-ctx.Done():
				return nil
			case <-time.After(time.Second):
			}
		}
	}
	return nil
}

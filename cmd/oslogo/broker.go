package main

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/http/pprof"
	"os"
	"runtime/debug"
	"time"

	"github.com/oslogo/oslogo/broker"
)

func init() {
	register(&command{name: "broker", summary: "run the embedded AMQP 0-9-1 broker", run: runBroker})
}

func runBroker(ctx context.Context, env *cmdEnv, args []string) error {
	fs := newFlagSet(env, "broker", "[--amqp 127.0.0.1:5672] [--http 127.0.0.1:15672] [--data DIR] [--config-file F]")
	addr := fs.String("amqp", "", "AMQP listen address (default 127.0.0.1:5672)")
	data := fs.String("data", "", "data directory for durable state (default: memory only)")
	httpAddr := fs.String("http", "", "management HTTP API listen address, e.g. 127.0.0.1:15672 (default: off)")
	cfgFile := fs.String("config-file", "", "TOML file with listeners, users, vhosts and limits")
	verbose := fs.Bool("v", false, "log at debug level")
	denyTransient := fs.Bool("deny-transient-nonexcl-queues", false, "refuse queues that are neither durable nor exclusive with 541, as RabbitMQ 4.3 does (its deprecated feature transient_nonexcl_queues denied)")
	profile := fs.String("profile", "", "serve Go's pprof profiles on this address (e.g. 127.0.0.1:6060)")
	if err := parseNoArgs(fs, args); err != nil {
		return err
	}
	if *profile != "" {
		addr, stop, err := serveProfiles(*profile)
		if err != nil {
			return usageError(err)
		}
		defer stop()
		fmt.Fprintf(env.stdout, "profiles on http://%s/debug/pprof/\n", addr)
	}
	opts := broker.DefaultOptions()
	level := slog.LevelInfo
	if *cfgFile != "" {
		data, err := os.ReadFile(*cfgFile)
		if err != nil {
			return usageError(fmt.Errorf("config file: %w", err))
		}
		if err := applyBrokerFile(string(data), &opts, &level); err != nil {
			return usageError(fmt.Errorf("config file %s: %w", *cfgFile, err))
		}
	}
	if *addr != "" {
		opts.AMQPAddr = *addr
	}
	if *data != "" {
		opts.DataDir = *data
	}
	if *httpAddr != "" {
		opts.HTTPAddr = *httpAddr
	}
	if *verbose {
		level = slog.LevelDebug
	}
	if *denyTransient {
		opts.DenyTransientNonExclQueues = true
	}
	opts.Logger = slog.New(slog.NewTextHandler(env.stderr, &slog.HandlerOptions{Level: level}))
	srv, err := broker.New(opts)
	if err != nil {
		return usageError(err)
	}
	if err := srv.Start(); err != nil {
		return err
	}
	if limit, ok := goMemoryLimit(opts.MemoryHighWatermark); ok {
		prev := debug.SetMemoryLimit(limit)
		defer debug.SetMemoryLimit(prev)
	}
	fmt.Fprintf(env.stdout, "oslogo broker listening on amqp://%s\n", srv.Addr())
	if a := srv.HTTPAddr(); a != nil {
		fmt.Fprintf(env.stdout, "management API on http://%s/api/\n", a)
	}
	if ta := srv.TLSAddr(); ta != nil {
		fmt.Fprintf(env.stdout, "oslogo broker listening on amqps://%s\n", ta)
	}
	<-ctx.Done()
	sctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := srv.Shutdown(sctx); err != nil {
		fmt.Fprintf(env.stderr, "shutdown: %v\n", err)
	}
	_ = os.Stdout.Sync()
	return nil
}

// serveProfiles serves net/http/pprof on addr (as nats-server's -profport
// does), for looking at a running broker under load.
func serveProfiles(addr string) (bound string, stop func(), err error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return "", nil, fmt.Errorf("profile listener: %w", err)
	}
	mux := http.NewServeMux()
	mux.HandleFunc("/debug/pprof/", pprof.Index)
	mux.HandleFunc("/debug/pprof/cmdline", pprof.Cmdline)
	mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
	mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
	mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	hs := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = hs.Serve(ln)
	}()
	return ln.Addr().String(), func() {
		_ = hs.Close()
		<-done
	}, nil
}

// goMemoryLimit is the Go runtime's soft memory limit for a broker with
// the given high watermark: the watermark bounds the memory the broker
// counts (messages, transactions, bodies being received), and without a
// limit the garbage collector lets the heap run to about twice the live
// data, so RSS overshoots the watermark (measured: 433-528 MB for a 256 MiB
// watermark with a slow consumer). A GOMEMLIMIT in the environment wins.
func goMemoryLimit(watermark int64) (int64, bool) {
	if watermark <= 0 || os.Getenv("GOMEMLIMIT") != "" {
		return 0, false
	}
	return watermark + watermark/2 + 64<<20, true
}

package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/pprof"
	"os"
	"strings"
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
	promAddr := fs.String("prometheus", "", "Prometheus /metrics listen address, no authentication, e.g. 127.0.0.1:15692 (default: off; the --http listener serves /metrics to monitoring users)")
	logFormat := fs.String("log-format", "text", "log format on stderr: text or json")
	logLevel := fs.String("log-level", "info", "log level: debug, info, warning or error")
	usages[fs] = func() { brokerHelp(env.stdout, fs) }
	if err := parseNoArgs(fs, args); err != nil {
		return err
	}
	set := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
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
	format := "text"
	if *cfgFile != "" {
		data, err := os.ReadFile(*cfgFile)
		if err != nil {
			return usageError(fmt.Errorf("config file: %w", err))
		}
		if err := applyBrokerFileLog(string(data), &opts, &level, &format); err != nil {
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
	if *promAddr != "" {
		opts.PrometheusAddr = *promAddr
	}
	if set["log-level"] {
		l, ok := parseLogLevel(*logLevel)
		if !ok {
			return usageError(fmt.Errorf("--log-level %q is not one of debug, info, warning, error", *logLevel))
		}
		level = l
	}
	if set["log-format"] {
		if *logFormat != "text" && *logFormat != "json" {
			return usageError(fmt.Errorf("--log-format %q is not text or json", *logFormat))
		}
		format = *logFormat
	}
	if *verbose {
		level = slog.LevelDebug
	}
	if *denyTransient {
		opts.DenyTransientNonExclQueues = true
	}
	opts.Logger = slog.New(slog.NewTextHandler(env.stderr, &slog.HandlerOptions{Level: level}))
	if format == "json" {
		// One JSON object per line, for the journal and log shippers.
		opts.Logger = slog.New(slog.NewJSONHandler(env.stderr, &slog.HandlerOptions{Level: level}))
	}
	opts.GoMemoryLimit = goMemoryLimitWanted()
	srv, err := broker.New(opts)
	if err != nil {
		return usageError(err)
	}
	if err := srv.Start(); err != nil {
		return err
	}
	fmt.Fprintf(env.stdout, "oslogo broker listening on amqp://%s\n", srv.Addr())
	if a := srv.HTTPAddr(); a != nil {
		fmt.Fprintf(env.stdout, "management API on http://%s/api/\n", a)
	}
	if a := srv.PrometheusAddr(); a != nil {
		fmt.Fprintf(env.stdout, "Prometheus metrics on http://%s/metrics\n", a)
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

// goMemoryLimitWanted reports whether the broker sets the Go runtime's
// soft memory limit from its watermark (broker.Options.GoMemoryLimit): a
// GOMEMLIMIT in the environment wins.
func goMemoryLimitWanted() bool { return os.Getenv("GOMEMLIMIT") == "" }

// parseLogLevel reads debug, info, warning (or warn) and error.
func parseLogLevel(s string) (slog.Level, bool) {
	switch s {
	case "debug":
		return slog.LevelDebug, true
	case "info":
		return slog.LevelInfo, true
	case "warning", "warn":
		return slog.LevelWarn, true
	case "error":
		return slog.LevelError, true
	}
	return 0, false
}

// brokerHelp prints `oslogo broker --help`: every flag with its default,
// also those whose default is empty or false, and where the config file
// fits in.
func brokerHelp(w io.Writer, fs *flag.FlagSet) {
	fmt.Fprint(w, "usage: oslogo broker [flags]\n\n"+
		"Flags override the --config-file (every key: docs/oslogo-broker.toml), which\n"+
		"overrides the defaults shown.\n\nflags:\n")
	fs.VisitAll(func(f *flag.Flag) {
		name, usage := flag.UnquoteUsage(f)
		head := "  -" + f.Name
		if name != "" {
			head += " " + name
		}
		switch {
		case strings.Contains(usage, "(default"):
		case f.DefValue == "":
			usage += " (default: none)"
		default:
			usage += " (default " + f.DefValue + ")"
		}
		fmt.Fprintf(w, "%s\n    \t%s\n", head, usage)
	})
}

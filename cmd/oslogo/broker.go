package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/http/pprof"
	"os"
	"regexp"
	"time"

	"oslogo/broker"

	"github.com/BurntSushi/toml"
)

func init() {
	register(&command{name: "broker", summary: "run the embedded AMQP 0-9-1 broker", run: runBroker})
}

// brokerFile is the --config-file format (TOML).
type brokerFile struct {
	AMQP                string `toml:"amqp"`
	Data                string `toml:"data"`
	MemoryHighWatermark int64  `toml:"memory_high_watermark"`
	MaxConnections      int    `toml:"max_connections"`
	LogLevel            string `toml:"log_level"`
	Users               []struct {
		Name         string   `toml:"name"`
		Password     string   `toml:"password"`
		PasswordHash string   `toml:"password_hash"`
		Tags         []string `toml:"tags"`
		Permissions  map[string]struct {
			Configure string `toml:"configure"`
			Write     string `toml:"write"`
			Read      string `toml:"read"`
		} `toml:"permissions"`
	} `toml:"users"`
	VHosts        []string `toml:"vhosts"`
	LoopbackUsers []string `toml:"loopback_users"`
}

func runBroker(ctx context.Context, env *cmdEnv, args []string) error {
	fs := newFlagSet(env, "broker", "[--amqp 127.0.0.1:5672] [--data DIR] [--config-file F]")
	addr := fs.String("amqp", "", "AMQP listen address (default 127.0.0.1:5672)")
	data := fs.String("data", "", "data directory for durable state (default: memory only)")
	cfgFile := fs.String("config-file", "", "TOML file with listeners, users, vhosts and limits")
	verbose := fs.Bool("v", false, "log at debug level")
	profile := fs.String("profile", "", "serve Go's pprof profiles on this address (e.g. 127.0.0.1:6060)")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if *profile != "" {
		addr, stop, err := serveProfiles(*profile)
		if err != nil {
			return &exitError{code: 2, err: err}
		}
		defer stop()
		fmt.Fprintf(env.stdout, "profiles on http://%s/debug/pprof/\n", addr)
	}
	opts := broker.DefaultOptions()
	level := slog.LevelInfo
	if *cfgFile != "" {
		data, err := os.ReadFile(*cfgFile)
		if err != nil {
			return &exitError{code: 2, err: fmt.Errorf("config file: %w", err)}
		}
		if err := applyBrokerFile(string(data), &opts, &level); err != nil {
			return &exitError{code: 2, err: fmt.Errorf("config file %s: %w", *cfgFile, err)}
		}
	}
	if *addr != "" {
		opts.AMQPAddr = *addr
	}
	if *data != "" {
		opts.DataDir = *data
	}
	if *verbose {
		level = slog.LevelDebug
	}
	opts.Logger = slog.New(slog.NewTextHandler(env.stderr, &slog.HandlerOptions{Level: level}))
	srv, err := broker.New(opts)
	if err != nil {
		return &exitError{code: 2, err: err}
	}
	if err := srv.Start(); err != nil {
		return err
	}
	fmt.Fprintf(env.stdout, "oslogo broker listening on amqp://%s\n", srv.Addr())
	<-ctx.Done()
	sctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := srv.Shutdown(sctx); err != nil {
		fmt.Fprintf(env.stderr, "shutdown: %v\n", err)
	}
	_ = os.Stdout.Sync()
	return nil
}

// applyBrokerFile applies a --config-file (TOML) over opts and sets level
// to the log level it asks for.
func applyBrokerFile(data string, opts *broker.Options, level *slog.Level) error {
	var f brokerFile
	if _, err := toml.Decode(data, &f); err != nil {
		var pe toml.ParseError
		if errors.As(err, &pe) {
			// The parser's message quotes the text it stumbled on, which
			// may be part of a password: only where it is, and what was
			// expected, are shown.
			return fmt.Errorf("toml: line %d, column %d: %s", pe.Position.Line, pe.Position.Col, quotedText.ReplaceAllString(pe.Message, "…"))
		}
		return err
	}
	if f.AMQP != "" {
		opts.AMQPAddr = f.AMQP
	}
	if f.Data != "" {
		opts.DataDir = f.Data
	}
	if f.MemoryHighWatermark > 0 {
		opts.MemoryHighWatermark = f.MemoryHighWatermark
	}
	opts.MaxConnections = f.MaxConnections
	if len(f.Users) > 0 {
		opts.Users = nil
		for _, u := range f.Users {
			bu := broker.User{Name: u.Name, Password: u.Password, PasswordHash: u.PasswordHash, Tags: u.Tags}
			if u.Permissions != nil {
				bu.Permissions = map[string]broker.Permission{}
				for vh, p := range u.Permissions {
					bu.Permissions[vh] = broker.Permission{Configure: p.Configure, Write: p.Write, Read: p.Read}
				}
			}
			opts.Users = append(opts.Users, bu)
		}
	}
	opts.VHosts = append(opts.VHosts, f.VHosts...)
	if f.LoopbackUsers != nil {
		opts.LoopbackUsers = f.LoopbackUsers
	}
	if f.LogLevel == "debug" {
		*level = slog.LevelDebug
	}
	return nil
}

// quotedText matches what a TOML parser message quotes from the file.
var quotedText = regexp.MustCompile(`'(?:\\.|[^'\\])*'|"(?:\\.|[^"\\])*"`)

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

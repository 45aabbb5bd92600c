package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"strings"

	"oslogo/config"
	_ "oslogo/driver/rabbit" // rabbit:// and kombu://
	"oslogo/messaging"
)

// transportFlags are the flags every messaging command shares: where the
// transport is and which oslo.config files to read.
type transportFlags struct {
	url         string
	configFiles config.FileList
	verbose     bool
}

func (tf *transportFlags) register(fs *flag.FlagSet) {
	fs.StringVar(&tf.url, "url", "", "transport URL, e.g. rabbit://guest:guest@127.0.0.1:5672/ or memory:// (default: transport_url of the config files, else "+messaging.DefaultTransportURL+")")
	fs.Var(&tf.configFiles, "config-file", "oslo.config INI file ([DEFAULT] transport_url, [oslo_messaging_*]); repeat to layer several")
	fs.BoolVar(&tf.verbose, "v", false, "log to stderr")
}

// load reads the config files; --url overrides their transport_url.
func (tf *transportFlags) load() (*config.Config, error) {
	conf := config.New()
	if err := config.RegisterMessagingOpts(conf); err != nil {
		return nil, err
	}
	if len(tf.configFiles) > 0 {
		if err := conf.LoadFiles(tf.configFiles...); err != nil {
			return nil, &exitError{code: 2, err: err}
		}
	}
	if tf.url != "" {
		if err := conf.Set(config.DefaultGroup, "transport_url", tf.url); err != nil {
			return nil, &exitError{code: 2, err: err}
		}
	}
	return conf, nil
}

func (tf *transportFlags) logger(env *cmdEnv) *slog.Logger {
	if !tf.verbose {
		return nil
	}
	return slog.New(slog.NewTextHandler(env.stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

// open opens the RPC transport.
func (tf *transportFlags) open(ctx context.Context, env *cmdEnv) (*messaging.Transport, *config.Config, error) {
	conf, err := tf.load()
	if err != nil {
		return nil, nil, err
	}
	tr, err := messaging.OpenConfigured(ctx, conf, tf.logger(env))
	if err != nil {
		return nil, nil, &exitError{code: 2, err: err}
	}
	return tr, conf, nil
}

// openNotifications opens the notification transport.
func (tf *transportFlags) openNotifications(ctx context.Context, env *cmdEnv) (*messaging.Transport, error) {
	conf, err := tf.load()
	if err != nil {
		return nil, err
	}
	if tf.url != "" {
		// --url names the transport for notifications too.
		if err := conf.Set(config.NotificationsGroup, "transport_url", tf.url); err != nil {
			return nil, err
		}
	}
	tr, err := messaging.OpenNotificationTransport(ctx, conf, tf.logger(env))
	if err != nil {
		return nil, &exitError{code: 2, err: err}
	}
	return tr, nil
}

// parseKeywordArgs turns key=value arguments into oslo keyword arguments: a
// value that parses as JSON is that JSON (a=2 is a number), otherwise it is
// a string.
func parseKeywordArgs(args []string) (map[string]any, error) {
	out := make(map[string]any, len(args))
	for _, a := range args {
		k, v, ok := strings.Cut(a, "=")
		if !ok || k == "" {
			return nil, &exitError{code: 2, err: fmt.Errorf("argument %q is not key=value", a)}
		}
		out[k] = jsonOrString(v)
	}
	return out, nil
}

func jsonOrString(v string) any {
	var parsed any
	if json.Unmarshal([]byte(v), &parsed) == nil {
		return json.RawMessage(v)
	}
	return v
}

// classify maps a messaging error to the CLI's exit codes: 2 for a timeout,
// 1 with "<module>.<class>: <message>" for a remote failure.
func classify(err error) error {
	var re *messaging.RemoteError
	switch {
	case err == nil:
		return nil
	case errors.As(err, &re):
		return &exitError{code: 1, err: re, bare: true}
	case errors.Is(err, messaging.ErrTimeout):
		return &exitError{code: 2, err: err}
	}
	return err
}

// writeJSON prints v as one line of JSON.
func writeJSON(w io.Writer, v any) error {
	b, err := json.Marshal(v)
	if err != nil {
		return err
	}
	_, err = fmt.Fprintf(w, "%s\n", b)
	return err
}

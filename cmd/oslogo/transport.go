package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"

	"github.com/oslogo/oslogo/config"
	_ "github.com/oslogo/oslogo/driver/rabbit" // rabbit:// and kombu://
	"github.com/oslogo/oslogo/messaging"
)

// transportFlags are the flags every messaging command shares: where the
// transport is and which oslo.config files to read.
type transportFlags struct {
	url         string
	configFiles config.FileList
	verbose     bool
	used        string // the transport URL in effect, for error messages
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
			return nil, usageError(err)
		}
	}
	if tf.url != "" {
		if err := conf.Set(config.DefaultGroup, "transport_url", tf.url); err != nil {
			return nil, usageError(err)
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
	tf.used = transportURLOf(conf, config.DefaultGroup)
	tr, err := messaging.OpenConfigured(ctx, conf, tf.logger(env))
	if err != nil {
		return nil, nil, usageError(err)
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
	tf.used = transportURLOf(conf, config.NotificationsGroup)
	if tf.used == "" {
		tf.used = transportURLOf(conf, config.DefaultGroup)
	}
	tr, err := messaging.OpenNotificationTransport(ctx, conf, tf.logger(env))
	if err != nil {
		return nil, usageError(err)
	}
	return tr, nil
}

// classify maps a messaging error to the CLI's exit codes and names the
// (redacted) URL it went through: a remote failure prints as
// "<module>.<class>: <message>", as oslo's clients show it.
func (tf *transportFlags) classify(err error) error {
	var re *messaging.RemoteError
	via := " (via " + redactURL(tf.used) + ")"
	switch {
	case err == nil:
		return nil
	case errors.As(err, &re):
		return &exitError{code: exitRemote, err: fmt.Errorf("%w%s", re, via), bare: true}
	case errors.Is(err, messaging.ErrUnreachable):
		return &exitError{code: exitUnreachable, err: fmt.Errorf("%w%s", err, via)}
	case errors.Is(err, messaging.ErrTimeout):
		return &exitError{code: exitTimeout, err: fmt.Errorf("%w%s", err, via)}
	}
	return fmt.Errorf("%w%s", err, via)
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

// transportURLOf is the transport URL a group of conf selects, with the
// default the messaging package applies when none is set.
func transportURLOf(conf *config.Config, group string) string {
	if u, set := conf.Lookup(group, "transport_url"); set && u != "" {
		return u
	}
	if group != config.DefaultGroup {
		return ""
	}
	return messaging.DefaultTransportURL
}

package main

import (
	"context"
	"errors"
	"flag"
	"time"

	"github.com/oslogo/oslogo/messaging"
)

func init() {
	register(&command{name: "call", summary: "call an RPC method and print its result as JSON", run: runCall})
	register(&command{name: "cast", summary: "cast an RPC method (no result; --fanout for every server)", run: runCast})
}

type rpcFlags struct {
	transportFlags
	topic, server, exchange, namespace, version string
	timeout                                     time.Duration
	fanout                                      bool
	retry                                       int
}

func (f *rpcFlags) register(fs *flag.FlagSet, withFanout bool) {
	f.transportFlags.register(fs)
	fs.StringVar(&f.topic, "topic", "", "topic (required)")
	fs.StringVar(&f.server, "server", "", "send to this server only")
	fs.StringVar(&f.exchange, "exchange", "", "exchange (default: control_exchange)")
	fs.StringVar(&f.namespace, "namespace", "", "endpoint namespace")
	fs.StringVar(&f.version, "version", "", "API version X.Y")
	newSecondsFlag(fs, &f.timeout, "timeout", 30*time.Second, "how long to wait for the result")
	fs.IntVar(&f.retry, "retry", 0, "connection retries before giving up (-1: forever)")
	if withFanout {
		fs.BoolVar(&f.fanout, "fanout", false, "cast to every server of the topic")
	}
}

func (f *rpcFlags) client(tr *messaging.Transport) *messaging.RPCClient {
	return messaging.NewRPCClient(tr, messaging.Target{
		Exchange: f.exchange, Topic: f.topic, Server: f.server, Namespace: f.namespace, Version: f.version, Fanout: f.fanout,
	}, messaging.WithTimeout(f.timeout), messaging.WithRetry(f.retry))
}

func (f *rpcFlags) parse(fs *flag.FlagSet, args []string) (method string, kwargs map[string]any, err error) {
	positional, err := parseFlags(fs, args)
	if err != nil {
		return "", nil, err
	}
	if f.topic == "" {
		return "", nil, usageError(errors.New("--topic is required"))
	}
	if len(positional) == 0 {
		return "", nil, usageError(errors.New("missing METHOD"))
	}
	kwargs, err = parseKeywordArgs(positional[1:])
	return positional[0], kwargs, err
}

const rpcSynopsis = "[--url URL | --config-file F] --topic T [--server S] [--exchange E] [--namespace N] [--version V] [--timeout 30s]"

func runCall(ctx context.Context, env *cmdEnv, args []string) error {
	var f rpcFlags
	fs := newFlagSet(env, "call", rpcSynopsis+" METHOD [key=value ...]")
	f.register(fs, false)
	method, kwargs, err := f.parse(fs, args)
	if err != nil {
		return err
	}
	tr, _, err := f.open(ctx, env)
	if err != nil {
		return err
	}
	defer tr.Close()
	result, err := f.client(tr).Call(ctx, method, kwargs)
	if err != nil {
		return f.classify(err)
	}
	_, err = env.stdout.Write(append(result, '\n'))
	return err
}

func runCast(ctx context.Context, env *cmdEnv, args []string) error {
	var f rpcFlags
	fs := newFlagSet(env, "cast", rpcSynopsis+" [--fanout] METHOD [key=value ...]")
	f.register(fs, true)
	method, kwargs, err := f.parse(fs, args)
	if err != nil {
		return err
	}
	tr, _, err := f.open(ctx, env)
	if err != nil {
		return err
	}
	defer tr.Close()
	sendCtx, cancel := context.WithTimeout(ctx, f.timeout)
	defer cancel()
	return f.classify(f.client(tr).Cast(sendCtx, method, kwargs))
}

package messaging

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"time"

	"github.com/oslogo/oslogo/driver"
)

// RPCClient invokes methods on RPC servers: Call waits for the result, Cast
// does not. It is oslo's RPCClient; Prepare returns a copy with overrides.
// An RPCClient is immutable and safe for concurrent use.
type RPCClient struct {
	tr                 *Transport
	target             Target
	timeout            time.Duration // 0: the transport's rpc_response_timeout
	callMonitorTimeout time.Duration
	retry              int
	versionCap         string
	atLeastOnce        bool
	err                error // an invalid option, reported at send time
}

// ClientOption overrides a setting of an RPCClient, in NewRPCClient or
// Prepare.
type ClientOption func(*RPCClient)

// WithExchange sends to another exchange than the control exchange.
func WithExchange(exchange string) ClientOption {
	return func(c *RPCClient) { c.target.Exchange = exchange }
}

// WithTopic changes the topic.
func WithTopic(topic string) ClientOption { return func(c *RPCClient) { c.target.Topic = topic } }

// WithServer addresses one named server of the topic ("" for any).
func WithServer(server string) ClientOption { return func(c *RPCClient) { c.target.Server = server } }

// WithNamespace sets the endpoint namespace sent with requests.
func WithNamespace(namespace string) ClientOption {
	return func(c *RPCClient) { c.target.Namespace = namespace }
}

// WithVersion sets the API version sent with requests ("X.Y").
func WithVersion(version string) ClientOption {
	return func(c *RPCClient) {
		if _, err := parseVersion(version); version != "" && err != nil {
			c.err = err
		}
		c.target.Version = version
	}
}

// WithFanout makes casts reach every server of the topic.
func WithFanout(fanout bool) ClientOption { return func(c *RPCClient) { c.target.Fanout = fanout } }

// WithTimeout sets the call timeout; a context deadline that comes earlier
// still wins.
func WithTimeout(d time.Duration) ClientOption { return func(c *RPCClient) { c.timeout = d } }

// WithCallMonitorTimeout asks servers for heartbeats while a call runs and
// fails the call when none arrives within d (oslo's call_monitor_timeout).
func WithCallMonitorTimeout(d time.Duration) ClientOption {
	return func(c *RPCClient) { c.callMonitorTimeout = d }
}

// WithRetry sets how often sends are retried on connection errors: -1
// forever (the default), 0 never, n at most n times.
func WithRetry(n int) ClientOption { return func(c *RPCClient) { c.retry = n } }

// WithVersionCap refuses to send requests above this version.
func WithVersionCap(v string) ClientOption { return func(c *RPCClient) { c.versionCap = v } }

// WithAtLeastOnce is oslo's TransportOptions(at_least_once=True): a request
// that no queue receives fails at once with ErrUndeliverable.
func WithAtLeastOnce(on bool) ClientOption { return func(c *RPCClient) { c.atLeastOnce = on } }

// NewRPCClient returns a client for target on tr. Problems with the target
// are reported by Call and Cast, as oslo does.
func NewRPCClient(tr *Transport, target Target, opts ...ClientOption) *RPCClient {
	c := &RPCClient{tr: tr, target: target, retry: -1}
	for _, o := range opts {
		o(c)
	}
	return c
}

// Prepare returns a copy of the client with the given overrides; the rest is
// inherited.
func (c *RPCClient) Prepare(opts ...ClientOption) *RPCClient {
	cp := *c
	for _, o := range opts {
		o(&cp)
	}
	return &cp
}

// Target returns the client's target.
func (c *RPCClient) Target() Target { return c.target }

// CanSendVersion reports whether v is within the client's version cap.
func (c *RPCClient) CanSendVersion(v string) bool {
	return c.versionCap == "" || VersionIsCompatible(c.versionCap, v)
}

// Call invokes method with args (a struct or map encoded as a JSON object of
// keyword arguments; nil for none) and returns the JSON result. The deadline
// is ctx's or the client's timeout, whichever comes first; when it passes the
// error matches ErrTimeout. A failure on the server is a *RemoteError.
func (c *RPCClient) Call(ctx context.Context, method string, args any) (json.RawMessage, error) {
	obs := c.tr.cfg.Observer
	if obs == nil {
		return c.call(ctx, method, args)
	}
	start := time.Now()
	res, err := c.call(ctx, method, args)
	obs.CallDone(c.target.Topic, method, time.Since(start), err)
	return res, err
}

func (c *RPCClient) call(ctx context.Context, method string, args any) (json.RawMessage, error) {
	if c.target.Fanout {
		return nil, fmt.Errorf("%w: a call cannot be fanout (%s)", ErrInvalidTarget, c.target)
	}
	req, err := c.request(ctx, method, args)
	if err != nil {
		return nil, err
	}
	timeout := c.timeout
	if timeout <= 0 {
		timeout = c.tr.cfg.ResponseTimeout
	}
	if dl, ok := ctx.Deadline(); ok {
		if left := time.Until(dl); left < timeout {
			timeout = left
		}
	}
	if timeout <= 0 {
		return nil, translate(context.DeadlineExceeded)
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	reply, err := c.tr.drv.Call(ctx, c.driverTarget(), req, driver.SendOptions{
		Timeout: timeout, CallMonitorTimeout: c.callMonitorTimeout, Retry: c.retry, Mandatory: c.atLeastOnce,
	})
	if err != nil {
		if ctx.Err() == context.Canceled {
			return nil, context.Canceled
		}
		return nil, translate(err)
	}
	if reply.Failure != nil {
		return nil, remoteErrorOf(reply.Failure)
	}
	if len(reply.Result) == 0 {
		return json.RawMessage("null"), nil
	}
	return reply.Result, nil
}

// Call invokes method through c and decodes the result into an R.
func Call[R any](ctx context.Context, c *RPCClient, method string, args any) (R, error) {
	var out R
	raw, err := c.Call(ctx, method, args)
	if err != nil {
		return out, err
	}
	if err := json.Unmarshal(raw, &out); err != nil {
		return out, fmt.Errorf("messaging: decode result of %s: %w", method, err)
	}
	return out, nil
}

// Cast sends method with args and returns once the transport accepted the
// message; nothing comes back. With WithFanout(true) every server of the
// topic receives it.
func (c *RPCClient) Cast(ctx context.Context, method string, args any) error {
	err := c.cast(ctx, method, args)
	if obs := c.tr.cfg.Observer; obs != nil {
		obs.CastDone(c.target.Topic, method, err)
	}
	return err
}

func (c *RPCClient) cast(ctx context.Context, method string, args any) error {
	req, err := c.request(ctx, method, args)
	if err != nil {
		return err
	}
	return translate(c.tr.drv.Cast(ctx, c.driverTarget(), req, driver.SendOptions{
		Retry: c.retry, Mandatory: c.atLeastOnce && !c.target.Fanout,
	}))
}

func (c *RPCClient) driverTarget() driver.Target {
	return driver.Target{Exchange: c.tr.exchange(c.target.Exchange), Topic: c.target.Topic, Server: c.target.Server, Fanout: c.target.Fanout}
}

func (c *RPCClient) request(ctx context.Context, method string, args any) (*driver.Request, error) {
	if c.err != nil {
		return nil, c.err
	}
	if c.target.Topic == "" {
		return nil, fmt.Errorf("%w: no topic (%s)", ErrInvalidTarget, c.target)
	}
	if method == "" {
		return nil, fmt.Errorf("messaging: empty method name")
	}
	if c.versionCap != "" && !VersionIsCompatible(c.versionCap, c.target.Version) {
		return nil, fmt.Errorf("%w: requested %q, cap %q", ErrVersionCap, c.target.Version, c.versionCap)
	}
	rawArgs, err := encodeArgs(args)
	if err != nil {
		return nil, fmt.Errorf("messaging: %s: %w", method, err)
	}
	return &driver.Request{
		Method: method, Args: rawArgs, Namespace: c.target.Namespace, Version: c.target.Version,
		Context: RequestContextFrom(ctx),
	}, nil
}

// encodeArgs encodes args as oslo's keyword arguments: a JSON object.
func encodeArgs(args any) (json.RawMessage, error) {
	if args == nil {
		return json.RawMessage("{}"), nil
	}
	if raw, ok := args.(json.RawMessage); ok {
		args = raw // validated below like any other value
	}
	b, err := json.Marshal(args)
	if err != nil {
		return nil, fmt.Errorf("encode arguments: %w", err)
	}
	if t := bytes.TrimSpace(b); len(t) == 0 || t[0] != '{' {
		if bytes.Equal(t, []byte("null")) {
			return json.RawMessage("{}"), nil
		}
		return nil, fmt.Errorf("arguments must encode to a JSON object of keyword arguments, got %.40s", t)
	}
	return b, nil
}

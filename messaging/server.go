package messaging

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"runtime/debug"
	"strings"
	"sync"
	"time"

	"github.com/oslogo/oslogo/driver"
)

// PingMethod is the method every RPCServer answers with "pong" (oslo's
// rpc_ping_enabled endpoint), in no namespace at version 1.0.
const PingMethod = "oslo_rpc_server_ping"

// Handler serves one RPC method: it gets the keyword arguments as a JSON
// object and returns a JSON-encodable result.
type Handler func(ctx context.Context, args json.RawMessage) (any, error)

// Endpoint is a set of RPC methods served under one namespace and version,
// like an oslo endpoint object with its target attribute.
type Endpoint struct {
	target  Target
	methods map[string]Handler
}

// NewEndpoint returns an endpoint for target's Namespace, Version (default
// "1.0") and LegacyNamespaces; its other fields are ignored.
func NewEndpoint(target Target) *Endpoint {
	return &Endpoint{target: target, methods: map[string]Handler{}}
}

// HandleRaw registers a method that decodes its own arguments. Registering a
// name twice panics. Names starting with "_" are registered but never
// dispatched (oslo's DefaultRPCAccessPolicy refuses them).
func (e *Endpoint) HandleRaw(method string, h Handler) {
	if _, dup := e.methods[method]; dup {
		panic("messaging: method registered twice: " + method)
	}
	e.methods[method] = h
}

// Handle registers fn as method on e. The keyword arguments are decoded
// into an A (a struct with json tags, or a map); the result is JSON-encoded.
// Arguments that do not decode fail with a builtins.TypeError, as a Python
// method called with wrong keyword arguments would.
func Handle[A, R any](e *Endpoint, method string, fn func(ctx context.Context, args A) (R, error)) {
	e.HandleRaw(method, func(ctx context.Context, raw json.RawMessage) (any, error) {
		var args A
		if len(raw) > 0 {
			if err := json.Unmarshal(raw, &args); err != nil {
				return nil, NewRemoteError("builtins", "TypeError", fmt.Sprintf("%s() got invalid arguments: %v", method, err))
			}
		}
		return fn(ctx, args)
	})
}

func (e *Endpoint) accepts(namespace, version string) bool {
	ok := e.target.Namespace == namespace
	for _, ns := range e.target.LegacyNamespaces {
		ok = ok || ns == namespace
	}
	impl := e.target.Version
	if impl == "" {
		impl = "1.0"
	}
	return ok && VersionIsCompatible(impl, version)
}

// dispatcher is oslo's RPCDispatcher.
type dispatcher struct{ endpoints []*Endpoint }

func newDispatcher(endpoints []*Endpoint) *dispatcher {
	ping := NewEndpoint(Target{})
	ping.HandleRaw(PingMethod, func(context.Context, json.RawMessage) (any, error) { return "pong", nil })
	return &dispatcher{endpoints: append(append([]*Endpoint(nil), endpoints...), ping)}
}

func (d *dispatcher) lookup(req *driver.Request) (Handler, error) {
	version := req.Version
	if version == "" {
		version = "1.0"
	}
	compatible := false
	for _, ep := range d.endpoints {
		if !ep.accepts(req.Namespace, version) {
			continue
		}
		compatible = true
		if strings.HasPrefix(req.Method, "_") {
			continue
		}
		if h, ok := ep.methods[req.Method]; ok {
			return h, nil
		}
	}
	if compatible {
		return nil, noSuchMethod(req.Method)
	}
	return nil, unsupportedVersion(version, req.Method)
}

// ServerOption configures an RPCServer.
type ServerOption func(*RPCServer)

// WithExecutorThreadPoolSize bounds how many requests run at once
// (default: the transport's executor_thread_pool_size, 64).
func WithExecutorThreadPoolSize(n int) ServerOption { return func(s *RPCServer) { s.poolSize = n } }

// RPCServer consumes requests for a target and dispatches them to its
// endpoints on a bounded pool of goroutines, so one slow call never blocks
// the others. It is oslo's RPCServer with the threading executor.
type RPCServer struct {
	tr         *Transport
	target     Target
	dispatcher *dispatcher
	poolSize   int
	logger     *slog.Logger

	mu       sync.Mutex
	listener driver.RPCListener
	done     chan struct{} // closed when the current run has fully stopped
}

// NewRPCServer returns a server for target (Topic and Server required)
// dispatching to endpoints in order. It does no I/O; Start does.
func NewRPCServer(tr *Transport, target Target, endpoints []*Endpoint, opts ...ServerOption) (*RPCServer, error) {
	if target.Topic == "" || target.Server == "" {
		return nil, fmt.Errorf("%w: a server needs a topic and a server name (%s)", ErrInvalidTarget, target)
	}
	s := &RPCServer{tr: tr, target: target, dispatcher: newDispatcher(endpoints), poolSize: tr.cfg.ExecutorThreadPoolSize}
	for _, o := range opts {
		o(s)
	}
	if s.poolSize < 1 {
		return nil, fmt.Errorf("messaging: executor thread pool size must be at least 1, got %d", s.poolSize)
	}
	s.logger = tr.logger.With("component", "rpc-server", "topic", target.Topic, "server", target.Server)
	return s, nil
}

// Start declares the server's queues and starts consuming. Calling Start on
// a running server does nothing; after Stop it may start again.
func (s *RPCServer) Start(ctx context.Context) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.listener != nil {
		return nil
	}
	l, err := s.tr.drv.Listen(ctx, driver.Target{Exchange: s.tr.exchange(s.target.Exchange), Topic: s.target.Topic, Server: s.target.Server})
	if err != nil {
		return fmt.Errorf("messaging: server %s cannot listen (ServerListenError): %w", s.target, translate(err))
	}
	s.listener = l
	s.done = make(chan struct{})
	s.run(l, s.done)
	return nil
}

// run starts the pool: each worker takes the next request from the
// listener itself (Receive is safe for concurrent use), so a request goes
// from the transport to its handler without another hand-off, and at most
// poolSize handlers run at once. When the listener is stopped and drained,
// the workers end and the listener is released.
func (s *RPCServer) run(l driver.RPCListener, done chan struct{}) {
	var workers sync.WaitGroup
	for i := 0; i < s.poolSize; i++ {
		workers.Add(1)
		go func() {
			defer workers.Done()
			for {
				in, err := l.Receive(context.Background())
				if err != nil {
					if !errors.Is(err, driver.ErrClosed) {
						s.logger.Error("receive failed; worker stops", "err", err)
					}
					return
				}
				s.serve(in)
			}
		}()
	}
	go func() {
		workers.Wait()
		if err := l.Close(); err != nil && !errors.Is(err, driver.ErrClosed) {
			s.logger.Warn("closing listener", "err", err)
		}
		close(done)
	}()
}

func (s *RPCServer) serve(in driver.IncomingRequest) {
	req := in.Request()
	rc := RequestContext{}
	for k, v := range req.Context {
		rc[k] = v
	}
	if ct := in.ClientTimeout(); ct > 0 {
		rc["client_timeout"] = ct.Seconds()
	} else if _, ok := rc["client_timeout"]; !ok {
		rc["client_timeout"] = nil
	}
	ctx := WithRequestContext(context.Background(), rc)
	if in.IsCall() {
		stop := s.heartbeat(ctx, in)
		defer stop()
	}
	result, err := s.invoke(ctx, req)
	if !in.IsCall() {
		if err != nil {
			s.logger.Warn("cast failed", "method", req.Method, "err", err)
		}
		return
	}
	reply := &driver.Reply{}
	if err != nil {
		reply.Failure = failureOf(err)
		s.logger.Debug("call failed", "method", req.Method, "class", reply.Failure.Class)
	} else if reply.Result, err = json.Marshal(result); err != nil {
		reply.Result, reply.Failure = nil, failureOf(NewRemoteError("builtins", "TypeError", "result of "+req.Method+" is not JSON serializable: "+err.Error()))
	}
	if err := in.Reply(ctx, reply); err != nil {
		s.logger.Warn("reply not delivered", "method", req.Method, "err", err)
	}
}

// invoke runs the handler, turning a panic into a failure for the caller.
func (s *RPCServer) invoke(ctx context.Context, req *driver.Request) (result any, err error) {
	h, err := s.dispatcher.lookup(req)
	if err != nil {
		return nil, err
	}
	defer func() {
		if p := recover(); p != nil {
			s.logger.Error("handler panicked", "method", req.Method, "panic", p, "stack", string(debug.Stack()))
			err = NewRemoteError("builtins", "RuntimeError", fmt.Sprintf("%s panicked: %v", req.Method, p))
		}
	}()
	args := req.Args
	if len(args) == 0 {
		args = json.RawMessage("{}")
	}
	return h(ctx, args)
}

// heartbeat sends call-monitor heartbeats while a call runs, only when the
// caller asked for them, every int(timeout)/2 seconds as oslo does (and none
// when that is under a second).
func (s *RPCServer) heartbeat(ctx context.Context, in driver.IncomingRequest) (stop func()) {
	ct := in.ClientTimeout()
	interval := time.Duration(float64(int(ct.Seconds())) / 2 * float64(time.Second))
	if ct <= 0 || interval < time.Second {
		return func() {}
	}
	quit := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		t := time.NewTicker(interval)
		defer t.Stop()
		for {
			select {
			case <-quit:
				return
			case <-t.C:
				if err := in.Heartbeat(ctx); err != nil {
					s.logger.Debug("heartbeat not delivered; stopping heartbeats", "err", err)
					return
				}
			}
		}
	}()
	return func() { close(quit); wg.Wait() }
}

// Stop stops consuming, lets the requests already received finish (until
// ctx ends) and releases the listener. It returns ctx's error if in-flight
// calls outlived it; they still complete in the background, then the
// listener is released, and Wait waits for that.
func (s *RPCServer) Stop(ctx context.Context) error {
	s.mu.Lock()
	l, done := s.listener, s.done
	s.listener = nil
	s.mu.Unlock()
	if l == nil {
		return nil
	}
	l.Stop()
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// Wait blocks until a stopped server has finished every request it took.
func (s *RPCServer) Wait() {
	s.mu.Lock()
	done := s.done
	s.mu.Unlock()
	if done != nil {
		<-done
	}
}

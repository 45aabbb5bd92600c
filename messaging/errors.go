package messaging

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/oslogo/oslogo/driver"
)

// Sentinel errors, named after oslo.messaging's exception classes. Test for
// them with errors.Is.
var (
	// ErrTimeout is oslo's MessagingTimeout: no reply before the deadline,
	// or no call-monitor heartbeat in time. It also matches
	// context.DeadlineExceeded.
	ErrTimeout = errors.New("messaging: timed out waiting for a reply (MessagingTimeout)")
	// ErrClosed is returned once the transport, client, server or listener
	// has been closed.
	ErrClosed = errors.New("messaging: closed")
	// ErrNoSuchMethod is oslo's NoSuchMethod: an endpoint matched the
	// namespace and version but has no such method (or it is private).
	// Remote errors of that class match it too.
	ErrNoSuchMethod = errors.New("messaging: no such method (NoSuchMethod)")
	// ErrUnsupportedVersion is oslo's UnsupportedVersion: no endpoint
	// accepts the namespace and version. Remote errors of that class match.
	ErrUnsupportedVersion = errors.New("messaging: unsupported version (UnsupportedVersion)")
	// ErrUndeliverable is oslo's MessageUndeliverable: nothing was bound to
	// the routing key of a mandatory (at-least-once) send.
	ErrUndeliverable = errors.New("messaging: message undeliverable (MessageUndeliverable)")
	// ErrDeliveryFailure is oslo's MessageDeliveryFailure: send retries
	// were exhausted.
	ErrDeliveryFailure = errors.New("messaging: delivery failed (MessageDeliveryFailure)")
	// ErrUnreachable: no broker could be connected to. It comes wrapped
	// with ErrDeliveryFailure (retries exhausted) or ErrTimeout (the
	// deadline passed while connecting), as oslo raises those.
	ErrUnreachable = errors.New("messaging: cannot connect to the broker")
	// ErrInvalidTarget is oslo's InvalidTarget: a target without a topic,
	// a call to a fanout target, or a server target without a server.
	ErrInvalidTarget = errors.New("messaging: invalid target (InvalidTarget)")
	// ErrVersionCap is oslo's RPCVersionCapError: the requested version is
	// above the client's version cap.
	ErrVersionCap = errors.New("messaging: version above the version cap (RPCVersionCapError)")
)

// The module oslo's dispatcher errors are raised from.
const dispatcherModule = "oslo_messaging.rpc.dispatcher"

// RemoteError is an exception raised by the remote side of a call, with the
// fields oslo serialises: a Go caller gets one for every failure, whether
// the server is Python or Go. A Go handler returns one (see NewRemoteError)
// to make a Python caller rebuild that exception class.
type RemoteError struct {
	Module    string         // Python module, e.g. "builtins", "nova.exception"
	Class     string         // Python class, e.g. "ValueError"
	Message   string         // str(exc)
	Traceback []string       // traceback lines, each ending in "\n"; may be empty
	Args      []any          // exc.args
	Kwargs    map[string]any // exc.kwargs of oslo-style exceptions; empty for builtins
}

// NewRemoteError returns an error that a Go handler can return so that the
// caller sees the given Python exception. For a builtin exception use module
// "builtins"; args default to the message.
func NewRemoteError(module, class, message string, args ...any) *RemoteError {
	if len(args) == 0 {
		args = []any{message}
	}
	return &RemoteError{Module: module, Class: class, Message: message, Args: args, Kwargs: map[string]any{}}
}

// Error formats the exception as "<module>.<class>: <message>".
func (e *RemoteError) Error() string {
	name := e.Class
	if e.Module != "" {
		name = e.Module + "." + e.Class
	}
	return name + ": " + e.Message
}

// Is makes a remote NoSuchMethod or UnsupportedVersion match the local
// sentinels, so callers need not compare class names.
func (e *RemoteError) Is(target error) bool {
	switch target {
	case ErrNoSuchMethod:
		return e.Class == "NoSuchMethod"
	case ErrUnsupportedVersion:
		return e.Class == "UnsupportedVersion"
	}
	return false
}

func noSuchMethod(method string) *RemoteError {
	return NewRemoteError(dispatcherModule, "NoSuchMethod", "Endpoint does not support RPC method "+method)
}

func unsupportedVersion(version, method string) *RemoteError {
	return NewRemoteError(dispatcherModule, "UnsupportedVersion",
		fmt.Sprintf("Endpoint does not support RPC version %s. Attempted method: %s", version, method))
}

// failureOf turns a handler error into oslo's failure fields. Errors that are
// not a *RemoteError reach Python callers as builtins.Exception.
func failureOf(err error) *driver.Failure {
	var re *RemoteError
	if !errors.As(err, &re) {
		re = NewRemoteError("builtins", "Exception", err.Error())
	}
	f := &driver.Failure{
		Class: strings.TrimSuffix(re.Class, "_Remote"), Module: strings.TrimSuffix(re.Module, "_Remote"),
		Message: re.Message, Traceback: re.Traceback, Args: re.Args, Kwargs: re.Kwargs,
	}
	if f.Traceback == nil {
		f.Traceback = []string{}
	}
	if f.Args == nil {
		f.Args = []any{f.Message}
	}
	if f.Kwargs == nil {
		f.Kwargs = map[string]any{}
	}
	return f
}

func remoteErrorOf(f *driver.Failure) *RemoteError {
	return &RemoteError{Module: f.Module, Class: f.Class, Message: f.Message, Traceback: f.Traceback, Args: f.Args, Kwargs: f.Kwargs}
}

// translate maps driver errors onto the public sentinels, keeping the cause.
func translate(err error) error {
	switch {
	case err == nil:
		return nil
	case errors.Is(err, driver.ErrUnreachable) && errors.Is(err, driver.ErrTimeout):
		return fmt.Errorf("%w: %w: %w (%w)", ErrTimeout, ErrUnreachable, err, context.DeadlineExceeded)
	case errors.Is(err, driver.ErrUnreachable) && errors.Is(err, context.DeadlineExceeded):
		return fmt.Errorf("%w: %w: %w", ErrTimeout, ErrUnreachable, err)
	case errors.Is(err, driver.ErrUnreachable):
		return fmt.Errorf("%w: %w: %w", ErrDeliveryFailure, ErrUnreachable, err)
	case errors.Is(err, context.DeadlineExceeded):
		return fmt.Errorf("%w: %w", ErrTimeout, err)
	case errors.Is(err, driver.ErrTimeout):
		// Keep the driver's words (they may name why, e.g. a refused
		// connection) and still match context.DeadlineExceeded.
		return fmt.Errorf("%w: %w (%w)", ErrTimeout, err, context.DeadlineExceeded)
	case errors.Is(err, driver.ErrUndeliverable):
		return fmt.Errorf("%w: %w", ErrUndeliverable, err)
	case errors.Is(err, driver.ErrDeliveryFailure):
		return fmt.Errorf("%w: %w", ErrDeliveryFailure, err)
	case errors.Is(err, driver.ErrClosed):
		return fmt.Errorf("%w: %w", ErrClosed, err)
	}
	return err
}

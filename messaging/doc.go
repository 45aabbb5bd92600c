// Package messaging is oslogo's public API: OpenStack's oslo.messaging RPC
// and notifications, done the Go way.
//
// A Transport is opened from a transport_url ("rabbit://...", "memory://");
// switching backend is a configuration change only. On it:
//
//   - RPCClient calls (waits for a result) and casts (fire and forget) to a
//     Target: a topic, optionally one server of it, or every server
//     (fanout); Prepare overrides exchange, topic, server, namespace,
//     version, timeout and retry.
//   - RPCServer serves Endpoints, whose methods are typed Go functions
//     registered with Handle, dispatched by namespace and version with
//     oslo's compatibility rule on a bounded pool of goroutines.
//   - Notifier sends notifications (audit, debug, info, warn, error,
//     critical, sample) through the messaging, messagingv2, routing, log,
//     test and noop drivers.
//   - NotificationListener receives them, one handler per priority, with
//     filters, pools, requeue and batches.
//
// The request context (oslo's ctxt dict) travels with every message: set it
// with WithRequestContext, read it in handlers with RequestContextFrom.
// Errors are classified with errors.Is (ErrTimeout, ErrNoSuchMethod, ...)
// and errors.As (*RemoteError, carrying the Python exception's class,
// module, message and traceback).
//
// Transports other than memory:// register themselves when their package
// is imported, as database/sql drivers do:
//
//	import _ "github.com/oslogo/oslogo/driver/rabbit"
package messaging

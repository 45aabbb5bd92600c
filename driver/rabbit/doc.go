// Package rabbit is the rabbit:// (alias kombu://) transport of oslogo:
// AMQP 0-9-1 over RabbitMQ, wire-compatible with Python oslo.messaging 14
// and 18.1, whose options it takes (quorum and transient quorum queues,
// stream fanout, the queue manager's stable queue names).
//
// Importing the package registers the "rabbit" and "kombu" schemes with
// the driver registry:
//
//	import _ "github.com/oslogo/oslogo/driver/rabbit"
//
// What goes on the wire follows oslo.messaging exactly: the 2.0 envelope
// with oslo.message as a JSON string written in Python's json.dumps style,
// flattened _context_* keys, a fresh _unique_id per publish (and a 16-entry
// de-duplication cache on receipt), _msg_id/_reply_q/_timeout on calls,
// the AMQP properties kombu sets, and the exchanges and queues oslo
// declares with the same flags and arguments, so the driver shares queues
// with Python services without a 406.
//
// Connections: a pool of send connections whose channels run in confirm
// mode (concurrent publishes pipeline their confirms), one connection per
// RPC or notification listener, and one reply queue per driver on which
// every call is multiplexed by _msg_id. Every connection fails over across
// the URL's hosts and reconnects with oslo's backoff; listeners redeclare
// and resume consuming on their own.
//
// The [oslo_messaging_rabbit] options of oslo.messaging 18.1 are read by
// their oslo names from driver.Options.Config and from the URL query;
// docs/RABBIT.md lists how each one is honoured, and which names of 14
// 18.1 removed (ignored with a warning in a file, refused in the URL).
package rabbit

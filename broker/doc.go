// Package broker is oslogo's embedded AMQP 0-9-1 broker: one node, the
// RabbitMQ model (exchanges, bindings, queues) and the RabbitMQ extensions
// clients rely on (publisher confirms, basic.nack, consumer cancel notify,
// exchange-to-exchange bindings, per-consumer qos, connection.blocked,
// dead-lettering, TTLs, priorities, quorum-queue delivery limits, stream
// queues over AMQP 0-9-1 with x-stream-offset).
//
// It embeds like nats-server: New validates Options and does no I/O, Start
// listens and returns at once, ReadyForConnections waits until clients can
// connect, Shutdown closes everything and waits for every goroutine, and
// InProcessConn serves a net.Pipe exactly like a TCP connection.
//
// Concurrency: each connection has one reader goroutine (decoding frames,
// routing publishes, delivering straight into consumers' output buffers)
// and one writer goroutine that flushes its buffer in batches. Lock order:
// vhost.mu, then queue.mu, then channel.mu, then conn.outMu; store.mu,
// channel.confirmMu and the management API's connMonitor.mu are leaves.
package broker

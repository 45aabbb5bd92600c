package broker

import (
	"fmt"

	"github.com/oslogo/oslogo/broker/internal/amqp091"
)

// Queue types: quorum queues with RabbitMQ 4's semantics (a delivery limit
// of 20 by default), the checks RabbitMQ makes of quorum and stream
// declarations, the x-queue-type equivalence and the refusal of transient
// non-exclusive queues (RabbitMQ 4.3's deprecated feature
// transient_nonexcl_queues denied).

// defaultDeliveryLimit is RabbitMQ 4's x-delivery-limit for quorum queues:
// a message returned more often than this is dead-lettered (or dropped).
const defaultDeliveryLimit = 20

// quorumInvalidArgs are the arguments RabbitMQ 3.10 refuses on a quorum
// queue (measured: 406 "invalid arg 'K' for queue 'N' in vhost 'V' of
// queue type rabbit_quorum_queue").
var quorumInvalidArgs = []string{"x-max-priority", "x-queue-mode", "x-queue-master-locator",
	"x-max-age", "x-stream-max-segment-size-bytes", "x-queue-version"}

// transientNonexclText is RabbitMQ 4.3's 541 reply to a queue.declare of a
// non-durable, non-exclusive queue while the deprecated feature
// transient_nonexcl_queues is denied (the default from 4.3).
const transientNonexclText = "Feature `transient_nonexcl_queues` is deprecated.\n" +
	"By default, this feature is not permitted anymore.\n" +
	"The feature will be removed from a future major RabbitMQ version, regardless of the configuration; actual version to be determined.\n" +
	"To continue using this feature when it is not permitted by default, set the following parameter in your configuration:\n" +
	"    \"deprecated_features.permit.transient_nonexcl_queues = true\""

// queueTypeOf reads x-queue-type and refuses an unknown one, or a
// transient non-exclusive queue when the broker denies them.
func (vh *vhost) queueTypeOf(s queueSpec) (string, *amqpError) {
	t := "classic"
	if v, ok := s.args["x-queue-type"]; ok {
		ts, _ := v.(string)
		switch ts {
		case "classic", "quorum", "stream":
			t = ts
		default:
			return "", errf(amqp091.PreconditionFailed, "invalid arg 'x-queue-type' for queue '%s' in vhost '%s': \"unsupported queue type '%v'\"", s.name, vh.name, v)
		}
	}
	if !s.durable && !s.exclusive && vh.srv.opts.DenyTransientNonExclQueues {
		return "", errf(amqp091.InternalError, "%s", transientNonexclText)
	}
	if t == "classic" {
		return t, nil
	}
	// rabbit_queue_type_util's checks; with exclusive and non-durable
	// together RabbitMQ 3.10 names exclusive-owner.
	what := ""
	switch {
	case s.autoDelet:
		what = "auto-delete"
	case s.exclusive:
		what = "exclusive-owner"
	case !s.durable:
		what = "non-durable"
	}
	if what != "" {
		return "", errf(amqp091.PreconditionFailed, "invalid property '%s' for queue '%s' in vhost '%s'", what, s.name, vh.name)
	}
	invalid, mod := quorumInvalidArgs, "rabbit_quorum_queue"
	if t == "stream" {
		invalid, mod = streamInvalidArgs, "rabbit_stream_queue"
	}
	for _, k := range invalid {
		if _, ok := s.args[k]; ok {
			return "", errf(amqp091.PreconditionFailed, "invalid arg '%s' for queue '%s' in vhost '%s' of queue type %s", k, s.name, vh.name, mod)
		}
	}
	return t, nil
}

// queueType is the type management reports and equivalence compares.
func (q *queue) queueType() string {
	switch {
	case q.stream != nil:
		return "stream"
	case q.quorum:
		return "quorum"
	}
	return "classic"
}

// ineqArg is RabbitMQ's 406 for a redeclaration whose argument k differs.
func (q *queue) ineqArg(k string, cur any, curOK bool, got any, gotOK bool) *amqpError {
	var detail string
	switch {
	case curOK && gotOK:
		detail = fmt.Sprintf("received '%v' but current is '%v'", erlPlain(got), erlPlain(cur))
	case curOK:
		detail = fmt.Sprintf("received none but current is the value '%v' of type '%s'", erlPlain(cur), amqpTypeName(cur))
	default:
		detail = fmt.Sprintf("received the value '%v' of type '%s' but current is none", erlPlain(got), amqpTypeName(got))
	}
	return errf(amqp091.PreconditionFailed, "inequivalent arg '%s' for queue '%s' in vhost '%s': %s", k, q.name, q.vh.name, detail)
}

func erlPlain(v any) any {
	if b, ok := v.([]byte); ok {
		return string(b)
	}
	return v
}

// equivalentType compares x-queue-type, an absent one meaning classic
// (RabbitMQ 3.10 takes "classic" and no argument as the same).
func (q *queue) equivalentType(s queueSpec) *amqpError {
	cur, curOK := q.args["x-queue-type"]
	got, gotOK := s.args["x-queue-type"]
	gotType := "classic"
	if gotOK {
		gotType, _ = got.(string)
	}
	if gotType == q.queueType() {
		return nil
	}
	return q.ineqArg("x-queue-type", cur, curOK, got, gotOK)
}

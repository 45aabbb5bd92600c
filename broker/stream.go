package broker

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"path/filepath"
	"time"

	"github.com/oslogo/oslogo/broker/internal/amqp091"
)

// Stream queues over AMQP 0-9-1 (x-queue-type: stream), as RabbitMQ 3.9+
// serves them: a durable, append-only log that consuming does not change.
// Every consumer reads from its own offset, chosen with the consumer
// argument x-stream-offset; acknowledgements only give the consumer credit
// (its basic.qos prefetch) for further deliveries. The log is in
// streamlog.go; this file holds the queue's side.

// streamInvalidArgs are the arguments RabbitMQ 3.10 refuses on a stream
// (measured on the system node: 406 "invalid arg 'K' for queue 'N' in
// vhost 'V' of queue type rabbit_stream_queue").
var streamInvalidArgs = []string{"x-expires", "x-message-ttl", "x-max-length", "x-max-priority",
	"x-overflow", "x-queue-mode", "x-single-active-consumer", "x-quorum-initial-group-size",
	"x-dead-letter-exchange", "x-dead-letter-routing-key", "x-delivery-limit",
	"x-queue-master-locator", "x-queue-version"}

// rs names a queue as RabbitMQ's rabbit_misc:rs/1 does.
func (q *queue) rs() string { return fmt.Sprintf("queue '%s' in vhost '%s'", q.name, q.vh.name) }

// parseMaxAge reads a RabbitMQ duration ("1800s", "30m", "1h", "7D", "1M",
// "1Y": a positive integer and one unit) into milliseconds, as
// rabbit_amqqueue:check_max_age does.
func parseMaxAge(s string) (int64, bool) {
	i := 0
	for i < len(s) && s[i] >= '0' && s[i] <= '9' {
		i++
	}
	if i == 0 || i > 15 {
		return 0, false
	}
	var n int64
	for _, c := range s[:i] {
		n = n*10 + int64(c-'0')
	}
	if n <= 0 {
		return 0, false
	}
	const sec = 1000
	var unit int64
	switch s[i:] {
	case "s":
		unit = sec
	case "m":
		unit = 60 * sec
	case "h":
		unit = 3600 * sec
	case "D":
		unit = 24 * 3600 * sec
	case "M":
		unit = 30 * 24 * 3600 * sec
	case "Y":
		unit = 365 * 24 * 3600 * sec
	default:
		return 0, false
	}
	return n * unit, true
}

// openStream validates a stream's own arguments and opens its log: under
// <DataDir>/streams/ when the broker has a data directory, in memory
// otherwise.
func (vh *vhost) openStream(q *queue) *amqpError {
	args := q.args
	segMax := int64(defaultStreamSegment)
	if v, ok := args["x-stream-max-segment-size-bytes"]; ok {
		n, isInt := asInt(v)
		if !isInt {
			return errf(amqp091.PreconditionFailed, "invalid arg 'x-stream-max-segment-size-bytes' for %s: \"expected integer, got %s\"", q.rs(), amqpTypeName(v))
		}
		if n > 0 {
			segMax = n
		}
	}
	var maxAge int64
	if v, ok := args["x-max-age"]; ok {
		s, _ := v.(string)
		ms, valid := parseMaxAge(s)
		if !valid {
			return errf(amqp091.PreconditionFailed, "invalid arg 'x-max-age' for %s: invalid_max_age", q.rs())
		}
		maxAge = ms
	}
	maxBytes := max(q.maxBytes, 0)
	dir := ""
	if d := vh.srv.opts.DataDir; d != "" {
		sum := sha256.Sum256([]byte(q.key))
		dir = filepath.Join(d, "streams", hex.EncodeToString(sum[:16]))
	}
	l, err := openStreamLog(vh.srv, dir, segMax, maxBytes, maxAge)
	if err != nil {
		vh.srv.log.Error("cannot open stream log", "vhost", vh.name, "queue", q.name, "err", err)
		return errf(amqp091.InternalError, "stream log of %s could not be opened", q.rs())
	}
	q.stream = l
	q.maxBytes = -1 // retention, not the classic overflow, applies
	return nil
}

// streamPublish appends m to a stream queue (publish's stream branch).
func (q *queue) streamPublish(m *message, via *conn) bool {
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.deleted {
		return true
	}
	return q.streamAppendLocked(m, via)
}

// streamAppendLocked appends m to the log and delivers it to consumers
// waiting at the end. It reports false when the log cannot write (the
// publish is nacked in confirm mode).
func (q *queue) streamAppendLocked(m *message, via *conn) bool {
	if _, err := q.stream.appendMsg(m, nowMS()); err != nil {
		q.vh.srv.log.Error("cannot append to stream", "vhost", q.vh.name, "queue", q.name, "err", err)
		return false
	}
	q.streamDispatchLocked(via)
	return true
}

// streamDispatchLocked delivers to every consumer from its offset while it
// has credit.
func (q *queue) streamDispatchLocked(via *conn) {
	l := q.stream
	if len(l.segs) == 0 {
		return
	}
	srv := q.vh.srv
	for _, c := range q.consumers {
		for c.soff < l.next && c.hasCredit() {
			s, i, ok := l.locate(c.soff)
			if !ok {
				c.soff = l.next
				break
			}
			m, off, err := l.read(s, i)
			if err != nil {
				srv.log.Error("cannot read a stream record; skipping it", "vhost", q.vh.name, "queue", q.name, "offset", s.first+int64(i), "err", err)
				c.soff = s.first + int64(i) + 1
				continue
			}
			e := qentry{m: m, pageOff: off}
			m.hold(srv)
			if delivered, _ := c.ch.deliver(c, q, &e, via); !delivered {
				m.release(srv)
				break
			}
			q.unacked++
			c.soff = off + 1
		}
	}
}

// hasCredit reports whether c may take one more delivery now.
func (c *consumer) hasCredit() bool {
	ch := c.ch
	ch.mu.Lock()
	defer ch.mu.Unlock()
	return !ch.closed && ch.flowActive && (c.prefetch <= 0 || c.unacked < c.prefetch) &&
		(ch.globalPrefetch <= 0 || ch.unackedCount < ch.globalPrefetch)
}

// streamSettle ends deliveries: acked, rejected or requeued alike, the
// record stays in the log and the consumer gets its credit back.
func (q *queue) streamSettle(es []qentry, via *conn) {
	q.mu.Lock()
	for _, e := range es {
		q.unacked--
		q.forgetLocked(e)
	}
	if !q.deleted {
		q.streamDispatchLocked(via)
	}
	q.mu.Unlock()
}

// streamOffset is a parsed x-stream-offset.
type streamOffset struct {
	kind int
	v    int64 // the offset, or the timestamp in unix ms
}

const (
	offNext = iota
	offFirst
	offLast
	offAbs
	offTime
)

// parseStreamOffset reads the x-stream-offset consumer argument as
// RabbitMQ's rabbit_stream_queue does: "first", "last", "next", an
// integer offset, an AMQP timestamp, or an interval string ("30m") meaning
// that long before now. Absent means "next".
func parseStreamOffset(args amqp091.Table, q *queue) (streamOffset, *amqpError) {
	v, ok := args["x-stream-offset"]
	if !ok {
		return streamOffset{kind: offNext}, nil
	}
	switch x := v.(type) {
	case string:
		switch x {
		case "first":
			return streamOffset{kind: offFirst}, nil
		case "last":
			return streamOffset{kind: offLast}, nil
		case "next":
			return streamOffset{kind: offNext}, nil
		}
		if ms, ok := parseMaxAge(x); ok {
			return streamOffset{kind: offTime, v: nowMS() - ms}, nil
		}
	case time.Time:
		return streamOffset{kind: offTime, v: x.Unix() * 1000}, nil
	default:
		if n, isInt := asInt(v); isInt {
			return streamOffset{kind: offAbs, v: n}, nil
		}
	}
	return streamOffset{}, errf(amqp091.PreconditionFailed, "invalid arg 'x-stream-offset' for %s: {invalid_stream_offset_arg,{%s,%s}}", q.rs(), amqpTypeName(v), erlValue(v))
}

// resolve turns an offset spec into the offset of the first delivery.
// "last" is the newest message in the log (RabbitMQ starts at the first
// message of the newest chunk; our chunk is one message); on an empty log
// it is the next one.
func (l *streamLog) resolve(o streamOffset) int64 {
	switch o.kind {
	case offFirst:
		return l.firstOffset()
	case offLast:
		if l.count() > 0 {
			return l.next - 1
		}
		return l.next
	case offAbs:
		return min(max(o.v, l.firstOffset()), l.next)
	case offTime:
		return l.offsetAt(o.v)
	}
	return l.next
}

// streamConsumeCheck refuses what RabbitMQ refuses of a stream consumer
// (texts and codes measured on RabbitMQ 3.10): no basic.qos prefetch
// (406), no-ack (540), a bad x-stream-offset (406).
func (ch *channel) streamConsumeCheck(q *queue, m *amqp091.BasicConsume) (streamOffset, *amqpError) {
	if ch.prefetch <= 0 {
		return streamOffset{}, errf(amqp091.PreconditionFailed, "consumer prefetch count is not set for '%s'", q.rs())
	}
	if m.NoAck {
		return streamOffset{}, errf(amqp091.NotImplemented, "automatic acknowledgement not supported by stream queues %s", q.rs())
	}
	return parseStreamOffset(m.Arguments, q)
}

// streamHeaders adds the x-stream-offset header (a long) to a delivery.
func streamHeaders(e *qentry) []byte {
	var p amqp091.BasicProperties
	if p.Read(amqp091.NewReader(e.m.props)) != nil {
		return e.m.props
	}
	h := amqp091.Table{}
	for k, v := range p.Headers {
		h[k] = v
	}
	h["x-stream-offset"] = e.pageOff
	p.Headers = h
	p.Flags |= amqp091.FlagHeaders
	return p.Append(nil)
}

// amqpTypeName is the field type name RabbitMQ prints in its errors.
func amqpTypeName(v any) string {
	switch v.(type) {
	case string:
		return "longstr"
	case bool:
		return "bool"
	case int8:
		return "byte"
	case uint8:
		return "unsignedbyte"
	case int16:
		return "short"
	case uint16:
		return "unsignedshort"
	case int32:
		return "signedint"
	case uint32:
		return "unsignedint"
	case int64, int, uint64:
		return "long"
	case float32:
		return "float"
	case float64:
		return "double"
	case amqp091.Decimal:
		return "decimal"
	case []byte:
		return "binary"
	case time.Time:
		return "timestamp"
	case amqp091.Table:
		return "table"
	case []any:
		return "array"
	case nil:
		return "void"
	}
	return "unknown"
}

// erlValue prints a field value as RabbitMQ's error terms show it.
func erlValue(v any) string {
	switch x := v.(type) {
	case string:
		return fmt.Sprintf("<<%q>>", x)
	case []byte:
		return fmt.Sprintf("<<%q>>", x)
	case time.Time:
		return fmt.Sprint(x.Unix())
	}
	return fmt.Sprint(v)
}

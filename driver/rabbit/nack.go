package rabbit

import (
	"context"
	"fmt"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"
)

// A basic.nack says that the broker did not take the message, and often
// that the channel that carried it will not take the next one either.
// RabbitMQ 3.10 (rabbit_fifo_client:enqueue) makes up its mind about a
// quorum queue on a channel's first publish to it: the channel asks the
// leader named by the queue's record whether it may enqueue, and when
// that node is down (the record not yet updated after the leader's node
// died) the publish is nacked and the channel keeps the dead leader, so
// every later publish on that channel to that queue is nacked as well,
// for as long as the old leader's node stays down. A channel opened once
// the new leader is recorded is not affected. (Measured in the faults
// cluster scenario: a send connection that reconnected within 50 ms of
// the kill had every publish nacked for the 16 s the node was down; new
// channels were nacked for about 0.33 s after the kill.)
//
// So a nacked publish retires its channel, as Python oslo.messaging does
// (ensure() drops the channel after any publish error): new publishes go
// to a fresh channel, and the old one is closed once its publishes in
// flight are confirmed (a publish it loses by closing is published again
// on the current channel, not counted as a retry). The nacked message
// itself is published again after nackBackoff, within the caller's
// deadline and retry budget (SendOptions.Retry, the budget of lost
// publishes too), since the broker did not take it; Python reports the
// nack to the caller instead. A message the broker routed to several
// queues and nacked because one of them refused it may reach the others
// twice: consumers drop duplicates by _unique_id, which the new publish
// keeps.

// nackBackoff is the wait before publishing again a message the broker
// nacked n times (1-based): 50 ms, doubling, at most 1 s. Short, since
// the usual cause (a quorum queue whose leader is being replaced) clears
// within a second and a call waits meanwhile.
func nackBackoff(n int) time.Duration {
	const first, most = 50 * time.Millisecond, time.Second
	if n < 1 {
		n = 1
	}
	if n > 6 {
		return most
	}
	return min(first<<(n-1), most)
}

// maxRetired bounds the retired channels of a session still open, waiting
// for the confirms of their publishes in flight; past it a retired
// channel is closed at once (its unconfirmed publishes count as lost and
// are published again).
const maxRetired = 4

// retiredGrace is how long a retired channel waits for its publishes in
// flight to be confirmed before it is closed anyway.
const retiredGrace = 10 * time.Second

// noteLast records dc as pc's latest publish, the one a retired channel
// waits for before it closes.
func (pc *pubChannel) noteLast(dc *amqp.DeferredConfirmation) {
	for {
		last := pc.last.Load()
		if last != nil && last.DeliveryTag >= dc.DeliveryTag {
			return
		}
		if pc.last.CompareAndSwap(last, dc) {
			return
		}
	}
}

// retire takes pc out of service as s's shared publishing channel after
// the broker nacked a publish on it: the next publish opens another. pc
// is closed once its last publish is confirmed (at most retiredGrace),
// at once if s has maxRetired retired channels open already. A pc that
// is no longer s's channel (retired by another publisher) is left alone.
func (d *Driver) retire(s *session, pc *pubChannel) {
	if !s.pub.CompareAndSwap(pc, nil) {
		return
	}
	d.log.Debug("publishing channel retired after a basic.nack", "local", s.sock.LocalAddr().String())
	pc.retired.Store(true)
	if s.retired.Add(1) > maxRetired || !d.track(func() { closeWhenSettled(s, pc, d.closing) }) {
		_ = pc.ch.Close()
		s.retired.Add(-1)
	}
}

// closeWhenSettled closes pc once the confirm of its last publish came
// (a publisher that took pc before it was retired may still publish on
// it: that one is waited for too), after retiredGrace, or at once when
// stop closes (the connection is closing anyway).
func closeWhenSettled(s *session, pc *pubChannel, stop <-chan struct{}) {
	defer s.retired.Add(-1)
	t := time.NewTimer(retiredGrace)
	defer t.Stop()
	for {
		last := pc.last.Load()
		if last != nil {
			select {
			case <-last.Done():
			case <-t.C:
				_ = pc.ch.Close()
				return
			case <-stop:
				return
			}
		}
		if pc.last.Load() == last {
			_ = pc.ch.Close()
			return
		}
	}
}

// nackPatienceDefault bounds the nack retries of a publish whose context
// has no deadline (a server's reply, a cast without one): a broker that
// keeps refusing a message is not asked forever.
const nackPatienceDefault = 30 * time.Second

// againAfterNack decides whether a message nacked for the n-th time
// (1-based), the first time at first, is published again: within msg's
// retry budget (again counts every publish sent again, lost ones
// included) and ctx, or, when ctx has no deadline, nackPatienceDefault
// after the first nack; after nackBackoff(n). It returns nil to go on,
// else the error to report.
func (d *Driver) againAfterNack(ctx context.Context, msg *outgoing, n, again int, first time.Time) error {
	nacked := msg.outcome(pubNack)
	if msg.retry >= 0 && again >= msg.retry {
		return nacked
	}
	if _, ok := ctx.Deadline(); !ok {
		patience := d.nackPatience
		if patience <= 0 {
			patience = nackPatienceDefault
		}
		if time.Since(first)+nackBackoff(n) > patience {
			return nacked
		}
	}
	d.log.Info("broker nacked a publish, publishing it again", "exchange", msg.exchange, "routing_key", msg.key, "nacks", n)
	if !sleepCtx(ctx, d.closing, nackBackoff(n)) {
		if ctx.Err() != nil {
			return fmt.Errorf("%w (last error: %w)", ctx.Err(), nacked)
		}
		return nacked
	}
	return nil
}

package rabbit

import (
	"errors"
	"log/slog"
	"strings"

	amqp "github.com/rabbitmq/amqp091-go"
)

// againError asks the code that runs a declaration to run it again on a
// new channel (the broker closed the old one with err): the declaration's
// next attempt is its recovery.
type againError struct{ err error }

func (e *againError) Error() string { return e.err.Error() }
func (e *againError) Unwrap() error { return e.err }

func declareAgain(err error) error { return &againError{err} }

// maxDeclareAttempts bounds the attempts of one declaration.
const maxDeclareAttempts = 3

// declarer is the part of *amqp.Channel that declarations use.
type declarer interface {
	ExchangeDeclare(name, kind string, durable, autoDelete, internal, noWait bool, args amqp.Table) error
	QueueDeclare(name string, durable, autoDelete, exclusive, noWait bool, args amqp.Table) (amqp.Queue, error)
	QueueBind(name, key, exchange string, noWait bool, args amqp.Table) error
	QueueDelete(name string, ifUnused, ifEmpty, noWait bool) (int, error)
}

// exchangeSpec is one exchange as oslo declares it.
type exchangeSpec struct {
	name, kind          string
	durable, autoDelete bool
}

// bindingSpec binds a queue to an exchange (declared first) with a key.
type bindingSpec struct {
	x   exchangeSpec
	key string
}

// declMode is what the next attempt of a declaration does.
type declMode int

const (
	modeNormal      declMode = iota // as configured; recovers from the errors below
	modeNonDurable                  // after PRECONDITION_FAILED on 'durable'
	modeDeleteFirst                 // after NOT_FOUND on queue.declare
	modePlain                       // once more, no further recovery
)

// queuePlan declares a queue with its exchanges and bindings as 18.1's
// Consumer.declare does, recovering as it does:
//
//   - PRECONDITION_FAILED "inequivalent arg 'durable'" (a control exchange or
//     queue another service declared with the other durability): declared
//     again non-durable, the exchange with the queue's auto_delete
//     (_declare_fallback_nondurable). Any other 406 is returned with
//     RabbitMQ's text.
//   - NOT_FOUND on queue.declare (a queue whose node is down, bug 2068630):
//     the queue is deleted and declared again. NOT_FOUND on queue.bind (its
//     exchange vanished meanwhile, bug 1318721): declared again. oslo
//     deletes the queue on either; deleting a topic queue because its
//     exchange went away would lose its messages, so oslogo does not.
//   - 541 INTERNAL_ERROR closes the connection: the listener reconnects
//     (with its splay and backoff) and declares again; nothing is deleted.
//
// A plan is used by one goroutine at a time.
type queuePlan struct {
	name                string
	durable, autoDelete bool
	args                amqp.Table
	binds               []bindingSpec
	log                 *slog.Logger

	mode declMode
}

// declare runs one attempt on ch; an againError (holding the broker's
// error) asks for another on a new channel.
func (p *queuePlan) declare(ch declarer) error {
	mode := p.mode
	p.mode = modeNormal
	if mode == modeDeleteFirst {
		if _, err := ch.QueueDelete(p.name, false, false, false); err != nil {
			p.log.Warn("deleting a stuck queue failed, declaring it again", "queue", p.name, "err", err)
			p.mode = modePlain
			return declareAgain(err)
		}
	}
	nonDurable := mode == modeNonDurable
	for _, b := range p.binds {
		x := b.x
		if nonDurable {
			x.durable, x.autoDelete = false, p.autoDelete
		}
		if err := ch.ExchangeDeclare(x.name, x.kind, x.durable, x.autoDelete, false, false, nil); err != nil {
			return p.recover(mode, err, false)
		}
	}
	if _, err := ch.QueueDeclare(p.name, p.durable && !nonDurable, p.autoDelete, false, false, p.args); err != nil {
		return p.recover(mode, err, true)
	}
	for _, b := range p.binds {
		if err := ch.QueueBind(p.name, b.key, b.x.name, false, nil); err != nil {
			return p.recover(mode, err, false)
		}
	}
	return nil
}

// recover picks the next attempt after err, or returns err.
func (p *queuePlan) recover(mode declMode, err error, onQueue bool) error {
	var ae *amqp.Error
	if mode != modeNormal || !errors.As(err, &ae) {
		return err
	}
	switch {
	case isDurableMismatch(ae):
		p.log.Warn("queue could not be declared, probably because of conflicting configurations; declaring it non-durable", "queue", p.name, "err", err)
		p.mode = modeNonDurable
	case ae.Code == amqp.NotFound && onQueue:
		p.log.Warn("queue is stuck on an unresponsive node, deleting it and declaring it again", "queue", p.name, "err", err)
		p.mode = modeDeleteFirst
	case ae.Code == amqp.NotFound:
		p.mode = modePlain
	default:
		return err
	}
	return declareAgain(err)
}

// isDurableMismatch reports RabbitMQ's refusal of a redeclaration with the
// other durability, which 18.1 falls back from.
func isDurableMismatch(ae *amqp.Error) bool {
	return ae.Code == amqp.PreconditionFailed && strings.Contains(ae.Reason, "inequivalent arg 'durable'")
}

// exchangePlan declares the exchange a cast or call is published to, as
// 18.1's Connection._publish does: on PRECONDITION_FAILED "inequivalent arg
// 'durable'" it is declared again non-durable ("Force creating a non
// durable exchange"); other errors are returned.
type exchangePlan struct {
	x    exchangeSpec
	log  *slog.Logger
	mode declMode
}

func (p *exchangePlan) declare(ch declarer) error {
	x := p.x
	mode := p.mode
	p.mode = modeNormal
	if mode == modeNonDurable {
		x.durable = false
	}
	err := ch.ExchangeDeclare(x.name, x.kind, x.durable, x.autoDelete, false, false, nil)
	var ae *amqp.Error
	if err != nil && mode == modeNormal && errors.As(err, &ae) && isDurableMismatch(ae) {
		p.log.Warn("force creating a non durable exchange", "exchange", x.name, "err", err)
		p.mode = modeNonDurable
		return declareAgain(err)
	}
	return err
}

// runDeclare runs decl on the channel that *ch holds, opening a new one
// with open when it is nil or closed, and again after an againError, at
// most maxDeclareAttempts times. The last channel is left in *ch.
func runDeclare(ch **amqp.Channel, open func() (*amqp.Channel, error), decl func(*amqp.Channel) error) error {
	var err error
	for range maxDeclareAttempts {
		if *ch == nil || (*ch).IsClosed() {
			c, oerr := open()
			if oerr != nil {
				return oerr
			}
			*ch = c
		}
		err = decl(*ch)
		var again *againError
		if !errors.As(err, &again) {
			return err
		}
		err = again.err
	}
	return err // the broker's error of the last attempt
}

package broker

import (
	"errors"
	"fmt"

	"github.com/oslogo/oslogo/broker/internal/amqp091"
)

// Errors returned by the Server's methods.
var (
	// ErrServerClosed is returned by Start and InProcessConn after Shutdown.
	ErrServerClosed = errors.New("broker: server closed")
	// ErrNotStarted is returned by InProcessConn before Start.
	ErrNotStarted = errors.New("broker: server not started")
)

// amqpError is a protocol exception: a channel error (soft code) closes the
// channel, a hard one the connection.
type amqpError struct {
	code     uint16
	text     string
	classID  uint16
	methodID uint16
}

func (e *amqpError) Error() string { return fmt.Sprintf("%d %s", e.code, e.text) }

func (e *amqpError) hard() bool { return amqp091.IsHardError(e.code) }

func errf(code uint16, format string, a ...any) *amqpError {
	return &amqpError{code: code, text: replyName(code) + " - " + fmt.Sprintf(format, a...)}
}

func replyName(code uint16) string {
	switch code {
	case amqp091.ContentTooLarge:
		return "CONTENT_TOO_LARGE"
	case amqp091.NoConsumers:
		return "NO_CONSUMERS"
	case amqp091.ConnectionForced:
		return "CONNECTION_FORCED"
	case amqp091.InvalidPath:
		return "INVALID_PATH"
	case amqp091.AccessRefused:
		return "ACCESS_REFUSED"
	case amqp091.NotFound:
		return "NOT_FOUND"
	case amqp091.ResourceLocked:
		return "RESOURCE_LOCKED"
	case amqp091.PreconditionFailed:
		return "PRECONDITION_FAILED"
	case amqp091.FrameError:
		return "FRAME_ERROR"
	case amqp091.SyntaxError:
		return "SYNTAX_ERROR"
	case amqp091.CommandInvalid:
		return "COMMAND_INVALID"
	case amqp091.ChannelError:
		return "CHANNEL_ERROR"
	case amqp091.UnexpectedFrame:
		return "UNEXPECTED_FRAME"
	case amqp091.ResourceError:
		return "RESOURCE_ERROR"
	case amqp091.NotAllowed:
		return "NOT_ALLOWED"
	case amqp091.NotImplemented:
		return "NOT_IMPLEMENTED"
	case amqp091.InternalError:
		return "INTERNAL_ERROR"
	}
	return "ERROR"
}

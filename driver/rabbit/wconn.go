package rabbit

import (
	"context"
	"errors"
	"fmt"
	"net"
	"sync"
	"time"
)

// coalescingConn gathers the writes of concurrent publishers into fewer
// system calls. amqp091-go writes (and flushes) every publish on its own,
// under a per-connection lock, so with several publishers on a connection
// each message costs a write(2) on the client and a read on the broker.
// Here a write is appended to a buffer and handed to a flusher goroutine;
// whatever arrives while the flusher is in a system call goes out with
// its next one. A write error is returned by the next Write (and closes
// the connection, which amqp091-go's reader then reports).
//
// It is also the publish gate of a send connection. amqp091-go's Publish
// takes no context and holds the connection's send lock while it writes,
// so a publisher must never wait inside it: admit waits, with the caller's
// context, before the publish, while the broker blocks the connection
// (connection.blocked) or maxPending bytes are still unwritten (a broker
// that stops reading). Write itself waits only past hardPending bytes,
// which admitted publishes reach only with many large messages at once;
// that wait ends when the flusher makes room or fails (a deadline set on
// the connection, as CloseDeadline sets, ends its write) or at Close.
type coalescingConn struct {
	net.Conn

	mu      sync.Mutex
	pending []byte
	spare   []byte
	writing int  // bytes the flusher is writing
	active  bool // the flusher has work or is writing
	err     error
	closed  bool
	blocked bool      // connection.blocked received, no unblocked yet
	reason  string    // the broker's reason for blocking
	since   time.Time // when the block began
	changed chan struct{}
	wake    chan struct{}
	done    chan struct{}
	exited  chan struct{} // closed when the flusher returns
	once    sync.Once
}

func newCoalescingConn(c net.Conn) *coalescingConn {
	w := &coalescingConn{Conn: c, wake: make(chan struct{}, 1), done: make(chan struct{}), exited: make(chan struct{})}
	go w.flusher()
	return w
}

// maxPending is the unwritten bytes past which admit holds publishers
// back.
const maxPending = 4 << 20

// hardPending bounds the bytes queued for the flusher: past it Write
// waits.
const hardPending = 4 * maxPending

// changedLocked returns a channel closed at the next change of state.
func (w *coalescingConn) changedLocked() <-chan struct{} {
	if w.changed == nil {
		w.changed = make(chan struct{})
	}
	return w.changed
}

// signalLocked wakes the waiters of changedLocked (none: nothing to do).
func (w *coalescingConn) signalLocked() {
	if w.changed != nil {
		close(w.changed)
		w.changed = nil
	}
}

// Write queues p for the flusher.
func (w *coalescingConn) Write(p []byte) (int, error) {
	w.mu.Lock()
	for len(w.pending) >= hardPending && w.err == nil && !w.closed {
		ch := w.changedLocked()
		w.mu.Unlock()
		<-ch
		w.mu.Lock()
	}
	if w.closed && w.err == nil {
		w.err = net.ErrClosed
	}
	if w.err != nil {
		err := w.err
		w.mu.Unlock()
		return 0, err
	}
	w.pending = append(w.pending, p...)
	start := !w.active
	w.active = true
	w.mu.Unlock()
	if start {
		select {
		case w.wake <- struct{}{}:
		default:
		}
	}
	return len(p), nil
}

func (w *coalescingConn) flusher() {
	defer close(w.exited)
	for {
		select {
		case <-w.wake:
		case <-w.done:
			return
		}
		for {
			w.mu.Lock()
			if len(w.pending) == 0 || w.err != nil {
				w.active = false
				w.mu.Unlock()
				break
			}
			buf := w.pending
			w.pending = w.spare[:0]
			w.writing = len(buf)
			w.signalLocked()
			w.mu.Unlock()
			_, err := w.Conn.Write(buf)
			w.mu.Lock()
			w.spare = buf[:0]
			w.writing = 0
			if err != nil && w.err == nil {
				w.err = err
			}
			w.signalLocked()
			w.mu.Unlock()
			if err != nil {
				_ = w.Conn.Close()
			}
		}
	}
}

// admit waits until a publish may be written: the broker does not block
// the connection and fewer than maxPending bytes wait to be written. It
// returns the connection's error, net.ErrClosed after Close, errStopped
// when stop closes, and when ctx ends first an error saying what held the
// publish back (without ctx.Err(), which the caller reports).
func (w *coalescingConn) admit(ctx context.Context, stop <-chan struct{}) error {
	w.mu.Lock()
	for {
		switch {
		case w.err != nil:
			err := w.err
			w.mu.Unlock()
			return err
		case w.closed:
			w.mu.Unlock()
			return net.ErrClosed
		case !w.blocked && len(w.pending)+w.writing < maxPending:
			w.mu.Unlock()
			return nil
		}
		ch := w.changedLocked()
		w.mu.Unlock()
		select {
		case <-ch:
		case <-ctx.Done():
			return w.heldBack()
		case <-stop:
			return errStopped
		}
		w.mu.Lock()
	}
}

// errStopped is admit's answer when its stop channel closed.
var errStopped = errors.New("rabbit: stopped while waiting to publish")

// heldBack describes why admit is still waiting.
func (w *coalescingConn) heldBack() error {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.blocked {
		return fmt.Errorf("rabbit: the broker is blocking publishes on this connection (connection.blocked %q, for %s)", w.reason, time.Since(w.since).Round(time.Millisecond))
	}
	return fmt.Errorf("rabbit: %d bytes wait to be written: the broker is not reading", len(w.pending)+w.writing)
}

// setBlocked records connection.blocked (active) or connection.unblocked.
func (w *coalescingConn) setBlocked(active bool, reason string) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if active && !w.blocked {
		w.since = time.Now()
	}
	w.blocked, w.reason = active, reason
	w.signalLocked()
}

// blockedBy reports whether the broker blocks the connection, and why.
func (w *coalescingConn) blockedBy() (string, bool) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.reason, w.blocked
}

// unsent is the number of bytes accepted but not yet written.
func (w *coalescingConn) unsent() int {
	w.mu.Lock()
	defer w.mu.Unlock()
	return len(w.pending) + w.writing
}

// Close stops the flusher, closes the connection and waits for the
// flusher to return. Bytes not yet written are dropped.
func (w *coalescingConn) Close() error {
	w.once.Do(func() {
		close(w.done)
		w.mu.Lock()
		w.closed = true
		w.signalLocked()
		w.mu.Unlock()
	})
	err := w.Conn.Close()
	<-w.exited
	return err
}

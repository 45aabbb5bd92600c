package rabbit

import (
	"net"
	"sync"
)

// coalescingConn gathers the writes of concurrent publishers into fewer
// system calls. amqp091-go writes (and flushes) every publish on its own,
// under a per-connection lock, so with several publishers on a connection
// each message costs a write(2) on the client and a read on the broker.
// Here a write is appended to a buffer and handed to a flusher goroutine;
// whatever arrives while the flusher is in a system call goes out with
// its next one. A write error is returned by the next Write (and closes
// the connection, which amqp091-go's reader then reports).
type coalescingConn struct {
	net.Conn

	mu      sync.Mutex
	pending []byte
	spare   []byte
	active  bool // the flusher has work or is writing
	err     error
	wake    chan struct{}
	done    chan struct{}
	once    sync.Once
}

func newCoalescingConn(c net.Conn) *coalescingConn {
	w := &coalescingConn{Conn: c, wake: make(chan struct{}, 1), done: make(chan struct{})}
	go w.flusher()
	return w
}

// Write queues p for the flusher.
func (w *coalescingConn) Write(p []byte) (int, error) {
	w.mu.Lock()
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
			w.mu.Unlock()
			_, err := w.Conn.Write(buf)
			w.mu.Lock()
			w.spare = buf[:0]
			if err != nil && w.err == nil {
				w.err = err
			}
			w.mu.Unlock()
			if err != nil {
				_ = w.Conn.Close()
			}
		}
	}
}

// Close stops the flusher and closes the connection.
func (w *coalescingConn) Close() error {
	w.once.Do(func() { close(w.done) })
	return w.Conn.Close()
}

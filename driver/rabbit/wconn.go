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
// the connection, which amqp091-go's reader then reports). Writers wait
// once maxPending bytes are queued, so a broker that stops reading (flow
// control, a memory alarm) still holds publishers back.
type coalescingConn struct {
	net.Conn

	mu      sync.Mutex
	pending []byte
	spare   []byte
	active  bool // the flusher has work or is writing
	err     error
	closed  bool
	room    *sync.Cond // signalled when the flusher takes the queue
	wake    chan struct{}
	done    chan struct{}
	once    sync.Once
}

func newCoalescingConn(c net.Conn) *coalescingConn {
	w := &coalescingConn{Conn: c, wake: make(chan struct{}, 1), done: make(chan struct{})}
	w.room = sync.NewCond(&w.mu)
	go w.flusher()
	return w
}

// maxPending bounds the bytes queued for the flusher.
const maxPending = 4 << 20

// Write queues p for the flusher.
func (w *coalescingConn) Write(p []byte) (int, error) {
	w.mu.Lock()
	for len(w.pending) >= maxPending && w.err == nil && !w.closed {
		w.room.Wait()
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
			w.room.Broadcast()
			w.mu.Unlock()
			_, err := w.Conn.Write(buf)
			w.mu.Lock()
			w.spare = buf[:0]
			if err != nil && w.err == nil {
				w.err = err
				w.room.Broadcast()
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
	w.once.Do(func() {
		close(w.done)
		w.mu.Lock()
		w.closed = true
		w.room.Broadcast()
		w.mu.Unlock()
	})
	return w.Conn.Close()
}

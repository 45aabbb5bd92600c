package broker

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/oslogo/oslogo/broker/internal/amqp091"
)

// Server is an embedded AMQP 0-9-1 broker.
type Server struct {
	opts Options
	log  *slog.Logger

	// loginFailures counts refused logins (see Stats).
	loginFailures atomic.Uint64

	mu        sync.Mutex
	started   bool
	stopped   bool
	listeners []net.Listener
	addr      net.Addr
	tlsAddr   net.Addr
	conns     map[*conn]struct{}
	ready     chan struct{}
	wg        sync.WaitGroup
	users     map[string]*user
	vhosts    map[string]*vhost
	mon       serverMonitor // management API state (mgmt.go)
	pol       policyState   // policies (policy.go)
	// accountsDurable: users or permissions were changed at run time, so
	// the data directory keeps them (admin.go, store.go).
	accountsDurable atomic.Bool

	store   *store
	storeIO storeIO // tests only: faults between the store and its files
	defMu   sync.Mutex

	connID       atomic.Uint64
	shuttingDown atomic.Bool
	queuedBytes  atomic.Int64
	alarm        atomic.Bool
	alarmMu      sync.Mutex
	alarmCond    *sync.Cond
	wm           watermarkState // the memory high watermark (watermark.go)
	gml          goMemLimit     // the Go runtime's memory limit (gomemlimit.go)

	// quit is closed by Shutdown: it ends the accept loops' back-off.
	quit chan struct{}
	// open counts connections past connection.open (MaxConnections).
	open atomic.Int64

	// churn and stats are the message statistics (stats.go).
	churn churn
	stats statsSampler
}

// New validates opts and returns a Server; it does no I/O.
func New(opts Options) (*Server, error) {
	if err := opts.Validate(); err != nil {
		return nil, err
	}
	s := &Server{opts: opts, log: opts.Logger.With("component", "broker"), conns: map[*conn]struct{}{},
		ready: make(chan struct{}), users: map[string]*user{}, vhosts: map[string]*vhost{},
		quit: make(chan struct{})}
	s.alarmCond = sync.NewCond(&s.alarmMu)
	s.wm.bytes.Store(opts.MemoryHighWatermark)
	loop := map[string]bool{}
	for _, n := range opts.LoopbackUsers {
		loop[n] = true
	}
	for _, u := range opts.Users {
		s.users[u.Name] = newUser(u, loop[u.Name])
	}
	s.vhosts["/"] = newVhost(s, "/")
	for _, v := range opts.VHosts {
		if s.vhosts[v] == nil {
			s.vhosts[v] = newVhost(s, v)
		}
	}
	return s, nil
}

// Start opens the data directory, recovers durable state and starts the
// listeners; it returns as soon as they listen.
func (s *Server) Start() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.stopped {
		return ErrServerClosed
	}
	if s.started {
		return errors.New("broker: already started")
	}
	if s.opts.DataDir != "" {
		st, err := openStore(s, s.opts.DataDir)
		if err != nil {
			return err
		}
		s.store = st
	}
	if s.opts.AMQPAddr != "" {
		ln, err := net.Listen("tcp", s.opts.AMQPAddr)
		if err != nil {
			s.closeStore()
			return fmt.Errorf("broker: listen: %w", err)
		}
		s.listeners = append(s.listeners, ln)
		s.addr = ln.Addr()
	}
	if s.opts.TLSAddr != "" {
		ln, err := tls.Listen("tcp", s.opts.TLSAddr, s.opts.TLSConfig)
		if err != nil {
			for _, l := range s.listeners {
				_ = l.Close()
			}
			s.closeStore()
			return fmt.Errorf("broker: listen tls: %w", err)
		}
		s.listeners = append(s.listeners, ln)
		s.tlsAddr = ln.Addr()
	}
	if err := s.startHTTPLocked(); err != nil {
		for _, l := range s.listeners {
			_ = l.Close()
		}
		s.closeStore()
		return err
	}
	for _, ln := range s.listeners {
		s.wg.Add(1)
		go s.acceptLoop(ln)
	}
	s.wg.Add(1)
	go s.statsLoop(s.opts.StatsInterval)
	s.started = true
	s.startGoMemoryLimit()
	close(s.ready)
	s.log.Info("broker started", "addr", s.addr, "data", s.opts.DataDir)
	return nil
}

func (s *Server) closeStore() {
	if s.store != nil {
		s.store.close()
		s.store = nil
	}
}

// ReadyForConnections waits up to timeout for Start to finish listening.
func (s *Server) ReadyForConnections(timeout time.Duration) bool {
	t := time.NewTimer(timeout)
	defer t.Stop()
	select {
	case <-s.ready:
		s.mu.Lock()
		defer s.mu.Unlock()
		return !s.stopped
	case <-t.C:
		return false
	}
}

// Addr returns the AMQP listener's address, or nil before Start.
func (s *Server) Addr() net.Addr {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.addr
}

// TLSAddr returns the AMQPS listener's address, or nil.
func (s *Server) TLSAddr() net.Addr {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.tlsAddr
}

// InProcessConn returns the client end of a net.Pipe served exactly like a
// TCP connection (pass it to amqp091-go's amqp.Open).
func (s *Server) InProcessConn() (net.Conn, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.stopped {
		return nil, ErrServerClosed
	}
	if !s.started {
		return nil, ErrNotStarted
	}
	client, server := net.Pipe()
	s.serveLocked(server)
	return client, nil
}

// acceptLoop serves ln until Shutdown closes it. Other Accept errors
// (out of file descriptors, out of memory, an aborted connection) do not
// end it: it waits, doubling the pause from 5 ms to 1 s as net/http's
// Serve does, and tries again, so the broker takes new clients as soon as
// descriptors are free again.
func (s *Server) acceptLoop(ln net.Listener) {
	defer s.wg.Done()
	var pause time.Duration
	for {
		nc, err := ln.Accept()
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			if pause == 0 {
				pause = 5 * time.Millisecond
			} else {
				pause = min(2*pause, time.Second)
			}
			if pause == time.Second || !isTransientAccept(err) {
				s.log.Warn("accept failed, retrying", "err", err, "pause", pause)
			}
			t := time.NewTimer(pause)
			select {
			case <-t.C:
				continue
			case <-s.quit:
				t.Stop()
				return
			}
		}
		pause = 0
		if tc, ok := nc.(*net.TCPConn); ok {
			_ = tc.SetNoDelay(true)
		}
		s.mu.Lock()
		if s.stopped {
			s.mu.Unlock()
			_ = nc.Close()
			return
		}
		s.serveLocked(nc)
		s.mu.Unlock()
	}
}

func (s *Server) serveLocked(nc net.Conn) {
	c := newConn(s, nc, s.connID.Add(1))
	s.conns[c] = struct{}{}
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		c.serve()
	}()
}

// isTransientAccept reports the Accept errors that are expected to pass
// (they are retried quietly until the pause reaches its maximum).
func isTransientAccept(err error) bool {
	for _, e := range []error{syscall.EMFILE, syscall.ENFILE, syscall.ENOBUFS, syscall.ENOMEM, syscall.ECONNABORTED} {
		if errors.Is(err, e) {
			return true
		}
	}
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

// admit enforces MaxConnections at connection.open, as RabbitMQ enforces
// its node connection limit: connections still in the handshake do not
// count, so they cannot make an admitted client's reconnect fail.
func (s *Server) admit(c *conn) bool {
	if s.opts.MaxConnections == 0 {
		return true
	}
	if s.open.Add(1) > int64(s.opts.MaxConnections) {
		s.open.Add(-1)
		return false
	}
	c.admitted = true
	return true
}

func (s *Server) removeConn(c *conn) {
	if c.admitted {
		s.open.Add(-1)
	}
	s.mu.Lock()
	delete(s.conns, c)
	s.mu.Unlock()
}

func (s *Server) lookupUser(name string) *user {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.users[name]
}

func (s *Server) vhost(name string) *vhost {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.vhosts[name]
}

// addQueued tracks counted memory (see mem.go) and raises or clears the
// memory alarm (watermark.go).
func (s *Server) addQueued(n int64) {
	v := s.queuedBytes.Add(n)
	if s.wm.bytes.Load() == 0 && !s.alarm.Load() {
		return
	}
	s.evalAlarm(v)
}

// Shutdown closes listeners and connections (with connection.close
// CONNECTION_FORCED), syncs the store and waits for every goroutine, or
// until ctx ends, when it closes sockets outright.
func (s *Server) Shutdown(ctx context.Context) error {
	s.mu.Lock()
	if s.stopped {
		s.mu.Unlock()
		return nil
	}
	s.stopped = true
	if !s.started {
		close(s.ready)
	}
	s.shuttingDown.Store(true)
	close(s.quit)
	for _, ln := range s.listeners {
		_ = ln.Close()
	}
	conns := make([]*conn, 0, len(s.conns))
	for c := range s.conns {
		conns = append(conns, c)
	}
	s.mu.Unlock()
	s.alarmMu.Lock()
	s.alarmCond.Broadcast()
	s.alarmMu.Unlock()
	for _, c := range conns {
		c.hangup()
	}
	s.stopHTTP(ctx)
	done := make(chan struct{})
	go func() {
		s.wg.Wait()
		close(done)
	}()
	var err error
	select {
	case <-done:
	case <-ctx.Done():
		// Out of time: every socket closes now, which ends every reader
		// and writer at once.
		err = ctx.Err()
		for _, c := range conns {
			_ = c.nc.Close()
			c.wakeWriter()
		}
		<-done
	}
	s.mu.Lock()
	vhs := make([]*vhost, 0, len(s.vhosts))
	for _, vh := range s.vhosts {
		vhs = append(vhs, vh)
	}
	s.mu.Unlock()
	for _, vh := range vhs {
		vh.mu.RLock()
		for _, q := range vh.queues {
			q.mu.Lock()
			q.stopTimersLocked()
			q.mu.Unlock()
		}
		vh.mu.RUnlock()
	}
	s.closeStore()
	s.stopGoMemoryLimit()
	s.log.Info("broker stopped")
	return err
}

// hangup sends connection.close 320 and bounds what is left of the
// connection by shutdownGrace: the client has until then to take the
// close and answer close-ok, then its socket closes. A connection still in
// the handshake is closed at once, as RabbitMQ does.
func (c *conn) hangup() {
	c.sendClose(&amqp091.ConnectionClose{ReplyCode: amqp091.ConnectionForced, ReplyText: shutdownText})
	if !c.running.Load() {
		_ = c.nc.Close()
		return
	}
	final := time.Now().Add(shutdownGrace)
	c.finalBy.CompareAndSwap(0, final.UnixNano())
	// The reader may be parked on the socket, blocked by back-pressure or
	// inside a batch, and the writer on a client that stopped reading:
	// deadlines end both waits, and the writer is woken directly.
	_ = c.nc.SetDeadline(final)
	c.wakeWriter()
}

// shutdownGrace is how long Shutdown gives each client to read
// connection.close and answer close-ok.
const shutdownGrace = 2 * time.Second

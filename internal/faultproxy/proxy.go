// Package faultproxy is a TCP proxy whose faults a test switches on and
// off: drop (a blackhole that keeps sockets open and forwards nothing),
// delay, half-open (the upstream side closed, the client side kept open
// and silent) and reset (every connection closed with a TCP RST).
//
// It records when each client connection was accepted and when the
// client closed it, so a test can tell how long a client took to notice a
// dead peer and when it came back.
package faultproxy

import (
	"errors"
	"net"
	"sync"
	"time"
)

// Mode is what the proxy does with the bytes it reads.
type Mode int

const (
	// Forward passes bytes both ways (after the configured delay).
	Forward Mode = iota
	// Drop reads and discards bytes both ways and forwards nothing: to
	// both ends the peer has gone silent, as behind a blackholed route.
	// New connections are accepted and treated the same way.
	Drop
	// Refuse resets every new connection at once, as a host whose port is
	// closed does; current connections go on.
	Refuse
)

// ConnInfo is the history of one client connection.
type ConnInfo struct {
	Accepted     time.Time
	ClientClosed time.Time // zero while the client keeps it open
}

// chunkQueue bounds what one direction holds while delayed; a writer that
// falls this far behind blocks its reader, which is TCP backpressure.
const chunkQueue = 256

// Proxy forwards connections from Addr to a target address.
type Proxy struct {
	target string
	ln     net.Listener
	wg     sync.WaitGroup // accept loop and every pipe goroutine

	mu     sync.Mutex
	mode   Mode
	delay  time.Duration
	conns  map[*pconn]struct{}
	hist   []*ConnInfo
	closed bool
}

type pconn struct {
	client, upstream net.Conn
	info             *ConnInfo
	halfOpen         bool // upstream closed on purpose, client kept silent
	byProxy          bool // the proxy closed the client side (not the client)
}

// New listens on 127.0.0.1 (an ephemeral port) and forwards to target.
func New(target string) (*Proxy, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	p := &Proxy{target: target, ln: ln, conns: map[*pconn]struct{}{}}
	p.wg.Add(1)
	go p.acceptLoop()
	return p, nil
}

// Addr is the address clients connect to.
func (p *Proxy) Addr() string { return p.ln.Addr().String() }

// SetMode switches between forwarding, dropping and refusing.
func (p *Proxy) SetMode(m Mode) {
	p.mu.Lock()
	p.mode = m
	p.mu.Unlock()
}

// SetDelay delays every chunk by d in each direction (0: none).
func (p *Proxy) SetDelay(d time.Duration) {
	p.mu.Lock()
	p.delay = d
	p.mu.Unlock()
}

// Reset closes every current connection on both sides with a TCP RST.
func (p *Proxy) Reset() {
	for _, c := range p.snapshot() {
		p.markByProxy(c)
		abort(c.client)
		abort(c.upstream)
	}
}

// HalfOpen closes the upstream side of every current connection and keeps
// the client side open, reading and discarding: the client's peer is gone
// without a FIN or RST ever reaching it.
func (p *Proxy) HalfOpen() {
	for _, c := range p.snapshot() {
		p.mu.Lock()
		c.halfOpen = true
		p.mu.Unlock()
		_ = c.upstream.Close()
	}
}

// Conns returns a copy of the history of every connection accepted so far.
func (p *Proxy) Conns() []ConnInfo {
	p.mu.Lock()
	defer p.mu.Unlock()
	out := make([]ConnInfo, len(p.hist))
	for i, h := range p.hist {
		out[i] = *h
	}
	return out
}

// Open is the number of connections currently open on the client side.
func (p *Proxy) Open() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.conns)
}

// Close stops accepting, closes every connection and waits for every
// goroutine of the proxy to end.
func (p *Proxy) Close() error {
	p.mu.Lock()
	p.closed = true
	p.mu.Unlock()
	err := p.ln.Close()
	for _, c := range p.snapshot() {
		p.markByProxy(c)
		_ = c.client.Close()
		_ = c.upstream.Close()
	}
	p.wg.Wait()
	return err
}

func (p *Proxy) snapshot() []*pconn {
	p.mu.Lock()
	defer p.mu.Unlock()
	out := make([]*pconn, 0, len(p.conns))
	for c := range p.conns {
		out = append(out, c)
	}
	return out
}

func (p *Proxy) markByProxy(c *pconn) {
	p.mu.Lock()
	c.byProxy = true
	p.mu.Unlock()
}

func (p *Proxy) acceptLoop() {
	defer p.wg.Done()
	backoff := 5 * time.Millisecond
	for {
		client, err := p.ln.Accept()
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			// Temporary accept errors (EMFILE and the like): wait and retry.
			time.Sleep(backoff)
			backoff = min(2*backoff, time.Second)
			continue
		}
		backoff = 5 * time.Millisecond
		now := time.Now()
		p.mu.Lock()
		refuse := p.mode == Refuse
		if refuse {
			p.hist = append(p.hist, &ConnInfo{Accepted: now, ClientClosed: now})
		}
		p.mu.Unlock()
		if refuse {
			abort(client)
			continue
		}
		upstream, err := net.DialTimeout("tcp", p.target, 5*time.Second)
		if err != nil {
			// The target is down: the client sees its connection closed.
			_ = client.Close()
			p.mu.Lock()
			p.hist = append(p.hist, &ConnInfo{Accepted: now, ClientClosed: now})
			p.mu.Unlock()
			continue
		}
		c := &pconn{client: client, upstream: upstream, info: &ConnInfo{Accepted: now}}
		p.mu.Lock()
		if p.closed {
			p.mu.Unlock()
			_ = client.Close()
			_ = upstream.Close()
			return
		}
		p.conns[c] = struct{}{}
		p.hist = append(p.hist, c.info)
		p.mu.Unlock()
		p.wg.Add(1)
		go p.serve(c)
	}
}

// serve runs both directions of one connection and forgets it when the
// client side is done.
func (p *Proxy) serve(c *pconn) {
	defer p.wg.Done()
	var dirs sync.WaitGroup
	dirs.Add(2)
	go func() {
		defer dirs.Done()
		p.pipe(c, c.client, c.upstream, true)
	}()
	go func() {
		defer dirs.Done()
		p.pipe(c, c.upstream, c.client, false)
	}()
	dirs.Wait()
	p.mu.Lock()
	delete(p.conns, c)
	p.mu.Unlock()
}

type chunk struct {
	due  time.Time
	data []byte
}

// pipe copies src to dst through a bounded queue of timestamped chunks so
// a delay shifts the stream in time without stalling the reader.
func (p *Proxy) pipe(c *pconn, src, dst net.Conn, fromClient bool) {
	q := make(chan chunk, chunkQueue)
	writerDone := make(chan struct{})
	go func() {
		defer close(writerDone)
		timer := time.NewTimer(0)
		defer timer.Stop()
		for ch := range q {
			if d := time.Until(ch.due); d > 0 {
				timer.Reset(d)
				<-timer.C
			}
			if _, err := dst.Write(ch.data); err != nil {
				// Drain so the reader never blocks on a dead writer.
				for range q {
				}
				return
			}
		}
	}()
	buf := make([]byte, 32<<10)
	for {
		n, err := src.Read(buf)
		if n > 0 {
			p.mu.Lock()
			mode, delay, halfOpen := p.mode, p.delay, c.halfOpen
			p.mu.Unlock()
			if mode == Forward && !halfOpen {
				q <- chunk{due: time.Now().Add(delay), data: append([]byte(nil), buf[:n]...)}
			}
		}
		if err != nil {
			break
		}
	}
	close(q)
	<-writerDone
	p.mu.Lock()
	halfOpen, byProxy := c.halfOpen, c.byProxy
	if fromClient && !byProxy && c.info.ClientClosed.IsZero() {
		c.info.ClientClosed = time.Now()
	}
	p.mu.Unlock()
	if !fromClient && halfOpen && !byProxy {
		// The upstream was closed on purpose: keep the client side open
		// until the client gives up or the proxy closes.
		return
	}
	// One side ended: end the other, as a TCP proxy does.
	if !fromClient {
		p.markByProxy(c)
	}
	_ = dst.Close()
	_ = src.Close()
}

// abort closes c with SO_LINGER 0, which sends a RST instead of a FIN.
func abort(c net.Conn) {
	if tc, ok := c.(*net.TCPConn); ok {
		_ = tc.SetLinger(0)
	}
	_ = c.Close()
}

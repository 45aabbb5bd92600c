//go:build unix

package rawsock

import (
	"io"
	"net"
	"time"
)

// Conn is a TCP connection whose Read and Write go through its Socket:
// the tests exercise Socket through it, as a net.Conn.
// The other methods are the *net.TCPConn's.
type Conn struct {
	*net.TCPConn
	s *Socket
}

// Wrap returns nc with raw reads and writes where that is implemented
// (TCP on unix), else nc itself.
func Wrap(nc net.Conn) net.Conn {
	tc, ok := nc.(*net.TCPConn)
	if !ok {
		return nc
	}
	s := Of(tc)
	if s == nil {
		return nc
	}
	return &Conn{TCPConn: tc, s: s}
}

// Dial connects like net.DialTimeout and wraps the connection.
func Dial(network, addr string, timeout time.Duration) (net.Conn, error) {
	nc, err := net.DialTimeout(network, addr, timeout)
	if err != nil {
		return nil, err
	}
	return Wrap(nc), nil
}

func (c *Conn) Read(p []byte) (int, error) {
	n, err := c.s.Read(p)
	if err != nil {
		err = c.opError("read", err)
	}
	return n, err
}

func (c *Conn) Write(b []byte) (int, error) {
	n, err := c.s.Write(b)
	if err != nil {
		err = c.opError("write", err)
	}
	return n, err
}

// opError dresses errors as net.Conn's: io.EOF stays bare, the rest get
// the operation and addresses. RawConn's own errors already are OpErrors.
func (c *Conn) opError(op string, err error) error {
	if _, ok := err.(*net.OpError); ok || err == io.EOF {
		return err
	}
	return &net.OpError{Op: op, Net: "tcp", Source: c.LocalAddr(), Addr: c.RemoteAddr(), Err: err}
}

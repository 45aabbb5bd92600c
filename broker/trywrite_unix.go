//go:build unix

package broker

import (
	"net"
	"syscall"
)

// rawConnOf returns the socket of a TCP connection for tryWrite, or nil
// (TLS, in-process pipes) to fall back to a deadline-bounded write.
func rawConnOf(nc net.Conn) syscall.RawConn {
	tc, ok := nc.(*net.TCPConn)
	if !ok {
		return nil
	}
	rc, err := tc.SyscallConn()
	if err != nil {
		return nil
	}
	return rc
}

// tryWrite writes as much of b as the socket takes without blocking: one
// write(2) in the common case, no deadline timers to arm and disarm, and it
// never waits for a peer that stopped reading. wouldBlock reports that the
// socket buffer filled before b was written whole.
func tryWrite(rc syscall.RawConn, b []byte) (n int, wouldBlock bool, err error) {
	cerr := rc.Write(func(fd uintptr) bool {
		for n < len(b) {
			m, e := syscall.Write(int(fd), b[n:])
			if m > 0 {
				n += m
			}
			switch e {
			case nil:
				if m <= 0 {
					err = syscall.EIO
					return true
				}
			case syscall.EINTR:
			case syscall.EAGAIN:
				wouldBlock = true
				return true
			default:
				err = e
				return true
			}
		}
		return true
	})
	if err == nil && cerr != nil {
		err = cerr
	}
	return n, wouldBlock, err
}

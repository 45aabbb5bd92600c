//go:build unix

package rawsock

import (
	"io"
	"net"
	"os"
	"syscall"
	"unsafe"
)

// Socket is a TCP connection's file descriptor, read and written with raw
// system calls.
type Socket struct {
	rc syscall.RawConn
}

// Of returns nc's socket, or nil when nc is not a TCP connection (TLS,
// in-process pipes): callers then use nc itself.
func Of(nc net.Conn) *Socket {
	tc, ok := nc.(*net.TCPConn)
	if !ok {
		return nil
	}
	rc, err := tc.SyscallConn()
	if err != nil {
		return nil
	}
	return &Socket{rc: rc}
}

// Read reads what is ready, waiting in the netpoller (and so for the read
// deadline) only when nothing is.
func (s *Socket) Read(p []byte) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	var n int
	var errno syscall.Errno
	err := s.rc.Read(func(fd uintptr) bool {
		for {
			m, _, e := syscall.RawSyscall(syscall.SYS_READ, fd, uintptr(unsafe.Pointer(&p[0])), uintptr(len(p)))
			switch e {
			case syscall.EINTR:
				continue
			case syscall.EAGAIN:
				return false
			}
			n, errno = int(m), e
			return true
		}
	})
	switch {
	case err != nil:
		return 0, err
	case errno != 0:
		return 0, os.NewSyscallError("read", errno)
	case n == 0:
		return 0, io.EOF
	}
	return n, nil
}

// Write writes all of b, waiting in the netpoller (and so for the write
// deadline) while the socket buffer is full.
func (s *Socket) Write(b []byte) (int, error) {
	n, _, err := s.write(b, true)
	return n, err
}

// TryWrite writes as much of b as the socket takes without waiting: one
// write(2) in the common case, and never a wait on a peer that stopped
// reading. wouldBlock reports that the socket buffer filled before b was
// written whole.
func (s *Socket) TryWrite(b []byte) (n int, wouldBlock bool, err error) {
	return s.write(b, false)
}

func (s *Socket) write(b []byte, wait bool) (n int, wouldBlock bool, err error) {
	var errno syscall.Errno
	cerr := s.rc.Write(func(fd uintptr) bool {
		for n < len(b) {
			m, e := rawWrite(fd, b[n:])
			switch e {
			case 0:
				n += m
			case syscall.EINTR:
			case syscall.EAGAIN:
				if wait {
					return false // park until writable
				}
				wouldBlock = true
				return true
			default:
				errno = e
				return true
			}
		}
		return true
	})
	switch {
	case cerr != nil:
		err = cerr
	case errno != 0:
		err = os.NewSyscallError("write", errno)
	}
	return n, wouldBlock, err
}

func rawWrite(fd uintptr, b []byte) (int, syscall.Errno) {
	m, _, e := syscall.RawSyscall(syscall.SYS_WRITE, fd, uintptr(unsafe.Pointer(&b[0])), uintptr(len(b)))
	if e == 0 && m == 0 {
		// write(2) of a non-empty buffer never returns 0 on a socket; do
		// not spin on it if it does.
		return 0, syscall.EIO
	}
	return int(m), e
}

//go:build !unix

package broker

import (
	"net"
	"syscall"
)

// rawConnOf returns nil where non-blocking writes are not implemented;
// inline flushes then use a deadline-bounded write.
func rawConnOf(net.Conn) syscall.RawConn { return nil }

func tryWrite(syscall.RawConn, []byte) (int, bool, error) {
	return 0, false, syscall.EINVAL
}

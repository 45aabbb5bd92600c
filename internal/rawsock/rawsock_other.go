//go:build !unix

package rawsock

import "net"

// Socket is not implemented here: Of returns nil and callers use the
// net.Conn.
type Socket struct{}

// Of returns nil: raw socket I/O is implemented on unix only.
func Of(net.Conn) *Socket { return nil }

func (*Socket) Read([]byte) (int, error)           { panic("rawsock: not supported") }
func (*Socket) Write([]byte) (int, error)          { panic("rawsock: not supported") }
func (*Socket) TryWrite([]byte) (int, bool, error) { panic("rawsock: not supported") }

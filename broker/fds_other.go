//go:build !unix

package broker

// fds is not measured on this system.
func fds() (open, max uint64, ok bool) { return 0, 0, false }

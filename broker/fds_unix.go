//go:build unix

package broker

import (
	"os"
	"syscall"
)

// fds returns the open file descriptors (from /proc) and their limit.
func fds() (open, max uint64, ok bool) {
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		return 0, 0, false
	}
	var lim syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		return 0, 0, false
	}
	return uint64(len(ents)), uint64(lim.Cur), true
}

//go:build !linux

package broker

import "errors"

// totalMemory is unknown off Linux: a relative watermark is refused there.
func totalMemory() (uint64, error) {
	return 0, errors.New("broker: the total memory of this machine is unknown here")
}

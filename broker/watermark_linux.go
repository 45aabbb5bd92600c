package broker

import "syscall"

// totalMemory is the machine's total RAM, as RabbitMQ's relative watermark
// counts it.
func totalMemory() (uint64, error) {
	var si syscall.Sysinfo_t
	if err := syscall.Sysinfo(&si); err != nil {
		return 0, err
	}
	return uint64(si.Totalram) * uint64(si.Unit), nil
}

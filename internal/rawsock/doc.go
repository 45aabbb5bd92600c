// Package rawsock reads and writes TCP sockets with raw system calls.
//
// Go's own socket I/O (net.Conn) makes each read and write a system call
// the scheduler is told about. The first such call after the process went
// idle wakes the runtime's monitor thread (sysmon), which then polls every
// 20 us until the process is idle again. A broker serving one request at a
// time goes idle between every message, so each message paid for a futex
// wake-up, a thread switch and a burst of timer sleeps on another CPU.
//
// The sockets are non-blocking, so their reads and writes never block: they
// can be raw system calls, which the scheduler does not see. When a socket
// has nothing to read or no room to write, the goroutine still parks in the
// netpoller, through syscall.RawConn, which honours deadlines and Close as
// net.Conn does.
//
// What it buys depends on the load. In the broker benchmark's one-caller
// round trips (broker and load generator sharing two CPUs) the broker's
// CPU per round trip fell by about 30% and round trips rose 2-8%. Between
// two otherwise idle processes (BenchmarkPingPong) it saves nothing: there
// the extra monitor wake-ups keep idle virtual CPUs from halting, and the
// raw version was slower. So the broker uses it; clients do not.
package rawsock

package broker

import (
	"net"
	"os"
	"strconv"
	"syscall"
	"testing"
	"time"
	"unsafe"

	amqp "github.com/rabbitmq/amqp091-go"
)

// openFiles is the number of descriptors process pid has open.
func openFiles(t *testing.T, pid int) int {
	t.Helper()
	ents, err := os.ReadDir("/proc/" + strconv.Itoa(pid) + "/fd")
	if err != nil {
		t.Fatal(err)
	}
	return len(ents)
}

// setNofile sets process pid's RLIMIT_NOFILE (prlimit(2)).
func setNofile(t *testing.T, pid int, n uint64) {
	t.Helper()
	lim := syscall.Rlimit{Cur: n, Max: n}
	if _, _, e := syscall.RawSyscall6(syscall.SYS_PRLIMIT64, uintptr(pid), syscall.RLIMIT_NOFILE, uintptr(unsafe.Pointer(&lim)), 0, 0, 0); e != 0 {
		t.Fatalf("prlimit: %v", e)
	}
}

// ensureNofile raises this process's soft RLIMIT_NOFILE to need if it is
// lower, and fails the test if the hard limit does not allow it.
func ensureNofile(t *testing.T, need uint64) {
	t.Helper()
	var lim syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		t.Fatal(err)
	}
	if lim.Cur >= need {
		return
	}
	lim.Cur = min(need, lim.Max)
	if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil || lim.Cur < need {
		t.Fatalf("need %d descriptors, RLIMIT_NOFILE allows %d (%v)", need, lim.Cur, err)
	}
}

// TestAcceptSurvivesEMFILE runs a broker process whose descriptor limit is
// just above what it uses, connects until its Accept fails with EMFILE,
// lets those clients go and expects a new client to be served: the accept
// loop waits and retries instead of ending.
func TestAcceptSurvivesEMFILE(t *testing.T) {
	cmd, url := startChild(t, t.TempDir())
	defer kill9(t, cmd)
	pid := cmd.Process.Pid
	limit := openFiles(t, pid) + 10
	setNofile(t, pid, uint64(limit))
	addr := url[len("amqp://guest:guest@") : len(url)-1]
	var held []net.Conn
	defer func() {
		for _, c := range held {
			_ = c.Close()
		}
	}()
	// The kernel completes these connections (listen backlog) whether or
	// not the broker can accept them.
	for i := 0; i < 30; i++ {
		c, err := net.DialTimeout("tcp", addr, 5*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		held = append(held, c)
	}
	deadline := time.Now().Add(10 * time.Second)
	for openFiles(t, pid) < limit {
		if time.Now().After(deadline) {
			t.Fatalf("broker has %d descriptors, never reached its limit %d", openFiles(t, pid), limit)
		}
		time.Sleep(10 * time.Millisecond)
	}
	// Out of descriptors for a while, then they come back.
	time.Sleep(200 * time.Millisecond)
	for _, c := range held {
		_ = c.Close()
	}
	held = nil
	c, err := amqp.DialConfig(url, amqp.Config{Dial: amqp.DefaultDial(15 * time.Second)})
	if err != nil {
		t.Fatalf("new client after descriptors came back: %v", err)
	}
	defer c.Close()
	ch, err := c.Channel()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := ch.QueueDeclare("", false, true, true, false, nil); err != nil {
		t.Fatal(err)
	}
}

//go:build unix

package rawsock

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"math/rand/v2"
	"net"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	if mode := os.Getenv(echoChildEnv); mode != "" {
		echoChild(mode)
		return
	}
	goleak.VerifyTestMain(m)
}

// pair returns a connected loopback TCP pair: a wrapped by Wrap, b plain.
func pair(t testing.TB) (a, b net.Conn) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	accepted := make(chan net.Conn, 1)
	go func() {
		c, _ := ln.Accept()
		accepted <- c
	}()
	a, err = Dial("tcp", ln.Addr().String(), 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	b = <-accepted
	if b == nil {
		t.Fatal("accept failed")
	}
	t.Cleanup(func() { a.Close(); b.Close() })
	if _, ok := a.(*Conn); !ok {
		t.Fatalf("Dial returned %T, want *rawsock.Conn", a)
	}
	return a, b
}

// TestBulkBothWays moves 8 MiB each way, far more than the socket buffers
// hold, so Write must wait for room and Read for data in the netpoller.
func TestBulkBothWays(t *testing.T) {
	a, b := pair(t)
	data := make([]byte, 8<<20)
	for i := range data {
		data[i] = byte(rand.Uint32())
	}
	check := func(name string, w, r net.Conn) {
		errc := make(chan error, 1)
		go func() {
			// Small, uneven writes and one big one.
			_, err := w.Write(data[:1000])
			if err == nil {
				_, err = w.Write(data[1000:])
			}
			errc <- err
		}()
		got := make([]byte, len(data))
		if _, err := io.ReadFull(r, got); err != nil {
			t.Fatalf("%s: read: %v", name, err)
		}
		if err := <-errc; err != nil {
			t.Fatalf("%s: write: %v", name, err)
		}
		if !bytes.Equal(got, data) {
			t.Fatalf("%s: data differs", name)
		}
	}
	check("raw writer", a, b)
	check("raw reader", b, a)
}

func TestReadDeadline(t *testing.T) {
	a, _ := pair(t)
	_ = a.SetReadDeadline(time.Now().Add(50 * time.Millisecond))
	n, err := a.Read(make([]byte, 10))
	if n != 0 || !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("Read = %d, %v; want 0, deadline exceeded", n, err)
	}
	var ne net.Error
	if !errors.As(err, &ne) || !ne.Timeout() {
		t.Fatalf("error %v is not a net.Error timeout", err)
	}
}

func TestWriteDeadline(t *testing.T) {
	a, _ := pair(t) // the peer never reads
	_ = a.SetWriteDeadline(time.Now().Add(100 * time.Millisecond))
	n, err := a.Write(make([]byte, 64<<20))
	if !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("Write = %d, %v; want deadline exceeded", n, err)
	}
	if n == 0 || n >= 64<<20 {
		t.Fatalf("Write wrote %d bytes; want what the buffers took", n)
	}
}

func TestEOF(t *testing.T) {
	a, b := pair(t)
	_, _ = b.Write([]byte("last"))
	b.Close()
	got, err := io.ReadAll(a)
	if err != nil || string(got) != "last" {
		t.Fatalf("ReadAll = %q, %v; want \"last\", nil", got, err)
	}
	if n, err := a.Read(make([]byte, 4)); n != 0 || err != io.EOF {
		t.Fatalf("Read after EOF = %d, %v; want io.EOF", n, err)
	}
}

// TestCloseWakesReader: Close unblocks a reader parked in the netpoller,
// with net.ErrClosed as net.Conn reports it.
func TestCloseWakesReader(t *testing.T) {
	a, _ := pair(t)
	errc := make(chan error, 1)
	go func() {
		_, err := a.Read(make([]byte, 10))
		errc <- err
	}()
	time.Sleep(20 * time.Millisecond)
	a.Close()
	select {
	case err := <-errc:
		if !errors.Is(err, net.ErrClosed) {
			t.Fatalf("Read after Close: %v; want net.ErrClosed", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Close did not wake the reader")
	}
}

func TestWriteToClosedPeer(t *testing.T) {
	a, b := pair(t)
	b.Close()
	var err error
	for i := 0; i < 100 && err == nil; i++ {
		_, err = a.Write(make([]byte, 64<<10))
		time.Sleep(time.Millisecond)
	}
	if err == nil {
		t.Fatal("writes to a closed peer kept succeeding")
	}
	var oe *net.OpError
	if !errors.As(err, &oe) || oe.Op != "write" {
		t.Fatalf("error %v is not a write *net.OpError", err)
	}
}

// TestTryWriteNeverWaits: against a peer that does not read, TryWrite
// returns once the socket buffer is full instead of waiting.
func TestTryWriteNeverWaits(t *testing.T) {
	a, _ := pair(t)
	s := a.(*Conn).s
	buf := make([]byte, 64<<20)
	done := make(chan struct{})
	var n int
	var blocked bool
	var err error
	go func() {
		n, blocked, err = s.TryWrite(buf)
		close(done)
	}()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("TryWrite waited for the peer")
	}
	if err != nil || !blocked || n == 0 || n >= len(buf) {
		t.Fatalf("TryWrite = %d, %v, %v; want a partial write and wouldBlock", n, blocked, err)
	}
	n, blocked, err = s.TryWrite([]byte("x"))
	if err != nil || !blocked || n != 0 {
		t.Fatalf("TryWrite on a full socket = %d, %v, %v; want 0, wouldBlock", n, blocked, err)
	}
}

func TestWrapLeavesOtherConns(t *testing.T) {
	p1, p2 := net.Pipe()
	defer p1.Close()
	defer p2.Close()
	if Wrap(p1) != p1 {
		t.Fatal("Wrap changed a non-TCP conn")
	}
	if Of(p1) != nil {
		t.Fatal("Of returned a socket for a pipe")
	}
}

// echoChildEnv makes the test binary an echo server (see TestMain).
const echoChildEnv = "RAWSOCK_TEST_ECHO_CHILD"

// echoChild serves one connection, echoing 100-byte messages, in a process
// of its own so that it goes idle between messages as a real peer does.
func echoChild(mode string) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		os.Exit(1)
	}
	os.Stdout.WriteString(ln.Addr().String() + "\n")
	c, err := ln.Accept()
	if err != nil {
		os.Exit(1)
	}
	if mode == "rawsock" {
		c = Wrap(c)
	}
	buf := make([]byte, 100)
	for {
		if _, err := io.ReadFull(c, buf); err != nil {
			os.Exit(0)
		}
		if _, err := c.Write(buf); err != nil {
			os.Exit(0)
		}
	}
}

// cpuTime is the CPU time process pid used so far (clock-tick resolution).
func cpuTime(pid int) time.Duration {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return 0
	}
	// Fields after the parenthesised command name; utime and stime are
	// the 14th and 15th of the whole line.
	f := strings.Fields(string(b[bytes.LastIndexByte(b, ')')+1:]))
	if len(f) < 13 {
		return 0
	}
	ut, _ := strconv.Atoi(f[11])
	st, _ := strconv.Atoi(f[12])
	return time.Duration(ut+st) * 10 * time.Millisecond
}

// BenchmarkPingPong is one request in flight to an echo server in another
// process over loopback TCP, 100 bytes each way, with net.Conn's I/O on
// both ends and with raw system calls on both ends. cpu-ns/op is the CPU
// both processes spent per round trip (Linux only; 0 elsewhere).
func BenchmarkPingPong(b *testing.B) {
	for _, mode := range []string{"net", "rawsock"} {
		b.Run(mode, func(b *testing.B) {
			cmd := exec.Command(os.Args[0], "-test.run=^$")
			cmd.Env = append(os.Environ(), echoChildEnv+"="+mode)
			out, err := cmd.StdoutPipe()
			if err != nil {
				b.Fatal(err)
			}
			if err := cmd.Start(); err != nil {
				b.Fatal(err)
			}
			defer cmd.Wait()
			addr, err := bufio.NewReader(out).ReadString('\n')
			if err != nil {
				b.Fatal(err)
			}
			c, err := net.Dial("tcp", strings.TrimSpace(addr))
			if err != nil {
				b.Fatal(err)
			}
			if mode == "rawsock" {
				c = Wrap(c)
			}
			defer c.Close()
			buf := make([]byte, 100)
			cpu0 := cpuTime(os.Getpid()) + cpuTime(cmd.Process.Pid)
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				if _, err := c.Write(buf); err != nil {
					b.Fatal(err)
				}
				if _, err := io.ReadFull(c, buf); err != nil {
					b.Fatal(err)
				}
			}
			b.StopTimer()
			cpu := cpuTime(os.Getpid()) + cpuTime(cmd.Process.Pid) - cpu0
			b.ReportMetric(float64(cpu.Nanoseconds())/float64(b.N), "cpu-ns/op")
		})
	}
}

package interop

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/oslogo/oslogo/driver/rabbit"
)

// buildCLI builds the oslogo binary into a temporary directory.
func buildCLI(t *testing.T) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "oslogo")
	cmd := exec.Command("go", "build", "-o", bin, "github.com/oslogo/oslogo/cmd/oslogo")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	return bin
}

// TestCLIAcceptance is the acceptance check with the real binary:
// `oslogo call` against a Python oslo.messaging server prints 5, and a
// Python client calling `oslogo serve` gets 5 from add and a ValueError
// from fail.
func TestCLIAcceptance(t *testing.T) {
	bin := buildCLI(t)
	url := brokerURL()

	t.Run("call python server", func(t *testing.T) {
		topic := "cli_" + rabbit.NewMessageID()[:8]
		startPy(t, true, "server.py", url, topic, "s1")
		ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
		defer cancel()
		var stdout, stderr bytes.Buffer
		cmd := exec.CommandContext(ctx, bin, "call", "--url", url, "--topic", topic, "add", "a=2", "b=3")
		cmd.Stdout, cmd.Stderr = &stdout, &stderr
		if err := cmd.Run(); err != nil {
			t.Fatalf("oslogo call: %v\nstderr: %s", err, stderr.String())
		}
		if got := strings.TrimSpace(stdout.String()); got != "5" {
			t.Fatalf("oslogo call add a=2 b=3 printed %q, want 5 (stderr: %s)", got, stderr.String())
		}

		// A remote exception: exit status 1 and the Python class on stderr.
		stdout.Reset()
		stderr.Reset()
		cmd = exec.CommandContext(ctx, bin, "call", "--url", url, "--topic", topic, "fail", "msg=boom")
		cmd.Stdout, cmd.Stderr = &stdout, &stderr
		err := cmd.Run()
		var ee *exec.ExitError
		if !errors.As(err, &ee) || ee.ExitCode() != 1 {
			t.Fatalf("oslogo call fail: want exit status 1, got %v (stdout %q)", err, stdout.String())
		}
		if !strings.Contains(stderr.String(), "ValueError") || !strings.Contains(stderr.String(), "boom") {
			t.Fatalf("oslogo call fail: stderr %q does not name the ValueError", stderr.String())
		}
	})

	// A broker that refuses connections, with --retry 0: exit status 3
	// (cannot connect) at once, not after the timeout, and one line on
	// stderr naming the refused address and the URL with its password
	// hidden.
	t.Run("unreachable broker", func(t *testing.T) {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		addr := ln.Addr().String()
		_ = ln.Close()
		for _, verb := range []string{"call", "cast"} {
			ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
			var stdout, stderr bytes.Buffer
			cmd := exec.CommandContext(ctx, bin, verb, "--url", "rabbit://guest:guest@"+addr+"/", "--topic", "T", "--retry", "0", "--timeout", "120s", "add", "a=2", "b=3")
			cmd.Stdout, cmd.Stderr = &stdout, &stderr
			err := cmd.Run()
			cancel()
			var ee *exec.ExitError
			if !errors.As(err, &ee) || ee.ExitCode() != 3 {
				t.Fatalf("oslogo %s to a closed port: want exit status 3, got %v (stderr %q)", verb, err, stderr.String())
			}
			lines := strings.Split(strings.TrimSpace(stderr.String()), "\n")
			if len(lines) != 1 || !strings.Contains(lines[0], addr) || !strings.Contains(lines[0], "connection refused") ||
				!strings.Contains(lines[0], "(via rabbit://guest:xxxxx@"+addr+"/)") || strings.Contains(lines[0], "guest:guest") {
				t.Fatalf("oslogo %s to a closed port: stderr %q, want one line naming %s (connection refused)", verb, stderr.String(), addr)
			}
			if stdout.Len() != 0 {
				t.Fatalf("oslogo %s to a closed port printed %q", verb, stdout.String())
			}
		}
	})

	t.Run("python client to serve", func(t *testing.T) {
		topic := "cli_" + rabbit.NewMessageID()[:8]
		cmd := exec.Command(bin, "serve", "--url", url, "--topic", topic, "--server", "gosrv")
		var stderr bytes.Buffer
		cmd.Stderr = &stderr
		stdout, err := cmd.StdoutPipe()
		if err != nil {
			t.Fatal(err)
		}
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		exited := make(chan error, 1)
		serving := make(chan string, 1)
		go func() {
			sc := bufio.NewScanner(stdout)
			for sc.Scan() {
				if strings.HasPrefix(sc.Text(), "serving topic") {
					select {
					case serving <- sc.Text():
					default:
					}
				}
			}
			exited <- cmd.Wait()
		}()
		stopped := false
		stop := func() error {
			if stopped {
				return nil
			}
			stopped = true
			_ = cmd.Process.Signal(os.Interrupt)
			select {
			case err := <-exited:
				return err
			case <-time.After(60 * time.Second):
				_ = cmd.Process.Signal(syscall.SIGKILL)
				<-exited
				return errors.New("oslogo serve did not stop on SIGINT")
			}
		}
		t.Cleanup(func() { _ = stop() })
		select {
		case <-serving:
		case err := <-exited:
			stopped = true
			t.Fatalf("oslogo serve exited early: %v\nstderr: %s", err, stderr.String())
		case <-time.After(60 * time.Second):
			t.Fatalf("oslogo serve never said it was serving; stderr: %s", stderr.String())
		}

		py := startPy(t, false, "cli_client.py", url, topic)
		res := py.next(t, 120*time.Second)
		add, _ := res["add"].(map[string]any)
		if add["ok"] != true || add["value"] != float64(5) {
			t.Fatalf("python add(a=2, b=3) on oslogo serve: %v", add)
		}
		fail, _ := res["fail"].(map[string]any)
		e, _ := fail["error"].(map[string]any)
		if fail["ok"] != false || e["type"] != "ValueError" || e["is_value_error"] != true || !strings.Contains(e["str"].(string), "boom from python") {
			t.Fatalf("python fail() on oslogo serve: want ValueError, got %v", fail)
		}
		if err := stop(); err != nil {
			t.Fatalf("oslogo serve: %v\nstderr: %s", err, stderr.String())
		}
	})
}

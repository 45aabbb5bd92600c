package broker

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strings"
	"testing"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"
)

func newDurable(t *testing.T, dir string) *Server {
	t.Helper()
	opts := DefaultOptions()
	opts.AMQPAddr = "127.0.0.1:0"
	opts.DataDir = dir
	s, err := New(opts)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func shutdown(t *testing.T, s *Server) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := s.Shutdown(ctx); err != nil {
		t.Errorf("shutdown: %v", err)
	}
}

// TestDataDirLockedInProcess: a second broker on a data directory in use
// refuses to start, naming the holder's pid, and the first broker keeps
// its data; once the first shuts down the directory is free.
func TestDataDirLockedInProcess(t *testing.T) {
	dir := t.TempDir()
	first := newDurable(t, dir)
	if err := first.Start(); err != nil {
		t.Fatal(err)
	}
	c := dial(t, fmt.Sprintf("amqp://guest:guest@%s/", first.Addr()))
	ch := openCh(t, c)
	declareDurable(t, ch, "q")
	publishConfirmed(t, ch, "q", "kept")

	second := newDurable(t, dir)
	err := second.Start()
	if err == nil {
		shutdown(t, second)
		shutdown(t, first)
		t.Fatal("second broker started on a data directory in use")
	}
	if !errors.Is(err, ErrDataDirLocked) || !strings.Contains(err.Error(), fmt.Sprintf("pid %d", os.Getpid())) {
		t.Fatalf("error %q is not ErrDataDirLocked naming the holder's pid %d", err, os.Getpid())
	}
	shutdown(t, second)
	// The first broker still works and its data is intact.
	publishConfirmed(t, ch, "q", "after")
	_ = c.Close()
	shutdown(t, first)
	withDurable(t, dir, func(c *amqp.Connection, _ *amqp.Channel) {
		if got := listBodies(t, c, "q"); fmt.Sprint(got) != "[kept after]" {
			t.Fatalf("queue holds %q after the second broker's attempt", got)
		}
	})
}

// TestDataDirLockedAcrossProcesses: a broker process holds the directory;
// a broker in this process refuses it, naming that process's pid. After
// the holder is killed with SIGKILL the lock is gone with it.
func TestDataDirLockedAcrossProcesses(t *testing.T) {
	dir := t.TempDir()
	cmd, url := startChild(t, dir)
	c := dialChild(t, cmd, url)
	ch, err := c.Channel()
	if err == nil {
		_, err = ch.QueueDeclare("q", true, false, false, false, nil)
	}
	if err == nil {
		err = ch.Confirm(false)
	}
	if err != nil {
		kill9(t, cmd)
		t.Fatal(err)
	}
	publishConfirmed(t, ch, "q", "child")
	s := newDurable(t, dir)
	err = s.Start()
	if err == nil {
		shutdown(t, s)
		kill9(t, cmd)
		t.Fatal("broker started on a data directory another process uses")
	}
	shutdown(t, s)
	if !strings.Contains(err.Error(), fmt.Sprintf("pid %d", cmd.Process.Pid)) {
		kill9(t, cmd)
		t.Fatalf("error %q does not name the holder's pid %d", err, cmd.Process.Pid)
	}
	kill9(t, cmd)
	_ = c.Close()
	withDurable(t, dir, func(c *amqp.Connection, _ *amqp.Channel) {
		if got := listBodies(t, c, "q"); fmt.Sprint(got) != "[child]" {
			t.Fatalf("queue holds %q", got)
		}
	})
}

package main

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// lockedBuffer is a child process's output read while it runs.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// TestCtlSeed001Flow is seed 001's set-up with oslogo in RabbitMQ's place:
// `oslogo broker`, then `oslogo ctl add_user openstack stack2018` and
// `oslogo ctl set_permissions openstack ".*" ".*" ".*"` (the API's URL from
// OSLOGO_MGMT_URL), then the seed's oslo_message_server.py and
// oslo_message_client.py (Debian's oslo.messaging 14) with a my.conf whose
// url is rabbit://openstack:stack2018@<the broker>/: the client's two calls
// return 5.
func TestCtlSeed001Flow(t *testing.T) {
	out := background(t, "broker", "--amqp", "127.0.0.1:0", "--http", "127.0.0.1:0")
	waitOutput(t, out, "management API on http://")
	amqpAddr := regexp.MustCompile(`listening on amqp://(\S+)`).FindStringSubmatch(out.String())[1]
	api := regexp.MustCompile(`management API on (http://\S+)/api/`).FindStringSubmatch(out.String())[1]
	t.Setenv(envMgmtURL, api)

	if code, o, errs := run(t, "ctl", "add_user", "openstack", "stack2018"); code != 0 || !strings.HasPrefix(o, "Adding user \"openstack\" ...\n") {
		t.Fatalf("add_user: exit %d %q %q", code, o, errs)
	}
	if code, o, errs := run(t, "ctl", "set_permissions", "openstack", ".*", ".*", ".*"); code != 0 {
		t.Fatalf("set_permissions: exit %d %q %q", code, o, errs)
	}

	seed, err := filepath.Abs("testdata/seed001")
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	conf := "[DEFAULT]\nurl = 'rabbit://openstack:stack2018@" + amqpAddr + "/'\n"
	if err := os.WriteFile(filepath.Join(dir, "my.conf"), []byte(conf), 0o644); err != nil {
		t.Fatal(err)
	}

	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	server := exec.CommandContext(ctx, "/usr/bin/python3", "-u", filepath.Join(seed, "oslo_message_server.py"))
	server.Dir = dir
	var srvOut lockedBuffer
	server.Stdout, server.Stderr = &srvOut, &srvOut
	if err := server.Start(); err != nil {
		t.Fatal(err)
	}
	serverDone := make(chan error, 1)
	go func() { serverDone <- server.Wait() }()
	defer func() {
		_ = server.Process.Signal(syscall.SIGINT)
		select {
		case <-serverDone:
		case <-time.After(20 * time.Second):
			_ = server.Process.Kill()
			<-serverDone
		}
		if !strings.Contains(srvOut.String(), "revice message") {
			t.Errorf("server output: %s", srvOut.String())
		}
	}()
	deadline := time.Now().Add(60 * time.Second)
	for !strings.Contains(srvOut.String(), "The Server!") {
		if time.Now().After(deadline) {
			t.Fatalf("the server did not start: %s", srvOut.String())
		}
		select {
		case err := <-serverDone:
			serverDone <- err
			t.Fatalf("the server exited: %v: %s", err, srvOut.String())
		case <-time.After(50 * time.Millisecond):
		}
	}
	client := exec.CommandContext(ctx, "/usr/bin/python3", "-u", filepath.Join(seed, "oslo_message_client.py"))
	client.Dir = dir
	got, err := client.CombinedOutput()
	if err != nil || !strings.Contains(string(got), "result : 5\n") || !strings.Contains(string(got), "result_two : 5\n") {
		t.Fatalf("client: %v\n%s\nserver: %s", err, got, srvOut.String())
	}
}

package broker

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"
)

// mountSmallTmpfs mounts a tmpfs of size bytes for the test and unmounts
// it at the end; it skips the test when this process may not mount (not
// root, or no mount permission in this container).
func mountSmallTmpfs(t *testing.T, size int) string {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("mounting a small tmpfs needs root")
	}
	mnt := filepath.Join(t.TempDir(), "fs")
	if err := os.Mkdir(mnt, 0o750); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Mount("tmpfs", mnt, "tmpfs", 0, fmt.Sprintf("size=%d", size)); err != nil {
		t.Skipf("cannot mount a tmpfs here: %v", err)
	}
	t.Cleanup(func() {
		if err := syscall.Unmount(mnt, 0); err != nil {
			t.Errorf("unmount %s: %v", mnt, err)
			_ = syscall.Unmount(mnt, syscall.MNT_DETACH)
		}
	})
	return mnt
}

// TestStoreFullFilesystem fills a real 512 KiB tmpfs under the broker:
// the publish whose record does not fit is nacked, later ones are nacked
// while the disk stays full, a durable declaration fails with 541, and
// once space is freed publishes are confirmed again. After a restart on
// the same file system every confirmed message is back and the segment
// holds only intact records.
func TestStoreFullFilesystem(t *testing.T) {
	mnt := mountSmallTmpfs(t, 512<<10)
	dir := filepath.Join(mnt, "data")
	// Ballast to free later; the rest of the space goes to messages.
	ballast := filepath.Join(mnt, "ballast")
	if err := os.WriteFile(ballast, make([]byte, 128<<10), 0o640); err != nil {
		t.Fatal(err)
	}
	opts := DefaultOptions()
	opts.AMQPAddr = "127.0.0.1:0"
	opts.DataDir = dir
	s, err := New(opts)
	if err != nil {
		t.Fatal(err)
	}
	s.storeIO.retryInterval = 20 * time.Millisecond
	if err := s.Start(); err != nil {
		t.Fatal(err)
	}
	stopped := false
	stop := func() {
		if !stopped {
			stopped = true
			shutdown(t, s)
		}
	}
	t.Cleanup(stop)
	url := fmt.Sprintf("amqp://guest:guest@%s/", s.Addr())
	c := dial(t, url)
	ch := openCh(t, c)
	declareDurable(t, ch, "q")
	body := strings.Repeat("x", 10<<10)
	var acked []string
	nacks := 0
	for i := 0; nacks < 3; i++ {
		if i > 60 {
			t.Fatalf("%d messages of 10 KiB confirmed on a 512 KiB file system", len(acked))
		}
		b := fmt.Sprintf("%04d%s", i, body)
		if publishWait(t, ch, "q", b) {
			if nacks > 0 {
				t.Fatalf("publish %d confirmed on a full disk after a nack", i)
			}
			acked = append(acked, b)
		} else {
			nacks++
		}
	}
	t.Logf("%d messages of 10 KiB confirmed before the disk was full", len(acked))
	// The definitions cannot be rewritten either, once the last pages
	// are taken too.
	filler := filepath.Join(mnt, "filler")
	fillUp(t, filler)
	dc := dial(t, url)
	dch := openCh(t, dc)
	_, err = dch.QueueDeclare("q2", true, false, false, false, nil)
	var ae *amqp.Error
	if !asErr(err, &ae) || ae.Code != amqp.InternalError {
		t.Fatalf("durable declare on a full disk: %v, want 541 INTERNAL_ERROR", err)
	}
	for _, f := range []string{ballast, filler} {
		if err := os.Remove(f); err != nil {
			t.Fatal(err)
		}
	}
	deadline := time.Now().Add(10 * time.Second)
	for i := 0; ; i++ {
		b := fmt.Sprintf("freed-%d", i)
		if publishWait(t, ch, "q", b) {
			acked = append(acked, b)
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("publishes still refused after space was freed")
		}
		time.Sleep(10 * time.Millisecond)
	}
	_ = c.Close()
	stop()
	checkSegmentsClean(t, dir)
	s2, err := New(opts)
	if err != nil {
		t.Fatal(err)
	}
	if err := s2.Start(); err != nil {
		t.Fatal(err)
	}
	defer shutdown(t, s2)
	c2 := dial(t, fmt.Sprintf("amqp://guest:guest@%s/", s2.Addr()))
	got := map[string]bool{}
	for _, b := range listBodies(t, c2, "q") {
		got[b] = true
	}
	for _, b := range acked {
		if !got[b] {
			t.Fatalf("confirmed message %.8q... lost (%d recovered)", b, len(got))
		}
	}
}

// fillUp appends to path until the file system is full and stays full: a
// round that finds no space left ends it (the broker's retries give back
// what they took for a failed write).
func fillUp(t *testing.T, path string) {
	t.Helper()
	f, err := os.OpenFile(path, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o640)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	page := make([]byte, 4096)
	for round := 0; round < 50; round++ {
		wrote := 0
		for {
			n, err := f.Write(page)
			wrote += n
			if errors.Is(err, syscall.ENOSPC) {
				break
			}
			if err != nil {
				t.Fatal(err)
			}
		}
		if wrote == 0 {
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatal("the file system never stayed full")
}

package broker

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"
)

// faultPlan decides what each segment write and fsync of a broker under
// test does. The zero value lets everything through.
type faultPlan struct {
	mu sync.Mutex
	// failWrites: the next this many writes write half their bytes and
	// fail with ENOSPC, as on a full disk; -1 fails every write.
	failWrites int
	// failSyncs: the next this many fsyncs fail with EIO.
	failSyncs int
	// failTruncates: truncating a segment fails with EIO.
	failTruncates bool
	// hold: each fsync hands a release channel to held and waits for it
	// to be closed before it runs.
	hold bool
	held chan chan struct{}
	// quit ends every wait when the broker stops.
	quit chan struct{}
	// writes and syncs count what reached the files.
	writes, syncs int
}

type faultyFile struct {
	segmentFile
	plan *faultPlan
}

func (f *faultyFile) Write(p []byte) (int, error) {
	pl := f.plan
	pl.mu.Lock()
	fail := pl.failWrites != 0
	if pl.failWrites > 0 {
		pl.failWrites--
	}
	if !fail {
		pl.writes++
	}
	pl.mu.Unlock()
	if !fail {
		return f.segmentFile.Write(p)
	}
	n, err := f.segmentFile.Write(p[:len(p)/2])
	if err == nil {
		err = syscall.ENOSPC
	}
	return n, err
}

func (f *faultyFile) Sync() error {
	pl := f.plan
	pl.mu.Lock()
	fail := pl.failSyncs > 0
	if fail {
		pl.failSyncs--
	} else {
		pl.syncs++
	}
	hold, held := pl.hold, pl.held
	pl.mu.Unlock()
	if hold {
		rel := make(chan struct{})
		select {
		case held <- rel:
		case <-pl.quit:
			return errors.New("test: held fsync never collected")
		}
		select {
		case <-rel:
		case <-pl.quit:
			return errors.New("test: held fsync never released")
		}
	}
	if fail {
		return syscall.EIO
	}
	return f.segmentFile.Sync()
}

func (f *faultyFile) Truncate(size int64) error {
	f.plan.mu.Lock()
	fail := f.plan.failTruncates
	f.plan.mu.Unlock()
	if fail {
		return syscall.EIO
	}
	return f.segmentFile.Truncate(size)
}

func (pl *faultPlan) set(f func(pl *faultPlan)) {
	pl.mu.Lock()
	defer pl.mu.Unlock()
	f(pl)
}

// faultyBroker is a broker on dir whose segment files go through plan.
type faultyBroker struct {
	s    *Server
	url  string
	plan *faultPlan
	stop func()
}

// startFaulty starts a broker on dir with a fault plan; io adds other
// hooks (nil for none). The broker stops at the end of the test, or
// earlier through stop.
func startFaulty(t *testing.T, dir string, io *storeIO) *faultyBroker {
	t.Helper()
	opts := DefaultOptions()
	opts.AMQPAddr = "127.0.0.1:0"
	opts.DataDir = dir
	if os.Getenv("STORE_TEST_LOG") != "" {
		opts.Logger = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	s, err := New(opts)
	if err != nil {
		t.Fatal(err)
	}
	plan := &faultPlan{held: make(chan chan struct{}), quit: make(chan struct{})}
	if io != nil {
		s.storeIO = *io
	}
	s.storeIO.wrapSegment = func(_ string, f segmentFile) segmentFile { return &faultyFile{segmentFile: f, plan: plan} }
	s.storeIO.retryInterval = 20 * time.Millisecond
	if err := s.Start(); err != nil {
		t.Fatal(err)
	}
	b := &faultyBroker{s: s, url: fmt.Sprintf("amqp://guest:guest@%s/", s.Addr()), plan: plan}
	done := false
	b.stop = func() {
		if done {
			return
		}
		done = true
		plan.set(func(pl *faultPlan) { pl.failWrites, pl.failSyncs, pl.failTruncates, pl.hold = 0, 0, false, false })
		close(plan.quit)
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := s.Shutdown(ctx); err != nil {
			t.Errorf("shutdown: %v", err)
		}
	}
	t.Cleanup(b.stop)
	return b
}

// publishWait publishes one persistent message to queue and returns
// whether it was confirmed with basic.ack (false: basic.nack).
func publishWait(t *testing.T, ch *amqp.Channel, queue, body string) bool {
	t.Helper()
	dc, err := ch.PublishWithDeferredConfirm("", queue, false, false, amqp.Publishing{DeliveryMode: amqp.Persistent, Body: []byte(body)})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	ok, err := dc.WaitContext(ctx)
	if err != nil {
		t.Fatalf("publish %q: no confirm: %v", body, err)
	}
	return ok
}

// checkSegmentsClean fails unless every segment in dir is a sequence of
// intact records up to its end.
func checkSegmentsClean(t *testing.T, dir string) {
	t.Helper()
	files, err := filepath.Glob(filepath.Join(dir, "msgs", "*.seg"))
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range files {
		data, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		off := 0
		for {
			p, next, status := parseRecord(data, off)
			if status == recEnd {
				break
			}
			if status != recOK {
				t.Fatalf("%s: unreadable record at offset %d of %d", filepath.Base(f), off, len(data))
			}
			if _, _, ok := decodeRecord(p); !ok {
				t.Fatalf("%s: undecodable record at offset %d", filepath.Base(f), off)
			}
			off = next
		}
	}
}

// TestStoreShortWriteNacksAndCutsBack: a segment write that writes half
// its bytes (a full disk) must not be confirmed, and must not leave a torn
// record in the segment with later records written after it. The
// publisher waiting on it gets basic.nack; publishes are refused (nacked)
// until a retry of the write succeeds, then confirmed again; after a
// restart every confirmed message is back, an acknowledgement made after
// the failure stays made, and the segments hold only intact records.
func TestStoreShortWriteNacksAndCutsBack(t *testing.T) {
	dir := t.TempDir()
	b := startFaulty(t, dir, nil)
	c := dial(t, b.url)
	ch := openCh(t, c)
	declareDurable(t, ch, "q")
	acked := map[string]bool{}
	for i := range 5 {
		body := fmt.Sprintf("before-%d", i)
		if !publishWait(t, ch, "q", body) {
			t.Fatalf("%s nacked with no fault", body)
		}
		acked[body] = true
	}
	// Three writes in a row fail: the first publish's batch and two
	// retries.
	b.plan.set(func(pl *faultPlan) { pl.failWrites = 3 })
	if publishWait(t, ch, "q", "failed") {
		t.Fatal("publish confirmed although its write failed")
	}
	// While the store is failing, publishes are nacked; once a retry has
	// written the pending records, they are confirmed again.
	nacked := 0
	deadline := time.Now().Add(10 * time.Second)
	for i := 0; ; i++ {
		body := fmt.Sprintf("after-%d", i)
		if publishWait(t, ch, "q", body) {
			acked[body] = true
			break
		}
		nacked++
		if time.Now().After(deadline) {
			t.Fatal("store never recovered after the write faults ended")
		}
		time.Sleep(5 * time.Millisecond)
	}
	for i := range 5 {
		body := fmt.Sprintf("later-%d", i)
		if !publishWait(t, ch, "q", body) {
			t.Fatalf("%s nacked after recovery", body)
		}
		acked[body] = true
	}
	// Consume before-0 for good: its remove record must stick.
	m, ok, err := ch.Get("q", false)
	if err != nil || !ok || string(m.Body) != "before-0" {
		t.Fatalf("get: %q %v %v", m.Body, ok, err)
	}
	if err := m.Ack(false); err != nil {
		t.Fatal(err)
	}
	delete(acked, "before-0")
	if _, err := ch.QueueDeclarePassive("q", true, false, false, false, nil); err != nil {
		t.Fatal(err)
	}
	t.Logf("%d publishes nacked while the store was failing", nacked)
	_ = c.Close()
	b.stop()
	checkSegmentsClean(t, dir)

	withDurable(t, dir, func(c *amqp.Connection, _ *amqp.Channel) {
		got := listBodies(t, c, "q")
		seen := map[string]bool{}
		for _, body := range got {
			if seen[body] {
				t.Fatalf("%s recovered twice", body)
			}
			seen[body] = true
			if body == "before-0" {
				t.Fatal("before-0 was acknowledged but came back")
			}
		}
		for body := range acked {
			if !seen[body] {
				t.Fatalf("confirmed %s lost; recovered %q", body, got)
			}
		}
	})
}

// TestStoreFsyncFailureNacks: an fsync that fails is not a confirm. The
// waiting publisher gets basic.nack, a transaction commit fails with
// 541 INTERNAL_ERROR instead of commit-ok, and once fsync works again
// publishes are confirmed and survive a restart.
func TestStoreFsyncFailureNacks(t *testing.T) {
	dir := t.TempDir()
	b := startFaulty(t, dir, nil)
	c := dial(t, b.url)
	ch := openCh(t, c)
	declareDurable(t, ch, "q")
	b.plan.set(func(pl *faultPlan) { pl.failSyncs = 1 })
	if publishWait(t, ch, "q", "unsynced") {
		t.Fatal("publish confirmed although its fsync failed")
	}
	deadline := time.Now().Add(10 * time.Second)
	for !publishWait(t, ch, "q", "synced") {
		if time.Now().After(deadline) {
			t.Fatal("store never recovered after the fsync fault")
		}
		time.Sleep(5 * time.Millisecond)
	}
	// A transaction whose commit cannot be fsynced is not committed.
	tx := openCh(t, c)
	if err := tx.Tx(); err != nil {
		t.Fatal(err)
	}
	publish(t, tx, "", "q", amqp.Publishing{DeliveryMode: amqp.Persistent, Body: []byte("in-tx")})
	b.plan.set(func(pl *faultPlan) { pl.failSyncs = 1 })
	err := tx.TxCommit()
	var ae *amqp.Error
	if !asErr(err, &ae) || ae.Code != amqp.InternalError {
		t.Fatalf("tx.commit with a failing fsync: %v, want 541 INTERNAL_ERROR", err)
	}
	_ = c.Close()
	b.stop()
	checkSegmentsClean(t, dir)
	withDurable(t, dir, func(c *amqp.Connection, _ *amqp.Channel) {
		if got := listBodies(t, c, "q"); !strings.Contains(fmt.Sprint(got), "synced") {
			t.Fatalf("confirmed message lost: queue holds %q", got)
		}
	})
}

// TestStoreRefusesPublishesWhileFailing: while writes keep failing,
// persistent publishes to durable queues are refused: basic.nack in
// confirm mode, connection error 506 RESOURCE_ERROR without confirms (the
// publisher is told, the message is not kept). Transient messages still
// flow. When the disk recovers, publishes are confirmed again.
func TestStoreRefusesPublishesWhileFailing(t *testing.T) {
	dir := t.TempDir()
	b := startFaulty(t, dir, nil)
	c := dial(t, b.url)
	ch := openCh(t, c)
	declareDurable(t, ch, "q")
	b.plan.set(func(pl *faultPlan) { pl.failWrites = -1 })
	if publishWait(t, ch, "q", "first") {
		t.Fatal("publish confirmed although every write fails")
	}
	for i := range 3 {
		if publishWait(t, ch, "q", fmt.Sprintf("refused-%d", i)) {
			t.Fatal("publish confirmed while every write fails")
		}
	}
	// Transient messages do not need the disk.
	dc, err := ch.PublishWithDeferredConfirm("", "q", false, false, amqp.Publishing{Body: []byte("transient")})
	if err != nil {
		t.Fatal(err)
	}
	if ok, err := dc.WaitContext(context.Background()); err != nil || !ok {
		t.Fatalf("transient publish refused: %v %v", ok, err)
	}
	// RESOURCE_ERROR is a connection error in AMQP 0-9-1: a connection of
	// its own.
	pc := dial(t, b.url)
	closed := pc.NotifyClose(make(chan *amqp.Error, 1))
	publish(t, openCh(t, pc), "", "q", amqp.Publishing{DeliveryMode: amqp.Persistent, Body: []byte("unconfirmed")})
	select {
	case e := <-closed:
		if e == nil || e.Code != amqp.ResourceError {
			t.Fatalf("connection closed with %v, want 506 RESOURCE_ERROR", e)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("persistent publish without confirms accepted while the store cannot write")
	}
	b.plan.set(func(pl *faultPlan) { pl.failWrites = 0 })
	deadline := time.Now().Add(10 * time.Second)
	for !publishWait(t, ch, "q", "healed") {
		if time.Now().After(deadline) {
			t.Fatal("store never recovered")
		}
		time.Sleep(5 * time.Millisecond)
	}
	got := listBodies(t, c, "q")
	for _, body := range got {
		if strings.HasPrefix(body, "refused-") || body == "unconfirmed" {
			t.Fatalf("refused message %s was queued: %q", body, got)
		}
	}
}

// TestDefinitionsWriteFailureFailsDeclare: a durable declaration whose
// definitions.json write fails is answered with 541 INTERNAL_ERROR, not
// declare-ok. Declaring it again retries the write; once that succeeds the
// declaration survives a restart.
func TestDefinitionsWriteFailureFailsDeclare(t *testing.T) {
	dir := t.TempDir()
	var mu sync.Mutex
	failing := false
	io := &storeIO{writeDefinitions: func(path string, data []byte) error {
		mu.Lock()
		f := failing
		mu.Unlock()
		if f {
			return syscall.ENOSPC
		}
		return writeFileAtomic(path, data)
	}}
	b := startFaulty(t, dir, io)
	c := dial(t, b.url)
	ch := openCh(t, c)
	mu.Lock()
	failing = true
	mu.Unlock()
	_, err := ch.QueueDeclare("dq", true, false, false, false, nil)
	var ae *amqp.Error
	if !asErr(err, &ae) || ae.Code != amqp.InternalError {
		t.Fatalf("durable declare with a failing definitions write: %v, want 541 INTERNAL_ERROR", err)
	}
	// The same declaration again, still failing: still an error, although
	// the queue now exists in memory.
	c = dial(t, b.url)
	ch = openCh(t, c)
	_, err = ch.QueueDeclare("dq", true, false, false, false, nil)
	if !asErr(err, &ae) || ae.Code != amqp.InternalError {
		t.Fatalf("repeated durable declare with a failing definitions write: %v, want 541", err)
	}
	c = dial(t, b.url)
	ch = openCh(t, c)
	err = ch.ExchangeDeclare("dx", "topic", true, false, false, false, nil)
	if !asErr(err, &ae) || ae.Code != amqp.InternalError {
		t.Fatalf("durable exchange declare with a failing definitions write: %v, want 541", err)
	}
	mu.Lock()
	failing = false
	mu.Unlock()
	c = dial(t, b.url)
	ch = openCh(t, c)
	if _, err := ch.QueueDeclare("dq", true, false, false, false, nil); err != nil {
		t.Fatalf("declare once the disk works: %v", err)
	}
	if _, err := ch.QueueDeclare("gone", true, false, false, false, nil); err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	failing = true
	mu.Unlock()
	err = ch.QueueBind("dq", "k", "dx", false, nil)
	if !asErr(err, &ae) || ae.Code != amqp.InternalError {
		t.Fatalf("durable bind with a failing definitions write: %v, want 541", err)
	}
	c = dial(t, b.url)
	ch = openCh(t, c)
	_, err = ch.QueueDelete("gone", false, false, false)
	if !asErr(err, &ae) || ae.Code != amqp.InternalError {
		t.Fatalf("durable queue delete with a failing definitions write: %v, want 541", err)
	}
	mu.Lock()
	failing = false
	mu.Unlock()
	b.stop()
	withDurable(t, dir, func(_ *amqp.Connection, ch *amqp.Channel) {
		if _, err := ch.QueueDeclarePassive("dq", true, false, false, false, nil); err != nil {
			t.Fatalf("declared queue lost over a restart: %v", err)
		}
		if err := ch.ExchangeDeclarePassive("dx", "topic", true, false, false, false, nil); err != nil {
			t.Fatalf("exchange lost over a restart (written with the queue's retry): %v", err)
		}
		// The bind and the delete were answered with 541 and never saved:
		// the last successful save has no binding and still has "gone".
		if _, err := ch.QueueDeclarePassive("gone", true, false, false, false, nil); err != nil {
			t.Fatalf("queue whose delete was never saved: %v", err)
		}
	})
}

// TestStoreBrokenWhenCutBackFails: when a failed segment cannot even be
// cut back to its last intact record, the store writes nothing more until
// restart: every persistent publish is nacked, even once writes work
// again. The restart cuts the torn end, and every message confirmed before
// the failure is back.
func TestStoreBrokenWhenCutBackFails(t *testing.T) {
	dir := t.TempDir()
	b := startFaulty(t, dir, nil)
	c := dial(t, b.url)
	ch := openCh(t, c)
	declareDurable(t, ch, "q")
	publishConfirmed(t, ch, "q", "one", "two")
	b.plan.set(func(pl *faultPlan) { pl.failWrites, pl.failTruncates = 1, true })
	if publishWait(t, ch, "q", "torn") {
		t.Fatal("publish confirmed although its write failed")
	}
	b.plan.set(func(pl *faultPlan) { pl.failTruncates = false })
	for i := range 3 {
		if publishWait(t, ch, "q", fmt.Sprintf("refused-%d", i)) {
			t.Fatal("publish confirmed by a store that could not cut back a torn record")
		}
		time.Sleep(30 * time.Millisecond) // longer than the retry interval
	}
	_ = c.Close()
	b.stop()
	withDurable(t, dir, func(c *amqp.Connection, _ *amqp.Channel) {
		if got := listBodies(t, c, "q"); fmt.Sprint(got) != "[one two]" {
			t.Fatalf("recovered %q, want [one two]", got)
		}
	})
	checkSegmentsClean(t, dir)
}

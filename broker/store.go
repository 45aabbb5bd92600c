package broker

import (
	"bufio"
	"bytes"
	"encoding/base64"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"os"
	"path/filepath"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"github.com/oslogo/oslogo/broker/internal/amqp091"
)

// Storage layout (see docs/BROKER.md):
//
//	DATA/definitions.json  durable vhosts, exchanges, queues, bindings;
//	                       rewritten atomically (temp file, fsync, rename).
//	DATA/msgs/NNNN.seg     append-only segments of records
//	                       [len u32][crc32c u32][payload]; payload 'E' enqueue
//	                       (id, queue, exchange, routing key, props, body),
//	                       'M' the same enqueue copied forward by compaction,
//	                       or 'A' remove (id).
//
// Appends go to an in-memory buffer under store.mu; one goroutine writes
// and fsyncs batches (group commit) and only then confirms the publishes
// waiting on them. A failed write or fsync nacks them instead, cuts the
// segment back to its last synced record and keeps the batch for a retry;
// until a retry succeeds, persistent publishes are refused. A segment is deleted when it and every older segment
// hold no live message, so a remove record never outlives the enqueue it
// cancels. Compaction keeps one long-lived message from pinning every
// later segment: when the oldest segment is mostly dead, its live records
// are copied into the current one ('M', same id, so recovery keeps queue
// order) and it is deleted once the copies are on disk.

const segmentLimit = 64 << 20

// compactBelow: the oldest segment is compacted when at most this share of
// the enqueue records written to it are still live.
const compactBelow = 0.25

var crcTable = crc32.MakeTable(crc32.Castagnoli)

type segment struct {
	num     uint64
	firstID uint64   // the first id assigned while this segment was current
	live    int      // live records held: native ids and copies moved in
	records int      // enqueue records written ('E' and 'M')
	native  []uint64 // bit id-firstID: a native id still live here
	f       segmentFile
	size    int64 // bytes of intact, synced records; the sync goroutine's
	// avail: bytes written to the file, readable by page-ins (under mu);
	// rf: the read handle page-ins use, opened on first use (under mu).
	avail int64
	rf    *os.File
	// safeAfter: the flush that writes the copies compaction made of this
	// segment's live records; it may be deleted only after that flush.
	safeAfter uint64
}

func (s *segment) setNative(id uint64) {
	i := id - s.firstID
	for uint64(len(s.native)) <= i/64 {
		s.native = append(s.native, 0)
	}
	s.native[i/64] |= 1 << (i % 64)
}

// clearNative reports whether id was a live native id of s.
func (s *segment) clearNative(id uint64) bool {
	if id < s.firstID {
		return false
	}
	i := id - s.firstID
	if i/64 >= uint64(len(s.native)) || s.native[i/64]&(1<<(i%64)) == 0 {
		return false
	}
	s.native[i/64] &^= 1 << (i % 64)
	return true
}

// segmentFile is what the store needs of a segment file; *os.File is one.
type segmentFile interface {
	Write(p []byte) (int, error)
	Sync() error
	Truncate(size int64) error
	Close() error
}

// storeIO puts faults between the store and its files in tests; the zero
// value is the real file system.
type storeIO struct {
	// wrapSegment wraps each segment file the store opens for writing.
	wrapSegment func(path string, f segmentFile) segmentFile
	// writeDefinitions replaces the atomic rewrite of definitions.json.
	writeDefinitions func(path string, data []byte) error
	// retryInterval replaces the pause before retrying a failed write.
	retryInterval time.Duration
}

type chunk struct {
	seg  *segment
	off  int64 // where data[0] goes in seg
	data []byte
}

type syncWaiter struct {
	ch  *channel
	seq uint64
}

type store struct {
	srv *Server
	dir string

	mu         sync.Mutex
	nextID     uint64
	segs       []*segment        // oldest first; the last is current
	moved      map[uint64]recLoc // live ids whose record compaction copied forward
	segLimit   int64
	flushSeq   uint64 // flushes started
	compacting bool
	curBytes   int64
	chunks     []chunk
	inflight   []chunk // chunks the sync goroutine is writing
	waiters    []syncWaiter
	closed     bool
	kick       chan struct{}
	done       chan struct{}
	wg         sync.WaitGroup
	spare      []byte
	syncCond   *sync.Cond
	synced     uint64 // generation of completed syncs
	gen        uint64 // generation of requested syncs

	lock       *os.File // holds the data directory's flock until close
	retryEvery time.Duration
	// failed: the last flush failed; its records wait in chunks for a
	// retry. broken: the failed segment could not be cut back either, so
	// nothing more is written until restart.
	failed    error
	broken    bool
	unhealthy atomic.Bool // failed or broken; read by publishers without mu
	defsDirty bool        // guarded by srv.defMu: the last definitions write failed
}

// retryEvery is the pause between attempts to write records after a
// failed write or fsync.
const retryEvery = time.Second

// ErrDataDirLocked is returned by Start when another broker, in this
// process or another, has the data directory open.
var ErrDataDirLocked = errors.New("broker: data directory in use by another broker")

func openStore(srv *Server, dir string) (*store, error) {
	if err := os.MkdirAll(filepath.Join(dir, "msgs"), 0o750); err != nil {
		return nil, fmt.Errorf("broker: data dir: %w", err)
	}
	// Locked before anything is read: recovery truncates and deletes files.
	lock, err := lockDataDir(dir)
	if err != nil {
		return nil, err
	}
	st := &store{srv: srv, dir: dir, nextID: 1, kick: make(chan struct{}, 1), done: make(chan struct{}),
		moved: map[uint64]recLoc{}, segLimit: segmentLimit, lock: lock, retryEvery: retryEvery}
	if srv.opts.segmentLimit > 0 {
		st.segLimit = srv.opts.segmentLimit
	}
	if d := srv.storeIO.retryInterval; d > 0 {
		st.retryEvery = d
	}
	st.syncCond = sync.NewCond(&st.mu)
	err = srv.loadDefinitions()
	if err == nil {
		err = st.recover()
	}
	if err == nil {
		err = st.newSegment()
	}
	if err != nil {
		st.closeFiles()
		return nil, err
	}
	st.wg.Add(1)
	go st.syncLoop()
	return st, nil
}

func (st *store) segPath(num uint64) string {
	return filepath.Join(st.dir, "msgs", fmt.Sprintf("%016d.seg", num))
}

func (st *store) newSegment() error {
	num := uint64(1)
	if n := len(st.segs); n > 0 {
		num = st.segs[n-1].num + 1
	}
	f, err := st.openSegment(st.segPath(num), os.O_CREATE|os.O_TRUNC)
	if err != nil {
		return fmt.Errorf("broker: segment: %w", err)
	}
	st.segs = append(st.segs, &segment{num: num, firstID: st.nextID, f: f})
	st.curBytes = 0
	return nil
}

// openSegment opens a segment for appending; flag adds to O_WRONLY|O_APPEND.
func (st *store) openSegment(path string, flag int) (segmentFile, error) {
	f, err := os.OpenFile(path, flag|os.O_WRONLY|os.O_APPEND, 0o640)
	if err != nil {
		return nil, err
	}
	if w := st.srv.storeIO.wrapSegment; w != nil {
		return w(path, f), nil
	}
	return f, nil
}

// appendRecord frames payload onto the current chunk. Caller holds st.mu.
func (st *store) appendRecord(build func(b []byte) []byte) {
	cur := st.segs[len(st.segs)-1]
	if len(st.chunks) == 0 || st.chunks[len(st.chunks)-1].seg != cur {
		st.chunks = append(st.chunks, chunk{seg: cur, off: st.curBytes, data: st.spare[:0]})
		st.spare = nil
	}
	c := &st.chunks[len(st.chunks)-1]
	start := len(c.data)
	c.data = append(c.data, 0, 0, 0, 0, 0, 0, 0, 0)
	c.data = build(c.data)
	payload := c.data[start+8:]
	binary.BigEndian.PutUint32(c.data[start:], uint32(len(payload)))
	binary.BigEndian.PutUint32(c.data[start+4:], crc32.Checksum(payload, crcTable))
	st.curBytes += int64(len(c.data) - start)
}

// enqueue records a persistent message on a durable queue and returns its
// id and where its record is in the segment it is written to (see
// readRecords).
func (st *store) enqueue(q *queue, m *message) (uint64, int64, uint32) {
	st.mu.Lock()
	if st.closed {
		st.mu.Unlock()
		return 0, 0, 0
	}
	if st.curBytes > st.segLimit {
		// Rotation only creates the file; the sync goroutine writes to it.
		if err := st.newSegment(); err != nil {
			st.srv.log.Error("cannot rotate segment", "err", err)
		}
	}
	id := st.nextID
	st.nextID++
	cur := st.segs[len(st.segs)-1]
	cur.live++
	cur.records++
	cur.setNative(id)
	off := st.curBytes
	st.appendRecord(func(b []byte) []byte {
		b = append(b, 'E')
		b = binary.BigEndian.AppendUint64(b, id)
		b = binary.BigEndian.AppendUint16(b, uint16(len(q.key)))
		b = append(b, q.key...)
		b = amqp091.AppendShortstr(b, m.exchange)
		b = amqp091.AppendShortstr(b, m.routingKey)
		b = binary.BigEndian.AppendUint32(b, uint32(len(m.props)))
		b = append(b, m.props...)
		return append(b, m.body...)
	})
	n := uint32(st.curBytes - off)
	st.mu.Unlock()
	st.signal()
	return id, off, n
}

// remove records that message id left its queue.
func (st *store) remove(_ *queue, id uint64) {
	st.mu.Lock()
	if st.closed {
		st.mu.Unlock()
		return
	}
	if l, ok := st.moved[id]; ok {
		l.seg.live--
		delete(st.moved, id)
	} else if i := sort.Search(len(st.segs), func(i int) bool { return st.segs[i].firstID > id }) - 1; i >= 0 && st.segs[i].clearNative(id) {
		st.segs[i].live--
	}
	st.appendRecord(func(b []byte) []byte {
		b = append(b, 'A')
		return binary.BigEndian.AppendUint64(b, id)
	})
	st.mu.Unlock()
	st.signal()
}

// afterSync confirms seq on ch once everything appended so far is on
// disk, or nacks it when that fails. While the store is failing it nacks
// at once: the records may be in the batch that failed.
func (st *store) afterSync(ch *channel, seq uint64) {
	st.mu.Lock()
	if st.failed != nil {
		st.mu.Unlock()
		ch.onSynced(seq, false)
		return
	}
	st.waiters = append(st.waiters, syncWaiter{ch: ch, seq: seq})
	st.mu.Unlock()
	st.signal()
}

// refusing reports whether persistent publishes are refused because the
// store cannot write.
func (st *store) refusing() bool { return st.unhealthy.Load() }

// syncNow blocks until everything appended so far is on disk (tx.commit);
// it fails when the store cannot write.
func (st *store) syncNow() error {
	st.mu.Lock()
	if st.failed != nil {
		err := st.failed
		st.mu.Unlock()
		return err
	}
	st.gen++
	want := st.gen
	st.mu.Unlock()
	st.signal()
	st.mu.Lock()
	defer st.mu.Unlock()
	for st.synced < want && !st.closed && st.failed == nil {
		st.syncCond.Wait()
	}
	switch {
	case st.synced >= want:
		return nil
	case st.failed != nil:
		return st.failed
	}
	return ErrServerClosed
}

func (st *store) signal() {
	select {
	case st.kick <- struct{}{}:
	default:
	}
}

func (st *store) syncLoop() {
	defer st.wg.Done()
	retry := time.NewTimer(time.Hour)
	retry.Stop()
	defer retry.Stop()
	for {
		stop := false
		if st.retrying() {
			// Kicks wait for the retry; new persistent publishes are
			// refused meanwhile, so only removes accumulate.
			retry.Reset(st.retryEvery)
			select {
			case <-retry.C:
			case <-st.done:
				stop = true
			}
		} else {
			select {
			case <-st.kick:
			case <-st.done:
				stop = true
			}
			if d := st.srv.opts.SyncInterval; d > 0 && !stop {
				time.Sleep(d)
			}
		}
		st.flush()
		if stop {
			return
		}
	}
}

func (st *store) retrying() bool {
	st.mu.Lock()
	defer st.mu.Unlock()
	return st.failed != nil && !st.broken
}

// flush writes buffered records, fsyncs, then releases confirms.
func (st *store) flush() {
	st.mu.Lock()
	if st.broken {
		waiters := st.waiters
		st.waiters, st.chunks = nil, nil
		st.mu.Unlock()
		for _, w := range waiters {
			w.ch.onSynced(w.seq, false)
		}
		return
	}
	st.flushSeq++
	seq := st.flushSeq
	chunks := st.chunks
	st.chunks = nil
	st.inflight = chunks
	waiters := st.waiters
	st.waiters = nil
	gen := st.gen
	st.mu.Unlock()
	written, bad, err := writeChunks(chunks)
	if err != nil {
		st.writeFailed(chunks, written, bad, waiters, err)
		return
	}
	for _, w := range waiters {
		w.ch.onSynced(w.seq, true)
	}
	st.mu.Lock()
	for _, c := range chunks {
		c.seg.avail = c.seg.size
	}
	st.inflight = nil
	if st.failed != nil {
		st.failed = nil
		st.unhealthy.Store(false)
		st.srv.log.Warn("message store writes again: persistent publishes accepted")
	}
	if len(chunks) > 0 && cap(chunks[len(chunks)-1].data) <= 8<<20 {
		st.spare = chunks[len(chunks)-1].data[:0]
	}
	st.synced = gen
	st.syncCond.Broadcast()
	// Drop fully consumed segments from the front.
	var dead []*segment
	for len(st.segs) > 1 && st.segs[0].live <= 0 && st.segs[0].safeAfter <= seq && !pendingFor(st.chunks, st.segs[0]) {
		dead = append(dead, st.segs[0])
		st.segs = st.segs[1:]
	}
	var victim *segment
	if len(st.segs) > 1 && !st.compacting && !st.closed {
		if s := st.segs[0]; s.live > 0 && float64(s.live) <= compactBelow*float64(s.records) && !pendingFor(st.chunks, s) {
			victim = s
			st.compacting = true
			st.wg.Add(1)
		}
	}
	st.mu.Unlock()
	for _, s := range dead {
		_ = s.f.Close()
		if s.rf != nil {
			// A page-in reading it now finds the record moved (readRecord).
			_ = s.rf.Close()
		}
		_ = os.Remove(st.segPath(s.num))
	}
	if victim != nil {
		go st.compact(victim)
	}
}

// writeChunks appends chunks to their segments in order, fsyncing each
// segment before it writes to the next, so that after a crash only the
// segment written last can end in a torn record. It returns how many
// chunks are on disk and, on failure, the segment that failed.
func writeChunks(chunks []chunk) (int, *segment, error) {
	for i := 0; i < len(chunks); {
		s := chunks[i].seg
		var n int64
		var err error
		j := i
		for ; j < len(chunks) && chunks[j].seg == s; j++ {
			w, werr := s.f.Write(chunks[j].data)
			n += int64(w)
			if werr == nil && w < len(chunks[j].data) {
				werr = io.ErrShortWrite
			}
			if werr != nil {
				err = fmt.Errorf("write: %w", werr)
				break
			}
		}
		if err == nil {
			if serr := s.f.Sync(); serr != nil {
				err = fmt.Errorf("fsync: %w", serr)
			}
		}
		if err != nil {
			return i, s, err
		}
		s.size += n
		i = j
	}
	return len(chunks), nil, nil
}

// writeFailed handles a failed flush. The failed segment is cut back to
// its last synced record, so nothing is ever appended after a torn one;
// the publishes waiting on the flush get basic.nack; the records not on
// disk wait for a retry, and persistent publishes are refused until one
// succeeds. If the segment cannot be cut back, nothing more is written
// until restart (recovery cuts the torn tail then).
func (st *store) writeFailed(chunks []chunk, written int, bad *segment, waiters []syncWaiter, err error) {
	unwritten := chunks[written:]
	// An fsync error may have dropped written pages: only bad.size bytes
	// are known to be on disk.
	cutErr := bad.f.Truncate(bad.size)
	if cutErr == nil {
		cutErr = bad.f.Sync()
	}
	st.mu.Lock()
	again := st.failed != nil
	st.failed = err
	st.unhealthy.Store(true)
	// Waiters that came after the batch was taken may have records in it.
	waiters = append(waiters, st.waiters...)
	st.waiters = nil
	for _, c := range chunks[:written] {
		c.seg.avail = c.seg.size
	}
	st.inflight = nil
	if cutErr != nil {
		st.broken = true
		st.chunks = nil
	} else {
		st.chunks = append(append([]chunk(nil), unwritten...), st.chunks...)
	}
	st.syncCond.Broadcast()
	st.mu.Unlock()
	seg := st.segPath(bad.num)
	switch {
	case cutErr != nil:
		st.srv.log.Error("message store failed and the segment cannot be cut back to its last intact record: no more persistent messages are accepted until restart",
			"segment", seg, "offset", bad.size, "err", err, "cut_err", cutErr, "nacked", len(waiters))
	case again:
		st.srv.log.Debug("message store write retry failed", "segment", seg, "err", err)
	default:
		st.srv.log.Error("message store write failed: segment cut back to its last intact record, waiting publishes nacked, persistent publishes refused until a retry succeeds",
			"segment", seg, "offset", bad.size, "err", err, "nacked", len(waiters), "retry_every", st.retryEvery)
	}
	for _, w := range waiters {
		w.ch.onSynced(w.seq, false)
	}
}

// compact copies the live records of s, the oldest segment, into the
// current one. It reads s outside the lock (s is no longer written) and
// decides each record's fate under it, so a remove racing with the copy
// either clears the record first (no copy) or cancels the copy after it.
func (st *store) compact(s *segment) {
	defer st.wg.Done()
	copied := 0
	defer func() {
		st.mu.Lock()
		st.compacting = false
		st.mu.Unlock()
		if copied > 0 {
			st.srv.log.Debug("compacted segment", "segment", s.num, "copied", copied)
			st.signal()
		}
	}()
	f, err := os.Open(st.segPath(s.num))
	if err != nil {
		st.srv.log.Error("compaction: cannot open segment", "segment", s.num, "err", err)
		return
	}
	defer f.Close()
	err = readRecords(f, func(payload []byte) bool {
		select {
		case <-st.done:
			return false
		default:
		}
		if len(payload) < 9 || (payload[0] != 'E' && payload[0] != 'M') {
			return true
		}
		id := binary.BigEndian.Uint64(payload[1:9])
		st.mu.Lock()
		defer st.mu.Unlock()
		if st.closed {
			return false
		}
		if payload[0] == 'E' && s.clearNative(id) || payload[0] == 'M' && st.moved[id].seg == s {
			s.live--
			cur := st.segs[len(st.segs)-1]
			cur.live++
			cur.records++
			off := st.curBytes
			st.appendRecord(func(b []byte) []byte {
				b = append(b, 'M')
				return append(b, payload[1:]...)
			})
			st.moved[id] = recLoc{seg: cur, off: off, n: uint32(st.curBytes - off)}
			s.safeAfter = st.flushSeq + 1
			copied++
		}
		return true
	})
	if err != nil {
		st.srv.log.Error("compaction: cannot read segment", "segment", s.num, "err", err)
	}
}

// readRecords calls fn with the payload of each record of r until the
// end or fn returning false; a torn or corrupt record is an error. The
// payload is only valid during the call.
func readRecords(r io.Reader, fn func(payload []byte) bool) error {
	br := bufio.NewReaderSize(r, 1<<20)
	var buf []byte
	var off int64
	for {
		var hdr [8]byte
		if _, err := io.ReadFull(br, hdr[:]); err != nil {
			if errors.Is(err, io.EOF) {
				return nil
			}
			return fmt.Errorf("record at offset %d: %w", off, err)
		}
		n := binary.BigEndian.Uint32(hdr[:4])
		if n < 9 || n > maxRecord {
			return fmt.Errorf("record at offset %d: impossible length %d", off, n)
		}
		if cap(buf) < int(n) {
			buf = make([]byte, n)
		}
		payload := buf[:n]
		if _, err := io.ReadFull(br, payload); err != nil {
			return fmt.Errorf("record at offset %d: %w", off, err)
		}
		if crc32.Checksum(payload, crcTable) != binary.BigEndian.Uint32(hdr[4:]) {
			return fmt.Errorf("record at offset %d: checksum mismatch", off)
		}
		if !fn(payload) {
			return nil
		}
		off += 8 + int64(n)
	}
}

type recStatus int

const (
	recOK   recStatus = iota
	recEnd            // the data ends where the record would start
	recTorn           // the data ends inside the record
	recBad            // impossible length or wrong checksum
)

// maxRecord bounds a record's payload: a message at the largest size
// Options allow, with its routing data.
const maxRecord = 1 << 30

// parseRecord reads the record starting at off in b.
func parseRecord(b []byte, off int) (payload []byte, next int, status recStatus) {
	rest := len(b) - off
	if rest == 0 {
		return nil, off, recEnd
	}
	if rest < 8 {
		return nil, off, recTorn
	}
	n := binary.BigEndian.Uint32(b[off:])
	if n < 9 || n > maxRecord {
		return nil, off, recBad
	}
	if int64(rest-8) < int64(n) {
		return nil, off, recTorn
	}
	p := b[off+8 : off+8+int(n)]
	if crc32.Checksum(p, crcTable) != binary.BigEndian.Uint32(b[off+4:]) {
		return nil, off, recBad
	}
	return p, off + 8 + int(n), recOK
}

func pendingFor(chunks []chunk, s *segment) bool {
	for _, c := range chunks {
		if c.seg == s {
			return true
		}
	}
	return false
}

func (st *store) close() {
	st.mu.Lock()
	if st.closed {
		st.mu.Unlock()
		return
	}
	st.mu.Unlock()
	close(st.done)
	st.wg.Wait()
	st.mu.Lock()
	st.closed = true
	st.syncCond.Broadcast()
	var unwritten int
	for _, c := range st.chunks {
		unwritten += len(c.data)
	}
	st.mu.Unlock()
	if unwritten > 0 {
		st.srv.log.Error("message store closed with records it could not write", "bytes", unwritten)
	}
	st.closeFiles()
}

// closeFiles closes the segments and releases the data directory.
func (st *store) closeFiles() {
	for _, s := range st.segs {
		if s.f != nil {
			_ = s.f.Close()
		}
		if s.rf != nil {
			_ = s.rf.Close()
		}
	}
	if st.lock != nil {
		_ = st.lock.Close()
		st.lock = nil
	}
}

type recovered struct {
	qkey string
	m    *message
}

// recover replays the segments into the durable queues loaded from the
// definitions. A segment that ends in an unreadable record with nothing
// intact after it ends in a torn write (a crash mid-write): the torn bytes
// are cut off and logged. An unreadable record followed by intact ones is
// corruption, not a torn write: recovery refuses to start, naming the
// segment and offset, rather than drop the later records (enqueues lost,
// removes undone). Segments are only cut once every one has been read.
//
// Segments are read as a stream, one record at a time, and no message is
// kept: a queue that may page indexes each live record where it is in its
// segment and reads it back when it reaches the head (TestRecoveryPagesIn,
// store_read.go). Only queues that may not page (QueueMemoryLimit < 0)
// load their messages.
func (st *store) recover() error {
	files, err := filepath.Glob(filepath.Join(st.dir, "msgs", "*.seg"))
	if err != nil {
		return err
	}
	sort.Strings(files)
	live := map[uint64]recordMeta{}
	// Messages of queues that are gone are dead: not counted, not copied.
	queues := map[string]*queue{}
	queueOf := func(qkey []byte) *queue {
		if q, ok := queues[string(qkey)]; ok {
			return q
		}
		var q *queue
		if i := bytes.IndexByte(qkey, 0); i >= 0 {
			if vh := st.srv.vhosts[string(qkey[:i])]; vh != nil {
				if q = vh.queues[string(qkey[i+1:])]; q != nil && !q.durable {
					q = nil
				}
			}
		}
		queues[string(qkey)] = q
		return q
	}
	type cut struct {
		path      string
		off, size int64
	}
	var cuts []cut
	var maxID uint64
	var buf []byte
	for _, path := range files {
		var num uint64
		if _, err := fmt.Sscanf(filepath.Base(path), "%016d.seg", &num); err != nil {
			continue
		}
		// Native ids are assigned in order, after every id of the segments
		// before; copies moved in ('M') carry older ids.
		seg := &segment{num: num, firstID: maxID + 1}
		bad, err := st.scanSegment(path, seg, &buf, &maxID, func(id uint64, p []byte, loc recLoc) {
			if p[0] == 'A' {
				delete(live, id)
				return
			}
			_, qkey, bodyLen, prio, _ := scanRecord(p)
			live[id] = recordMeta{q: queueOf(qkey), loc: loc, bodyLen: bodyLen, prio: prio}
		})
		if err != nil {
			return err
		}
		if bad >= 0 {
			cuts = append(cuts, cut{path: path, off: seg.size, size: bad})
		}
		st.segs = append(st.segs, seg)
	}
	for _, c := range cuts {
		if err := cutFile(c.path, c.off); err != nil {
			return fmt.Errorf("broker: recover: cutting the torn end of %s: %w", c.path, err)
		}
		st.srv.log.Warn("recovery cut a torn record off the end of a segment", "segment", c.path, "offset", c.off, "bytes", c.size-c.off)
	}
	buf = nil
	st.nextID = maxID + 1
	for id, r := range live {
		if r.q == nil {
			delete(live, id)
			continue
		}
		seg := r.loc.seg
		seg.live++
		if id >= seg.firstID {
			seg.setNative(id)
		} else {
			st.moved[id] = r.loc
		}
	}
	// Reopen the segments for bookkeeping; dead ones go from the front only,
	// as at run time: a dead segment may hold the removes of an older one.
	kept := st.segs[:0]
	for _, seg := range st.segs {
		if seg.live == 0 && len(kept) == 0 {
			_ = os.Remove(st.segPath(seg.num))
			continue
		}
		f, err := st.openSegment(st.segPath(seg.num), 0)
		if err != nil {
			return err
		}
		seg.f = f
		seg.avail = seg.size
		kept = append(kept, seg)
	}
	st.segs = kept
	ids := make([]uint64, 0, len(live))
	for id := range live {
		ids = append(ids, id)
	}
	sort.Slice(ids, func(i, j int) bool { return ids[i] < ids[j] })
	n := 0
	for _, id := range ids {
		r := live[id]
		if err := r.q.recoverEntry(st, id, r); err != nil {
			return fmt.Errorf("broker: recover: %w", err)
		}
		n++
	}
	if n > 0 {
		st.srv.log.Info("recovered persistent messages", "count", n)
	}
	return nil
}

// scanSegment reads the records of the segment at path in order, calling
// fn with each intact one (its payload is only valid during the call) and
// setting seg.size, seg.records and seg.firstID. An unreadable record with
// nothing intact after it is a torn end: bad is then the file's size (the
// caller cuts the file at seg.size); otherwise bad is -1. Damage followed
// by intact records is an error.
func (st *store) scanSegment(path string, seg *segment, buf *[]byte, maxID *uint64, fn func(id uint64, payload []byte, loc recLoc)) (bad int64, err error) {
	f, err := os.Open(path)
	if err != nil {
		return -1, fmt.Errorf("broker: recover: %w", err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return -1, fmt.Errorf("broker: recover: %w", err)
	}
	size := fi.Size()
	br := bufio.NewReaderSize(f, 1<<20)
	firstNative := true
	var off int64
	for {
		status := recOK
		var payload []byte
		var hdr [8]byte
		if k, err := io.ReadFull(br, hdr[:]); err != nil {
			if k == 0 && errors.Is(err, io.EOF) {
				break
			}
			if !errors.Is(err, io.ErrUnexpectedEOF) {
				return -1, fmt.Errorf("broker: recover: %s: %w", path, err)
			}
			status = recTorn
		}
		var plen int64
		if status == recOK {
			plen = int64(binary.BigEndian.Uint32(hdr[:4]))
			switch {
			case plen < 9 || plen > maxRecord:
				status = recBad
			case size-off-8 < plen:
				status = recTorn
			}
		}
		if status == recOK {
			if int64(cap(*buf)) < plen {
				*buf = make([]byte, plen)
			}
			payload = (*buf)[:plen]
			if _, err := io.ReadFull(br, payload); err != nil {
				return -1, fmt.Errorf("broker: recover: %s: %w", path, err)
			}
			if crc32.Checksum(payload, crcTable) != binary.BigEndian.Uint32(hdr[4:]) {
				status = recBad
			}
		}
		var id uint64
		if status == recOK {
			switch payload[0] {
			case 'A':
				id = binary.BigEndian.Uint64(payload[1:9])
			case 'E', 'M':
				var ok bool
				if id, _, _, _, ok = scanRecord(payload); !ok {
					status = recBad
				}
			default:
				status = recBad
			}
		}
		if status != recOK {
			// Rare: the rest of the file is read to tell a torn end from
			// damage in the middle.
			rest := make([]byte, size-off)
			if _, err := f.ReadAt(rest, off); err != nil {
				return -1, fmt.Errorf("broker: recover: %s: %w", path, err)
			}
			if at := intactRecordAfter(rest, 0, *maxID); at >= 0 {
				return -1, fmt.Errorf("broker: recover: %s: unreadable record at offset %d, intact records from offset %d on: "+
					"the segment is corrupt, not torn by a crash; refusing to start rather than drop the records after it "+
					"(restore the file, or truncate it to %d bytes to start without them)", path, off, off+int64(at), off)
			}
			seg.size = off
			return size, nil
		}
		*maxID = max(*maxID, id)
		if payload[0] != 'A' {
			if payload[0] == 'E' && firstNative {
				seg.firstID, firstNative = id, false
			}
			seg.records++
		}
		fn(id, payload, recLoc{seg: seg, off: off, n: uint32(8 + plen)})
		off += 8 + plen
	}
	seg.size = off
	return -1, nil
}

// intactRecordAfter returns the offset of the first intact, decodable
// record starting after off in b, or -1: whether an unreadable record at
// off is a torn end or damage in the middle. maxID is the largest id read
// before off. A candidate is checksummed only if its type, length and id
// are plausible: ids grow by one per enqueue record, so none after off
// exceeds maxID by more than the records that fit. Without that filter a
// large torn message of random bytes would cost a checksum at almost
// every offset.
func intactRecordAfter(b []byte, off int, maxID uint64) int {
	const minEnqueue = 8 + 1 + 8 + 2 + 1 + 1 + 4 // header, type, id, key length, two empty shortstrs, props length
	limit := maxID + uint64(len(b)-off)/minEnqueue + 2
	for i := off + 1; i+8+9 <= len(b); i++ {
		n := binary.BigEndian.Uint32(b[i:])
		if n < 9 || int64(n) > int64(len(b)-i-8) {
			continue
		}
		switch t := b[i+8]; {
		case t == 'A' && n == 9, (t == 'E' || t == 'M') && n > 9+2:
		default:
			continue
		}
		if id := binary.BigEndian.Uint64(b[i+9:]); id == 0 || id > limit {
			continue
		}
		if p, _, status := parseRecord(b, i); status == recOK {
			if _, _, ok := decodeRecord(p); ok {
				return i
			}
		}
	}
	return -1
}

// cutFile truncates path to size and makes that durable.
func cutFile(path string, size int64) error {
	f, err := os.OpenFile(path, os.O_WRONLY, 0)
	if err != nil {
		return err
	}
	err = f.Truncate(size)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	return err
}

func decodeRecord(p []byte) (uint64, *recovered, bool) {
	if len(p) < 9 {
		return 0, nil, false
	}
	id := binary.BigEndian.Uint64(p[1:9])
	switch p[0] {
	case 'A':
		return id, nil, true
	case 'E', 'M':
		r := amqp091.NewReader(p[9:])
		klen := int(r.ReadShort())
		rest := r.Remaining()
		if len(rest) < klen {
			return 0, nil, false
		}
		qkey := string(rest[:klen])
		r = amqp091.NewReader(rest[klen:])
		ex := r.ReadShortstr()
		rk := r.ReadShortstr()
		plen := int(r.ReadLong())
		rest = r.Remaining()
		if r.Err() != nil || len(rest) < plen {
			return 0, nil, false
		}
		buf := append([]byte(nil), rest...)
		return id, &recovered{qkey: qkey, m: &message{exchange: ex, routingKey: rk, props: buf[:plen:plen], body: buf[plen:], ttl: -1}}, true
	}
	return 0, nil, false
}

// Definitions file.

type defs struct {
	VHosts []vhostDefs `json:"vhosts"`
	// Accounts: users and permissions were administered at run time and
	// are kept here; they then replace Options.Users at start.
	Accounts    bool             `json:"accounts,omitempty"`
	Users       []DefinitionUser `json:"users,omitempty"`
	Permissions []PermissionInfo `json:"permissions,omitempty"`
}

type vhostDefs struct {
	Name      string        `json:"name"`
	Policies  []Policy      `json:"policies,omitempty"`
	Exchanges []exchangeDef `json:"exchanges"`
	Queues    []queueDef    `json:"queues"`
	Bindings  []bindingDef  `json:"bindings"`
}

type exchangeDef struct {
	Name       string `json:"name"`
	Type       string `json:"type"`
	AutoDelete bool   `json:"auto_delete"`
	Internal   bool   `json:"internal"`
	Args       string `json:"arguments,omitempty"` // base64 AMQP table
}

type queueDef struct {
	Name       string `json:"name"`
	AutoDelete bool   `json:"auto_delete"`
	Args       string `json:"arguments,omitempty"`
}

type bindingDef struct {
	Source   string `json:"source"`
	DestType string `json:"destination_type"`
	Dest     string `json:"destination"`
	Key      string `json:"routing_key"`
	Args     string `json:"arguments,omitempty"`
}

func encTable(t amqp091.Table) string {
	if len(t) == 0 {
		return ""
	}
	return base64.StdEncoding.EncodeToString(amqp091.AppendTable(nil, t))
}

func decTable(s string) (amqp091.Table, error) {
	if s == "" {
		return nil, nil
	}
	b, err := base64.StdEncoding.DecodeString(s)
	if err != nil {
		return nil, err
	}
	r := amqp091.NewReader(b)
	t := r.ReadTable()
	return t, r.Err()
}

// syncDefinitions writes the durable topology after a change, or when an
// earlier write failed (so a repeated declaration retries it). A failure
// is answered with 541 INTERNAL_ERROR: the client must not take the
// declaration for saved. The change itself stays in memory and is written
// with the next successful save.
func (s *Server) syncDefinitions(changed bool) *amqpError {
	if s.store == nil {
		return nil
	}
	if !changed {
		s.defMu.Lock()
		dirty := s.store.defsDirty
		s.defMu.Unlock()
		if !dirty {
			return nil
		}
	}
	if err := s.saveDefinitions(); err != nil {
		return errf(amqp091.InternalError, "durable definitions could not be written to disk")
	}
	return nil
}

// saveDefinitions rewrites the durable topology atomically. It is called
// after each durable change, without vhost locks held.
func (s *Server) saveDefinitions() error {
	if s.store == nil {
		return nil
	}
	s.defMu.Lock()
	defer s.defMu.Unlock()
	var d defs
	s.mu.Lock()
	vhs := make([]*vhost, 0, len(s.vhosts))
	for _, vh := range s.vhosts {
		vhs = append(vhs, vh)
	}
	s.mu.Unlock()
	if s.accountsDurable.Load() {
		d.Accounts = true
		for _, u := range s.Users() {
			d.Users = append(d.Users, DefinitionUser{Name: u.Name, PasswordHash: u.PasswordHash, HashingAlgorithm: u.HashingAlgorithm, Tags: u.Tags})
		}
		d.Permissions = s.Permissions()
	}
	pols := s.policySnapshot()
	for _, vh := range vhs {
		vd := vhostDefs{Name: vh.name}
		for _, p := range pols.byVHost[vh.name] {
			vd.Policies = append(vd.Policies, p.Policy)
		}
		vh.mu.RLock()
		for _, e := range vh.exchanges {
			if e.durable && e.name != "" && !reservedName(e.name) {
				vd.Exchanges = append(vd.Exchanges, exchangeDef{Name: e.name, Type: e.kind, AutoDelete: e.autoDelete, Internal: e.internal, Args: encTable(e.args)})
			}
		}
		for _, q := range vh.queues {
			if q.durable {
				vd.Queues = append(vd.Queues, queueDef{Name: q.name, AutoDelete: q.autoDelete, Args: encTable(q.args)})
			}
		}
		for _, e := range vh.exchanges {
			if !e.durable {
				continue
			}
			for _, b := range e.bindings {
				switch {
				case b.q != nil && b.q.durable:
					vd.Bindings = append(vd.Bindings, bindingDef{Source: e.name, DestType: "queue", Dest: b.q.name, Key: b.key, Args: encTable(b.args)})
				case b.dst != nil && b.dst.durable:
					vd.Bindings = append(vd.Bindings, bindingDef{Source: e.name, DestType: "exchange", Dest: b.dst.name, Key: b.key, Args: encTable(b.args)})
				}
			}
		}
		vh.mu.RUnlock()
		d.VHosts = append(d.VHosts, vd)
	}
	data, err := json.MarshalIndent(d, "", " ")
	if err == nil {
		write := writeFileAtomic
		if w := s.storeIO.writeDefinitions; w != nil {
			write = w
		}
		err = write(filepath.Join(s.opts.DataDir, "definitions.json"), data)
	}
	s.store.defsDirty = err != nil
	if err != nil {
		s.log.Error("cannot save definitions: durable declarations since the last save are answered with 541 until a save succeeds", "err", err)
	}
	return err
}

func writeFileAtomic(path string, data []byte) error {
	tmp := path + ".tmp"
	f, err := os.OpenFile(tmp, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o640)
	if err != nil {
		return err
	}
	_, err = f.Write(data)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp, path)
	}
	if err != nil {
		_ = os.Remove(tmp) // a partial file only takes space
		return err
	}
	d, err := os.Open(filepath.Dir(path))
	if err != nil {
		return err
	}
	err = d.Sync()
	_ = d.Close()
	return err
}

func (s *Server) loadDefinitions() error {
	data, err := os.ReadFile(filepath.Join(s.opts.DataDir, "definitions.json"))
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("broker: definitions: %w", err)
	}
	var d defs
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.UseNumber()
	if err := dec.Decode(&d); err != nil {
		return fmt.Errorf("broker: definitions: %w", err)
	}
	if err := s.loadAdministrationLocked(&d); err != nil {
		return err
	}
	for _, vd := range d.VHosts {
		vh := s.vhosts[vd.Name]
		if vh == nil {
			vh = newVhost(s, vd.Name)
			s.vhosts[vd.Name] = vh
		}
		for _, ed := range vd.Exchanges {
			args, err := decTable(ed.Args)
			if err != nil {
				return fmt.Errorf("broker: definitions: exchange %q: %w", ed.Name, err)
			}
			vh.exchanges[ed.Name] = newExchange(vh, ed.Name, ed.Type, true, ed.AutoDelete, ed.Internal, args)
		}
		for _, qd := range vd.Queues {
			args, err := decTable(qd.Args)
			if err != nil {
				return fmt.Errorf("broker: definitions: queue %q: %w", qd.Name, err)
			}
			q, aerr := vh.newQueue(queueSpec{name: qd.Name, durable: true, autoDelet: qd.AutoDelete, args: args}, nil)
			if aerr != nil {
				return fmt.Errorf("broker: definitions: queue %q: %v", qd.Name, aerr)
			}
			vh.queues[qd.Name] = q
			q.mu.Lock()
			q.touchLocked()
			q.mu.Unlock()
		}
		for _, bd := range vd.Bindings {
			args, err := decTable(bd.Args)
			if err != nil {
				return fmt.Errorf("broker: definitions: binding: %w", err)
			}
			src := vh.exchanges[bd.Source]
			if src == nil {
				continue
			}
			b := &binding{src: src, key: bd.Key, args: args, argsKey: tableKey(args)}
			if bd.DestType == "queue" {
				b.q = vh.queues[bd.Dest]
			} else {
				b.dst = vh.exchanges[bd.Dest]
			}
			if b.q != nil || b.dst != nil {
				src.addBinding(b)
			}
		}
	}
	return nil
}

package broker

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
)

// streamLog is the append-only log of one stream queue: a list of
// segments, each holding the records of consecutive offsets. With a data
// directory every segment is a file of its own under
// <DataDir>/streams/<queue id>/, named by the offset of its first record;
// without one the segments are byte slices in memory. Retention drops
// whole segments from the front, never the one being written. The log is
// guarded by its queue's mu.
//
// A record is framed as the message store frames its records (see
// store.go): a 4-byte big-endian payload length, a 4-byte CRC-32C of the
// payload, then the payload:
//
//	offset u64 | timestamp ms i64 | exchange shortstr | routing key shortstr |
//	properties length u32 | properties | body
type streamLog struct {
	srv *Server
	dir string // "" keeps the segments in memory

	segMax   int64 // bytes after which a new segment starts
	maxBytes int64 // x-max-length-bytes; 0 means none
	maxAge   int64 // x-max-age in ms; 0 means none

	segs  []*streamSeg
	next  int64 // offset the next record gets
	bytes int64 // total size of all segments
	// failed is set when a write failed; the segment is rolled over on the
	// next append so a half-written record is never followed by another.
	failed bool
	// Only the segment being written keeps its file open for writing;
	// older ones are read through one cached read-only handle, so a
	// stream holds at most two descriptors however many segments it has.
	rseg *streamSeg
	rf   *os.File
}

type streamSeg struct {
	first int64 // offset of the first record (and, with files, the name)
	idx   []streamIdx
	size  int64
	path  string
	f     *os.File // the segment being written
	data  []byte   // memory mode
}

type streamIdx struct {
	pos int64 // start of the record's frame in the segment
	ts  int64 // unix ms at append
}

func (s *streamSeg) lastTS() int64 {
	if len(s.idx) == 0 {
		return 0
	}
	return s.idx[len(s.idx)-1].ts
}

// defaultStreamSegment is our x-stream-max-segment-size-bytes default.
// RabbitMQ's is 500 MB, sized for a stream fed by many clients on a
// cluster; retention only ever drops whole segments, so with 500 MB an
// oslo fanout stream (a few KiB a minute) would never drop anything and
// x-max-age would mean nothing. 4 MiB keeps at most one such segment plus
// what the retention keeps.
const defaultStreamSegment = 4 << 20

const streamHeader = 8 // length + CRC

var errStreamClosed = errors.New("broker: stream log closed")

// openStreamLog opens (or, without a data directory, creates) the log and
// recovers its segments from dir. A torn record at the end of a segment
// (a crash in the middle of a write) is cut off.
func openStreamLog(srv *Server, dir string, segMax, maxBytes, maxAge int64) (*streamLog, error) {
	l := &streamLog{srv: srv, dir: dir, segMax: segMax, maxBytes: maxBytes, maxAge: maxAge}
	if dir == "" {
		l.segs = []*streamSeg{{}}
		return l, nil
	}
	if err := os.MkdirAll(dir, 0o750); err != nil {
		return nil, err
	}
	ents, err := os.ReadDir(dir)
	if err != nil {
		return nil, err
	}
	var firsts []int64
	for _, e := range ents {
		n, ok := strings.CutSuffix(e.Name(), ".seg")
		if !ok {
			continue
		}
		v, err := strconv.ParseInt(n, 10, 64)
		if err != nil || v < 0 {
			continue
		}
		firsts = append(firsts, v)
	}
	sort.Slice(firsts, func(i, j int) bool { return firsts[i] < firsts[j] })
	for i, first := range firsts {
		s, err := l.recoverSeg(first, i == len(firsts)-1)
		if err != nil {
			l.close()
			return nil, err
		}
		l.segs = append(l.segs, s)
		l.bytes += s.size
		l.next = max(l.next, s.first+int64(len(s.idx)))
	}
	if len(l.segs) == 0 {
		if err := l.addSeg(); err != nil {
			return nil, err
		}
	}
	return l, nil
}

func (l *streamLog) segPath(first int64) string {
	return filepath.Join(l.dir, fmt.Sprintf("%020d.seg", first))
}

func (l *streamLog) recoverSeg(first int64, last bool) (*streamSeg, error) {
	path := l.segPath(first)
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	s := &streamSeg{first: first, path: path}
	off := 0
	for off+streamHeader <= len(data) {
		n := int(binary.BigEndian.Uint32(data[off:]))
		end := off + streamHeader + n
		if n < 16 || end > len(data) {
			break
		}
		p := data[off+streamHeader : end]
		if crc32.Checksum(p, crcTable) != binary.BigEndian.Uint32(data[off+4:]) ||
			int64(binary.BigEndian.Uint64(p)) != first+int64(len(s.idx)) {
			break
		}
		s.idx = append(s.idx, streamIdx{pos: int64(off), ts: int64(binary.BigEndian.Uint64(p[8:]))})
		off = end
	}
	if off < len(data) {
		l.srv.log.Warn("stream segment has a torn or corrupt record; cutting it off", "file", path, "at", off)
		if err := os.Truncate(path, int64(off)); err != nil {
			return nil, err
		}
	}
	s.size = int64(off)
	if !last {
		return s, nil
	}
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND, 0o640)
	if err != nil {
		return nil, err
	}
	s.f = f
	return s, nil
}

// addSeg starts a new segment at l.next, syncing the one it follows.
func (l *streamLog) addSeg() error {
	s := &streamSeg{first: l.next}
	if l.dir != "" {
		s.path = l.segPath(s.first)
		f, err := os.OpenFile(s.path, os.O_CREATE|os.O_TRUNC|os.O_WRONLY|os.O_APPEND, 0o640)
		if err != nil {
			return err
		}
		s.f = f
		if n := len(l.segs); n > 0 && l.segs[n-1].f != nil {
			prev := l.segs[n-1]
			_ = prev.f.Sync()
			_ = prev.f.Close()
			prev.f = nil
		}
	}
	l.segs = append(l.segs, s)
	return nil
}

// count is the number of records the log holds.
func (l *streamLog) count() int64 {
	if len(l.segs) == 0 {
		return 0
	}
	return l.next - l.segs[0].first
}

// firstOffset is the oldest offset kept.
func (l *streamLog) firstOffset() int64 {
	if len(l.segs) == 0 {
		return l.next
	}
	return l.segs[0].first
}

// appendMsg writes m as the record of offset l.next and returns that
// offset.
func (l *streamLog) appendMsg(m *message, now int64) (int64, error) {
	if len(l.segs) == 0 {
		return 0, errStreamClosed
	}
	size := streamHeader + 16 + 1 + len(m.exchange) + 1 + len(m.routingKey) + 4 + len(m.props) + len(m.body)
	cur := l.segs[len(l.segs)-1]
	if l.failed || (len(cur.idx) > 0 && cur.size+int64(size) > l.segMax) {
		if err := l.addSeg(); err != nil {
			return 0, err
		}
		l.failed = false
		cur = l.segs[len(l.segs)-1]
		l.retain(now)
	} else if l.maxAge > 0 && len(l.segs) > 1 {
		l.retain(now)
	}
	b := make([]byte, size)
	binary.BigEndian.PutUint32(b, uint32(size-streamHeader))
	p := b[streamHeader:]
	binary.BigEndian.PutUint64(p, uint64(l.next))
	binary.BigEndian.PutUint64(p[8:], uint64(now))
	i := 16
	p[i] = byte(len(m.exchange))
	i += 1 + copy(p[i+1:], m.exchange)
	p[i] = byte(len(m.routingKey))
	i += 1 + copy(p[i+1:], m.routingKey)
	binary.BigEndian.PutUint32(p[i:], uint32(len(m.props)))
	i += 4 + copy(p[i+4:], m.props)
	copy(p[i:], m.body)
	binary.BigEndian.PutUint32(b[4:], crc32.Checksum(p, crcTable))
	if l.dir != "" {
		if cur.f == nil {
			return 0, errStreamClosed
		}
		if _, err := cur.f.Write(b); err != nil {
			l.failed = true
			return 0, err
		}
	} else {
		cur.data = append(cur.data, b...)
		l.srv.addQueued(int64(size))
	}
	cur.idx = append(cur.idx, streamIdx{pos: cur.size, ts: now})
	cur.size += int64(size)
	l.bytes += int64(size)
	off := l.next
	l.next++
	return off, nil
}

// retain drops whole segments from the front while the log is over
// x-max-length-bytes or the segment's newest record is older than
// x-max-age. The segment being written is never dropped.
func (l *streamLog) retain(now int64) {
	for len(l.segs) > 1 {
		s := l.segs[0]
		over := l.maxBytes > 0 && l.bytes > l.maxBytes
		old := l.maxAge > 0 && (len(s.idx) == 0 || s.lastTS() < now-l.maxAge)
		if !over && !old {
			return
		}
		l.dropSeg(s, true)
		l.segs = l.segs[1:]
	}
}

func (l *streamLog) dropSeg(s *streamSeg, remove bool) {
	l.bytes -= s.size
	if l.rseg == s {
		_ = l.rf.Close()
		l.rseg, l.rf = nil, nil
	}
	if s.f != nil {
		_ = s.f.Close()
		s.f = nil
	}
	if remove && l.dir != "" {
		if err := os.Remove(s.path); err != nil {
			l.srv.log.Warn("cannot remove stream segment", "file", s.path, "err", err)
		}
	}
	if s.data != nil {
		l.srv.addQueued(-int64(len(s.data)))
		s.data = nil
	}
}

// locate returns the segment and index of offset off, or of the first
// record after it when off fell into a gap; ok is false past the end.
func (l *streamLog) locate(off int64) (s *streamSeg, i int, ok bool) {
	n := len(l.segs)
	j := sort.Search(n, func(k int) bool { return l.segs[k].first > off }) - 1
	if j < 0 {
		j, off = 0, l.firstOffset()
	}
	for ; j < n; j++ {
		s = l.segs[j]
		if off < s.first {
			off = s.first
		}
		if k := off - s.first; k < int64(len(s.idx)) {
			return s, int(k), true
		}
	}
	return nil, 0, false
}

// read decodes the record at s.idx[i] into a new message.
func (l *streamLog) read(s *streamSeg, i int) (*message, int64, error) {
	start := s.idx[i].pos
	end := s.size
	if i+1 < len(s.idx) {
		end = s.idx[i+1].pos
	}
	var b []byte
	if l.dir != "" {
		if l.rseg != s {
			f, err := os.Open(s.path)
			if err != nil {
				return nil, 0, err
			}
			if l.rf != nil {
				_ = l.rf.Close()
			}
			l.rseg, l.rf = s, f
		}
		b = make([]byte, end-start)
		if _, err := l.rf.ReadAt(b, start); err != nil {
			return nil, 0, err
		}
	} else {
		b = s.data[start:end]
	}
	p := b[streamHeader:]
	if crc32.Checksum(p, crcTable) != binary.BigEndian.Uint32(b[4:]) {
		return nil, 0, errors.New("stream record checksum mismatch")
	}
	off := int64(binary.BigEndian.Uint64(p))
	j := 16
	exLen := int(p[j])
	ex := string(p[j+1 : j+1+exLen])
	j += 1 + exLen
	rkLen := int(p[j])
	rk := string(p[j+1 : j+1+rkLen])
	j += 1 + rkLen
	pl := int(binary.BigEndian.Uint32(p[j:]))
	j += 4
	// One buffer for properties and body, as a published message has.
	buf := make([]byte, len(p)-j)
	copy(buf, p[j:])
	m := &message{exchange: ex, routingKey: rk, props: buf[:pl:pl], body: buf[pl:], ttl: -1}
	m.persistent, m.priority, _, _ = scanProps(m.props)
	return m, off, nil
}

// offsetAt is the first offset whose record was appended at or after ts
// (unix ms); next when there is none.
func (l *streamLog) offsetAt(ts int64) int64 {
	for _, s := range l.segs {
		if len(s.idx) == 0 || s.lastTS() < ts {
			continue
		}
		k := sort.Search(len(s.idx), func(k int) bool { return s.idx[k].ts >= ts })
		return s.first + int64(k)
	}
	return l.next
}

// close syncs and closes the files (broker shutdown); memory segments are
// released.
func (l *streamLog) close() {
	for _, s := range l.segs {
		if s.f != nil {
			_ = s.f.Sync()
		}
		l.dropSeg(s, false)
	}
	l.segs = nil
}

// removeFiles deletes the log's files once it is closed (queue deleted).
func (l *streamLog) removeFiles() {
	if l.dir != "" {
		if err := os.RemoveAll(l.dir); err != nil {
			l.srv.log.Warn("cannot remove stream directory", "dir", l.dir, "err", err)
		}
	}
}

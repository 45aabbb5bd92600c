package broker

import (
	"encoding/binary"
	"errors"
	"os"
	"path/filepath"
)

// Paging keeps long queues on disk (RabbitMQ's lazy queues). A ready
// message of a queue that pages is written to the queue's page file and its
// entry keeps only where the record is (qentry.page, pageOff, pageLen); the
// message itself is released. Delivery reads records back in queue order,
// a run of neighbouring records with one read.
//
// Page files live in DATA/paging, or the system temp directory without a
// data directory, and are unlinked as soon as they are created: their space
// returns when the queue closes them or the process ends, so a restart
// never finds one. A persistent message of a durable queue is not written
// here: it is paged by reference to its store record (store_read.go).

const (
	// pageSegLimit: a page file rotates past this size, so the space of
	// consumed records comes back once a whole file is consumed.
	pageSegLimit = 16 << 20
	// pageBufSize bounds the records buffered before one write.
	pageBufSize = 256 << 10
	// pageReadAhead and pageReadAheadCount bound one read of neighbouring
	// records (the count bounds the overhead of tiny messages read back).
	pageReadAhead      = 256 << 10
	pageReadAheadCount = 256
)

type pageSeg struct {
	f    *os.File
	size int64 // bytes written or buffered
	live int   // records still referenced by queue entries
}

// pager owns one queue's page files; it is used under the queue's lock.
type pager struct {
	srv    *Server
	segs   []*pageSeg // the last one is written
	buf    []byte     // tail of the current segment not yet written
	bufCap int64      // counted capacity of buf
	failed bool       // the last write failed (logged once until one succeeds)
	// failedAt (unix ms) spaces retries after a failed write.
	failedAt int64
	scratch  []byte     // read-ahead buffer, pageReadAhead bytes, counted
	refs     []storeRef // reused by pageInStoredLocked
	// Recently decoded names, reused so paged-in messages do not each
	// allocate their exchange and routing key.
	lastEx, lastRK string
}

func (s *Server) pagingDir() (string, error) {
	if s.opts.DataDir == "" {
		return os.TempDir(), nil
	}
	dir := filepath.Join(s.opts.DataDir, "paging")
	if err := os.MkdirAll(dir, 0o750); err != nil {
		return "", err
	}
	return dir, nil
}

func (p *pager) cur() *pageSeg {
	if len(p.segs) == 0 {
		return nil
	}
	return p.segs[len(p.segs)-1]
}

func (p *pager) newSeg() error {
	dir, err := p.srv.pagingDir()
	if err != nil {
		return err
	}
	f, err := os.CreateTemp(dir, "queue-*.page")
	if err != nil {
		return err
	}
	// Unlinked at once: nothing to clean up after a crash or a restart.
	_ = os.Remove(f.Name())
	p.segs = append(p.segs, &pageSeg{f: f})
	return nil
}

// flush writes the buffered tail of the current segment.
func (p *pager) flush() error {
	if len(p.buf) == 0 {
		return nil
	}
	c := p.cur()
	if _, err := c.f.WriteAt(p.buf, c.size-int64(len(p.buf))); err != nil {
		return err
	}
	p.buf = p.buf[:0]
	return nil
}

// write appends m's record. It reports false when the record could not be
// written (the message then stays in memory).
func (p *pager) write(m *message) (seg *pageSeg, off int64, n uint32, ok bool) {
	size := 2 + len(m.exchange) + len(m.routingKey) + 4 + len(m.props) + len(m.body)
	err := p.reserve(size)
	c := p.cur()
	if err == nil && size > pageBufSize {
		_, err = c.f.WriteAt(appendPageRecord(make([]byte, 0, size), m), c.size)
	}
	if err != nil {
		if !p.failed {
			p.srv.log.Error("cannot page messages to disk; keeping them in memory", "err", err)
		}
		p.failed, p.failedAt = true, nowMS()
		return nil, 0, 0, false
	}
	if p.failed {
		p.failed = false
		p.srv.log.Info("paging messages to disk again")
	}
	off = c.size
	if size <= pageBufSize {
		if p.buf == nil {
			p.buf = make([]byte, 0, pageBufSize)
			p.bufCap = pageBufSize
			p.srv.addQueued(p.bufCap)
		}
		p.buf = appendPageRecord(p.buf, m)
	}
	c.size += int64(size)
	c.live++
	return c, off, uint32(size), true
}

// reserve makes room for a record of size bytes: a segment to write to and
// buffer space.
func (p *pager) reserve(size int) error {
	if c := p.cur(); c == nil || c.size >= pageSegLimit {
		if err := p.flush(); err != nil {
			return err
		}
		if err := p.newSeg(); err != nil {
			return err
		}
	}
	if len(p.buf)+size > pageBufSize {
		return p.flush()
	}
	return nil
}

func appendPageRecord(b []byte, m *message) []byte {
	b = append(b, byte(len(m.exchange)))
	b = append(b, m.exchange...)
	b = append(b, byte(len(m.routingKey)))
	b = append(b, m.routingKey...)
	b = binary.BigEndian.AppendUint32(b, uint32(len(m.props)))
	b = append(b, m.props...)
	return append(b, m.body...)
}

// read fills dst from seg at off; the end of the current segment may still
// be in the write buffer.
func (p *pager) read(seg *pageSeg, off int64, dst []byte) error {
	end := off + int64(len(dst))
	if seg == p.cur() && len(p.buf) > 0 {
		bufOff := seg.size - int64(len(p.buf))
		if end > bufOff {
			k := int64(0)
			if off < bufOff {
				k = bufOff - off
				if _, err := seg.f.ReadAt(dst[:k], off); err != nil {
					return err
				}
			}
			copy(dst[k:], p.buf[off+k-bufOff:])
			return nil
		}
	}
	_, err := seg.f.ReadAt(dst, off)
	return err
}

var errBadPageRecord = errors.New("malformed page record")

// decode rebuilds a message from a record. With own set, rec is the
// message's buffer; otherwise it is copied into one.
func (p *pager) decode(rec []byte, own bool) (*message, error) {
	pos := 0
	name := func(last *string) bool {
		if pos >= len(rec) || pos+1+int(rec[pos]) > len(rec) {
			return false
		}
		s := rec[pos+1 : pos+1+int(rec[pos])]
		pos += 1 + len(s)
		if string(s) != *last {
			*last = string(s)
		}
		return true
	}
	if !name(&p.lastEx) {
		return nil, errBadPageRecord
	}
	ex := p.lastEx
	if !name(&p.lastRK) {
		return nil, errBadPageRecord
	}
	rk := p.lastRK
	if pos+4 > len(rec) {
		return nil, errBadPageRecord
	}
	plen := int(binary.BigEndian.Uint32(rec[pos:]))
	pos += 4
	if plen > len(rec)-pos {
		return nil, errBadPageRecord
	}
	data := rec[pos:]
	if !own {
		data = append([]byte(nil), data...)
	}
	m := &message{exchange: ex, routingKey: rk, props: data[:plen:plen], body: data[plen:]}
	m.persistent, m.priority, m.ttl, _ = scanProps(m.props)
	return m, nil
}

// scratchBuf returns the read-ahead buffer, counted from its first use.
func (p *pager) scratchBuf() []byte {
	if p.scratch == nil {
		p.scratch = make([]byte, pageReadAhead)
		p.srv.addQueued(pageReadAhead)
	}
	return p.scratch
}

// free drops one record of seg; a segment with none left goes (the current
// one is emptied for reuse).
func (p *pager) free(seg *pageSeg) {
	seg.live--
	if seg.live > 0 {
		return
	}
	if seg == p.cur() {
		if seg.size > 0 {
			p.buf = p.buf[:0]
			seg.size = 0
			if err := seg.f.Truncate(0); err != nil {
				p.srv.log.Warn("cannot truncate page file", "err", err)
			}
		}
		return
	}
	for i, s := range p.segs {
		if s == seg {
			_ = s.f.Close()
			p.segs = append(p.segs[:i], p.segs[i+1:]...)
			return
		}
	}
}

// close releases the files and the buffer.
func (p *pager) close() {
	for _, s := range p.segs {
		_ = s.f.Close()
	}
	p.segs = nil
	p.buf = nil
	if p.bufCap != 0 {
		p.srv.addQueued(-p.bufCap)
		p.bufCap = 0
	}
	if p.scratch != nil {
		p.srv.addQueued(-pageReadAhead)
		p.scratch = nil
	}
}

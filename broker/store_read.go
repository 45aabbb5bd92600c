package broker

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"os"
	"sort"

	"github.com/oslogo/oslogo/broker/internal/amqp091"
)

// Paging by reference. A persistent message of a durable queue is already
// in a store segment; when its queue pages it, the queue entry keeps where
// that record is (qentry.pageOff, pageLen, with the entry's id) instead of
// writing the message to a page file, and paging it in reads the record
// back from the segment. Compaction may copy the record forward: st.moved
// then says where it is now. A record not yet written (still in the
// store's buffer, or being written) is copied from the buffer.

// recLoc is where a record is: segment, offset and length, header included.
type recLoc struct {
	seg *segment
	off int64
	n   uint32
}

// storeRef is a paged-out persistent entry: its id and where its record
// was written first.
type storeRef struct {
	id  uint64
	off int64
	n   uint32
}

// locateLocked returns where id's record is now. Caller holds st.mu.
func (st *store) locateLocked(r storeRef) (recLoc, bool) {
	if l, ok := st.moved[r.id]; ok {
		return l, true
	}
	i := sort.Search(len(st.segs), func(i int) bool { return st.segs[i].firstID > r.id }) - 1
	if i < 0 {
		return recLoc{}, false
	}
	return recLoc{seg: st.segs[i], off: r.off, n: r.n}, true
}

// pendingLocked copies a record not yet written from the store's buffers.
func (st *store) pendingLocked(l recLoc) []byte {
	for _, cs := range [][]chunk{st.inflight, st.chunks} {
		for _, c := range cs {
			if c.seg == l.seg && c.off <= l.off && l.off+int64(l.n) <= c.off+int64(len(c.data)) {
				return append([]byte(nil), c.data[l.off-c.off:l.off-c.off+int64(l.n)]...)
			}
		}
	}
	return nil
}

var errRecordGone = errors.New("record not in the message store")

// readRecords reads the records of refs, in order, as far as they lie in
// one segment within len(scratch) bytes of the first (at least one). It
// returns each record (header included) and whether it is a buffer of its
// own rather than a slice of scratch.
func (st *store) readRecords(refs []storeRef, scratch []byte) (recs [][]byte, own bool, err error) {
	for attempt := 0; ; attempt++ {
		recs, own, err = st.readRecordsOnce(refs, scratch)
		// A segment deleted under the read: compaction moved the record.
		if err == nil || !errors.Is(err, os.ErrClosed) || attempt == 2 {
			return recs, own, err
		}
	}
}

func (st *store) readRecordsOnce(refs []storeRef, scratch []byte) ([][]byte, bool, error) {
	st.mu.Lock()
	first, ok := st.locateLocked(refs[0])
	if !ok || first.n < 8 {
		st.mu.Unlock()
		return nil, false, errRecordGone
	}
	end := first.off + int64(first.n)
	if end > first.seg.avail {
		rec := st.pendingLocked(first)
		st.mu.Unlock()
		if rec == nil {
			return nil, false, errRecordGone
		}
		return [][]byte{rec}, true, nil
	}
	locs := []recLoc{first}
	for _, r := range refs[1:] {
		l, ok := st.locateLocked(r)
		if !ok || l.seg != first.seg || l.off < end || l.off+int64(l.n) > first.seg.avail || l.off+int64(l.n)-first.off > int64(len(scratch)) {
			break
		}
		end = l.off + int64(l.n)
		locs = append(locs, l)
	}
	seg := first.seg
	if seg.rf == nil {
		f, err := os.Open(st.segPath(seg.num))
		if err != nil {
			st.mu.Unlock()
			return nil, false, err
		}
		seg.rf = f
	}
	rf := seg.rf
	st.mu.Unlock()
	own := end-first.off > int64(len(scratch))
	var buf []byte
	if own {
		buf = make([]byte, end-first.off)
	} else {
		buf = scratch[:end-first.off]
	}
	if _, err := rf.ReadAt(buf, first.off); err != nil {
		return nil, false, err
	}
	recs := make([][]byte, len(locs))
	for i, l := range locs {
		recs[i] = buf[l.off-first.off : l.off-first.off+int64(l.n)]
	}
	return recs, own, nil
}

// decodeStored rebuilds the message of entry id of queue qkey from its
// record (header included). With own set, the record is the message's
// buffer; otherwise props and body are copied into one.
func (p *pager) decodeStored(rec []byte, id uint64, qkey string, own bool) (*message, error) {
	if len(rec) < 8+9 || binary.BigEndian.Uint32(rec) != uint32(len(rec)-8) {
		return nil, fmt.Errorf("message store record %d: bad length", id)
	}
	payload := rec[8:]
	if crc32.Checksum(payload, crcTable) != binary.BigEndian.Uint32(rec[4:]) {
		return nil, fmt.Errorf("message store record %d: checksum mismatch", id)
	}
	if (payload[0] != 'E' && payload[0] != 'M') || binary.BigEndian.Uint64(payload[1:]) != id {
		return nil, fmt.Errorf("message store record %d: another record in its place", id)
	}
	pos := 9
	if pos+2 > len(payload) {
		return nil, errBadPageRecord
	}
	klen := int(binary.BigEndian.Uint16(payload[pos:]))
	pos += 2
	if pos+klen > len(payload) || string(payload[pos:pos+klen]) != qkey {
		return nil, fmt.Errorf("message store record %d: another queue's record", id)
	}
	pos += klen
	name := func(last *string) bool {
		if pos >= len(payload) || pos+1+int(payload[pos]) > len(payload) {
			return false
		}
		s := payload[pos+1 : pos+1+int(payload[pos])]
		pos += 1 + len(s)
		if string(s) != *last {
			*last = string(s)
		}
		return true
	}
	if !name(&p.lastEx) || !name(&p.lastRK) || pos+4 > len(payload) {
		return nil, errBadPageRecord
	}
	plen := int(binary.BigEndian.Uint32(payload[pos:]))
	pos += 4
	if plen > len(payload)-pos {
		return nil, errBadPageRecord
	}
	data := payload[pos:]
	if !own {
		data = append([]byte(nil), data...)
	}
	m := &message{exchange: p.lastEx, routingKey: p.lastRK, props: data[:plen:plen], body: data[plen:]}
	m.persistent, m.priority, m.ttl, _ = scanProps(m.props)
	return m, nil
}

// recordMeta is what recovery keeps of a live record: not the message,
// only where it is and what its queue needs to index it.
type recordMeta struct {
	q       *queue // nil: the queue is gone
	loc     recLoc
	bodyLen uint32
	prio    uint8
}

// scanRecord decodes the fields recovery needs from an enqueue record's
// payload without copying the message.
func scanRecord(p []byte) (id uint64, qkey []byte, bodyLen uint32, prio uint8, ok bool) {
	if len(p) < 9+2 || (p[0] != 'E' && p[0] != 'M') {
		return 0, nil, 0, 0, false
	}
	id = binary.BigEndian.Uint64(p[1:9])
	r := amqp091.NewReader(p[9:])
	klen := int(r.ReadShort())
	rest := r.Remaining()
	if len(rest) < klen {
		return 0, nil, 0, 0, false
	}
	qkey = rest[:klen]
	rest = rest[klen:]
	pos := 0
	for range 2 { // exchange, routing key
		if pos >= len(rest) || pos+1+int(rest[pos]) > len(rest) {
			return 0, nil, 0, 0, false
		}
		pos += 1 + int(rest[pos])
	}
	if pos+4 > len(rest) {
		return 0, nil, 0, 0, false
	}
	plen := int(binary.BigEndian.Uint32(rest[pos:]))
	pos += 4
	if plen > len(rest)-pos {
		return 0, nil, 0, 0, false
	}
	_, prio, _, _ = scanProps(rest[pos : pos+plen])
	return id, qkey, uint32(len(rest) - pos - plen), prio, true
}

// pageInStoredLocked reads back the head of level lv, paged out by
// reference to its store record, with the paged-out persistent entries
// that follow it whose records lie close after it in the same segment. An
// unreadable record is dropped and logged: the head then moves on.
func (q *queue) pageInStoredLocked(lv int) {
	r := &q.ready[lv]
	refs := q.pg.refs[:0]
	for i := 0; i < r.Len() && i < pageReadAheadCount; i++ {
		e := r.At(i)
		if e.m != nil || e.page != nil || e.id == 0 {
			break
		}
		refs = append(refs, storeRef{id: e.id, off: e.pageOff, n: e.pageLen})
	}
	q.pg.refs = refs[:0]
	var recs [][]byte
	own := false
	err := errRecordGone
	if st := q.vh.srv.store; st != nil && len(refs) > 0 && refs[0].n != 0 {
		recs, own, err = st.readRecords(refs, q.pg.scratchBuf())
	}
	if err == nil && len(recs) == 0 {
		err = errRecordGone
	}
	for i := 0; err == nil && i < len(recs); i++ {
		e := r.At(i)
		var m *message
		if m, err = q.pg.decodeStored(recs[i], e.id, q.key, own); err != nil {
			break
		}
		e.m = m
		m.hold(q.vh.srv)
		q.paged--
		q.vh.srv.addQueued(-pageIndexCost)
		q.memBytes += m.cost()
	}
	if err != nil && r.Front().m == nil {
		q.vh.srv.log.Error("cannot read a paged persistent message back from the message store; dropping it", "vhost", q.vh.name, "queue", q.name, "err", err)
		q.forgetLocked(q.popLocked(lv))
	}
}

// recoverEntry queues a message recovered from the store: indexed where its
// record is when the queue may page, otherwise read into memory.
func (q *queue) recoverEntry(st *store, id uint64, r recordMeta) error {
	if q.pg == nil {
		q.pg = &pager{srv: q.vh.srv}
	}
	e := qentry{id: id, redelivered: true, pageOff: r.loc.off, pageLen: r.loc.n, bodyLen: r.bodyLen}
	if !q.canPage() {
		recs, own, err := st.readRecords([]storeRef{{id: id, off: r.loc.off, n: r.loc.n}}, nil)
		if err != nil {
			return err
		}
		m, err := q.pg.decodeStored(recs[0], id, q.key, own)
		if err != nil {
			return err
		}
		e.m = m
		m.hold(q.vh.srv)
		q.pushLocked(e, false)
		return nil
	}
	lv := 0
	if q.maxPriority > 0 {
		lv = min(int(r.prio), q.maxPriority)
	}
	e.queuedAt = nowMS()
	q.ready[lv].PushBack(e)
	q.readyCount++
	q.readyBytes += int64(r.bodyLen)
	q.paged++
	q.vh.srv.addQueued(pageIndexCost)
	return nil
}

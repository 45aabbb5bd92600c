package broker

import (
	"bufio"
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
	"strings"
	"sync"
	"time"

	"oslogo/broker/internal/amqp091"
)

// Storage layout (see docs/BROKER.md):
//
//	DATA/definitions.json  durable vhosts, exchanges, queues, bindings;
//	                       rewritten atomically (temp file, fsync, rename).
//	DATA/msgs/NNNN.seg     append-only segments of records
//	                       [len u32][crc32c u32][payload]; payload 'E' enqueue
//	                       (id, queue, exchange, routing key, props, body) or
//	                       'A' remove (id).
//
// Appends go to an in-memory buffer under store.mu; one goroutine writes
// and fsyncs batches (group commit) and only then confirms the publishes
// waiting on them. A segment is deleted when it and every older segment
// hold no live message, so a remove record never outlives the enqueue it
// cancels.

const segmentLimit = 64 << 20

var crcTable = crc32.MakeTable(crc32.Castagnoli)

type segment struct {
	num     uint64
	firstID uint64
	live    int
	f       *os.File
}

type chunk struct {
	seg  *segment
	data []byte
}

type syncWaiter struct {
	ch  *channel
	seq uint64
}

type store struct {
	srv *Server
	dir string

	mu       sync.Mutex
	nextID   uint64
	segs     []*segment // oldest first; the last is current
	curBytes int64
	chunks   []chunk
	waiters  []syncWaiter
	closed   bool
	kick     chan struct{}
	done     chan struct{}
	wg       sync.WaitGroup
	spare    []byte
	syncCond *sync.Cond
	synced   uint64 // generation of completed syncs
	gen      uint64 // generation of requested syncs
}

func openStore(srv *Server, dir string) (*store, error) {
	if err := os.MkdirAll(filepath.Join(dir, "msgs"), 0o750); err != nil {
		return nil, fmt.Errorf("broker: data dir: %w", err)
	}
	st := &store{srv: srv, dir: dir, nextID: 1, kick: make(chan struct{}, 1), done: make(chan struct{})}
	st.syncCond = sync.NewCond(&st.mu)
	if err := srv.loadDefinitions(); err != nil {
		return nil, err
	}
	if err := st.recover(); err != nil {
		return nil, err
	}
	if err := st.newSegment(); err != nil {
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
	f, err := os.OpenFile(st.segPath(num), os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o640)
	if err != nil {
		return fmt.Errorf("broker: segment: %w", err)
	}
	st.segs = append(st.segs, &segment{num: num, firstID: st.nextID, f: f})
	st.curBytes = 0
	return nil
}

// appendRecord frames payload onto the current chunk. Caller holds st.mu.
func (st *store) appendRecord(build func(b []byte) []byte) {
	cur := st.segs[len(st.segs)-1]
	if len(st.chunks) == 0 || st.chunks[len(st.chunks)-1].seg != cur {
		st.chunks = append(st.chunks, chunk{seg: cur, data: st.spare[:0]})
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
// id.
func (st *store) enqueue(q *queue, m *message) uint64 {
	st.mu.Lock()
	if st.closed {
		st.mu.Unlock()
		return 0
	}
	if st.curBytes > segmentLimit {
		// Rotation only creates the file; the sync goroutine writes to it.
		if err := st.newSegment(); err != nil {
			st.srv.log.Error("cannot rotate segment", "err", err)
		}
	}
	id := st.nextID
	st.nextID++
	st.segs[len(st.segs)-1].live++
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
	st.mu.Unlock()
	st.signal()
	return id
}

// remove records that message id left its queue.
func (st *store) remove(_ *queue, id uint64) {
	st.mu.Lock()
	if st.closed {
		st.mu.Unlock()
		return
	}
	i := sort.Search(len(st.segs), func(i int) bool { return st.segs[i].firstID > id }) - 1
	if i >= 0 {
		st.segs[i].live--
	}
	st.appendRecord(func(b []byte) []byte {
		b = append(b, 'A')
		return binary.BigEndian.AppendUint64(b, id)
	})
	st.mu.Unlock()
	st.signal()
}

// afterSync confirms seq on ch once everything appended so far is on disk.
func (st *store) afterSync(ch *channel, seq uint64) {
	st.mu.Lock()
	st.waiters = append(st.waiters, syncWaiter{ch: ch, seq: seq})
	st.mu.Unlock()
	st.signal()
}

// syncNow blocks until everything appended so far is on disk (tx.commit).
func (st *store) syncNow() {
	st.mu.Lock()
	st.gen++
	want := st.gen
	st.mu.Unlock()
	st.signal()
	st.mu.Lock()
	for st.synced < want && !st.closed {
		st.syncCond.Wait()
	}
	st.mu.Unlock()
}

func (st *store) signal() {
	select {
	case st.kick <- struct{}{}:
	default:
	}
}

func (st *store) syncLoop() {
	defer st.wg.Done()
	for {
		stop := false
		select {
		case <-st.kick:
		case <-st.done:
			stop = true
		}
		if d := st.srv.opts.SyncInterval; d > 0 && !stop {
			time.Sleep(d)
		}
		st.flush()
		if stop {
			return
		}
	}
}

// flush writes buffered records, fsyncs, then releases confirms.
func (st *store) flush() {
	st.mu.Lock()
	chunks := st.chunks
	st.chunks = nil
	waiters := st.waiters
	st.waiters = nil
	gen := st.gen
	st.mu.Unlock()
	touched := map[*segment]bool{}
	for _, c := range chunks {
		if _, err := c.seg.f.Write(c.data); err != nil {
			st.srv.log.Error("segment write failed", "err", err)
		}
		touched[c.seg] = true
	}
	for s := range touched {
		if err := s.f.Sync(); err != nil {
			st.srv.log.Error("segment fsync failed", "err", err)
		}
	}
	for _, w := range waiters {
		w.ch.onSynced(w.seq)
	}
	st.mu.Lock()
	if len(chunks) > 0 && cap(chunks[len(chunks)-1].data) <= 8<<20 {
		st.spare = chunks[len(chunks)-1].data[:0]
	}
	st.synced = gen
	st.syncCond.Broadcast()
	// Drop fully consumed segments from the front.
	var dead []*segment
	for len(st.segs) > 1 && st.segs[0].live <= 0 && !pendingFor(st.chunks, st.segs[0]) {
		dead = append(dead, st.segs[0])
		st.segs = st.segs[1:]
	}
	st.mu.Unlock()
	for _, s := range dead {
		_ = s.f.Close()
		_ = os.Remove(st.segPath(s.num))
	}
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
	for _, s := range st.segs {
		_ = s.f.Close()
	}
	st.mu.Unlock()
}

type recovered struct {
	qkey string
	m    *message
}

// recover replays the segments into the durable queues loaded from the
// definitions. A torn record at a segment's end (a crash mid-write) ends
// that segment's replay.
func (st *store) recover() error {
	files, err := filepath.Glob(filepath.Join(st.dir, "msgs", "*.seg"))
	if err != nil {
		return err
	}
	sort.Strings(files)
	live := map[uint64]recovered{}
	var maxID uint64
	type segIDs struct {
		num uint64
		ids []uint64
	}
	var segList []segIDs
	for _, path := range files {
		var num uint64
		if _, err := fmt.Sscanf(filepath.Base(path), "%016d.seg", &num); err != nil {
			continue
		}
		f, err := os.Open(path)
		if err != nil {
			return fmt.Errorf("broker: recover: %w", err)
		}
		r := bufio.NewReaderSize(f, 1<<20)
		var ids []uint64
		for {
			var hdr [8]byte
			if _, err := io.ReadFull(r, hdr[:]); err != nil {
				break
			}
			n := binary.BigEndian.Uint32(hdr[:4])
			if n > 1<<30 {
				break
			}
			payload := make([]byte, n)
			if _, err := io.ReadFull(r, payload); err != nil {
				break
			}
			if crc32.Checksum(payload, crcTable) != binary.BigEndian.Uint32(hdr[4:]) {
				break
			}
			id, rec, ok := decodeRecord(payload)
			if !ok {
				break
			}
			maxID = max(maxID, id)
			if rec == nil {
				delete(live, id)
				continue
			}
			live[id] = *rec
			ids = append(ids, id)
		}
		_ = f.Close()
		segList = append(segList, segIDs{num: num, ids: ids})
	}
	ids := make([]uint64, 0, len(live))
	for id := range live {
		ids = append(ids, id)
	}
	sort.Slice(ids, func(i, j int) bool { return ids[i] < ids[j] })
	st.nextID = maxID + 1
	// Reopen old segments read-only bookkeeping: count live ids per segment.
	for _, sl := range segList {
		s := &segment{num: sl.num, firstID: 0}
		if len(sl.ids) > 0 {
			s.firstID = sl.ids[0]
		}
		for _, id := range sl.ids {
			if _, ok := live[id]; ok {
				s.live++
			}
		}
		f, err := os.OpenFile(st.segPath(sl.num), os.O_WRONLY|os.O_APPEND, 0o640)
		if err != nil {
			return err
		}
		s.f = f
		if s.live == 0 {
			_ = f.Close()
			_ = os.Remove(st.segPath(sl.num))
			continue
		}
		st.segs = append(st.segs, s)
	}
	// firstID must be increasing for remove's search; empty segments were dropped.
	n := 0
	for _, id := range ids {
		rec := live[id]
		i := strings.IndexByte(rec.qkey, 0)
		if i < 0 {
			continue
		}
		vh := st.srv.vhosts[rec.qkey[:i]]
		if vh == nil {
			continue
		}
		q := vh.queues[rec.qkey[i+1:]]
		if q == nil || !q.durable {
			continue
		}
		persistent, prio, ttl, _ := scanProps(rec.m.props)
		rec.m.persistent, rec.m.priority, rec.m.ttl = persistent, prio, ttl
		q.pushLocked(qentry{m: rec.m, id: id, redelivered: true}, false)
		n++
	}
	if n > 0 {
		st.srv.log.Info("recovered persistent messages", "count", n)
	}
	return nil
}

func decodeRecord(p []byte) (uint64, *recovered, bool) {
	if len(p) < 9 {
		return 0, nil, false
	}
	id := binary.BigEndian.Uint64(p[1:9])
	switch p[0] {
	case 'A':
		return id, nil, true
	case 'E':
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
}

type vhostDefs struct {
	Name      string        `json:"name"`
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

// saveDefinitions rewrites the durable topology atomically. It is called
// after each durable change, without vhost locks held.
func (s *Server) saveDefinitions() {
	if s.store == nil {
		return
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
	for _, vh := range vhs {
		vd := vhostDefs{Name: vh.name}
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
		err = writeFileAtomic(filepath.Join(s.opts.DataDir, "definitions.json"), data)
	}
	if err != nil {
		s.log.Error("cannot save definitions", "err", err)
	}
}

func writeFileAtomic(path string, data []byte) error {
	tmp := path + ".tmp"
	f, err := os.OpenFile(tmp, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o640)
	if err != nil {
		return err
	}
	if _, err := f.Write(data); err != nil {
		_ = f.Close()
		return err
	}
	if err := f.Sync(); err != nil {
		_ = f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	if err := os.Rename(tmp, path); err != nil {
		return err
	}
	if d, err := os.Open(filepath.Dir(path)); err == nil {
		_ = d.Sync()
		_ = d.Close()
	}
	return nil
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
	if err := json.Unmarshal(data, &d); err != nil {
		return fmt.Errorf("broker: definitions: %w", err)
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

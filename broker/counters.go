package broker

import "time"

// Counters are running totals for rates (the web UI's overview charts
// poll them and plot the differences): GET /api/counters, an oslogo
// extension.
type Counters struct {
	// Now is the time of the reading, in unix milliseconds.
	Now int64 `json:"now"`
	// MessagesIn counts the messages the live queues accepted since each
	// was declared, MessagesOut those they handed to consumers or
	// basic.get.
	MessagesIn  uint64 `json:"messages_in"`
	MessagesOut uint64 `json:"messages_out"`
	// RecvOct and SendOct are the bytes the open client connections
	// received and sent.
	RecvOct uint64 `json:"recv_oct"`
	SendOct uint64 `json:"send_oct"`
}

// Counters sums the counters of the live queues and open connections (the
// management API's own connections left out). The sums drop when a queue
// or connection goes away; a reader computing rates treats a negative
// difference as none.
func (s *Server) Counters() Counters {
	c := Counters{Now: time.Now().UnixMilli()}
	for _, vh := range s.vhostList() {
		qs, _ := vh.snapshotLists()
		for _, q := range qs {
			q.mu.Lock()
			c.MessagesIn += q.inCount
			c.MessagesOut += q.outCount
			q.mu.Unlock()
		}
	}
	for _, cn := range s.connList() {
		if info, _, open := cn.mon.snapshot(); !open || info.internal() {
			continue
		}
		c.RecvOct += cn.mon.recvOct.Load()
		c.SendOct += cn.mon.sendOct.Load()
	}
	return c
}

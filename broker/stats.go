package broker

import (
	"encoding/json"
	"math"
	"strconv"
	"sync"
	"sync/atomic"
	"time"
)

// Message statistics: RabbitMQ's message_stats counters and their rates.
//
// The counters are kept where the hot path already is, so that counting
// costs an increment and no extra lock or map lookup: a queue's under
// queue.mu (held wherever a message enters or leaves it), a channel's as
// atomics in its chanMonitor, an exchange's as atomics. A vhost's counters
// are the sum of its open channels plus those of its closed channels,
// folded into the vhost once when a channel closes (under vhost.statsMu,
// which the readers hold too, so a channel is never counted twice nor
// missed: the vhost and overview counters never go down). Connections'
// byte counters are folded the same way.
//
// Rates follow RabbitMQ's collect_statistics_interval (5 s): one goroutine
// owned by the Server samples every object each Options.StatsInterval and
// an object's rate is the change between its last two samples divided by
// the time between them, in units per second; an object sampled once has
// rate 0. Counters themselves are read live.

// Stat names one message counter.
type Stat int

// The message counters, with RabbitMQ's names (Stat.String).
const (
	StatPublish          Stat = iota // messages published (channel, vhost) or entering a queue
	StatPublishIn                    // messages published into an exchange
	StatPublishOut                   // messages routed from an exchange, once per queue
	StatConfirm                      // publisher confirms (basic.ack) sent
	StatReturnUnroutable             // mandatory messages returned as unroutable
	StatDropUnroutable               // non-mandatory messages dropped as unroutable
	StatDeliver                      // deliveries to consumers in manual-ack mode
	StatDeliverNoAck                 // deliveries to consumers in auto-ack mode
	StatGet                          // basic.get in manual-ack mode
	StatGetNoAck                     // basic.get in auto-ack mode
	StatGetEmpty                     // basic.get on an empty queue
	StatRedeliver                    // deliveries and gets with the redelivered flag
	StatAck                          // messages acknowledged by clients
	NumStats
)

var statNames = [NumStats]string{"publish", "publish_in", "publish_out", "confirm", "return_unroutable",
	"drop_unroutable", "deliver", "deliver_no_ack", "get", "get_no_ack", "get_empty", "redeliver", "ack"}

// String returns RabbitMQ's name of the counter.
func (s Stat) String() string {
	if s < 0 || s >= NumStats {
		return "stat(" + strconv.Itoa(int(s)) + ")"
	}
	return statNames[s]
}

// The counters each kind of object shows, as RabbitMQ 3.10 does;
// deliver_get (deliver + deliver_no_ack + get + get_no_ack) is added to
// the channel and queue sets.
var (
	channelStats  = []Stat{StatPublish, StatConfirm, StatReturnUnroutable, StatDropUnroutable, StatDeliver, StatDeliverNoAck, StatGet, StatGetNoAck, StatGetEmpty, StatRedeliver, StatAck}
	queueStats    = []Stat{StatPublish, StatDeliver, StatDeliverNoAck, StatGet, StatGetNoAck, StatGetEmpty, StatRedeliver, StatAck}
	exchangeStats = []Stat{StatPublishIn, StatPublishOut}
)

// msgCounts is a set of message counters.
type msgCounts [NumStats]uint64

func (c *msgCounts) add(o *msgCounts) {
	for i := range c {
		c[i] += o[i]
	}
}

// atomicCounts are counters written from several goroutines.
type atomicCounts [NumStats]atomic.Uint64

func (a *atomicCounts) load() msgCounts {
	var c msgCounts
	for i := range a {
		c[i] = a[i].Load()
	}
	return c
}

// RateDetails is RabbitMQ's "<field>_details" object.
type RateDetails struct {
	// Rate is the change per second over the last sample interval.
	Rate float64 `json:"rate"`
}

// MessageStats are one object's message counters and their rates, encoded
// as RabbitMQ's message_stats: "publish": n, "publish_details":
// {"rate": r}, and so on for the counters the object's kind has.
type MessageStats struct {
	Counts [NumStats]uint64
	Rates  [NumStats]float64
	fields []Stat
}

// DeliverGet is RabbitMQ's deliver_get: deliveries and gets in both modes.
func (m *MessageStats) DeliverGet() uint64 {
	return m.Counts[StatDeliver] + m.Counts[StatDeliverNoAck] + m.Counts[StatGet] + m.Counts[StatGetNoAck]
}

// MarshalJSON encodes the counters of the object's kind with their rates.
func (m *MessageStats) MarshalJSON() ([]byte, error) {
	b := []byte{'{'}
	field := func(name string, n uint64, rate float64) {
		if len(b) > 1 {
			b = append(b, ',')
		}
		b = strconv.AppendQuote(b, name)
		b = append(b, ':')
		b = strconv.AppendUint(b, n, 10)
		b = append(b, ',')
		b = strconv.AppendQuote(b, name+"_details")
		b = append(b, `:{"rate":`...)
		b = appendRate(b, rate)
		b = append(b, '}')
	}
	dg := false
	for _, s := range m.fields {
		field(s.String(), m.Counts[s], m.Rates[s])
		dg = dg || s == StatDeliver
	}
	if dg {
		field("deliver_get", m.DeliverGet(), m.Rates[StatDeliver]+m.Rates[StatDeliverNoAck]+m.Rates[StatGet]+m.Rates[StatGetNoAck])
	}
	return append(b, '}'), nil
}

// UnmarshalJSON reads what MarshalJSON writes (and RabbitMQ's
// message_stats), for clients of the API written in Go.
func (m *MessageStats) UnmarshalJSON(b []byte) error {
	var raw map[string]json.RawMessage
	if err := json.Unmarshal(b, &raw); err != nil {
		return err
	}
	*m = MessageStats{}
	for i, name := range statNames {
		v, ok := raw[name]
		if !ok {
			continue
		}
		if err := json.Unmarshal(v, &m.Counts[i]); err != nil {
			return err
		}
		m.fields = append(m.fields, Stat(i))
		if d, ok := raw[name+"_details"]; ok {
			var rd RateDetails
			if err := json.Unmarshal(d, &rd); err != nil {
				return err
			}
			m.Rates[i] = rd.Rate
		}
	}
	return nil
}

func appendRate(b []byte, r float64) []byte {
	if math.IsNaN(r) || math.IsInf(r, 0) {
		r = 0
	}
	r = math.Round(r*10) / 10 // RabbitMQ shows one decimal
	return strconv.AppendFloat(b, r, 'f', 1, 64)
}

func newMessageStats(c msgCounts, r sampleRates, fields []Stat) *MessageStats {
	m := &MessageStats{Counts: c, fields: fields}
	for i := range m.Rates {
		if i < len(r) {
			m.Rates[i] = r[i]
		}
	}
	return m
}

// rateOf returns element i of a rate vector, 0 when absent.
func rateOf(r sampleRates, i int) RateDetails {
	if i < len(r) {
		return RateDetails{Rate: math.Round(r[i]*10) / 10}
	}
	return RateDetails{}
}

var _ json.Marshaler = (*MessageStats)(nil)

// vhostStats are the counters of a vhost's closed channels and
// connections; open ones are added when read. Guarded by vhost.statsMu.
type vhostStats struct {
	msgs             msgCounts
	recvOct, sendOct uint64
}

// foldStats adds a closing channel's counters to its vhost, once.
func (ch *channel) foldStats() {
	vh := ch.vh
	if vh == nil {
		return
	}
	vh.statsMu.Lock()
	first := !ch.mon.folded
	if first {
		ch.mon.folded = true
		c := ch.mon.stats.load()
		vh.closed.msgs.add(&c)
	}
	vh.statsMu.Unlock()
	if first && !ch.conn.mon.internal.Load() {
		vh.srv.churn.chanClosed.Add(1)
	}
}

// foldStats adds an ending connection's byte counters to its vhost, once.
func (c *conn) foldStats() {
	_, _, open := c.mon.snapshot()
	vh := c.vh // set before the connection is open; the reader's, as is this call
	if !open || vh == nil {
		return
	}
	vh.statsMu.Lock()
	first := !c.mon.folded
	if first {
		c.mon.folded = true
		vh.closed.recvOct += c.mon.recvOct.Load()
		vh.closed.sendOct += c.mon.sendOct.Load()
	}
	vh.statsMu.Unlock()
	if first && !c.mon.internal.Load() {
		c.srv.churn.connClosed.Add(1)
	}
}

// vhostTotals returns the message counters of vh's channels, closed and
// open, and its connections' byte counts.
func (s *Server) vhostTotals(vh *vhost, conns []*conn) vhostStats {
	vh.statsMu.Lock()
	defer vh.statsMu.Unlock()
	t := vh.closed
	for _, c := range conns {
		info, chans, open := c.mon.snapshot()
		if !open || info.vhost != vh.name {
			continue
		}
		if !c.mon.folded {
			t.recvOct += c.mon.recvOct.Load()
			t.sendOct += c.mon.sendOct.Load()
		}
		for _, ch := range chans {
			if ch.vh == vh && !ch.mon.folded {
				cc := ch.mon.stats.load()
				t.msgs.add(&cc)
			}
		}
	}
	return t
}

// churn counts objects created and closed, RabbitMQ's churn_rates and the
// Prometheus *_opened_total / *_closed_total counters.
type churn struct {
	connCreated, connClosed    atomic.Uint64
	chanCreated, chanClosed    atomic.Uint64
	queueDeclared, queueCreate atomic.Uint64
	queueDeleted               atomic.Uint64
}

// Sample vector layouts: which value is at which index of an object's
// sample, for rates of values other than message counters.
const (
	// queues and vhosts and the overview: message counters, then these
	sMessages = int(NumStats) + iota
	sReady
	sUnacked
	sRecvOct // vhosts
	sSendOct // vhosts
	sampleLen
)

// connection samples
const (
	sConnRecv = iota
	sConnSend
)

// overview churn samples follow the queue gauges
const (
	sChurnConnCreated = sampleLen + iota
	sChurnConnClosed
	sChurnChanCreated
	sChurnChanClosed
	sChurnQueueDeclared
	sChurnQueueCreated
	sChurnQueueDeleted
	overviewSampleLen
)

type sampleVec []float64
type sampleRates []float64

type statsKey struct {
	kind byte // 'q', 'e', 'c' channel, 'n' connection, 'v', 'o'
	p    any
}

// statsSampler keeps the last sample of every object and the rates
// computed from the two last samples. Objects gone at a sample are
// dropped, so its size follows the number of objects.
type statsSampler struct {
	mu    sync.Mutex
	at    time.Time
	prev  map[statsKey]sampleVec
	rates map[statsKey]sampleRates
}

func (st *statsSampler) rate(k statsKey) sampleRates {
	st.mu.Lock()
	defer st.mu.Unlock()
	return st.rates[k]
}

// record stores a full sample taken at now and computes rates.
func (st *statsSampler) record(now time.Time, cur map[statsKey]sampleVec) {
	st.mu.Lock()
	defer st.mu.Unlock()
	dt := now.Sub(st.at).Seconds()
	rates := make(map[statsKey]sampleRates, len(cur))
	for k, v := range cur {
		r := make(sampleRates, len(v))
		if p, ok := st.prev[k]; ok && dt > 0 && len(p) == len(v) {
			for i := range v {
				r[i] = (v[i] - p[i]) / dt
			}
		}
		rates[k] = r
	}
	st.prev, st.rates, st.at = cur, rates, now
}

// statsLoop samples every object each interval until Shutdown.
func (s *Server) statsLoop(interval time.Duration) {
	defer s.wg.Done()
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-s.quit:
			return
		case now := <-t.C:
			s.sampleStats(now)
		}
	}
}

func counterVec(n int, c *msgCounts) sampleVec {
	v := make(sampleVec, n)
	for i, x := range c {
		v[i] = float64(x)
	}
	return v
}

// sampleStats takes one sample of every queue, exchange, channel,
// connection and vhost, and of the overview.
func (s *Server) sampleStats(now time.Time) {
	cur := map[statsKey]sampleVec{}
	conns := s.connList()
	ov := make(sampleVec, overviewSampleLen)
	for _, vh := range s.vhostList() {
		qs, exs := vh.snapshotLists()
		vv := make(sampleVec, sampleLen)
		for _, q := range qs {
			q.mu.Lock()
			v := counterVec(sampleLen, &q.stats)
			v[sReady], v[sUnacked] = float64(q.readyCount), float64(q.unacked)
			q.mu.Unlock()
			v[sMessages] = v[sReady] + v[sUnacked]
			for _, i := range []int{sMessages, sReady, sUnacked} {
				vv[i] += v[i]
			}
			cur[statsKey{'q', q}] = v
		}
		for _, e := range exs {
			c := e.stats.load()
			cur[statsKey{'e', e}] = counterVec(int(NumStats), &c)
		}
		t := s.vhostTotals(vh, conns)
		copy(vv, counterVec(int(NumStats), &t.msgs))
		vv[sRecvOct], vv[sSendOct] = float64(t.recvOct), float64(t.sendOct)
		cur[statsKey{'v', vh}] = vv
		for i := range sampleLen {
			ov[i] += vv[i]
		}
	}
	for _, c := range conns {
		_, chans, open := c.mon.snapshot()
		if !open {
			continue
		}
		cur[statsKey{'n', c}] = sampleVec{float64(c.mon.recvOct.Load()), float64(c.mon.sendOct.Load())}
		for _, ch := range chans {
			cc := ch.mon.stats.load()
			cur[statsKey{'c', ch}] = counterVec(int(NumStats), &cc)
		}
	}
	ch := &s.churn
	for i, a := range []*atomic.Uint64{&ch.connCreated, &ch.connClosed, &ch.chanCreated, &ch.chanClosed,
		&ch.queueDeclared, &ch.queueCreate, &ch.queueDeleted} {
		ov[sChurnConnCreated+i] = float64(a.Load())
	}
	cur[statsKey{'o', nil}] = ov
	s.stats.record(now, cur)
}

// ChurnRates is RabbitMQ's churn_rates of GET /api/overview: objects
// created and closed since the broker started, with rates.
type ChurnRates struct {
	ChannelClosed            uint64      `json:"channel_closed"`
	ChannelClosedDetails     RateDetails `json:"channel_closed_details"`
	ChannelCreated           uint64      `json:"channel_created"`
	ChannelCreatedDetails    RateDetails `json:"channel_created_details"`
	ConnectionClosed         uint64      `json:"connection_closed"`
	ConnectionClosedDetails  RateDetails `json:"connection_closed_details"`
	ConnectionCreated        uint64      `json:"connection_created"`
	ConnectionCreatedDetails RateDetails `json:"connection_created_details"`
	QueueCreated             uint64      `json:"queue_created"`
	QueueCreatedDetails      RateDetails `json:"queue_created_details"`
	QueueDeclared            uint64      `json:"queue_declared"`
	QueueDeclaredDetails     RateDetails `json:"queue_declared_details"`
	QueueDeleted             uint64      `json:"queue_deleted"`
	QueueDeletedDetails      RateDetails `json:"queue_deleted_details"`
}

func (s *Server) churnRates(r sampleRates) ChurnRates {
	c := &s.churn
	return ChurnRates{
		ChannelClosed: c.chanClosed.Load(), ChannelClosedDetails: rateOf(r, sChurnChanClosed),
		ChannelCreated: c.chanCreated.Load(), ChannelCreatedDetails: rateOf(r, sChurnChanCreated),
		ConnectionClosed: c.connClosed.Load(), ConnectionClosedDetails: rateOf(r, sChurnConnClosed),
		ConnectionCreated: c.connCreated.Load(), ConnectionCreatedDetails: rateOf(r, sChurnConnCreated),
		QueueCreated: c.queueCreate.Load(), QueueCreatedDetails: rateOf(r, sChurnQueueCreated),
		QueueDeclared: c.queueDeclared.Load(), QueueDeclaredDetails: rateOf(r, sChurnQueueDeclared),
		QueueDeleted: c.queueDeleted.Load(), QueueDeletedDetails: rateOf(r, sChurnQueueDeleted),
	}
}

package broker

import (
	"slices"
	"sort"
	"strings"
	"sync"
	"time"
)

// The oslo view: the broker's topology read as oslo.messaging's RabbitMQ
// driver lays it out (docs/MANAGEMENT.md, "GET /api/oslo"; the naming is
// in docs/RABBIT.md, "Topology", and in sections 2.5, 3.4, 4.2, 5.3 and
// 10 of the oslo wire specification). Like the other query methods it holds one lock at a time: a
// vhost's read lock to copy the bindings, then each queue's own.

// OslozOptions select what Osloz reports.
type OslozOptions struct {
	// VHost limits the view to one vhost ("" for all); ErrNotFound if it
	// does not exist.
	VHost string
}

// Osloz is the oslo.messaging view of the broker: RPC topics with their
// servers and fanout groups, reply queues with their callers, and
// notification topics with their listeners and pools.
type Osloz struct {
	Now           time.Time          `json:"now"`
	VHost         string             `json:"vhost,omitempty"`
	RPCTopics     []OsloRPCTopic     `json:"rpc_topics"`
	ReplyQueues   []OsloReplyQueue   `json:"reply_queues"`
	Notifications []OsloNotification `json:"notifications"`
	// Problems lists the flagged entries: RPC topics no server consumes
	// ("no_server") and reply queues nobody reads ("reply_unread").
	Problems []OsloProblem `json:"problems"`
}

// OsloQueue is the state of one queue in the oslo view.
type OsloQueue struct {
	Name                   string `json:"name"`
	Messages               int    `json:"messages"`
	MessagesReady          int    `json:"messages_ready"`
	MessagesUnacknowledged int    `json:"messages_unacknowledged"`
	Consumers              int    `json:"consumers"`
	// Published counts the messages the queue accepted since it was
	// declared, Delivered those it handed to consumers or basic.get.
	Published uint64 `json:"published"`
	Delivered uint64 `json:"delivered"`
	// PublishRate and DeliverRate are messages per second between the
	// last two samples of the counters; a sample is taken by a query when
	// the previous one is at least a second old, so the rate covers the
	// time between the last two queries a second or more apart (0 until
	// two samples exist).
	PublishRate float64 `json:"publish_rate"`
	DeliverRate float64 `json:"deliver_rate"`
	// OldestAgeMS is how long the oldest ready message has waited, in
	// milliseconds (0 when none waits).
	OldestAgeMS int64 `json:"oldest_message_age_ms"`
}

// OsloConn is a connection that consumes from a queue of the view.
type OsloConn struct {
	Name             string         `json:"name"`
	User             string         `json:"user"`
	PeerHost         string         `json:"peer_host"`
	PeerPort         int            `json:"peer_port"`
	ConnectionName   string         `json:"connection_name,omitempty"`
	ClientProperties map[string]any `json:"client_properties"`
}

// OsloRPCTopic is an RPC topic T on an exchange: the shared queue T, the
// servers (from the queues T.S and the connections consuming T) and the
// fanout group T_fanout.
type OsloRPCTopic struct {
	VHost    string          `json:"vhost"`
	Exchange string          `json:"exchange"`
	Topic    string          `json:"topic"`
	Queue    *OsloQueue      `json:"queue,omitempty"`
	Servers  []OsloRPCServer `json:"servers"`
	Fanout   *OsloFanout     `json:"fanout,omitempty"`
	// NoServer: no connection consumes T or any T.S, so calls time out.
	NoServer bool `json:"no_server"`
}

// OsloRPCServer is one server of a topic: Name is S of its queue T.S, or
// "" for a connection that consumes T without a server queue.
type OsloRPCServer struct {
	Name          string     `json:"name"`
	Queue         *OsloQueue `json:"queue,omitempty"`
	ConsumesTopic bool       `json:"consumes_topic"`
	FanoutQueue   string     `json:"fanout_queue,omitempty"`
	Connections   []OsloConn `json:"connections"`
}

// OsloFanout is the fanout exchange T_fanout and its queues, one per
// server (T_fanout_<id>), or one shared stream queue T_fanout.
type OsloFanout struct {
	Exchange string            `json:"exchange"`
	Queues   []OsloFanoutQueue `json:"queues"`
}

// OsloFanoutQueue is one queue of a fanout group and who consumes it.
type OsloFanoutQueue struct {
	Queue       OsloQueue  `json:"queue"`
	Connections []OsloConn `json:"connections"`
}

// OsloReplyQueue is an RPC caller's reply queue: reply_<uuid hex>, or
// reply_<host>:<process>:<n> with oslo's queue manager.
type OsloReplyQueue struct {
	VHost string `json:"vhost"`
	// Style is "uuid", "queue_manager" or "other".
	Style   string     `json:"style"`
	Queue   OsloQueue  `json:"queue"`
	Callers []OsloConn `json:"callers"`
	// Unread: nobody consumes the queue; replies sent to it pile up.
	Unread bool `json:"unread"`
}

// OsloNotification is one notification topic and priority
// (<topic>.<priority>) on an exchange: its queue, whose consumers are the
// non-pooled listeners, and the pools (queues of other names bound with
// the same key).
type OsloNotification struct {
	VHost      string     `json:"vhost"`
	Exchange   string     `json:"exchange"`
	Topic      string     `json:"topic"`
	Priority   string     `json:"priority"`
	RoutingKey string     `json:"routing_key"`
	Queue      *OsloQueue `json:"queue,omitempty"`
	Listeners  []OsloConn `json:"listeners"`
	Pools      []OsloPool `json:"pools"`
}

// OsloPool is a listener pool: one queue shared by the pool's listeners.
type OsloPool struct {
	Name      string     `json:"name"`
	Queue     OsloQueue  `json:"queue"`
	Listeners []OsloConn `json:"listeners"`
}

// OsloProblem is a flagged entry of the view.
type OsloProblem struct {
	Kind  string `json:"kind"`
	VHost string `json:"vhost"`
	Name  string `json:"name"`
	Text  string `json:"text"`
}

// osloPriorities are the notification priorities oslo routes on
// (lower-cased; "warn" is what Notifier.warning sends).
var osloPriorities = map[string]bool{"audit": true, "debug": true, "info": true, "warn": true, "warning": true,
	"error": true, "critical": true, "sample": true}

// rateSampler keeps two samples of each queue's counters for the rates
// of OsloQueue; entries of deleted queues are dropped when seen.
type rateSampler struct {
	mu sync.Mutex
	m  map[*queue]*rateSamples
}

type rateSamples struct {
	prevAt, curAt   time.Time
	prevIn, curIn   uint64
	prevOut, curOut uint64
}

func (r *rateSampler) sample(q *queue, now time.Time, in, out uint64, deleted bool) (inRate, outRate float64) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if deleted {
		delete(r.m, q)
		return 0, 0
	}
	if r.m == nil {
		r.m = map[*queue]*rateSamples{}
	}
	s := r.m[q]
	if s == nil {
		r.m[q] = &rateSamples{curAt: now, curIn: in, curOut: out}
		return 0, 0
	}
	if now.Sub(s.curAt) >= time.Second {
		s.prevAt, s.prevIn, s.prevOut = s.curAt, s.curIn, s.curOut
		s.curAt, s.curIn, s.curOut = now, in, out
	}
	if s.prevAt.IsZero() {
		return 0, 0
	}
	d := s.curAt.Sub(s.prevAt).Seconds()
	return float64(s.curIn-s.prevIn) / d, float64(s.curOut-s.prevOut) / d
}

// prune drops the samples of queues of vhs that the last query did not
// see (deleted), so the map is bounded by the live queues.
func (r *rateSampler) prune(vhs []*vhost, seen map[*queue]bool) {
	in := map[*vhost]bool{}
	for _, vh := range vhs {
		in[vh] = true
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	for q := range r.m {
		if in[q.vh] && !seen[q] {
			delete(r.m, q)
		}
	}
}

// osloBinding is a binding of the vhost copied under its lock.
type osloBinding struct {
	exchange string
	q        *queue
	key      string
}

// osloQueueState is what the view reads of a queue under its lock.
type osloQueueState struct {
	info  OsloQueue
	conns []*conn
}

// Osloz returns the oslo view of the selected vhosts.
func (s *Server) Osloz(opts OslozOptions) (*Osloz, error) {
	vhs, err := s.selectVHosts(opts.VHost)
	if err != nil {
		return nil, err
	}
	now := time.Now()
	z := &Osloz{Now: now, VHost: opts.VHost, RPCTopics: []OsloRPCTopic{}, ReplyQueues: []OsloReplyQueue{},
		Notifications: []OsloNotification{}, Problems: []OsloProblem{}}
	seen := map[*queue]bool{}
	for _, vh := range vhs {
		s.osloVHost(vh, now, z, seen)
	}
	s.mon.rates.prune(vhs, seen)
	return z, nil
}

func (s *Server) osloVHost(vh *vhost, now time.Time, z *Osloz, seen map[*queue]bool) {
	var topicBinds, fanoutBinds []osloBinding
	fanoutXs := map[string]bool{}
	vh.mu.RLock()
	queues := make([]*queue, 0, len(vh.queues))
	for _, q := range vh.queues {
		queues = append(queues, q)
	}
	for _, e := range vh.exchanges {
		switch {
		case e.kind == kindTopic && e.name != "" && !strings.HasPrefix(e.name, "amq."):
			for _, b := range e.bindings {
				if b.q != nil {
					topicBinds = append(topicBinds, osloBinding{e.name, b.q, b.key})
				}
			}
		case e.kind == kindFanout && strings.HasSuffix(e.name, "_fanout") && len(e.name) > len("_fanout"):
			fanoutXs[e.name] = true
			for _, b := range e.bindings {
				if b.q != nil {
					fanoutBinds = append(fanoutBinds, osloBinding{e.name, b.q, b.key})
				}
			}
		}
	}
	vh.mu.RUnlock()

	states := map[*queue]*osloQueueState{}
	state := func(q *queue) *osloQueueState {
		if st := states[q]; st != nil {
			return st
		}
		st := s.osloQueueState(q, now)
		states[q] = st
		seen[q] = true
		return st
	}
	connCache := map[*conn]OsloConn{}
	conns := func(cs []*conn) []OsloConn {
		out := []OsloConn{}
		for _, c := range cs {
			oc, ok := connCache[c]
			if !ok {
				oc = osloConn(c)
				connCache[c] = oc
			}
			out = append(out, oc)
		}
		return out
	}

	// Queues bound with their own name as key: RPC topic queues T, server
	// queues T.S and notification queues <topic>.<priority>.
	self := map[string]map[string]*queue{} // exchange -> name -> queue
	for _, b := range topicBinds {
		if b.q.name == b.key {
			if self[b.exchange] == nil {
				self[b.exchange] = map[string]*queue{}
			}
			self[b.exchange][b.key] = b.q
		}
	}
	type topicKey struct{ exchange, topic string }
	topics := map[topicKey]*OsloRPCTopic{}
	serverQs := map[topicKey]map[string]*queue{}
	topicOf := func(k topicKey) *OsloRPCTopic {
		t := topics[k]
		if t == nil {
			t = &OsloRPCTopic{VHost: vh.name, Exchange: k.exchange, Topic: k.topic, Servers: []OsloRPCServer{}}
			topics[k] = t
		}
		return t
	}
	type notifKey struct{ exchange, key string }
	notifs := map[notifKey]*OsloNotification{}
	notifOf := func(exchange, key string) *OsloNotification {
		k := notifKey{exchange, key}
		n := notifs[k]
		if n == nil {
			i := strings.LastIndexByte(key, '.')
			n = &OsloNotification{VHost: vh.name, Exchange: exchange, Topic: key[:i], Priority: key[i+1:], RoutingKey: key,
				Listeners: []OsloConn{}, Pools: []OsloPool{}}
			notifs[k] = n
		}
		return n
	}
	isTopic := func(exchange, name string) bool {
		return self[exchange][name] != nil || fanoutXs[name+"_fanout"]
	}
	rpcNames := map[topicKey]bool{} // queues classified as RPC topic or server queues
	for ex, names := range self {
		for name, q := range names {
			// The longest proper prefix T of name (split at a dot) that is
			// itself a topic makes name a server queue T.S.
			topic := ""
			for i := len(name) - 1; i > 0; i-- {
				if name[i] == '.' && i+1 < len(name) && isTopic(ex, name[:i]) {
					topic = name[:i]
					break
				}
			}
			switch {
			case topic != "":
				rpcNames[topicKey{ex, name}] = true
				k := topicKey{ex, topic}
				topicOf(k)
				if serverQs[k] == nil {
					serverQs[k] = map[string]*queue{}
				}
				serverQs[k][name[len(topic)+1:]] = q
			case osloNotificationKey(name):
				st := state(q)
				n := notifOf(ex, name)
				qi := st.info
				n.Queue = &qi
				n.Listeners = conns(st.conns)
			default:
				rpcNames[topicKey{ex, name}] = true
				qi := state(q).info
				topicOf(topicKey{ex, name}).Queue = &qi
			}
		}
	}
	// Pools: other queues bound with a notification key.
	for _, b := range topicBinds {
		if b.q.name == b.key || !osloNotificationKey(b.key) || rpcNames[topicKey{b.exchange, b.key}] {
			continue
		}
		st := state(b.q)
		n := notifOf(b.exchange, b.key)
		n.Pools = append(n.Pools, OsloPool{Name: b.q.name, Queue: st.info, Listeners: conns(st.conns)})
	}

	// Servers of each topic, matched by connection across T, T.S and the
	// fanout queue: oslo's server consumes all three on one connection.
	fanoutMembers := map[string][]*queue{} // topic -> queues bound to T_fanout
	for _, b := range fanoutBinds {
		t := strings.TrimSuffix(b.exchange, "_fanout")
		fanoutMembers[t] = append(fanoutMembers[t], b.q)
	}
	for t := range fanoutMembers {
		found := false
		for k := range topics {
			if k.topic == t {
				found = true
			}
		}
		if !found {
			// A fanout group without a topic queue: the exchange is not
			// scoped by the control exchange, so it has none.
			topicOf(topicKey{"", t})
		}
	}
	for k, t := range topics {
		byConn := map[*conn]int{} // index into t.Servers
		names := make([]string, 0, len(serverQs[k]))
		for n := range serverQs[k] {
			names = append(names, n)
		}
		sort.Strings(names)
		for _, n := range names {
			st := state(serverQs[k][n])
			qi := st.info
			t.Servers = append(t.Servers, OsloRPCServer{Name: n, Queue: &qi, Connections: conns(st.conns)})
			for _, c := range st.conns {
				if _, ok := byConn[c]; !ok {
					byConn[c] = len(t.Servers) - 1
				}
			}
		}
		serverOf := func(c *conn) *OsloRPCServer {
			i, ok := byConn[c]
			if !ok {
				t.Servers = append(t.Servers, OsloRPCServer{Connections: conns([]*conn{c})})
				i = len(t.Servers) - 1
				byConn[c] = i
			}
			return &t.Servers[i]
		}
		consumed := false
		if q := self[k.exchange][k.topic]; q != nil {
			for _, c := range state(q).conns {
				serverOf(c).ConsumesTopic = true
				consumed = true
			}
		}
		for _, sv := range t.Servers {
			if sv.Queue != nil && sv.Queue.Consumers > 0 {
				consumed = true
			}
		}
		if members := fanoutMembers[k.topic]; len(members) > 0 || fanoutXs[k.topic+"_fanout"] {
			f := &OsloFanout{Exchange: k.topic + "_fanout", Queues: []OsloFanoutQueue{}}
			sort.Slice(members, func(i, j int) bool { return members[i].name < members[j].name })
			for _, q := range members {
				st := state(q)
				f.Queues = append(f.Queues, OsloFanoutQueue{Queue: st.info, Connections: conns(st.conns)})
				if k.exchange == "" {
					continue
				}
				for _, c := range st.conns {
					if sv := serverOf(c); sv.FanoutQueue == "" {
						sv.FanoutQueue = q.name
					}
				}
			}
			t.Fanout = f
		}
		t.NoServer = !consumed && k.exchange != ""
		if t.NoServer {
			z.Problems = append(z.Problems, OsloProblem{Kind: "no_server", VHost: vh.name, Name: t.Topic,
				Text: "no server consumes topic " + t.Topic + " on exchange " + t.Exchange + ": calls to it time out"})
		}
	}
	tl := make([]OsloRPCTopic, 0, len(topics))
	for _, t := range topics {
		tl = append(tl, *t)
	}
	sort.Slice(tl, func(i, j int) bool {
		if tl[i].Exchange != tl[j].Exchange {
			return tl[i].Exchange < tl[j].Exchange
		}
		return tl[i].Topic < tl[j].Topic
	})
	z.RPCTopics = append(z.RPCTopics, tl...)

	nl := make([]OsloNotification, 0, len(notifs))
	for _, n := range notifs {
		sort.Slice(n.Pools, func(i, j int) bool { return n.Pools[i].Name < n.Pools[j].Name })
		nl = append(nl, *n)
	}
	sort.Slice(nl, func(i, j int) bool {
		if nl[i].Exchange != nl[j].Exchange {
			return nl[i].Exchange < nl[j].Exchange
		}
		return nl[i].RoutingKey < nl[j].RoutingKey
	})
	z.Notifications = append(z.Notifications, nl...)

	sort.Slice(queues, func(i, j int) bool { return queues[i].name < queues[j].name })
	for _, q := range queues {
		if !strings.HasPrefix(q.name, "reply_") || len(q.name) == len("reply_") {
			continue
		}
		st := state(q)
		r := OsloReplyQueue{VHost: vh.name, Style: replyStyle(q.name[len("reply_"):]), Queue: st.info,
			Callers: conns(st.conns), Unread: st.info.Consumers == 0}
		z.ReplyQueues = append(z.ReplyQueues, r)
		if r.Unread {
			z.Problems = append(z.Problems, OsloProblem{Kind: "reply_unread", VHost: vh.name, Name: q.name,
				Text: "nobody reads reply queue " + q.name + ": its caller is gone, replies to it pile up"})
		}
	}
}

// osloNotificationKey reports whether key is <topic>.<priority>.
func osloNotificationKey(key string) bool {
	i := strings.LastIndexByte(key, '.')
	return i > 0 && osloPriorities[key[i+1:]]
}

// replyStyle names the reply queue naming scheme of the part after
// "reply_": 32 hex digits (uuid4().hex) or host:process:counter.
func replyStyle(id string) string {
	if len(id) == 32 && strings.Trim(id, "0123456789abcdef") == "" {
		return "uuid"
	}
	if p := strings.Split(id, ":"); len(p) >= 3 && strings.Trim(p[len(p)-1], "0123456789") == "" && p[len(p)-1] != "" {
		return "queue_manager"
	}
	return "other"
}

func (s *Server) osloQueueState(q *queue, now time.Time) *osloQueueState {
	st := &osloQueueState{info: OsloQueue{Name: q.name}}
	nowMs := now.UnixMilli()
	q.mu.Lock()
	st.info.MessagesReady = q.readyCount
	st.info.MessagesUnacknowledged = q.unacked
	st.info.Consumers = len(q.consumers)
	st.info.Published, st.info.Delivered = q.inCount, q.outCount
	oldest := int64(0)
	for lv := range q.ready {
		if q.ready[lv].Len() > 0 {
			if at := q.ready[lv].Front().queuedAt; at != 0 && (oldest == 0 || at < oldest) {
				oldest = at
			}
		}
	}
	seen := map[*conn]bool{}
	for _, c := range q.consumers {
		if cn := c.ch.conn; !seen[cn] {
			seen[cn] = true
			st.conns = append(st.conns, cn)
		}
	}
	deleted := q.deleted
	q.mu.Unlock()
	st.info.Messages = st.info.MessagesReady + st.info.MessagesUnacknowledged
	if oldest != 0 && nowMs > oldest {
		st.info.OldestAgeMS = nowMs - oldest
	}
	st.info.PublishRate, st.info.DeliverRate = s.mon.rates.sample(q, now, st.info.Published, st.info.Delivered, deleted)
	sort.Slice(st.conns, func(i, j int) bool { return st.conns[i].monName() < st.conns[j].monName() })
	return st
}

func osloConn(c *conn) OsloConn {
	info, _, _ := c.mon.snapshot()
	oc := OsloConn{Name: c.monName(), User: info.user, ClientProperties: jsonTable(info.props)}
	oc.PeerHost, oc.PeerPort = hostPort(c.nc.RemoteAddr())
	if n, ok := info.props["connection_name"].(string); ok {
		oc.ConnectionName = n
	}
	return oc
}

// filterVHosts keeps the entries of the vhosts keep allows (the API shows
// management users only the vhosts they have permissions in).
func (z *Osloz) filterVHosts(keep func(string) bool) {
	z.RPCTopics = slices.DeleteFunc(z.RPCTopics, func(t OsloRPCTopic) bool { return !keep(t.VHost) })
	z.ReplyQueues = slices.DeleteFunc(z.ReplyQueues, func(r OsloReplyQueue) bool { return !keep(r.VHost) })
	z.Notifications = slices.DeleteFunc(z.Notifications, func(n OsloNotification) bool { return !keep(n.VHost) })
	z.Problems = slices.DeleteFunc(z.Problems, func(p OsloProblem) bool { return !keep(p.VHost) })
}

package broker

import (
	"crypto/md5"
	"crypto/tls"
	"encoding/base64"
	"errors"
	"io"
	"net"
	"net/url"
	"os"
	"runtime"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/oslogo/oslogo/broker/internal/amqp091"

	amqpclient "github.com/rabbitmq/amqp091-go"
)

// The query methods in this file return snapshots of the broker's state in
// the shapes (and JSON field names) of RabbitMQ 3.10's management HTTP API;
// the HTTP handlers in mgmt.go only encode them. Each method holds one of
// the broker's locks at a time (Server.mu, a vhost's, a queue's, a
// channel's), never nested and never across I/O, so it cannot take part
// in a lock-order cycle; the numbers it returns are each consistent but
// not a snapshot of one instant.

// ErrNotFound is returned by the query methods when the named vhost,
// queue, exchange or connection does not exist.
var ErrNotFound = errors.New("broker: object not found")

// ManagementVersion is the RabbitMQ management API version the query
// methods and the HTTP API follow.
const ManagementVersion = "3.10.8"

// connMonitor is what the query methods may read of a connection from
// other goroutines: a snapshot taken when the handshake completes and the
// set of its channels, under its own mutex (a leaf lock), plus byte
// counters.
type connMonitor struct {
	recvOct atomic.Uint64
	sendOct atomic.Uint64

	mu    sync.Mutex
	open  bool
	info  connSnapshot
	chans map[uint16]*channel
}

type connSnapshot struct {
	user        string
	vhost       string
	props       amqp091.Table
	mechanism   string
	frameMax    uint32
	channelMax  uint16
	heartbeat   time.Duration
	connectedAt time.Time
}

// opened records the negotiated connection; called by the reader once the
// handshake succeeded.
func (m *connMonitor) opened(c *conn, mechanism string) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.open = true
	m.info = connSnapshot{user: c.user.name, vhost: c.vh.name, props: c.clientProps, mechanism: mechanism,
		frameMax: c.frameMax, channelMax: c.channelMax, heartbeat: c.heartbeat, connectedAt: time.Now()}
}

// addChannel records an opened channel; a channel that is closed is
// skipped on reading and replaced when its number is reused, so the map is
// bounded by channel_max.
func (m *connMonitor) addChannel(ch *channel) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.chans == nil {
		m.chans = map[uint16]*channel{}
	}
	m.chans[ch.id] = ch
}

func (m *connMonitor) snapshot() (connSnapshot, []*channel, bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	chans := make([]*channel, 0, len(m.chans))
	for _, ch := range m.chans {
		chans = append(chans, ch)
	}
	sort.Slice(chans, func(i, j int) bool { return chans[i].id < chans[j].id })
	return m.info, chans, m.open
}

// chanMonitor mirrors channel settings owned by the reader goroutine so
// that the query methods can read them.
type chanMonitor struct {
	prefetch atomic.Int64
	confirm  atomic.Bool
	tx       atomic.Bool
}

// countingReader counts the bytes a connection receives.
type countingReader struct {
	r io.Reader
	n *atomic.Uint64
}

func (r countingReader) Read(p []byte) (int, error) {
	n, err := r.r.Read(p)
	r.n.Add(uint64(n))
	return n, err
}

// Overview is GET /api/overview.
type Overview struct {
	ManagementVersion      string         `json:"management_version"`
	RatesMode              string         `json:"rates_mode"`
	ExchangeTypes          []ExchangeType `json:"exchange_types"`
	ProductVersion         string         `json:"product_version"`
	ProductName            string         `json:"product_name"`
	RabbitMQVersion        string         `json:"rabbitmq_version"`
	ClusterName            string         `json:"cluster_name"`
	ErlangVersion          string         `json:"erlang_version"`
	ErlangFullVersion      string         `json:"erlang_full_version"`
	DisableStats           bool           `json:"disable_stats"`
	EnableQueueTotals      bool           `json:"enable_queue_totals"`
	MessageStats           map[string]any `json:"message_stats"`
	ObjectTotals           ObjectTotals   `json:"object_totals"`
	QueueTotals            QueueTotals    `json:"queue_totals"`
	StatisticsDBEventQueue int            `json:"statistics_db_event_queue"`
	Node                   string         `json:"node"`
	Listeners              []Listener     `json:"listeners"`
	Contexts               []Context      `json:"contexts"`
}

// ExchangeType describes a supported exchange type.
type ExchangeType struct {
	Name        string `json:"name"`
	Description string `json:"description"`
	Enabled     bool   `json:"enabled"`
}

// ObjectTotals counts the broker's objects.
type ObjectTotals struct {
	Channels    int `json:"channels"`
	Connections int `json:"connections"`
	Consumers   int `json:"consumers"`
	Exchanges   int `json:"exchanges"`
	Queues      int `json:"queues"`
}

// QueueTotals sums the message counts of all queues.
type QueueTotals struct {
	Messages               int `json:"messages"`
	MessagesReady          int `json:"messages_ready"`
	MessagesUnacknowledged int `json:"messages_unacknowledged"`
}

// Listener is one listening socket.
type Listener struct {
	Node       string         `json:"node"`
	Protocol   string         `json:"protocol"`
	IPAddress  string         `json:"ip_address"`
	Port       int            `json:"port"`
	SocketOpts map[string]any `json:"socket_opts"`
}

// Context is one HTTP listener of the management API.
type Context struct {
	Node        string `json:"node"`
	Description string `json:"description"`
	Path        string `json:"path"`
	Port        string `json:"port"`
	IP          string `json:"ip,omitempty"`
}

// NodeName is the node name reported by the query methods: RabbitMQ's
// "rabbit@" followed by the short host name, which tools put in URLs.
func (s *Server) NodeName() string {
	h, err := os.Hostname()
	if err != nil || h == "" {
		h = "localhost"
	}
	if i := strings.IndexByte(h, '.'); i > 0 {
		h = h[:i]
	}
	return "rabbit@" + h
}

// Overview returns the broker-wide summary of GET /api/overview.
func (s *Server) Overview() Overview {
	node := s.NodeName()
	o := Overview{
		ManagementVersion: ManagementVersion,
		RatesMode:         "none",
		ExchangeTypes: []ExchangeType{
			{Name: kindDirect, Description: "AMQP direct exchange, as per the AMQP specification", Enabled: true},
			{Name: kindFanout, Description: "AMQP fanout exchange, as per the AMQP specification", Enabled: true},
			{Name: kindHeaders, Description: "AMQP headers exchange, as per the AMQP specification", Enabled: true},
			{Name: kindTopic, Description: "AMQP topic exchange, as per the AMQP specification", Enabled: true},
		},
		ProductVersion:    s.opts.ProductVersion,
		ProductName:       s.opts.ProductName,
		RabbitMQVersion:   s.opts.ProductVersion,
		ClusterName:       node,
		ErlangVersion:     runtime.Version(),
		ErlangFullVersion: runtime.Version() + " (oslogo embedded broker, no Erlang)",
		EnableQueueTotals: true,
		MessageStats:      map[string]any{},
		Node:              node,
		Listeners:         []Listener{},
		Contexts:          []Context{},
	}
	for _, vh := range s.vhostList() {
		qs, exs := vh.snapshotLists()
		o.ObjectTotals.Exchanges += len(exs)
		o.ObjectTotals.Queues += len(qs)
		for _, q := range qs {
			q.mu.Lock()
			o.QueueTotals.MessagesReady += q.readyCount
			o.QueueTotals.MessagesUnacknowledged += q.unacked
			o.ObjectTotals.Consumers += len(q.consumers)
			q.mu.Unlock()
		}
	}
	o.QueueTotals.Messages = o.QueueTotals.MessagesReady + o.QueueTotals.MessagesUnacknowledged
	for _, c := range s.connList() {
		info, chans, open := c.mon.snapshot()
		if !open || info.internal() {
			continue
		}
		o.ObjectTotals.Connections++
		for _, ch := range chans {
			if ch.isOpen() {
				o.ObjectTotals.Channels++
			}
		}
	}
	s.mu.Lock()
	addrs := []struct {
		proto string
		a     net.Addr
	}{{"amqp", s.addr}, {"amqp/ssl", s.tlsAddr}, {"http", s.httpAddrLocked()}}
	s.mu.Unlock()
	for _, a := range addrs {
		ta, ok := a.a.(*net.TCPAddr)
		if !ok {
			continue
		}
		o.Listeners = append(o.Listeners, Listener{Node: node, Protocol: a.proto, IPAddress: ta.IP.String(), Port: ta.Port, SocketOpts: map[string]any{}})
		if a.proto == "http" {
			o.Contexts = append(o.Contexts, Context{Node: node, Description: "RabbitMQ Management", Path: "/", Port: strconv.Itoa(ta.Port), IP: ta.IP.String()})
		}
	}
	return o
}

// VHostInfo is one entry of GET /api/vhosts.
type VHostInfo struct {
	Name                   string            `json:"name"`
	Description            string            `json:"description"`
	Tags                   []string          `json:"tags"`
	Metadata               VHostMetadata     `json:"metadata"`
	Tracing                bool              `json:"tracing"`
	DefaultQueueType       string            `json:"default_queue_type"`
	ClusterState           map[string]string `json:"cluster_state"`
	Messages               int               `json:"messages"`
	MessagesReady          int               `json:"messages_ready"`
	MessagesUnacknowledged int               `json:"messages_unacknowledged"`
}

// VHostMetadata is a vhost's description and tags.
type VHostMetadata struct {
	Description string   `json:"description"`
	Tags        []string `json:"tags"`
}

// VHosts returns every vhost, sorted by name.
func (s *Server) VHosts() []VHostInfo {
	node := s.NodeName()
	var out []VHostInfo
	for _, vh := range s.vhostList() {
		vi := VHostInfo{Name: vh.name, Tags: []string{}, Metadata: VHostMetadata{Tags: []string{}},
			DefaultQueueType: "classic", ClusterState: map[string]string{node: "running"}}
		qs, _ := vh.snapshotLists()
		for _, q := range qs {
			q.mu.Lock()
			vi.MessagesReady += q.readyCount
			vi.MessagesUnacknowledged += q.unacked
			q.mu.Unlock()
		}
		vi.Messages = vi.MessagesReady + vi.MessagesUnacknowledged
		out = append(out, vi)
	}
	return out
}

// UserInfo is one entry of GET /api/users.
type UserInfo struct {
	Name             string         `json:"name"`
	PasswordHash     string         `json:"password_hash"`
	HashingAlgorithm string         `json:"hashing_algorithm"`
	Tags             []string       `json:"tags"`
	Limits           map[string]any `json:"limits"`
}

// Users returns the accounts, sorted by name.
func (s *Server) Users() []UserInfo {
	var out []UserInfo
	for _, u := range s.userList() {
		tags := append([]string{}, u.tags...)
		out = append(out, UserInfo{Name: u.name, PasswordHash: base64.StdEncoding.EncodeToString(u.hash),
			HashingAlgorithm: "rabbit_password_hashing_sha256", Tags: tags, Limits: map[string]any{}})
	}
	return out
}

// UserTags returns the tags of the named user and whether it exists.
func (s *Server) UserTags(name string) ([]string, bool) {
	u := s.lookupUser(name)
	if u == nil {
		return nil, false
	}
	return append([]string{}, u.tags...), true
}

// PermissionInfo is one entry of GET /api/permissions.
type PermissionInfo struct {
	User      string `json:"user"`
	VHost     string `json:"vhost"`
	Configure string `json:"configure"`
	Write     string `json:"write"`
	Read      string `json:"read"`
}

// Permissions returns each user's permissions per vhost, sorted by user
// then vhost. A user configured without permissions may do everything in
// every vhost and is listed with ".*" for each.
func (s *Server) Permissions() []PermissionInfo {
	vhs := s.vhostList()
	var out []PermissionInfo
	for _, u := range s.userList() {
		if u.perms == nil {
			for _, vh := range vhs {
				out = append(out, PermissionInfo{User: u.name, VHost: vh.name, Configure: ".*", Write: ".*", Read: ".*"})
			}
			continue
		}
		names := make([]string, 0, len(u.perms))
		for vh := range u.perms {
			names = append(names, vh)
		}
		sort.Strings(names)
		for _, vh := range names {
			p := u.perms[vh]
			out = append(out, PermissionInfo{User: u.name, VHost: vh, Configure: p.src.Configure,
				Write: p.src.Write, Read: p.src.Read})
		}
	}
	return out
}

// UserMayAccessVHost reports whether the named user has permissions in vh.
func (s *Server) UserMayAccessVHost(name, vh string) bool {
	u := s.lookupUser(name)
	return u != nil && u.vhostAllowed(vh)
}

// QueuesOptions select queues: all, those of VHost, or the one Name in
// VHost.
type QueuesOptions struct {
	VHost string
	Name  string
	// Details adds consumer_details (GET of a single queue does).
	Details bool
}

// QueueInfo is one entry of GET /api/queues.
type QueueInfo struct {
	Name                   string         `json:"name"`
	VHost                  string         `json:"vhost"`
	Durable                bool           `json:"durable"`
	AutoDelete             bool           `json:"auto_delete"`
	Exclusive              bool           `json:"exclusive"`
	Arguments              map[string]any `json:"arguments"`
	Type                   string         `json:"type"`
	State                  string         `json:"state"`
	Node                   string         `json:"node"`
	Policy                 *string        `json:"policy"`
	ExclusiveConsumerTag   *string        `json:"exclusive_consumer_tag"`
	OwnerPidDetails        *ConnRef       `json:"owner_pid_details,omitempty"`
	Messages               int            `json:"messages"`
	MessagesReady          int            `json:"messages_ready"`
	MessagesUnacknowledged int            `json:"messages_unacknowledged"`
	MessageBytesReady      int64          `json:"message_bytes_ready"`
	Consumers              int            `json:"consumers"`
	Memory                 int64          `json:"memory"`
	ConsumerDetails        []ConsumerInfo `json:"consumer_details,omitempty"`
}

// ConnRef names a connection, as in owner_pid_details.
type ConnRef struct {
	Name     string `json:"name"`
	PeerHost string `json:"peer_host"`
	PeerPort int    `json:"peer_port"`
}

// queueOverhead approximates the memory a queue holds beyond message
// bodies: its structure and one entry per message.
const (
	queueOverhead = 1024
	entryOverhead = 64
)

// Queues returns the selected queues sorted by vhost and name; a named
// queue or vhost that does not exist gives ErrNotFound.
func (s *Server) Queues(opts QueuesOptions) ([]QueueInfo, error) {
	vhs, err := s.selectVHosts(opts.VHost)
	if err != nil {
		return nil, err
	}
	node := s.NodeName()
	var out []QueueInfo
	for _, vh := range vhs {
		qs, _ := vh.snapshotLists()
		for _, q := range qs {
			if opts.Name != "" && q.name != opts.Name {
				continue
			}
			out = append(out, q.info(node, opts.Details))
		}
	}
	if opts.Name != "" && len(out) == 0 {
		return nil, ErrNotFound
	}
	return out, nil
}

func (q *queue) info(node string, details bool) QueueInfo {
	qi := QueueInfo{Name: q.name, VHost: q.vh.name, Durable: q.durable, AutoDelete: q.autoDelete,
		Exclusive: q.exclusive, Arguments: jsonTable(q.args), Type: q.queueType(), State: "running", Node: node}
	if q.owner != nil {
		ref := q.owner.ref()
		qi.OwnerPidDetails = &ref
	}
	q.mu.Lock()
	qi.MessagesReady = q.readyCount
	qi.MessagesUnacknowledged = q.unacked
	qi.MessageBytesReady = q.readyBytes
	qi.Consumers = len(q.consumers)
	if q.stream != nil {
		qi.MessagesReady = q.countLocked()
	}
	consumers := append([]*consumer(nil), q.consumers...)
	qi.Memory = queueOverhead + q.readyBytes + int64(q.readyCount)*entryOverhead
	sac := q.sac
	q.mu.Unlock()
	qi.Messages = qi.MessagesReady + qi.MessagesUnacknowledged
	for i, c := range consumers {
		if c.exclusive {
			tag := c.tag
			qi.ExclusiveConsumerTag = &tag
		}
		if details {
			qi.ConsumerDetails = append(qi.ConsumerDetails, c.info(node, !sac || i == 0))
		}
	}
	if details && qi.ConsumerDetails == nil {
		qi.ConsumerDetails = []ConsumerInfo{}
	}
	return qi
}

// ExchangesOptions select exchanges like QueuesOptions select queues.
type ExchangesOptions struct {
	VHost string
	Name  string
	// ByName makes Name select the default exchange when it is "".
	ByName bool
}

// ExchangeInfo is one entry of GET /api/exchanges.
type ExchangeInfo struct {
	Name       string         `json:"name"`
	VHost      string         `json:"vhost"`
	Type       string         `json:"type"`
	Durable    bool           `json:"durable"`
	AutoDelete bool           `json:"auto_delete"`
	Internal   bool           `json:"internal"`
	Arguments  map[string]any `json:"arguments"`
}

// Exchanges returns the selected exchanges sorted by vhost and name.
func (s *Server) Exchanges(opts ExchangesOptions) ([]ExchangeInfo, error) {
	vhs, err := s.selectVHosts(opts.VHost)
	if err != nil {
		return nil, err
	}
	var out []ExchangeInfo
	for _, vh := range vhs {
		_, exs := vh.snapshotLists()
		for _, e := range exs {
			if opts.ByName && e.name != opts.Name {
				continue
			}
			out = append(out, ExchangeInfo{Name: e.name, VHost: vh.name, Type: e.kind, Durable: e.durable,
				AutoDelete: e.autoDelete, Internal: e.internal, Arguments: jsonTable(e.args)})
		}
	}
	if opts.ByName && len(out) == 0 {
		return nil, ErrNotFound
	}
	return out, nil
}

// BindingInfo is one entry of GET /api/bindings.
type BindingInfo struct {
	Source          string         `json:"source"`
	VHost           string         `json:"vhost"`
	Destination     string         `json:"destination"`
	DestinationType string         `json:"destination_type"`
	RoutingKey      string         `json:"routing_key"`
	Arguments       map[string]any `json:"arguments"`
	PropertiesKey   string         `json:"properties_key"`
}

// Bindings returns the bindings of vhost (all vhosts when ""), including
// each queue's implicit binding to the default exchange, first, as
// RabbitMQ lists them.
func (s *Server) Bindings(vhost string) ([]BindingInfo, error) {
	vhs, err := s.selectVHosts(vhost)
	if err != nil {
		return nil, err
	}
	var out []BindingInfo
	for _, vh := range vhs {
		var implicit, explicit []BindingInfo
		vh.mu.RLock()
		for _, q := range vh.queues {
			implicit = append(implicit, BindingInfo{Source: "", VHost: vh.name, Destination: q.name, DestinationType: "queue",
				RoutingKey: q.name, Arguments: map[string]any{}, PropertiesKey: propertiesKey(q.name, nil)})
		}
		for _, e := range vh.exchanges {
			for _, b := range e.bindings {
				bi := BindingInfo{Source: e.name, VHost: vh.name, RoutingKey: b.key, Arguments: jsonTable(b.args),
					PropertiesKey: propertiesKey(b.key, b.args)}
				if b.q != nil {
					bi.Destination, bi.DestinationType = b.q.name, "queue"
				} else if b.dst != nil {
					bi.Destination, bi.DestinationType = b.dst.name, "exchange"
				}
				explicit = append(explicit, bi)
			}
		}
		vh.mu.RUnlock()
		sort.Slice(implicit, func(i, j int) bool { return implicit[i].Destination < implicit[j].Destination })
		sort.Slice(explicit, func(i, j int) bool {
			a, b := explicit[i], explicit[j]
			if a.Source != b.Source {
				return a.Source < b.Source
			}
			if a.Destination != b.Destination {
				return a.Destination < b.Destination
			}
			if a.DestinationType != b.DestinationType {
				return a.DestinationType < b.DestinationType
			}
			return a.PropertiesKey < b.PropertiesKey
		})
		out = append(out, implicit...)
		out = append(out, explicit...)
	}
	return out, nil
}

// propertiesKey is RabbitMQ's synthesized binding name: the routing key
// URL-encoded ("~" when empty), followed by "~" and a digest of the
// arguments when there are any. The digest is of oslogo's canonical form
// of the table, so it differs from RabbitMQ's (which hashes an Erlang
// term) but is stable.
func propertiesKey(key string, args amqp091.Table) string {
	k := "~"
	if key != "" {
		k = strings.ReplaceAll(url.QueryEscape(key), "*", "%2A")
		k = strings.ReplaceAll(k, "~", "%7E")
	}
	if len(args) == 0 {
		return k
	}
	sum := md5.Sum([]byte(tableKey(args)))
	return k + "~" + base64.RawURLEncoding.EncodeToString(sum[:])
}

// ConnectionInfo is one entry of GET /api/connections.
type ConnectionInfo struct {
	Name             string         `json:"name"`
	Node             string         `json:"node"`
	Type             string         `json:"type"`
	State            string         `json:"state"`
	User             string         `json:"user"`
	VHost            string         `json:"vhost"`
	Protocol         string         `json:"protocol"`
	AuthMechanism    string         `json:"auth_mechanism"`
	Host             string         `json:"host"`
	Port             int            `json:"port"`
	PeerHost         string         `json:"peer_host"`
	PeerPort         int            `json:"peer_port"`
	SSL              bool           `json:"ssl"`
	FrameMax         uint32         `json:"frame_max"`
	ChannelMax       uint16         `json:"channel_max"`
	Timeout          int            `json:"timeout"`
	Channels         int            `json:"channels"`
	ConnectedAt      int64          `json:"connected_at"`
	ClientProperties map[string]any `json:"client_properties"`
	UserProvidedName *string        `json:"user_provided_name,omitempty"`
	RecvOct          uint64         `json:"recv_oct"`
	SendOct          uint64         `json:"send_oct"`
}

// ConnectionsOptions select connections.
type ConnectionsOptions struct {
	// Name selects one connection by its name; ErrNotFound if absent.
	Name string
	// User keeps only this user's connections when set.
	User string
}

// Connections returns the open (authenticated) connections sorted by name.
func (s *Server) Connections(opts ConnectionsOptions) ([]ConnectionInfo, error) {
	node := s.NodeName()
	var out []ConnectionInfo
	for _, c := range s.connList() {
		if opts.Name != "" && c.monName() != opts.Name {
			continue
		}
		info, chans, open := c.mon.snapshot()
		if !open || info.internal() || (opts.User != "" && info.user != opts.User) {
			continue
		}
		ci := ConnectionInfo{Name: c.monName(), Node: node, Type: "network", State: "running", User: info.user, VHost: info.vhost,
			Protocol: "AMQP 0-9-1", AuthMechanism: info.mechanism, FrameMax: info.frameMax, ChannelMax: info.channelMax,
			Timeout: int(info.heartbeat / time.Second), ConnectedAt: info.connectedAt.UnixMilli(),
			ClientProperties: jsonTable(info.props), RecvOct: c.mon.recvOct.Load(), SendOct: c.mon.sendOct.Load()}
		ci.Host, ci.Port = hostPort(c.nc.LocalAddr())
		ci.PeerHost, ci.PeerPort = hostPort(c.nc.RemoteAddr())
		if _, ok := c.nc.(*tls.Conn); ok {
			ci.SSL = true
		}
		if n, ok := info.props["connection_name"].(string); ok {
			ci.UserProvidedName = &n
		}
		if s.alarm.Load() {
			ci.State = "blocked"
		}
		for _, ch := range chans {
			if ch.isOpen() {
				ci.Channels++
			}
		}
		out = append(out, ci)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	if opts.Name != "" && len(out) == 0 {
		return nil, ErrNotFound
	}
	return out, nil
}

// CloseConnection closes the named connection as RabbitMQ's management
// API does: connection.close with 320 CONNECTION_FORCED and reason as its
// text, then the socket once the client answered or after a short grace.
func (s *Server) CloseConnection(name, reason string) error {
	for _, c := range s.connList() {
		if c.monName() != name {
			continue
		}
		if info, _, open := c.mon.snapshot(); !open || info.internal() {
			continue
		}
		c.forceClose("CONNECTION_FORCED - " + reason)
		return nil
	}
	return ErrNotFound
}

// forceClose sends connection.close with text from outside the reader and
// closes the socket after a grace, like hangup; the client's close-ok (or
// its own close of the socket) ends the reader.
func (c *conn) forceClose(text string) {
	c.outMu.Lock()
	if !c.flushDone {
		c.out = amqp091.AppendMethodFrame(c.out, 0, &amqp091.ConnectionClose{ReplyCode: amqp091.ConnectionForced, ReplyText: text})
	}
	c.outMu.Unlock()
	c.wakeWriter()
	c.srv.mu.Lock()
	if c.srv.stopped {
		// Shutdown is closing every connection already.
		c.srv.mu.Unlock()
		return
	}
	c.srv.wg.Add(1)
	c.srv.mu.Unlock()
	go func() {
		defer c.srv.wg.Done()
		t := time.NewTimer(time.Second)
		defer t.Stop()
		select {
		case <-c.done:
		case <-t.C:
		}
		_ = c.nc.Close()
	}()
}

// monName is the connection's name in the management API: RabbitMQ's
// "peer -> local" for sockets; in-process pipes, whose addresses are all
// "pipe", are told apart by their number.
func (c *conn) monName() string {
	if a := c.nc.RemoteAddr(); a != nil && a.Network() == "pipe" {
		return "in-process connection " + strconv.FormatUint(c.id, 10)
	}
	return c.name
}

// internal reports the management API's own in-process connections, which
// the query methods leave out.
func (info connSnapshot) internal() bool {
	return info.props["product"] == mgmtClientName
}

func (c *conn) ref() ConnRef {
	h, p := hostPort(c.nc.RemoteAddr())
	return ConnRef{Name: c.monName(), PeerHost: h, PeerPort: p}
}

func hostPort(a net.Addr) (string, int) {
	if a == nil {
		return "", 0
	}
	h, p, err := net.SplitHostPort(a.String())
	if err != nil {
		return a.String(), 0
	}
	n, _ := strconv.Atoi(p)
	return h, n
}

// ChannelInfo is one entry of GET /api/channels.
type ChannelInfo struct {
	Name                   string  `json:"name"`
	Node                   string  `json:"node"`
	Number                 uint16  `json:"number"`
	User                   string  `json:"user"`
	VHost                  string  `json:"vhost"`
	State                  string  `json:"state"`
	ConnectionDetails      ConnRef `json:"connection_details"`
	ConsumerCount          int     `json:"consumer_count"`
	PrefetchCount          int64   `json:"prefetch_count"`
	GlobalPrefetchCount    int     `json:"global_prefetch_count"`
	MessagesUnacknowledged int     `json:"messages_unacknowledged"`
	MessagesUnconfirmed    int     `json:"messages_unconfirmed"`
	Confirm                bool    `json:"confirm"`
	Transactional          bool    `json:"transactional"`
}

// ChannelsOptions select channels.
type ChannelsOptions struct {
	// User keeps only this user's channels when set.
	User string
	// VHost keeps only channels in this vhost when set.
	VHost string
}

// Channels returns the open channels sorted by name.
func (s *Server) Channels(opts ChannelsOptions) []ChannelInfo {
	node := s.NodeName()
	var out []ChannelInfo
	for _, c := range s.connList() {
		info, chans, open := c.mon.snapshot()
		if !open || info.internal() || (opts.User != "" && info.user != opts.User) || (opts.VHost != "" && info.vhost != opts.VHost) {
			continue
		}
		for _, ch := range chans {
			ci := ChannelInfo{Name: c.monName() + " (" + strconv.Itoa(int(ch.id)) + ")", Node: node, Number: ch.id,
				User: info.user, VHost: info.vhost, State: "running", ConnectionDetails: c.ref(),
				PrefetchCount: ch.mon.prefetch.Load(), Confirm: ch.mon.confirm.Load(), Transactional: ch.mon.tx.Load()}
			ch.mu.Lock()
			closed := ch.closed
			ci.ConsumerCount = len(ch.consumers)
			ci.GlobalPrefetchCount = ch.globalPrefetch
			ci.MessagesUnacknowledged = ch.unackedCount
			if !ch.flowActive {
				ci.State = "flow"
			}
			ch.mu.Unlock()
			if closed {
				continue
			}
			ch.confirmMu.Lock()
			ci.MessagesUnconfirmed = len(ch.pending) - ch.pendingOff
			ch.confirmMu.Unlock()
			out = append(out, ci)
		}
	}
	sort.Slice(out, func(i, j int) bool {
		if out[i].ConnectionDetails.Name != out[j].ConnectionDetails.Name {
			return out[i].ConnectionDetails.Name < out[j].ConnectionDetails.Name
		}
		return out[i].Number < out[j].Number
	})
	return out
}

func (ch *channel) isOpen() bool {
	ch.mu.Lock()
	defer ch.mu.Unlock()
	return !ch.closed
}

// ConsumerInfo is one entry of GET /api/consumers and of a queue's
// consumer_details.
type ConsumerInfo struct {
	ConsumerTag    string         `json:"consumer_tag"`
	Exclusive      bool           `json:"exclusive"`
	AckRequired    bool           `json:"ack_required"`
	PrefetchCount  int            `json:"prefetch_count"`
	Active         bool           `json:"active"`
	ActivityStatus string         `json:"activity_status"`
	Arguments      map[string]any `json:"arguments"`
	ChannelDetails ChannelRef     `json:"channel_details"`
	Queue          QueueRef       `json:"queue"`
}

// ChannelRef names a channel, as in channel_details.
type ChannelRef struct {
	Name           string `json:"name"`
	Number         uint16 `json:"number"`
	ConnectionName string `json:"connection_name"`
	PeerHost       string `json:"peer_host"`
	PeerPort       int    `json:"peer_port"`
	User           string `json:"user"`
	Node           string `json:"node"`
}

// QueueRef names a queue.
type QueueRef struct {
	Name  string `json:"name"`
	VHost string `json:"vhost"`
}

func (c *consumer) info(node string, active bool) ConsumerInfo {
	conn := c.ch.conn
	info, _, _ := conn.mon.snapshot()
	h, p := hostPort(conn.nc.RemoteAddr())
	args := map[string]any{}
	if c.priority != 0 {
		args["x-priority"] = c.priority
	}
	status := "up"
	if !active {
		status = "waiting"
	}
	return ConsumerInfo{ConsumerTag: c.tag, Exclusive: c.exclusive, AckRequired: !c.noAck, PrefetchCount: c.prefetch,
		Active: active, ActivityStatus: status, Arguments: args,
		ChannelDetails: ChannelRef{Name: conn.monName() + " (" + strconv.Itoa(int(c.ch.id)) + ")", Number: c.ch.id,
			ConnectionName: conn.monName(), PeerHost: h, PeerPort: p, User: info.user, Node: node},
		Queue: QueueRef{Name: c.q.name, VHost: c.q.vh.name}}
}

// Consumers returns the consumers of vhost (all when ""), sorted by queue
// then tag.
func (s *Server) Consumers(vhost string) ([]ConsumerInfo, error) {
	vhs, err := s.selectVHosts(vhost)
	if err != nil {
		return nil, err
	}
	node := s.NodeName()
	var out []ConsumerInfo
	for _, vh := range vhs {
		qs, _ := vh.snapshotLists()
		for _, q := range qs {
			q.mu.Lock()
			consumers := append([]*consumer(nil), q.consumers...)
			sac := q.sac
			q.mu.Unlock()
			for i, c := range consumers {
				out = append(out, c.info(node, !sac || i == 0))
			}
		}
	}
	sort.SliceStable(out, func(i, j int) bool {
		if out[i].Queue != out[j].Queue {
			if out[i].Queue.VHost != out[j].Queue.VHost {
				return out[i].Queue.VHost < out[j].Queue.VHost
			}
			return out[i].Queue.Name < out[j].Queue.Name
		}
		return out[i].ConsumerTag < out[j].ConsumerTag
	})
	return out, nil
}

// vhostList returns the vhosts sorted by name.
func (s *Server) vhostList() []*vhost {
	s.mu.Lock()
	out := make([]*vhost, 0, len(s.vhosts))
	for _, vh := range s.vhosts {
		out = append(out, vh)
	}
	s.mu.Unlock()
	sort.Slice(out, func(i, j int) bool { return out[i].name < out[j].name })
	return out
}

func (s *Server) selectVHosts(name string) ([]*vhost, error) {
	if name == "" {
		return s.vhostList(), nil
	}
	vh := s.vhost(name)
	if vh == nil {
		return nil, ErrNotFound
	}
	return []*vhost{vh}, nil
}

func (s *Server) userList() []*user {
	s.mu.Lock()
	out := make([]*user, 0, len(s.users))
	for _, u := range s.users {
		out = append(out, u)
	}
	s.mu.Unlock()
	sort.Slice(out, func(i, j int) bool { return out[i].name < out[j].name })
	return out
}

func (s *Server) connList() []*conn {
	s.mu.Lock()
	out := make([]*conn, 0, len(s.conns))
	for c := range s.conns {
		out = append(out, c)
	}
	s.mu.Unlock()
	return out
}

// snapshotLists returns the vhost's queues and exchanges sorted by name.
func (vh *vhost) snapshotLists() ([]*queue, []*exchange) {
	vh.mu.RLock()
	qs := make([]*queue, 0, len(vh.queues))
	for _, q := range vh.queues {
		qs = append(qs, q)
	}
	exs := make([]*exchange, 0, len(vh.exchanges))
	for _, e := range vh.exchanges {
		exs = append(exs, e)
	}
	vh.mu.RUnlock()
	sort.Slice(qs, func(i, j int) bool { return qs[i].name < qs[j].name })
	sort.Slice(exs, func(i, j int) bool { return exs[i].name < exs[j].name })
	return qs, exs
}

// jsonTable renders an AMQP table the way RabbitMQ's management API does:
// byte arrays as strings, decimals as numbers, timestamps as seconds.
func jsonTable(t amqp091.Table) map[string]any {
	out := make(map[string]any, len(t))
	for k, v := range t {
		out[k] = jsonValue(v)
	}
	return out
}

func jsonValue(v any) any {
	switch v := v.(type) {
	case amqp091.Table:
		return jsonTable(v)
	case []any:
		out := make([]any, len(v))
		for i, x := range v {
			out[i] = jsonValue(x)
		}
		return out
	case []byte:
		return string(v)
	case time.Time:
		return v.Unix()
	case amqp091.Decimal:
		f := float64(v.Value)
		for range v.Scale {
			f /= 10
		}
		return f
	}
	return v
}

// bindingByPropertiesKey finds a binding by its ends and properties_key
// and returns its routing key and arguments as the client library types,
// so that an unbind matches the binding exactly.
func (s *Server) bindingByPropertiesKey(vhost, src, dtype, dst, props string) (string, amqpclient.Table, bool) {
	vh := s.vhost(vhost)
	if vh == nil {
		return "", nil, false
	}
	vh.mu.RLock()
	defer vh.mu.RUnlock()
	e := vh.exchanges[src]
	if e == nil {
		return "", nil, false
	}
	for _, b := range e.bindings {
		if (dtype == "queue" && (b.q == nil || b.q.name != dst)) || (dtype == "exchange" && (b.dst == nil || b.dst.name != dst)) {
			continue
		}
		if propertiesKey(b.key, b.args) == props {
			return b.key, clientTable(b.args), true
		}
	}
	return "", nil, false
}

func clientTable(t amqp091.Table) amqpclient.Table {
	if t == nil {
		return nil
	}
	out := amqpclient.Table{}
	for k, v := range t {
		out[k] = clientValue(v)
	}
	return out
}

func clientValue(v any) any {
	switch v := v.(type) {
	case amqp091.Table:
		return clientTable(v)
	case []any:
		out := make([]any, len(v))
		for i, x := range v {
			out[i] = clientValue(x)
		}
		return out
	case amqp091.Decimal:
		return amqpclient.Decimal{Scale: v.Scale, Value: v.Value}
	}
	return v
}

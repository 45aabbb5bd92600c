package broker

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"os"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	amqp "github.com/rabbitmq/amqp091-go"
)

// The management HTTP API: thin handlers over the query methods of
// monitor.go, with RabbitMQ 3.10's paths, status codes, JSON bodies and
// basic authentication against the broker's users. Writes (declare,
// delete, purge, get, publish) go through an in-process AMQP connection
// opened as the requesting user, as RabbitMQ's management plugin uses a
// direct AMQP connection: the broker's own permission checks, argument
// validation and error texts apply unchanged.

// mgmtRequestTimeout bounds one request's work on the broker (an
// in-process AMQP connection is closed when it expires).
const mgmtRequestTimeout = 30 * time.Second

// mgmtClientName marks the API's own in-process connections, which the
// connection list leaves out.
const mgmtClientName = "oslogo management API"

// serverMonitor is the Server's management state, guarded by Server.mu.
type serverMonitor struct {
	startedAt time.Time
	httpSrv   *http.Server
	httpLn    net.Listener
	promSrv   *http.Server // Options.PrometheusAddr (prometheus.go)
	promLn    net.Listener
	// rates has its own lock (oslo.go).
	rates rateSampler
}

// HTTPAddr returns the management HTTP listener's address, or nil.
func (s *Server) HTTPAddr() net.Addr {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.httpAddrLocked()
}

func (s *Server) httpAddrLocked() net.Addr {
	if s.mon.httpLn == nil {
		return nil
	}
	return s.mon.httpLn.Addr()
}

// startHTTPLocked listens on Options.HTTPAddr and serves the API; the
// serving goroutine is tracked by s.wg. Caller holds s.mu.
func (s *Server) startHTTPLocked() error {
	s.mon.startedAt = time.Now()
	if err := s.startPrometheusLocked(); err != nil {
		return err
	}
	if s.opts.HTTPAddr == "" {
		return nil
	}
	ln, err := net.Listen("tcp", s.opts.HTTPAddr)
	if err != nil {
		s.closePrometheusLocked()
		return fmt.Errorf("broker: listen http: %w", err)
	}
	hs := &http.Server{
		Handler:           s.ManagementHandler(),
		ReadHeaderTimeout: 10 * time.Second,
		ReadTimeout:       time.Minute,
		WriteTimeout:      time.Minute,
		IdleTimeout:       2 * time.Minute,
		MaxHeaderBytes:    64 << 10,
		ErrorLog:          slog.NewLogLogger(s.log.With("component", "mgmt").Handler(), slog.LevelDebug),
	}
	s.mon.httpSrv, s.mon.httpLn = hs, ln
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		_ = hs.Serve(ln)
	}()
	return nil
}

// stopHTTP stops the API, waiting for requests in flight until ctx ends.
// Connections are already being closed, so a request waiting on the
// broker ends soon.
func (s *Server) stopHTTP(ctx context.Context) {
	s.mu.Lock()
	servers := []*http.Server{s.mon.httpSrv, s.mon.promSrv}
	s.mu.Unlock()
	for _, hs := range servers {
		if hs == nil {
			continue
		}
		if err := hs.Shutdown(ctx); err != nil {
			_ = hs.Close()
		}
	}
}

// ManagementHandler returns the management HTTP API as an http.Handler
// (Options.HTTPAddr serves it; tests may use it with httptest).
func (s *Server) ManagementHandler() http.Handler {
	a := &mgmtAPI{s: s}
	mux := &mgmtRouter{}
	h := func(pattern string, need tagLevel, f func(*mgmtRequest)) {
		mux.handle(pattern, func(w http.ResponseWriter, r *http.Request) { a.serve(w, r, need, f) })
	}
	// Prometheus metrics (prometheus.go), for monitoring users.
	agg, per := s.prometheusHandler(false), s.prometheusHandler(true)
	h("GET /metrics", levelMonitoring, func(m *mgmtRequest) { agg.ServeHTTP(m.w, m.r) })
	h("GET /metrics/per-object", levelMonitoring, func(m *mgmtRequest) { per.ServeHTTP(m.w, m.r) })
	h("GET /api/overview", levelManagement, a.overview)
	h("GET /api/whoami", levelManagement, a.whoami)
	h("GET /api/health/checks/alarms", levelManagement, a.alarms)
	h("GET /api/health/checks/local-alarms", levelManagement, a.alarms)
	h("GET /api/health/checks/port-listener/{port}", levelManagement, a.portListener)
	h("GET /api/healthchecks/node", levelManagement, a.nodeHealth)
	h("GET /api/nodes", levelMonitoring, a.nodes)
	h("GET /api/nodes/{node}/memory-high-watermark", levelMonitoring, a.getWatermark)
	h("PUT /api/nodes/{node}/memory-high-watermark", levelAdministrator, a.putWatermark)
	h("GET /api/vhosts", levelManagement, a.vhosts)
	h("GET /api/vhosts/{vhost}", levelManagement, a.vhost)
	h("GET /api/users", levelAdministrator, a.users)
	h("GET /api/permissions", levelAdministrator, a.permissions)
	h("GET /api/queues", levelManagement, a.queues)
	h("GET /api/queues/{vhost}", levelManagement, a.queues)
	h("GET /api/queues/{vhost}/{name}", levelManagement, a.queue)
	h("PUT /api/queues/{vhost}/{name}", levelManagement, a.declareQueue)
	h("DELETE /api/queues/{vhost}/{name}", levelManagement, a.deleteQueue)
	h("DELETE /api/queues/{vhost}/{name}/contents", levelManagement, a.purgeQueue)
	h("POST /api/queues/{vhost}/{name}/get", levelManagement, a.getMessages)
	h("GET /api/exchanges", levelManagement, a.exchanges)
	h("GET /api/exchanges/{vhost}", levelManagement, a.exchanges)
	h("GET /api/exchanges/{vhost}/{name}", levelManagement, a.exchange)
	h("PUT /api/exchanges/{vhost}/{name}", levelManagement, a.declareExchange)
	h("DELETE /api/exchanges/{vhost}/{name}", levelManagement, a.deleteExchange)
	h("POST /api/exchanges/{vhost}/{name}/publish", levelManagement, a.publish)
	h("GET /api/bindings", levelManagement, a.bindings)
	h("GET /api/bindings/{vhost}", levelManagement, a.bindings)
	h("GET /api/queues/{vhost}/{name}/bindings", levelManagement, a.queueBindings)
	h("GET /api/exchanges/{vhost}/{name}/bindings/source", levelManagement, a.exchangeBindings)
	h("GET /api/exchanges/{vhost}/{name}/bindings/destination", levelManagement, a.exchangeBindings)
	h("GET /api/bindings/{vhost}/e/{source}/{dtype}/{destination}", levelManagement, a.bindingsBetween)
	h("POST /api/bindings/{vhost}/e/{source}/{dtype}/{destination}", levelManagement, a.bind)
	h("GET /api/bindings/{vhost}/e/{source}/{dtype}/{destination}/{props}", levelManagement, a.binding)
	h("DELETE /api/bindings/{vhost}/e/{source}/{dtype}/{destination}/{props}", levelManagement, a.unbind)
	h("GET /api/aliveness-test/{vhost}", levelManagement, a.aliveness)
	h("PUT /api/vhosts/{vhost}", levelAdministrator, a.putVHost)
	h("DELETE /api/vhosts/{vhost}", levelAdministrator, a.deleteVHost)
	h("GET /api/users/{user}", levelAdministrator, a.user)
	h("PUT /api/users/{user}", levelAdministrator, a.putUser)
	h("DELETE /api/users/{user}", levelAdministrator, a.deleteUser)
	h("GET /api/users/{user}/permissions", levelAdministrator, a.userPermissions)
	h("GET /api/permissions/{vhost}/{user}", levelAdministrator, a.permission)
	h("PUT /api/permissions/{vhost}/{user}", levelAdministrator, a.putPermission)
	h("DELETE /api/permissions/{vhost}/{user}", levelAdministrator, a.deletePermission)
	h("GET /api/connections", levelManagement, a.connections)
	h("GET /api/connections/{name}", levelManagement, a.connection)
	h("DELETE /api/connections/{name}", levelManagement, a.closeConnection)
	h("GET /api/channels", levelManagement, a.channels)
	h("GET /api/consumers", levelManagement, a.consumers)
	h("GET /api/consumers/{vhost}", levelManagement, a.consumers)
	h("GET /api/oslo", levelManagement, a.oslo)
	h("GET /api/counters", levelMonitoring, a.counters)
	h("GET /api/oslo/{vhost}", levelManagement, a.oslo)
	a.registerPolicyRoutes(h)
	a.registerDefinitionRoutes(h)
	return withUI(mux)
}

// mgmtRouter matches "METHOD /a/{x}/b" patterns against the escaped path,
// segment by segment, so that the vhost "/" can be written "%2F" as
// RabbitMQ's API requires (http.ServeMux cleans "%2F" into a path
// separator first). A trailing slash is ignored, as RabbitMQ does.
type mgmtRouter struct {
	routes []mgmtRoute
}

type mgmtRoute struct {
	method string
	segs   []string
	h      http.HandlerFunc
}

func (m *mgmtRouter) handle(pattern string, h http.HandlerFunc) {
	method, path, _ := strings.Cut(pattern, " ")
	m.routes = append(m.routes, mgmtRoute{method: method, segs: strings.Split(strings.Trim(path, "/"), "/"), h: h})
}

func (m *mgmtRouter) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	segs := strings.Split(strings.Trim(r.URL.EscapedPath(), "/"), "/")
	var allowed []string
	for _, rt := range m.routes {
		vals, ok := rt.match(segs)
		if !ok {
			continue
		}
		if rt.method != r.Method {
			allowed = append(allowed, rt.method)
			continue
		}
		for k, v := range vals {
			r.SetPathValue(k, v)
		}
		rt.h(w, r)
		return
	}
	if len(allowed) > 0 {
		w.Header().Set("Allow", strings.Join(allowed, ", "))
		writeError(w, http.StatusMethodNotAllowed, "Method Not Allowed", "Method Not Allowed")
		return
	}
	writeNotFound(w)
}

func (rt mgmtRoute) match(segs []string) (map[string]string, bool) {
	if len(segs) != len(rt.segs) {
		return nil, false
	}
	var vals map[string]string
	for i, p := range rt.segs {
		if strings.HasPrefix(p, "{") {
			v, err := url.PathUnescape(segs[i])
			if err != nil || v == "" {
				return nil, false
			}
			if vals == nil {
				vals = map[string]string{}
			}
			vals[strings.Trim(p, "{}")] = v
			continue
		}
		if segs[i] != p {
			return nil, false
		}
	}
	return vals, true
}

type mgmtAPI struct {
	s *Server
}

// tagLevel is what RabbitMQ's user tags allow in the management API; each
// level includes those below it.
type tagLevel int

const (
	levelNone tagLevel = iota
	levelManagement
	levelMonitoring
	levelAdministrator
)

func levelOf(tags []string) tagLevel {
	l := levelNone
	for _, t := range tags {
		switch t {
		case "management", "policymaker":
			l = max(l, levelManagement)
		case "monitoring":
			l = max(l, levelMonitoring)
		case "administrator":
			l = max(l, levelAdministrator)
		}
	}
	return l
}

// mgmtRequest is one authenticated request.
type mgmtRequest struct {
	w     http.ResponseWriter
	r     *http.Request
	user  *user
	pass  string
	level tagLevel
}

// serve authenticates the request as RabbitMQ does (401 with the realm
// header when credentials are missing or wrong, 401 with RabbitMQ's reason
// when the user's tags do not allow the endpoint) and calls f.
func (a *mgmtAPI) serve(w http.ResponseWriter, r *http.Request, need tagLevel, f func(*mgmtRequest)) {
	name, pass, ok := r.BasicAuth()
	if !ok {
		if !fromWebUI(r) {
			w.Header().Set("WWW-Authenticate", `Basic realm="RabbitMQ Management"`)
		}
		w.WriteHeader(http.StatusUnauthorized)
		return
	}
	u := a.s.lookupUser(name)
	if u == nil || !u.checkPassword(pass) {
		if !fromWebUI(r) {
			w.Header().Set("WWW-Authenticate", `Basic realm="RabbitMQ Management"`)
		}
		writeError(w, http.StatusUnauthorized, "not_authorized", "Login failed")
		return
	}
	if u.loopback && !remoteIsLoopback(r.RemoteAddr) {
		writeError(w, http.StatusUnauthorized, "not_authorised", "User can only log in via localhost")
		return
	}
	lvl := levelOf(u.tags)
	if lvl < need {
		reason := "Not management user"
		switch {
		case lvl < levelManagement:
		case need == levelMonitoring:
			reason = "Not monitor user"
		case need == levelAdministrator:
			reason = "Not administrator user"
		}
		writeError(w, http.StatusUnauthorized, "not_authorised", reason)
		return
	}
	f(&mgmtRequest{w: w, r: r, user: u, pass: pass, level: lvl})
}

func remoteIsLoopback(addr string) bool {
	h, _, err := net.SplitHostPort(addr)
	if err != nil {
		return false
	}
	ip := net.ParseIP(h)
	return ip != nil && ip.IsLoopback()
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	b, err := json.Marshal(v)
	if err != nil {
		writeError(w, http.StatusInternalServerError, "internal_server_error", err.Error())
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Content-Length", strconv.Itoa(len(b)))
	w.WriteHeader(code)
	_, _ = w.Write(b)
}

func writeError(w http.ResponseWriter, code int, errName, reason string) {
	b, _ := json.Marshal(map[string]string{"error": errName, "reason": reason})
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Content-Length", strconv.Itoa(len(b)))
	w.WriteHeader(code)
	_, _ = w.Write(b)
}

func writeNotFound(w http.ResponseWriter) {
	writeError(w, http.StatusNotFound, "Object Not Found", "Not Found")
}

// vhostParam returns the {vhost} path value ("" when absent) after
// checking that it exists (404) and that the user may use it (401, as
// RabbitMQ answers even monitoring users without permissions there).
func (m *mgmtRequest) vhostParam(s *Server) (string, bool) {
	vh := m.r.PathValue("vhost")
	if vh == "" {
		return "", true
	}
	if s.vhost(vh) == nil {
		writeNotFound(m.w)
		return "", false
	}
	if !m.user.vhostAllowed(vh) {
		writeError(m.w, http.StatusUnauthorized, "not_authorised", "User not authorised to access virtual host")
		return "", false
	}
	return vh, true
}

// seesVHost is RabbitMQ's visible-vhosts rule for lists: monitoring users
// see every vhost, others those they have permissions in.
func (m *mgmtRequest) seesVHost(vh string) bool {
	return m.level >= levelMonitoring || m.user.vhostAllowed(vh)
}

// seesAllConnections: management users see only their own connections.
func (m *mgmtRequest) seesAllConnections() bool { return m.level >= levelMonitoring }

func (a *mgmtAPI) overview(m *mgmtRequest) { writeJSON(m.w, http.StatusOK, a.s.Overview()) }

func (a *mgmtAPI) whoami(m *mgmtRequest) {
	tags := append([]string{}, m.user.tags...)
	writeJSON(m.w, http.StatusOK, map[string]any{"name": m.user.name, "tags": tags})
}

func (a *mgmtAPI) alarms(m *mgmtRequest) {
	if a.s.alarm.Load() {
		writeJSON(m.w, http.StatusServiceUnavailable, map[string]any{"status": "failed",
			"reason": "resource alarm(s) in effect in the cluster",
			"alarms": []map[string]string{{"node": a.s.NodeName(), "resource": "memory"}}})
		return
	}
	writeJSON(m.w, http.StatusOK, map[string]string{"status": "ok"})
}

func (a *mgmtAPI) portListener(m *mgmtRequest) {
	port, err := strconv.Atoi(m.r.PathValue("port"))
	if err != nil {
		writeError(m.w, http.StatusBadRequest, "bad_request", "invalid port")
		return
	}
	var ports []int
	for _, l := range a.s.Overview().Listeners {
		ports = append(ports, l.Port)
		if l.Port == port {
			writeJSON(m.w, http.StatusOK, map[string]any{"status": "ok", "port": port})
			return
		}
	}
	slices.Sort(ports)
	writeJSON(m.w, http.StatusServiceUnavailable, map[string]any{"status": "failed", "reason": "No active listener",
		"missing": port, "ports": ports})
}

func (a *mgmtAPI) nodeHealth(m *mgmtRequest) {
	writeJSON(m.w, http.StatusOK, map[string]string{"status": "ok"})
}

// NodeInfo is one entry of GET /api/nodes: what this process can report
// truthfully about itself.
type NodeInfo struct {
	Name          string `json:"name"`
	Type          string `json:"type"`
	Running       bool   `json:"running"`
	OSPid         string `json:"os_pid"`
	MemUsed       uint64 `json:"mem_used"`
	MemLimit      int64  `json:"mem_limit"`
	MemAlarm      bool   `json:"mem_alarm"`
	DiskFreeAlarm bool   `json:"disk_free_alarm"`
	Uptime        int64  `json:"uptime"`
	Processors    int    `json:"processors"`
	RatesMode     string `json:"rates_mode"`
}

// Nodes returns this node: the broker does not cluster. mem_used is the
// memory the Go runtime obtained from the OS; mem_limit is
// Options.MemoryHighWatermark (bytes of queued message bodies).
func (s *Server) Nodes() []NodeInfo {
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	s.mu.Lock()
	started := s.mon.startedAt
	s.mu.Unlock()
	var up int64
	if !started.IsZero() {
		up = time.Since(started).Milliseconds()
	}
	return []NodeInfo{{Name: s.NodeName(), Type: "disc", Running: true, OSPid: strconv.Itoa(os.Getpid()),
		MemUsed: ms.Sys, MemLimit: s.highWatermark(), MemAlarm: s.alarm.Load(), Uptime: up,
		Processors: runtime.NumCPU(), RatesMode: "basic"}}
}

func (a *mgmtAPI) nodes(m *mgmtRequest) { m.writeList(a.s.Nodes()) }

func (a *mgmtAPI) vhosts(m *mgmtRequest) {
	m.writeList(visible(m, a.s.VHosts(), func(v VHostInfo) string { return v.Name }))
}

func (a *mgmtAPI) vhost(m *mgmtRequest) {
	vh, ok := m.vhostParam(a.s)
	if !ok {
		return
	}
	for _, v := range a.s.VHosts() {
		if v.Name == vh {
			writeJSON(m.w, http.StatusOK, v)
			return
		}
	}
	writeNotFound(m.w)
}

func (a *mgmtAPI) users(m *mgmtRequest) { m.writeList(orEmpty(a.s.Users())) }

func (a *mgmtAPI) permissions(m *mgmtRequest) {
	m.writeList(orEmpty(a.s.Permissions()))
}

func orEmpty[T any](v []T) []T {
	if v == nil {
		return []T{}
	}
	return v
}

// visible is items without those in vhosts the request's user may not see.
func visible[T any](m *mgmtRequest, items []T, vhostOf func(T) string) []T {
	out := []T{}
	for _, x := range items {
		if m.seesVHost(vhostOf(x)) {
			out = append(out, x)
		}
	}
	return out
}

func (a *mgmtAPI) queues(m *mgmtRequest) {
	vh, ok := m.vhostParam(a.s)
	if !ok {
		return
	}
	qs, err := a.s.Queues(QueuesOptions{VHost: vh})
	if err != nil {
		writeNotFound(m.w)
		return
	}
	m.writeList(visible(m, qs, func(q QueueInfo) string { return q.VHost }))
}

func (a *mgmtAPI) queue(m *mgmtRequest) {
	vh, ok := m.vhostParam(a.s)
	if !ok {
		return
	}
	qs, err := a.s.Queues(QueuesOptions{VHost: vh, Name: m.r.PathValue("name"), Details: true})
	if err != nil {
		writeNotFound(m.w)
		return
	}
	writeJSON(m.w, http.StatusOK, qs[0])
}

func (a *mgmtAPI) exchanges(m *mgmtRequest) {
	vh, ok := m.vhostParam(a.s)
	if !ok {
		return
	}
	exs, err := a.s.Exchanges(ExchangesOptions{VHost: vh})
	if err != nil {
		writeNotFound(m.w)
		return
	}
	m.writeList(visible(m, exs, func(e ExchangeInfo) string { return e.VHost }))
}

// exchangeName maps the path's name to the broker's: the default exchange
// is "amq.default" in URLs.
func exchangeName(r *http.Request) string {
	n := r.PathValue("name")
	if n == "amq.default" {
		return ""
	}
	return n
}

func (a *mgmtAPI) exchange(m *mgmtRequest) {
	vh, ok := m.vhostParam(a.s)
	if !ok {
		return
	}
	exs, err := a.s.Exchanges(ExchangesOptions{VHost: vh, Name: exchangeName(m.r), ByName: true})
	if err != nil {
		writeNotFound(m.w)
		return
	}
	writeJSON(m.w, http.StatusOK, exs[0])
}

func (a *mgmtAPI) bindings(m *mgmtRequest) {
	vh, ok := m.vhostParam(a.s)
	if !ok {
		return
	}
	bs, err := a.s.Bindings(vh)
	if err != nil {
		writeNotFound(m.w)
		return
	}
	m.writeList(visible(m, bs, func(b BindingInfo) string { return b.VHost }))
}

func (a *mgmtAPI) connections(m *mgmtRequest) {
	opts := ConnectionsOptions{}
	if !m.seesAllConnections() {
		opts.User = m.user.name
	}
	cs, _ := a.s.Connections(opts)
	m.writeList(orEmpty(cs))
}

// oneConnection finds the named connection and checks, as RabbitMQ 3.10
// does, that the user owns it or has at least the given level (monitoring
// to see another user's connection, administrator to close it).
func (a *mgmtAPI) oneConnection(m *mgmtRequest, other tagLevel) (ConnectionInfo, bool) {
	cs, err := a.s.Connections(ConnectionsOptions{Name: m.r.PathValue("name")})
	if err != nil {
		writeNotFound(m.w)
		return ConnectionInfo{}, false
	}
	if cs[0].User != m.user.name && m.level < other {
		writeError(m.w, http.StatusUnauthorized, "not_authorised", "User not authorised to access object")
		return ConnectionInfo{}, false
	}
	return cs[0], true
}

func (a *mgmtAPI) connection(m *mgmtRequest) {
	if c, ok := a.oneConnection(m, levelMonitoring); ok {
		writeJSON(m.w, http.StatusOK, c)
	}
}

// closeConnection is DELETE /api/connections/{name}: the user's own
// connection, or any for administrators.
func (a *mgmtAPI) closeConnection(m *mgmtRequest) {
	name := m.r.PathValue("name")
	if _, ok := a.oneConnection(m, levelAdministrator); !ok {
		return
	}
	reason := m.r.Header.Get("X-Reason")
	if reason == "" {
		reason = "Closed via management plugin"
	}
	if err := a.s.CloseConnection(name, reason); err != nil {
		writeNotFound(m.w)
		return
	}
	m.w.WriteHeader(http.StatusNoContent)
}

func (a *mgmtAPI) channels(m *mgmtRequest) {
	opts := ChannelsOptions{}
	if !m.seesAllConnections() {
		opts.User = m.user.name
	}
	m.writeList(orEmpty(a.s.Channels(opts)))
}

func (a *mgmtAPI) consumers(m *mgmtRequest) {
	vh, ok := m.vhostParam(a.s)
	if !ok {
		return
	}
	cs, err := a.s.Consumers(vh)
	if err != nil {
		writeNotFound(m.w)
		return
	}
	m.writeList(visible(m, cs, func(c ConsumerInfo) string { return c.Queue.VHost }))
}

// amqpSession is an in-process AMQP connection and channel opened as the
// requesting user for one request.
type amqpSession struct {
	conn *amqp.Connection
	ch   *amqp.Channel
	stop func() bool
}

// open connects as the request's user to vhost. The request's context,
// bounded by mgmtRequestTimeout, closes the pipe when it ends, so no
// request waits on the broker for longer.
func (m *mgmtRequest) open(s *Server, vhost string) (*amqpSession, bool) {
	nc, err := s.InProcessConn()
	if err != nil {
		writeError(m.w, http.StatusServiceUnavailable, "service_unavailable", "broker is not running")
		return nil, false
	}
	ctx, cancel := context.WithTimeout(m.r.Context(), mgmtRequestTimeout)
	stopWatch := context.AfterFunc(ctx, func() { _ = nc.Close() })
	conn, err := amqp.Open(nc, amqp.Config{
		SASL:       []amqp.Authentication{&amqp.PlainAuth{Username: m.user.name, Password: m.pass}},
		Vhost:      vhost,
		Properties: amqp.Table{"product": mgmtClientName, "connection_name": mgmtClientName},
	})
	if err != nil {
		stopWatch()
		cancel()
		_ = nc.Close()
		writeAMQPError(m.w, err)
		return nil, false
	}
	ch, err := conn.Channel()
	if err != nil {
		stopWatch()
		cancel()
		_ = conn.Close()
		writeAMQPError(m.w, err)
		return nil, false
	}
	return &amqpSession{conn: conn, ch: ch, stop: func() bool { cancel(); return stopWatch() }}, true
}

func (ss *amqpSession) close() {
	_ = ss.conn.Close()
	ss.stop()
}

// writeAMQPError turns a channel or connection exception into RabbitMQ's
// HTTP answer: 401 for access refused, 400 with the exception's text for
// the rest (precondition failures without their code, as RabbitMQ).
func writeAMQPError(w http.ResponseWriter, err error) {
	var ae *amqp.Error
	if !errors.As(err, &ae) {
		writeError(w, http.StatusInternalServerError, "internal_server_error", err.Error())
		return
	}
	switch ae.Code {
	case amqp.AccessRefused:
		writeError(w, http.StatusUnauthorized, "not_authorised", strings.TrimPrefix(ae.Reason, "ACCESS_REFUSED - "))
	case amqp.PreconditionFailed:
		writeError(w, http.StatusBadRequest, "bad_request", strings.TrimPrefix(ae.Reason, "PRECONDITION_FAILED - "))
	default:
		writeError(w, http.StatusBadRequest, "bad_request", fmt.Sprintf("%d %s", ae.Code, ae.Reason))
	}
}

// readBody decodes a JSON object, keeping integers as int64 (AMQP longs)
// as RabbitMQ does; it answers 400 not_json itself.
func (m *mgmtRequest) readBody(s *Server, into any) bool {
	return m.decodeJSON(int64(s.opts.MaxMessageSize)*2+1<<20, "not_json", into)
}

// decodeJSON decodes a body of at most limit bytes into into, numbers as
// json.Number; a body that is not JSON gets 400 with notJSON as its
// reason, one that does not fit into gets 400 with the decoder's error.
func (m *mgmtRequest) decodeJSON(limit int64, notJSON string, into any) bool {
	dec := json.NewDecoder(http.MaxBytesReader(m.w, m.r.Body, limit))
	dec.UseNumber()
	var raw json.RawMessage
	if err := dec.Decode(&raw); err != nil {
		writeError(m.w, http.StatusBadRequest, "bad_request", notJSON)
		return false
	}
	d2 := json.NewDecoder(bytes.NewReader(raw))
	d2.UseNumber()
	if err := d2.Decode(into); err != nil {
		writeError(m.w, http.StatusBadRequest, "bad_request", err.Error())
		return false
	}
	return true
}

// amqpTable converts decoded JSON to an AMQP table: integral numbers
// become longs, others doubles, objects tables.
func amqpTable(v map[string]any) amqp.Table {
	if v == nil {
		return nil
	}
	t := amqp.Table{}
	for k, x := range v {
		t[k] = amqpValue(x)
	}
	return t
}

func amqpValue(x any) any {
	switch x := x.(type) {
	case json.Number:
		if i, err := x.Int64(); err == nil {
			return i
		}
		f, _ := x.Float64()
		return f
	case map[string]any:
		return amqpTable(x)
	case []any:
		out := make([]any, len(x))
		for i, e := range x {
			out[i] = amqpValue(e)
		}
		return out
	}
	return x
}

type queueBody struct {
	Durable    bool           `json:"durable"`
	AutoDelete bool           `json:"auto_delete"`
	Arguments  map[string]any `json:"arguments"`
}

func (a *mgmtAPI) declareQueue(m *mgmtRequest) {
	vh, ok := m.vhostParam(a.s)
	if !ok {
		return
	}
	var b queueBody
	if !m.readBody(a.s, &b) {
		return
	}
	name := m.r.PathValue("name")
	_, err := a.s.Queues(QueuesOptions{VHost: vh, Name: name})
	existed := err == nil
	ss, ok := m.open(a.s, vh)
	if !ok {
		return
	}
	defer ss.close()
	if _, err := ss.ch.QueueDeclare(name, b.Durable, b.AutoDelete, false, false, amqpTable(b.Arguments)); err != nil {
		writeAMQPError(m.w, err)
		return
	}
	if existed {
		m.w.WriteHeader(http.StatusNoContent)
		return
	}
	m.w.WriteHeader(http.StatusCreated)
}

func (a *mgmtAPI) deleteQueue(m *mgmtRequest) {
	vh, ok := m.vhostParam(a.s)
	if !ok {
		return
	}
	name := m.r.PathValue("name")
	if _, err := a.s.Queues(QueuesOptions{VHost: vh, Name: name}); err != nil {
		writeNotFound(m.w)
		return
	}
	q := m.r.URL.Query()
	ss, ok := m.open(a.s, vh)
	if !ok {
		return
	}
	defer ss.close()
	if _, err := ss.ch.QueueDelete(name, q.Get("if-unused") == "true", q.Get("if-empty") == "true", false); err != nil {
		writeAMQPError(m.w, err)
		return
	}
	m.w.WriteHeader(http.StatusNoContent)
}

func (a *mgmtAPI) purgeQueue(m *mgmtRequest) {
	vh, ok := m.vhostParam(a.s)
	if !ok {
		return
	}
	name := m.r.PathValue("name")
	if _, err := a.s.Queues(QueuesOptions{VHost: vh, Name: name}); err != nil {
		writeNotFound(m.w)
		return
	}
	ss, ok := m.open(a.s, vh)
	if !ok {
		return
	}
	defer ss.close()
	if _, err := ss.ch.QueuePurge(name, false); err != nil {
		writeAMQPError(m.w, err)
		return
	}
	m.w.WriteHeader(http.StatusNoContent)
}

type getBody struct {
	Count    int    `json:"count"`
	AckMode  string `json:"ackmode"`
	Encoding string `json:"encoding"`
	Truncate *int   `json:"truncate"`
}

// GotMessage is one message returned by POST /api/queues/{vhost}/{name}/get.
type GotMessage struct {
	PayloadBytes    int            `json:"payload_bytes"`
	Redelivered     bool           `json:"redelivered"`
	Exchange        string         `json:"exchange"`
	RoutingKey      string         `json:"routing_key"`
	MessageCount    int            `json:"message_count"`
	Properties      map[string]any `json:"properties"`
	Payload         string         `json:"payload"`
	PayloadEncoding string         `json:"payload_encoding"`
}

// getMessages fetches up to count messages with basic.get and settles them
// per ackmode once all are fetched, so a requeued message is not fetched
// twice by one request.
func (a *mgmtAPI) getMessages(m *mgmtRequest) {
	vh, ok := m.vhostParam(a.s)
	if !ok {
		return
	}
	var b getBody
	if !m.readBody(a.s, &b) {
		return
	}
	requeue := false
	switch b.AckMode {
	case "ack_requeue_true", "reject_requeue_true":
		requeue = true
	case "ack_requeue_false", "reject_requeue_false":
	default:
		writeError(m.w, http.StatusBadRequest, "bad_request", "ackmode must be ack_requeue_true, ack_requeue_false, reject_requeue_true or reject_requeue_false")
		return
	}
	if b.Encoding != "auto" && b.Encoding != "base64" {
		writeError(m.w, http.StatusBadRequest, "bad_request", "encoding must be auto or base64")
		return
	}
	if b.Count < 1 {
		writeError(m.w, http.StatusBadRequest, "bad_request", "count must be a positive integer")
		return
	}
	name := m.r.PathValue("name")
	if _, err := a.s.Queues(QueuesOptions{VHost: vh, Name: name}); err != nil {
		writeNotFound(m.w)
		return
	}
	ss, ok := m.open(a.s, vh)
	if !ok {
		return
	}
	defer ss.close()
	out := []GotMessage{}
	var last uint64
	for range b.Count {
		d, got, err := ss.ch.Get(name, false)
		if err != nil {
			writeAMQPError(m.w, err)
			return
		}
		if !got {
			break
		}
		last = d.DeliveryTag
		out = append(out, gotMessage(d, b.Encoding, b.Truncate))
	}
	if last != 0 {
		var err error
		if requeue || strings.HasPrefix(b.AckMode, "reject") {
			err = ss.ch.Nack(last, true, requeue)
		} else {
			err = ss.ch.Ack(last, true)
		}
		if err != nil {
			writeAMQPError(m.w, err)
			return
		}
	}
	writeJSON(m.w, http.StatusOK, out)
}

func gotMessage(d amqp.Delivery, encoding string, truncate *int) GotMessage {
	g := GotMessage{PayloadBytes: len(d.Body), Redelivered: d.Redelivered, Exchange: d.Exchange,
		RoutingKey: d.RoutingKey, MessageCount: int(d.MessageCount), Properties: deliveryProperties(d)}
	body := d.Body
	if truncate != nil && *truncate >= 0 && len(body) > *truncate {
		body = body[:*truncate]
	}
	if encoding == "auto" && utf8.Valid(body) {
		g.Payload, g.PayloadEncoding = string(body), "string"
	} else {
		g.Payload, g.PayloadEncoding = base64.StdEncoding.EncodeToString(body), "base64"
	}
	return g
}

// deliveryProperties lists the properties a message carries, with
// RabbitMQ's names; unset (zero) properties are left out.
func deliveryProperties(d amqp.Delivery) map[string]any {
	p := map[string]any{}
	set := func(k, v string) {
		if v != "" {
			p[k] = v
		}
	}
	set("content_type", d.ContentType)
	set("content_encoding", d.ContentEncoding)
	set("correlation_id", d.CorrelationId)
	set("reply_to", d.ReplyTo)
	set("expiration", d.Expiration)
	set("message_id", d.MessageId)
	set("type", d.Type)
	set("user_id", d.UserId)
	set("app_id", d.AppId)
	if d.DeliveryMode != 0 {
		p["delivery_mode"] = d.DeliveryMode
	}
	if d.Priority != 0 {
		p["priority"] = d.Priority
	}
	if !d.Timestamp.IsZero() {
		p["timestamp"] = d.Timestamp.Unix()
	}
	if len(d.Headers) > 0 {
		h := amqp091TableFromClient(d.Headers)
		p["headers"] = h
	}
	return p
}

func amqp091TableFromClient(t amqp.Table) map[string]any {
	out := make(map[string]any, len(t))
	for k, v := range t {
		out[k] = clientJSONValue(v)
	}
	return out
}

func clientJSONValue(v any) any {
	switch v := v.(type) {
	case amqp.Table:
		return amqp091TableFromClient(v)
	case []any:
		out := make([]any, len(v))
		for i, x := range v {
			out[i] = clientJSONValue(x)
		}
		return out
	case []byte:
		return string(v)
	case time.Time:
		return v.Unix()
	case amqp.Decimal:
		f := float64(v.Value)
		for range v.Scale {
			f /= 10
		}
		return f
	}
	return v
}

type exchangeBody struct {
	Type       string         `json:"type"`
	Durable    bool           `json:"durable"`
	AutoDelete bool           `json:"auto_delete"`
	Internal   bool           `json:"internal"`
	Arguments  map[string]any `json:"arguments"`
}

func (a *mgmtAPI) declareExchange(m *mgmtRequest) {
	vh, ok := m.vhostParam(a.s)
	if !ok {
		return
	}
	var b exchangeBody
	if !m.readBody(a.s, &b) {
		return
	}
	if b.Type == "" {
		b.Type = kindDirect
	}
	if !validKind(b.Type) {
		writeError(m.w, http.StatusBadRequest, "bad_request", "unknown exchange type '"+b.Type+"'")
		return
	}
	name := exchangeName(m.r)
	_, err := a.s.Exchanges(ExchangesOptions{VHost: vh, Name: name, ByName: true})
	existed := err == nil
	ss, ok := m.open(a.s, vh)
	if !ok {
		return
	}
	defer ss.close()
	if err := ss.ch.ExchangeDeclare(name, b.Type, b.Durable, b.AutoDelete, b.Internal, false, amqpTable(b.Arguments)); err != nil {
		writeAMQPError(m.w, err)
		return
	}
	if existed {
		m.w.WriteHeader(http.StatusNoContent)
		return
	}
	m.w.WriteHeader(http.StatusCreated)
}

func (a *mgmtAPI) deleteExchange(m *mgmtRequest) {
	vh, ok := m.vhostParam(a.s)
	if !ok {
		return
	}
	name := exchangeName(m.r)
	if _, err := a.s.Exchanges(ExchangesOptions{VHost: vh, Name: name, ByName: true}); err != nil {
		writeNotFound(m.w)
		return
	}
	ss, ok := m.open(a.s, vh)
	if !ok {
		return
	}
	defer ss.close()
	if err := ss.ch.ExchangeDelete(name, m.r.URL.Query().Get("if-unused") == "true", false); err != nil {
		writeAMQPError(m.w, err)
		return
	}
	m.w.WriteHeader(http.StatusNoContent)
}

type publishBody struct {
	Properties      map[string]any `json:"properties"`
	RoutingKey      string         `json:"routing_key"`
	Payload         string         `json:"payload"`
	PayloadEncoding string         `json:"payload_encoding"`
}

// publish is POST /api/exchanges/{vhost}/{name}/publish: a mandatory,
// confirmed publish; "routed" tells whether a queue took it.
func (a *mgmtAPI) publish(m *mgmtRequest) {
	vh, ok := m.vhostParam(a.s)
	if !ok {
		return
	}
	var b publishBody
	if !m.readBody(a.s, &b) {
		return
	}
	var body []byte
	switch b.PayloadEncoding {
	case "string":
		body = []byte(b.Payload)
	case "base64":
		var err error
		if body, err = base64.StdEncoding.DecodeString(b.Payload); err != nil {
			writeError(m.w, http.StatusBadRequest, "bad_request", "payload is not valid base64")
			return
		}
	default:
		writeError(m.w, http.StatusBadRequest, "bad_request", "payload_encoding must be string or base64")
		return
	}
	pub, err := publishingOf(b.Properties)
	if err != nil {
		writeError(m.w, http.StatusBadRequest, "bad_request", err.Error())
		return
	}
	pub.Body = body
	ss, ok := m.open(a.s, vh)
	if !ok {
		return
	}
	defer ss.close()
	// Both channels are buffered and written by amqp091-go's single reader
	// in frame order: a basic.return precedes its confirm.
	returns := ss.ch.NotifyReturn(make(chan amqp.Return, 1))
	chClosed := ss.ch.NotifyClose(make(chan *amqp.Error, 1))
	if err := ss.ch.Confirm(false); err != nil {
		writeAMQPError(m.w, err)
		return
	}
	dc, err := ss.ch.PublishWithDeferredConfirm(exchangeName(m.r), b.RoutingKey, true, false, pub)
	if err != nil {
		writeAMQPError(m.w, err)
		return
	}
	ctx, cancel := context.WithTimeout(m.r.Context(), mgmtRequestTimeout)
	defer cancel()
	acked, err := dc.WaitContext(ctx)
	if err != nil || !acked {
		// A channel exception (no such exchange) ends the wait; report it.
		select {
		case cerr := <-chClosed:
			if cerr != nil {
				writeAMQPError(m.w, cerr)
				return
			}
		case <-ctx.Done():
		}
		writeError(m.w, http.StatusInternalServerError, "internal_server_error", "publish not confirmed")
		return
	}
	routed := true
	select {
	case <-returns:
		routed = false
	default:
	}
	writeJSON(m.w, http.StatusOK, map[string]bool{"routed": routed})
}

// publishingOf maps the API's properties object to a publishing.
func publishingOf(props map[string]any) (amqp.Publishing, error) {
	var p amqp.Publishing
	str := func(k string) (string, error) {
		v, ok := props[k]
		if !ok {
			return "", nil
		}
		s, ok := v.(string)
		if !ok {
			return "", fmt.Errorf("property %s must be a string", k)
		}
		return s, nil
	}
	num := func(k string) (int64, bool, error) {
		v, ok := props[k]
		if !ok {
			return 0, false, nil
		}
		n, ok := v.(json.Number)
		if !ok {
			return 0, false, fmt.Errorf("property %s must be a number", k)
		}
		i, err := n.Int64()
		if err != nil {
			return 0, false, fmt.Errorf("property %s must be an integer", k)
		}
		return i, true, nil
	}
	var err error
	for k, dst := range map[string]*string{"content_type": &p.ContentType, "content_encoding": &p.ContentEncoding,
		"correlation_id": &p.CorrelationId, "reply_to": &p.ReplyTo, "expiration": &p.Expiration,
		"message_id": &p.MessageId, "type": &p.Type, "user_id": &p.UserId, "app_id": &p.AppId} {
		if *dst, err = str(k); err != nil {
			return p, err
		}
	}
	if v, ok, err := num("delivery_mode"); err != nil {
		return p, err
	} else if ok {
		p.DeliveryMode = uint8(v)
	}
	if v, ok, err := num("priority"); err != nil {
		return p, err
	} else if ok {
		p.Priority = uint8(v)
	}
	if v, ok, err := num("timestamp"); err != nil {
		return p, err
	} else if ok {
		p.Timestamp = time.Unix(v, 0)
	}
	if h, ok := props["headers"]; ok {
		hm, ok := h.(map[string]any)
		if !ok {
			return p, errors.New("property headers must be an object")
		}
		p.Headers = amqpTable(hm)
	}
	return p, nil
}

// filterBindings answers a binding list of vhost restricted by keep, or
// 404 when the vhost does not exist.
func (a *mgmtAPI) filterBindings(m *mgmtRequest, vh string, keep func(BindingInfo) bool) ([]BindingInfo, bool) {
	bs, err := a.s.Bindings(vh)
	if err != nil {
		writeNotFound(m.w)
		return nil, false
	}
	out := []BindingInfo{}
	for _, b := range bs {
		if keep(b) {
			out = append(out, b)
		}
	}
	return out, true
}

func (a *mgmtAPI) queueBindings(m *mgmtRequest) {
	vh, ok := m.vhostParam(a.s)
	if !ok {
		return
	}
	name := m.r.PathValue("name")
	if _, err := a.s.Queues(QueuesOptions{VHost: vh, Name: name}); err != nil {
		writeNotFound(m.w)
		return
	}
	if out, ok := a.filterBindings(m, vh, func(b BindingInfo) bool {
		return b.DestinationType == "queue" && b.Destination == name
	}); ok {
		m.writeList(out)
	}
}

func (a *mgmtAPI) exchangeBindings(m *mgmtRequest) {
	vh, ok := m.vhostParam(a.s)
	if !ok {
		return
	}
	name := exchangeName(m.r)
	if _, err := a.s.Exchanges(ExchangesOptions{VHost: vh, Name: name, ByName: true}); err != nil {
		writeNotFound(m.w)
		return
	}
	asSource := strings.HasSuffix(m.r.URL.Path, "/source")
	if out, ok := a.filterBindings(m, vh, func(b BindingInfo) bool {
		if asSource {
			return b.Source == name
		}
		return b.DestinationType == "exchange" && b.Destination == name
	}); ok {
		m.writeList(out)
	}
}

// bindingEnds reads {source}, {dtype} ("q" or "e") and {destination} and
// checks that both ends exist (404 otherwise).
func (a *mgmtAPI) bindingEnds(m *mgmtRequest) (vh, src, dtype, dst string, ok bool) {
	vh, ok = m.vhostParam(a.s)
	if !ok {
		return
	}
	src, dst = m.r.PathValue("source"), m.r.PathValue("destination")
	if src == "amq.default" {
		src = ""
	}
	ok = false
	switch m.r.PathValue("dtype") {
	case "q":
		dtype = "queue"
		_, err := a.s.Queues(QueuesOptions{VHost: vh, Name: dst})
		ok = err == nil
	case "e":
		dtype = "exchange"
		_, err := a.s.Exchanges(ExchangesOptions{VHost: vh, Name: dst, ByName: true})
		ok = err == nil
	}
	if ok {
		_, err := a.s.Exchanges(ExchangesOptions{VHost: vh, Name: src, ByName: true})
		ok = err == nil
	}
	if !ok {
		writeNotFound(m.w)
	}
	return
}

func (a *mgmtAPI) bindingsBetween(m *mgmtRequest) {
	vh, src, dtype, dst, ok := a.bindingEnds(m)
	if !ok {
		return
	}
	if out, ok := a.filterBindings(m, vh, func(b BindingInfo) bool {
		return b.Source == src && b.DestinationType == dtype && b.Destination == dst
	}); ok {
		m.writeList(out)
	}
}

func (a *mgmtAPI) binding(m *mgmtRequest) {
	vh, src, dtype, dst, ok := a.bindingEnds(m)
	if !ok {
		return
	}
	props := m.r.PathValue("props")
	out, ok := a.filterBindings(m, vh, func(b BindingInfo) bool {
		return b.Source == src && b.DestinationType == dtype && b.Destination == dst && b.PropertiesKey == props
	})
	if !ok {
		return
	}
	if len(out) == 0 {
		writeNotFound(m.w)
		return
	}
	writeJSON(m.w, http.StatusOK, out[0])
}

type bindBody struct {
	RoutingKey string         `json:"routing_key"`
	Arguments  map[string]any `json:"arguments"`
}

// bind is POST /api/bindings/{vhost}/e/{source}/{q|e}/{destination}:
// 201 with the new binding's URL in Location.
func (a *mgmtAPI) bind(m *mgmtRequest) {
	vh, src, dtype, dst, ok := a.bindingEnds(m)
	if !ok {
		return
	}
	var b bindBody
	if !m.readBody(a.s, &b) {
		return
	}
	ss, ok := m.open(a.s, vh)
	if !ok {
		return
	}
	defer ss.close()
	args := amqpTable(b.Arguments)
	var err error
	if dtype == "queue" {
		err = ss.ch.QueueBind(dst, b.RoutingKey, src, false, args)
	} else {
		err = ss.ch.ExchangeBind(dst, b.RoutingKey, src, false, args)
	}
	if err != nil {
		writeAMQPError(m.w, err)
		return
	}
	bs, _ := a.filterBindings(m, vh, func(x BindingInfo) bool {
		return x.Source == src && x.DestinationType == dtype && x.Destination == dst && x.RoutingKey == b.RoutingKey
	})
	if len(bs) > 0 {
		m.w.Header().Set("Location", strings.TrimSuffix(m.r.URL.EscapedPath(), "/")+"/"+url.PathEscape(bs[len(bs)-1].PropertiesKey))
	}
	m.w.WriteHeader(http.StatusCreated)
}

// unbind is DELETE of one binding, named by its properties_key.
func (a *mgmtAPI) unbind(m *mgmtRequest) {
	vh, src, dtype, dst, ok := a.bindingEnds(m)
	if !ok {
		return
	}
	key, args, found := a.s.bindingByPropertiesKey(vh, src, dtype, dst, m.r.PathValue("props"))
	if !found {
		writeNotFound(m.w)
		return
	}
	ss, ok := m.open(a.s, vh)
	if !ok {
		return
	}
	defer ss.close()
	var err error
	if dtype == "queue" {
		err = ss.ch.QueueUnbind(dst, key, src, args)
	} else {
		err = ss.ch.ExchangeUnbind(dst, key, src, false, args)
	}
	if err != nil {
		writeAMQPError(m.w, err)
		return
	}
	m.w.WriteHeader(http.StatusNoContent)
}

// aliveness is GET /api/aliveness-test/{vhost}: as RabbitMQ 3.10, declare
// the queue "aliveness-test", publish a message to it and get it back.
func (a *mgmtAPI) aliveness(m *mgmtRequest) {
	vh, ok := m.vhostParam(a.s)
	if !ok {
		return
	}
	ss, ok := m.open(a.s, vh)
	if !ok {
		return
	}
	defer ss.close()
	const q = "aliveness-test"
	if _, err := ss.ch.QueueDeclare(q, false, false, false, false, nil); err != nil {
		writeAMQPError(m.w, err)
		return
	}
	if err := ss.ch.Publish("", q, false, false, amqp.Publishing{Body: []byte("test_message")}); err != nil {
		writeAMQPError(m.w, err)
		return
	}
	// basic.get after publish on one channel sees the message: the broker
	// handles a channel's methods in order.
	d, got, err := ss.ch.Get(q, true)
	if err != nil {
		writeAMQPError(m.w, err)
		return
	}
	if !got || string(d.Body) != "test_message" {
		writeJSON(m.w, http.StatusServiceUnavailable, map[string]string{"status": "failed", "reason": "aliveness test message not received"})
		return
	}
	writeJSON(m.w, http.StatusOK, map[string]string{"status": "ok"})
}

// readOptionalBody is readBody for requests whose body may be empty.
func (m *mgmtRequest) readOptionalBody(s *Server, into any) bool {
	if m.r.ContentLength == 0 {
		return true
	}
	return m.readBody(s, into)
}

func (a *mgmtAPI) putVHost(m *mgmtRequest) {
	var body map[string]any
	if !m.readOptionalBody(a.s, &body) {
		return
	}
	created, err := a.s.AddVHost(m.r.PathValue("vhost"))
	if err != nil {
		writeError(m.w, http.StatusInternalServerError, "internal_server_error", err.Error())
		return
	}
	if created {
		// As RabbitMQ 3.10.8: the user who creates a vhost gets every
		// permission in it (TestAdministrationMatchesRabbitMQ).
		all := Permission{Configure: ".*", Write: ".*", Read: ".*"}
		if _, err := a.s.SetPermission(m.user.name, m.r.PathValue("vhost"), all); err != nil && !errors.Is(err, ErrNotFound) {
			writeError(m.w, http.StatusInternalServerError, "internal_server_error", err.Error())
			return
		}
		m.w.WriteHeader(http.StatusCreated)
		return
	}
	m.w.WriteHeader(http.StatusNoContent)
}

func (a *mgmtAPI) deleteVHost(m *mgmtRequest) {
	switch err := a.s.DeleteVHost(m.r.PathValue("vhost")); {
	case errors.Is(err, ErrNotFound):
		writeNotFound(m.w)
	case err != nil:
		writeError(m.w, http.StatusInternalServerError, "internal_server_error", err.Error())
	default:
		m.w.WriteHeader(http.StatusNoContent)
	}
}

func (a *mgmtAPI) user(m *mgmtRequest) {
	name := m.r.PathValue("user")
	for _, u := range a.s.Users() {
		if u.Name == name {
			writeJSON(m.w, http.StatusOK, u)
			return
		}
	}
	writeNotFound(m.w)
}

type userBody struct {
	Password         *string `json:"password"`
	PasswordHash     *string `json:"password_hash"`
	HashingAlgorithm string  `json:"hashing_algorithm"`
	Tags             any     `json:"tags"`
}

// putUser is PUT /api/users/{user}: tags are a comma-separated string (as
// RabbitMQ 3.10 documents) or a list.
func (a *mgmtAPI) putUser(m *mgmtRequest) {
	var b userBody
	if !m.readBody(a.s, &b) {
		return
	}
	u := User{Name: m.r.PathValue("user"), Tags: []string{}}
	switch t := b.Tags.(type) {
	case nil:
	case string:
		for _, tag := range strings.Split(t, ",") {
			if tag = strings.TrimSpace(tag); tag != "" {
				u.Tags = append(u.Tags, tag)
			}
		}
	case []any:
		for _, x := range t {
			tag, ok := x.(string)
			if !ok {
				writeError(m.w, http.StatusBadRequest, "bad_request", "tags must be strings")
				return
			}
			u.Tags = append(u.Tags, tag)
		}
	default:
		writeError(m.w, http.StatusBadRequest, "bad_request", "tags must be a string or a list")
		return
	}
	if _, _, ok := hashFunc(b.HashingAlgorithm); !ok {
		writeError(m.w, http.StatusBadRequest, "bad_request", "hashing_algorithm: only rabbit_password_hashing_sha256, _sha512 and _md5 are supported")
		return
	}
	u.HashingAlgorithm = b.HashingAlgorithm
	if b.Password != nil {
		u.Password = *b.Password
	}
	if b.PasswordHash != nil {
		u.PasswordHash = *b.PasswordHash
	}
	created, err := a.s.PutUser(u)
	if errors.Is(err, ErrNotSaved) {
		writeError(m.w, http.StatusInternalServerError, "internal_server_error", err.Error())
		return
	}
	if err != nil {
		writeError(m.w, http.StatusBadRequest, "bad_request", strings.TrimPrefix(err.Error(), "broker: "))
		return
	}
	if created {
		m.w.WriteHeader(http.StatusCreated)
		return
	}
	m.w.WriteHeader(http.StatusNoContent)
}

func (a *mgmtAPI) deleteUser(m *mgmtRequest) {
	if err := a.s.DeleteUser(m.r.PathValue("user")); err != nil {
		writeAdminError(m.w, err)
		return
	}
	m.w.WriteHeader(http.StatusNoContent)
}

func (a *mgmtAPI) userPermissions(m *mgmtRequest) {
	name := m.r.PathValue("user")
	if _, ok := a.s.UserTags(name); !ok {
		writeNotFound(m.w)
		return
	}
	out := []PermissionInfo{}
	for _, p := range a.s.Permissions() {
		if p.User == name {
			out = append(out, p)
		}
	}
	m.writeList(out)
}

func (a *mgmtAPI) permission(m *mgmtRequest) {
	vh, name := m.r.PathValue("vhost"), m.r.PathValue("user")
	for _, p := range a.s.Permissions() {
		if p.User == name && p.VHost == vh {
			writeJSON(m.w, http.StatusOK, p)
			return
		}
	}
	writeNotFound(m.w)
}

type permissionBody struct {
	Configure *string `json:"configure"`
	Write     *string `json:"write"`
	Read      *string `json:"read"`
}

func (a *mgmtAPI) putPermission(m *mgmtRequest) {
	var b permissionBody
	if !m.readBody(a.s, &b) {
		return
	}
	if b.Configure == nil || b.Write == nil || b.Read == nil {
		writeError(m.w, http.StatusBadRequest, "bad_request", "configure, write and read are required")
		return
	}
	created, err := a.s.SetPermission(m.r.PathValue("user"), m.r.PathValue("vhost"),
		Permission{Configure: *b.Configure, Write: *b.Write, Read: *b.Read})
	switch {
	case errors.Is(err, ErrNotFound):
		writeNotFound(m.w)
	case errors.Is(err, ErrNotSaved):
		writeError(m.w, http.StatusInternalServerError, "internal_server_error", err.Error())
	case err != nil:
		writeError(m.w, http.StatusBadRequest, "bad_request", strings.TrimPrefix(err.Error(), "broker: "))
	case created:
		m.w.WriteHeader(http.StatusCreated)
	default:
		m.w.WriteHeader(http.StatusNoContent)
	}
}

func (a *mgmtAPI) deletePermission(m *mgmtRequest) {
	if err := a.s.ClearPermission(m.r.PathValue("user"), m.r.PathValue("vhost")); err != nil {
		writeAdminError(m.w, err)
		return
	}
	m.w.WriteHeader(http.StatusNoContent)
}

func (a *mgmtAPI) oslo(m *mgmtRequest) {
	vh, ok := m.vhostParam(a.s)
	if !ok {
		return
	}
	z, err := a.s.Osloz(OslozOptions{VHost: vh})
	if err != nil {
		writeNotFound(m.w)
		return
	}
	if vh == "" && m.level < levelMonitoring {
		z.filterVHosts(m.user.vhostAllowed)
	}
	writeJSON(m.w, http.StatusOK, z)
}

func (a *mgmtAPI) counters(m *mgmtRequest) { writeJSON(m.w, http.StatusOK, a.s.Counters()) }

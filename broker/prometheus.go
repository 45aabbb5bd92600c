package broker

import (
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"runtime"
	"runtime/debug"
	"strconv"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// Prometheus metrics with the names of RabbitMQ's rabbitmq_prometheus
// plugin. A custom Collector reads the query methods of monitor.go at
// scrape time, so nothing is counted twice and scraping costs nothing
// between scrapes. /metrics aggregates as the plugin does by default (no
// per-object labels); /metrics/per-object labels queue metrics with vhost
// and queue, channel metrics with vhost and channel, connection metrics
// with vhost and connection. The channel counters of /metrics are the
// vhost totals of stats.go (closed channels included), so they never go
// down when a channel closes.

// PrometheusPluginVersion is the rabbitmq_prometheus version reported in
// rabbitmq_build_info.
const PrometheusPluginVersion = "3.10.8"

type promMetric struct {
	name, help string
	typ        prometheus.ValueType
	labels     []string
}

// promDescs builds the descriptors; perObject adds the object labels.
func promDescs(perObject bool) map[string]*prometheus.Desc {
	g, c := prometheus.GaugeValue, prometheus.CounterValue
	global := []promMetric{
		{"rabbitmq_build_info", "RabbitMQ & Erlang/OTP version info", g, []string{"rabbitmq_version", "prometheus_plugin_version", "prometheus_client_version", "erlang_version"}},
		{"rabbitmq_identity_info", "RabbitMQ node & cluster identity info", g, []string{"rabbitmq_node", "rabbitmq_cluster", "rabbitmq_cluster_permanent_id"}},
		{"rabbitmq_connections", "Connections currently open", g, nil},
		{"rabbitmq_channels", "Channels currently open", g, nil},
		{"rabbitmq_consumers", "Consumers currently connected", g, nil},
		{"rabbitmq_queues", "Queues available", g, nil},
		{"rabbitmq_connections_opened_total", "Total number of connections opened", c, nil},
		{"rabbitmq_connections_closed_total", "Total number of connections closed or terminated", c, nil},
		{"rabbitmq_channels_opened_total", "Total number of channels opened", c, nil},
		{"rabbitmq_channels_closed_total", "Total number of channels closed", c, nil},
		{"rabbitmq_queues_declared_total", "Total number of queues declared", c, nil},
		{"rabbitmq_queues_created_total", "Total number of queues created", c, nil},
		{"rabbitmq_queues_deleted_total", "Total number of queues deleted", c, nil},
		{"rabbitmq_process_resident_memory_bytes", "Memory used in bytes", g, nil},
		{"rabbitmq_resident_memory_limit_bytes", "Memory high watermark in bytes", g, nil},
		{"rabbitmq_alarms_memory_used_watermark", "is 1 if VM memory watermark alarm is in effect", g, nil},
		{"rabbitmq_alarms_free_disk_space_watermark", "is 1 if free disk space watermark alarm is in effect", g, nil},
		{"rabbitmq_alarms_file_descriptor_limit", "is 1 if file descriptor limit alarm is in effect", g, nil},
		{"rabbitmq_process_open_fds", "Open file descriptors", g, nil},
		{"rabbitmq_process_max_fds", "Open file descriptors limit", g, nil},
	}
	var ql, cl, nl []string
	if perObject {
		ql, cl, nl = []string{"vhost", "queue"}, []string{"vhost", "channel"}, []string{"vhost", "connection"}
	}
	objects := []promMetric{
		{"rabbitmq_queue_messages_ready", "Messages ready to be delivered to consumers", g, ql},
		{"rabbitmq_queue_messages_unacked", "Messages delivered to consumers but not yet acknowledged", g, ql},
		{"rabbitmq_queue_messages", "Sum of ready and unacknowledged messages - total queue depth", g, ql},
		{"rabbitmq_queue_messages_ready_bytes", "Size in bytes of ready messages", g, ql},
		{"rabbitmq_queue_consumers", "Consumers on a queue", g, ql},
		{"rabbitmq_queue_messages_published_total", "Total number of messages published to queues", c, ql},
		{"rabbitmq_queue_process_memory_bytes", "Memory in bytes used by the queue (an estimate)", g, ql},
		{"rabbitmq_channel_messages_published_total", "Total number of messages published into an exchange on a channel", c, cl},
		{"rabbitmq_channel_messages_confirmed_total", "Total number of messages published into an exchange and confirmed on the channel", c, cl},
		{"rabbitmq_channel_messages_unroutable_returned_total", "Total number of messages published as mandatory into an exchange and returned to the publisher as unroutable", c, cl},
		{"rabbitmq_channel_messages_unroutable_dropped_total", "Total number of messages published as non-mandatory into an exchange and dropped as unroutable", c, cl},
		{"rabbitmq_channel_messages_delivered_ack_total", "Total number of messages delivered to consumers in manual acknowledgement mode", c, cl},
		{"rabbitmq_channel_messages_delivered_total", "Total number of messages delivered to consumers in automatic acknowledgement mode", c, cl},
		{"rabbitmq_channel_messages_redelivered_total", "Total number of messages redelivered to consumers", c, cl},
		{"rabbitmq_channel_messages_acked_total", "Total number of messages acknowledged by consumers", c, cl},
		{"rabbitmq_channel_get_ack_total", "Total number of messages fetched with basic.get in manual acknowledgement mode", c, cl},
		{"rabbitmq_channel_get_total", "Total number of messages fetched with basic.get in automatic acknowledgement mode", c, cl},
		{"rabbitmq_channel_get_empty_total", "Total number of times basic.get operations fetched no message", c, cl},
		{"rabbitmq_channel_consumers", "Consumers on a channel", g, cl},
		{"rabbitmq_channel_messages_unacked", "Delivered but not yet acknowledged messages", g, cl},
		{"rabbitmq_channel_messages_unconfirmed", "Published but not yet confirmed messages", g, cl},
		{"rabbitmq_channel_prefetch", "Total limit of unacknowledged messages for all consumers on a channel", g, cl},
		{"rabbitmq_connection_incoming_bytes_total", "Total number of bytes received on a connection", c, nl},
		{"rabbitmq_connection_outgoing_bytes_total", "Total number of bytes sent on a connection", c, nl},
		{"rabbitmq_connection_channels", "Channels on a connection", g, nl},
	}
	out := map[string]*prometheus.Desc{}
	for _, m := range append(global, objects...) {
		out[m.name] = prometheus.NewDesc(m.name, m.help, m.labels, nil)
	}
	for _, m := range osloMetrics {
		out[m.name] = prometheus.NewDesc(m.name, m.help, m.labels, nil)
	}
	return out
}

// channelCounters maps the channel counters to message_stats.
var channelCounters = []struct {
	name string
	stat Stat
}{
	{"rabbitmq_channel_messages_published_total", StatPublish},
	{"rabbitmq_channel_messages_confirmed_total", StatConfirm},
	{"rabbitmq_channel_messages_unroutable_returned_total", StatReturnUnroutable},
	{"rabbitmq_channel_messages_unroutable_dropped_total", StatDropUnroutable},
	{"rabbitmq_channel_messages_delivered_ack_total", StatDeliver},
	{"rabbitmq_channel_messages_delivered_total", StatDeliverNoAck},
	{"rabbitmq_channel_messages_redelivered_total", StatRedeliver},
	{"rabbitmq_channel_messages_acked_total", StatAck},
	{"rabbitmq_channel_get_ack_total", StatGet},
	{"rabbitmq_channel_get_total", StatGetNoAck},
	{"rabbitmq_channel_get_empty_total", StatGetEmpty},
}

type promCollector struct {
	s         *Server
	perObject bool
	descs     map[string]*prometheus.Desc
}

// PrometheusCollector returns a prometheus.Collector of the broker's
// metrics: aggregated as on /metrics, or labelled per queue, channel and
// connection as on /metrics/per-object.
func (s *Server) PrometheusCollector(perObject bool) prometheus.Collector {
	return &promCollector{s: s, perObject: perObject, descs: promDescs(perObject)}
}

func (p *promCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range p.descs {
		ch <- d
	}
}

func (p *promCollector) emit(ch chan<- prometheus.Metric, name string, t prometheus.ValueType, v float64, labels ...string) {
	ch <- prometheus.MustNewConstMetric(p.descs[name], t, v, labels...)
}

func (p *promCollector) Collect(ch chan<- prometheus.Metric) {
	s := p.s
	g, c := prometheus.GaugeValue, prometheus.CounterValue
	o := s.Overview()
	node := s.NodeName()
	p.emit(ch, "rabbitmq_build_info", g, 1, s.opts.ProductVersion, PrometheusPluginVersion, promClientVersion(), runtime.Version())
	p.emit(ch, "rabbitmq_identity_info", g, 1, node, o.ClusterName, o.ClusterName)
	p.emit(ch, "rabbitmq_connections", g, float64(o.ObjectTotals.Connections))
	p.emit(ch, "rabbitmq_channels", g, float64(o.ObjectTotals.Channels))
	p.emit(ch, "rabbitmq_consumers", g, float64(o.ObjectTotals.Consumers))
	p.emit(ch, "rabbitmq_queues", g, float64(o.ObjectTotals.Queues))
	cr := o.ChurnRates
	p.emit(ch, "rabbitmq_connections_opened_total", c, float64(cr.ConnectionCreated))
	p.emit(ch, "rabbitmq_connections_closed_total", c, float64(cr.ConnectionClosed))
	p.emit(ch, "rabbitmq_channels_opened_total", c, float64(cr.ChannelCreated))
	p.emit(ch, "rabbitmq_channels_closed_total", c, float64(cr.ChannelClosed))
	p.emit(ch, "rabbitmq_queues_declared_total", c, float64(cr.QueueDeclared))
	p.emit(ch, "rabbitmq_queues_created_total", c, float64(cr.QueueCreated))
	p.emit(ch, "rabbitmq_queues_deleted_total", c, float64(cr.QueueDeleted))
	p.emit(ch, "rabbitmq_process_resident_memory_bytes", g, float64(residentMemory()))
	p.emit(ch, "rabbitmq_resident_memory_limit_bytes", g, float64(s.opts.MemoryHighWatermark))
	p.emit(ch, "rabbitmq_alarms_memory_used_watermark", g, b2f(s.alarm.Load()))
	p.emit(ch, "rabbitmq_alarms_free_disk_space_watermark", g, 0)
	p.emit(ch, "rabbitmq_alarms_file_descriptor_limit", g, 0)
	if open, max, ok := fds(); ok {
		p.emit(ch, "rabbitmq_process_open_fds", g, float64(open))
		p.emit(ch, "rabbitmq_process_max_fds", g, float64(max))
	}

	qs, _ := s.Queues(QueuesOptions{})
	chans := s.Channels(ChannelsOptions{})
	conns, _ := s.Connections(ConnectionsOptions{})
	if p.perObject {
		for _, q := range qs {
			l := []string{q.VHost, q.Name}
			p.emit(ch, "rabbitmq_queue_messages_ready", g, float64(q.MessagesReady), l...)
			p.emit(ch, "rabbitmq_queue_messages_unacked", g, float64(q.MessagesUnacknowledged), l...)
			p.emit(ch, "rabbitmq_queue_messages", g, float64(q.Messages), l...)
			p.emit(ch, "rabbitmq_queue_messages_ready_bytes", g, float64(q.MessageBytesReady), l...)
			p.emit(ch, "rabbitmq_queue_consumers", g, float64(q.Consumers), l...)
			p.emit(ch, "rabbitmq_queue_messages_published_total", c, float64(q.MessageStats.Counts[StatPublish]), l...)
			p.emit(ch, "rabbitmq_queue_process_memory_bytes", g, float64(q.Memory), l...)
		}
		for _, x := range chans {
			l := []string{x.VHost, x.Name}
			for _, cc := range channelCounters {
				p.emit(ch, cc.name, c, float64(x.MessageStats.Counts[cc.stat]), l...)
			}
			p.emit(ch, "rabbitmq_channel_consumers", g, float64(x.ConsumerCount), l...)
			p.emit(ch, "rabbitmq_channel_messages_unacked", g, float64(x.MessagesUnacknowledged), l...)
			p.emit(ch, "rabbitmq_channel_messages_unconfirmed", g, float64(x.MessagesUnconfirmed), l...)
			p.emit(ch, "rabbitmq_channel_prefetch", g, float64(x.GlobalPrefetchCount), l...)
		}
		for _, x := range conns {
			l := []string{x.VHost, x.Name}
			p.emit(ch, "rabbitmq_connection_incoming_bytes_total", c, float64(x.RecvOct), l...)
			p.emit(ch, "rabbitmq_connection_outgoing_bytes_total", c, float64(x.SendOct), l...)
			p.emit(ch, "rabbitmq_connection_channels", g, float64(x.Channels), l...)
		}
	} else {
		var ready, unacked, bytes, consumers, published, mem float64
		for _, q := range qs {
			ready += float64(q.MessagesReady)
			unacked += float64(q.MessagesUnacknowledged)
			bytes += float64(q.MessageBytesReady)
			consumers += float64(q.Consumers)
			published += float64(q.MessageStats.Counts[StatPublish])
			mem += float64(q.Memory)
		}
		p.emit(ch, "rabbitmq_queue_messages_ready", g, ready)
		p.emit(ch, "rabbitmq_queue_messages_unacked", g, unacked)
		p.emit(ch, "rabbitmq_queue_messages", g, ready+unacked)
		p.emit(ch, "rabbitmq_queue_messages_ready_bytes", g, bytes)
		p.emit(ch, "rabbitmq_queue_consumers", g, consumers)
		p.emit(ch, "rabbitmq_queue_messages_published_total", c, published)
		p.emit(ch, "rabbitmq_queue_process_memory_bytes", g, mem)
		for _, cc := range channelCounters {
			p.emit(ch, cc.name, c, float64(o.MessageStats.Counts[cc.stat]))
		}
		var cons, unack, unconf, prefetch float64
		for _, x := range chans {
			cons += float64(x.ConsumerCount)
			unack += float64(x.MessagesUnacknowledged)
			unconf += float64(x.MessagesUnconfirmed)
			prefetch += float64(x.GlobalPrefetchCount)
		}
		p.emit(ch, "rabbitmq_channel_consumers", g, cons)
		p.emit(ch, "rabbitmq_channel_messages_unacked", g, unack)
		p.emit(ch, "rabbitmq_channel_messages_unconfirmed", g, unconf)
		p.emit(ch, "rabbitmq_channel_prefetch", g, prefetch)
		var recv, send float64
		for _, vh := range s.VHosts() {
			recv += float64(vh.RecvOct)
			send += float64(vh.SendOct)
		}
		var nch float64
		for _, x := range conns {
			nch += float64(x.Channels)
		}
		p.emit(ch, "rabbitmq_connection_incoming_bytes_total", c, recv)
		p.emit(ch, "rabbitmq_connection_outgoing_bytes_total", c, send)
		p.emit(ch, "rabbitmq_connection_channels", g, nch)
	}
	p.collectOslo(ch)
}

func b2f(b bool) float64 {
	if b {
		return 1
	}
	return 0
}

func promClientVersion() string {
	if bi, ok := debug.ReadBuildInfo(); ok {
		for _, d := range bi.Deps {
			if d.Path == "github.com/prometheus/client_golang" {
				return strings.TrimPrefix(d.Version, "v")
			}
		}
	}
	return "unknown"
}

// residentMemory is the process's resident set size from /proc, or the
// memory the Go runtime got from the OS where there is no /proc.
func residentMemory() uint64 {
	if b, err := os.ReadFile("/proc/self/statm"); err == nil {
		if f := strings.Fields(string(b)); len(f) > 1 {
			if pages, err := strconv.ParseUint(f[1], 10, 64); err == nil {
				return pages * uint64(os.Getpagesize())
			}
		}
	}
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return ms.Sys
}

// prometheusHandler serves the collector in the text exposition format.
func (s *Server) prometheusHandler(perObject bool) http.Handler {
	reg := prometheus.NewRegistry()
	reg.MustRegister(s.PrometheusCollector(perObject))
	return promhttp.HandlerFor(reg, promhttp.HandlerOpts{ErrorHandling: promhttp.ContinueOnError})
}

// startPrometheusLocked listens on Options.PrometheusAddr; the serving
// goroutine is tracked by s.wg and ends in stopHTTP. Caller holds s.mu.
func (s *Server) startPrometheusLocked() error {
	if s.opts.PrometheusAddr == "" {
		return nil
	}
	ln, err := net.Listen("tcp", s.opts.PrometheusAddr)
	if err != nil {
		return fmt.Errorf("broker: listen prometheus: %w", err)
	}
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", s.prometheusHandler(false))
	mux.Handle("GET /metrics/per-object", s.prometheusHandler(true))
	hs := &http.Server{
		Handler:           mux,
		ReadHeaderTimeout: 10 * time.Second,
		ReadTimeout:       time.Minute,
		WriteTimeout:      time.Minute,
		IdleTimeout:       2 * time.Minute,
		MaxHeaderBytes:    64 << 10,
		ErrorLog:          slog.NewLogLogger(s.log.With("component", "prometheus").Handler(), slog.LevelDebug),
	}
	s.mon.promSrv, s.mon.promLn = hs, ln
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		_ = hs.Serve(ln)
	}()
	return nil
}

// closePrometheusLocked undoes startPrometheusLocked when a later
// listener of Start fails.
func (s *Server) closePrometheusLocked() {
	if s.mon.promSrv != nil {
		_ = s.mon.promSrv.Close()
		s.mon.promSrv, s.mon.promLn = nil, nil
	}
}

// PrometheusAddr returns the Prometheus listener's address, or nil.
func (s *Server) PrometheusAddr() net.Addr {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.mon.promLn == nil {
		return nil
	}
	return s.mon.promLn.Addr()
}

package broker

import "github.com/prometheus/client_golang/prometheus"

// osloMetrics are the oslo.messaging metrics read from Osloz at scrape
// time: per RPC topic its servers, the depth of its shared queue and the
// messages through it (rates are PromQL's rate() of the counters), per
// notification topic and priority the same, and the reply queues.
var osloMetrics = func() []promMetric {
	g, c := prometheus.GaugeValue, prometheus.CounterValue
	rpc := []string{"vhost", "exchange", "topic"}
	note := []string{"vhost", "exchange", "topic", "priority"}
	return []promMetric{
		{"oslogo_oslo_rpc_topic_servers", "RPC servers of an oslo.messaging topic (server queues T.S and connections consuming T)", g, rpc},
		{"oslogo_oslo_rpc_topic_no_server", "is 1 if no server consumes the RPC topic (calls to it time out)", g, rpc},
		{"oslogo_oslo_rpc_topic_messages", "Messages waiting or unacknowledged in the RPC topic's shared queue T", g, rpc},
		{"oslogo_oslo_rpc_topic_consumers", "Consumers of the RPC topic's shared queue T", g, rpc},
		{"oslogo_oslo_rpc_topic_published_total", "Messages the RPC topic's shared queue T accepted", c, rpc},
		{"oslogo_oslo_rpc_topic_delivered_total", "Messages the RPC topic's shared queue T handed to servers", c, rpc},
		{"oslogo_oslo_notification_messages", "Messages waiting or unacknowledged in a notification queue <topic>.<priority>", g, note},
		{"oslogo_oslo_notification_listeners", "Listeners of a notification topic and priority (pooled ones included)", g, note},
		{"oslogo_oslo_notification_published_total", "Notifications the queue <topic>.<priority> accepted", c, note},
		{"oslogo_oslo_reply_queues", "RPC reply queues", g, []string{"vhost"}},
		{"oslogo_oslo_reply_queues_unread", "RPC reply queues nobody consumes", g, []string{"vhost"}},
		{"oslogo_oslo_reply_messages", "Replies waiting in reply queues", g, []string{"vhost"}},
	}
}()

func (p *promCollector) collectOslo(ch chan<- prometheus.Metric) {
	z, err := p.s.Osloz(OslozOptions{})
	if err != nil {
		return
	}
	g, c := prometheus.GaugeValue, prometheus.CounterValue
	for _, t := range z.RPCTopics {
		l := []string{t.VHost, t.Exchange, t.Topic}
		p.emit(ch, "oslogo_oslo_rpc_topic_servers", g, float64(len(t.Servers)), l...)
		p.emit(ch, "oslogo_oslo_rpc_topic_no_server", g, b2f(t.NoServer), l...)
		var q OsloQueue
		if t.Queue != nil {
			q = *t.Queue
		}
		p.emit(ch, "oslogo_oslo_rpc_topic_messages", g, float64(q.Messages), l...)
		p.emit(ch, "oslogo_oslo_rpc_topic_consumers", g, float64(q.Consumers), l...)
		p.emit(ch, "oslogo_oslo_rpc_topic_published_total", c, float64(q.Published), l...)
		p.emit(ch, "oslogo_oslo_rpc_topic_delivered_total", c, float64(q.Delivered), l...)
	}
	for _, n := range z.Notifications {
		l := []string{n.VHost, n.Exchange, n.Topic, n.Priority}
		var q OsloQueue
		if n.Queue != nil {
			q = *n.Queue
		}
		listeners := len(n.Listeners)
		msgs := q.Messages
		for _, pool := range n.Pools {
			listeners += len(pool.Listeners)
			msgs += pool.Queue.Messages
		}
		p.emit(ch, "oslogo_oslo_notification_messages", g, float64(msgs), l...)
		p.emit(ch, "oslogo_oslo_notification_listeners", g, float64(listeners), l...)
		p.emit(ch, "oslogo_oslo_notification_published_total", c, float64(q.Published), l...)
	}
	type replies struct{ n, unread, msgs int }
	per := map[string]*replies{}
	for _, vh := range p.s.vhostList() {
		per[vh.name] = &replies{}
	}
	for _, r := range z.ReplyQueues {
		x := per[r.VHost]
		if x == nil {
			x = &replies{}
			per[r.VHost] = x
		}
		x.n++
		x.msgs += r.Queue.Messages
		if r.Unread {
			x.unread++
		}
	}
	for vh, x := range per {
		p.emit(ch, "oslogo_oslo_reply_queues", g, float64(x.n), vh)
		p.emit(ch, "oslogo_oslo_reply_queues_unread", g, float64(x.unread), vh)
		p.emit(ch, "oslogo_oslo_reply_messages", g, float64(x.msgs), vh)
	}
}

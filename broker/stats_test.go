package broker

import (
	"context"
	"fmt"
	"testing"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"
)

// statsTraffic publishes 137 messages through amq.topic to queue "st",
// 3 mandatory and 2 non-mandatory unroutable ones, all confirmed; a
// consumer takes 100 and acks them; basic.get takes one with ack (acked)
// and one without, one with ack that is nacked with requeue and got again
// without ack, redelivered (34 stay ready); a get on the empty queue
// "st.empty" counts get_empty. It returns the publishing connection.
func statsTraffic(t *testing.T, amqpURL string) *amqp.Connection {
	t.Helper()
	pc := dial(t, amqpURL)
	pch := openCh(t, pc)
	if _, err := pch.QueueDeclare("st", false, false, false, false, nil); err != nil {
		t.Fatal(err)
	}
	if _, err := pch.QueueDeclare("st.empty", false, false, false, false, nil); err != nil {
		t.Fatal(err)
	}
	if err := pch.QueueBind("st", "st.#", "amq.topic", false, nil); err != nil {
		t.Fatal(err)
	}
	if err := pch.Confirm(false); err != nil {
		t.Fatal(err)
	}
	returns := pch.NotifyReturn(make(chan amqp.Return, 3))
	ctx := context.Background()
	var dcs []*amqp.DeferredConfirmation
	publish := func(rk string, mandatory bool) {
		dc, err := pch.PublishWithDeferredConfirm("amq.topic", rk, mandatory, false, amqp.Publishing{Body: []byte("body")})
		if err != nil {
			t.Fatal(err)
		}
		dcs = append(dcs, dc)
	}
	for i := range 137 {
		publish(fmt.Sprint("st.", i), false)
	}
	for range 3 {
		publish("nowhere", true)
	}
	for range 2 {
		publish("nowhere", false)
	}
	for _, dc := range dcs {
		if ok, err := dc.WaitContext(ctx); !ok || err != nil {
			t.Fatalf("publish not confirmed: %v", err)
		}
	}
	for range 3 {
		select {
		case <-returns:
		case <-time.After(10 * time.Second):
			t.Fatal("no basic.return")
		}
	}
	cc := dial(t, amqpURL)
	cch := openCh(t, cc)
	consumeN(t, cch, "st", 100)
	gch := openCh(t, cc)
	m, ok, err := gch.Get("st", false)
	if err != nil || !ok {
		t.Fatalf("get: %v %v", ok, err)
	}
	if err := m.Ack(false); err != nil {
		t.Fatal(err)
	}
	if _, ok, err := gch.Get("st", true); err != nil || !ok {
		t.Fatalf("get no-ack: %v %v", ok, err)
	}
	// One more get, nacked with requeue, and got again: redelivered.
	m, ok, err = gch.Get("st", false)
	if err != nil || !ok {
		t.Fatalf("get: %v %v", ok, err)
	}
	if err := m.Nack(false, true); err != nil {
		t.Fatal(err)
	}
	if m, ok, err := gch.Get("st", true); err != nil || !ok || !m.Redelivered {
		t.Fatalf("get of the requeued message: %v %v redelivered %v", ok, err, m.Redelivered)
	}
	if _, ok, err := gch.Get("st.empty", true); err != nil || ok {
		t.Fatalf("get empty: %v %v", ok, err)
	}
	return pc
}

func wantCounts(t *testing.T, what string, m *MessageStats, want map[Stat]uint64) {
	t.Helper()
	if m == nil {
		t.Fatalf("%s: no message_stats", what)
	}
	for s, n := range want {
		if m.Counts[s] != n {
			t.Errorf("%s: %s = %d, want %d", what, s, m.Counts[s], n)
		}
	}
}

// TestMgmtMessageStats: the message_stats of queues, exchanges, channels,
// vhosts and the overview count what a client did, over the HTTP API;
// a vhost's and the overview's counters keep a closed connection's counts.
func TestMgmtMessageStats(t *testing.T) {
	s, amqpURL, base := startMgmt(t)
	c := mgmtClient{t, base}
	pc := statsTraffic(t, amqpURL)

	var q QueueInfo
	c.getJSON("/api/queues/%2F/st", &q)
	wantCounts(t, "queue", q.MessageStats, map[Stat]uint64{StatPublish: 137, StatDeliver: 100, StatDeliverNoAck: 0,
		StatGet: 2, StatGetNoAck: 2, StatAck: 101, StatRedeliver: 1})
	if q.MessageStats.DeliverGet() != 104 || q.MessagesReady != 34 {
		t.Errorf("queue: deliver_get %d, ready %d", q.MessageStats.DeliverGet(), q.MessagesReady)
	}
	var qe QueueInfo
	c.getJSON("/api/queues/%2F/st.empty", &qe)
	wantCounts(t, "empty queue", qe.MessageStats, map[Stat]uint64{StatGetEmpty: 1, StatPublish: 0})

	var ex ExchangeInfo
	c.getJSON("/api/exchanges/%2F/amq.topic", &ex)
	wantCounts(t, "exchange", ex.MessageStats, map[Stat]uint64{StatPublishIn: 142, StatPublishOut: 137})

	var chans []ChannelInfo
	c.getJSON("/api/channels", &chans)
	var pub *ChannelInfo
	var ack, get uint64
	for i := range chans {
		ms := chans[i].MessageStats
		if ms.Counts[StatPublish] > 0 {
			pub = &chans[i]
		}
		ack += ms.Counts[StatAck]
		get += ms.Counts[StatGet] + ms.Counts[StatGetNoAck]
	}
	if pub == nil {
		t.Fatalf("no publishing channel in %+v", chans)
	}
	wantCounts(t, "publishing channel", pub.MessageStats, map[Stat]uint64{StatPublish: 142, StatConfirm: 142,
		StatReturnUnroutable: 3, StatDropUnroutable: 2, StatDeliver: 0})
	if ack != 101 || get != 4 {
		t.Errorf("channels: ack %d, get %d", ack, get)
	}

	vhostWant := map[Stat]uint64{StatPublish: 142, StatConfirm: 142, StatReturnUnroutable: 3, StatDropUnroutable: 2,
		StatDeliver: 100, StatGet: 2, StatGetNoAck: 2, StatGetEmpty: 1, StatAck: 101, StatRedeliver: 1}
	check := func(when string) {
		t.Helper()
		var vh VHostInfo
		c.getJSON("/api/vhosts/%2F", &vh)
		wantCounts(t, when+": vhost", vh.MessageStats, vhostWant)
		if vh.RecvOct == 0 || vh.SendOct == 0 {
			t.Errorf("%s: vhost recv_oct %d send_oct %d", when, vh.RecvOct, vh.SendOct)
		}
		var o Overview
		c.getJSON("/api/overview", &o)
		wantCounts(t, when+": overview", o.MessageStats, vhostWant)
		if o.QueueTotals.MessagesReady != 34 || o.ChurnRates.QueueDeclared < 2 || o.ChurnRates.ConnectionCreated < 2 {
			t.Errorf("%s: overview %+v %+v", when, o.QueueTotals, o.ChurnRates)
		}
	}
	check("connections open")
	before := s.Overview().ChurnRates
	if err := pc.Close(); err != nil {
		t.Fatal(err)
	}
	eventually(t, "connection closed", func() (bool, string) {
		cr := s.Overview().ChurnRates
		return cr.ConnectionClosed == before.ConnectionClosed+1 && cr.ChannelClosed == before.ChannelClosed+1, fmt.Sprintf("%+v", cr)
	})
	check("publisher closed")
}

// TestMessageRates: a rate is the change between the two last samples
// per second (RabbitMQ's sample-interval semantics), for counters and for
// queue depths, and falls back to 0 when nothing changes.
func TestMessageRates(t *testing.T) {
	s, amqpURL := startBroker(t, func(o *Options) { o.StatsInterval = time.Hour })
	// Objects first sampled at t0 have rates at t0+5s.
	early := dial(t, amqpURL)
	ech := openCh(t, early)
	for _, q := range []string{"st", "st.empty"} {
		if _, err := ech.QueueDeclare(q, false, false, false, false, nil); err != nil {
			t.Fatal(err)
		}
	}
	t0 := time.Now().Add(time.Minute)
	s.sampleStats(t0)
	statsTraffic(t, amqpURL)
	if _, err := ech.QueueDeclarePassive("st", false, false, false, false, nil); err != nil {
		t.Fatal(err)
	}
	s.sampleStats(t0.Add(5 * time.Second))
	qs, err := s.Queues(QueuesOptions{VHost: "/", Name: "st"})
	if err != nil {
		t.Fatal(err)
	}
	q := qs[0]
	// 137 in, 103 out in 5 s; 34 ready.
	if r := q.MessageStats.Rates; r[StatPublish] != 137.0/5 || r[StatDeliver] != 100.0/5 || r[StatAck] != 101.0/5 || r[StatGet] != 2.0/5 {
		t.Errorf("queue rates %v", r)
	}
	if q.MessagesReadyDetails.Rate != 6.8 || q.MessagesDetails.Rate != 6.8 || q.MessagesUnacknowledgedDetails.Rate != 0 {
		t.Errorf("queue depth rates %+v %+v %+v", q.MessagesDetails, q.MessagesReadyDetails, q.MessagesUnacknowledgedDetails)
	}
	o := s.Overview()
	if o.MessageStats.Rates[StatPublish] != 142.0/5 || o.QueueTotals.MessagesReadyDetails.Rate != 6.8 {
		t.Errorf("overview rates %v %+v", o.MessageStats.Rates, o.QueueTotals)
	}
	conns, err := s.Connections(ConnectionsOptions{})
	if err != nil {
		t.Fatal(err)
	}
	var sampled int
	for _, c := range conns {
		if c.RecvOctDetails.Rate > 0 && c.SendOctDetails.Rate > 0 {
			sampled++
		}
	}
	if sampled != 1 {
		t.Errorf("%d connections with byte rates, want 1 (the one open at both samples)", sampled)
	}
	vhs := s.VHosts()
	if vhs[0].RecvOctDetails.Rate <= 0 || vhs[0].SendOctDetails.Rate <= 0 || vhs[0].MessageStats.Rates[StatConfirm] != 142.0/5 {
		t.Errorf("vhost rates %+v %+v %v", vhs[0].RecvOctDetails, vhs[0].SendOctDetails, vhs[0].MessageStats.Rates)
	}
	s.sampleStats(t0.Add(10 * time.Second))
	qs, _ = s.Queues(QueuesOptions{VHost: "/", Name: "st"})
	if r := qs[0].MessageStats.Rates; r[StatPublish] != 0 || qs[0].MessagesReadyDetails.Rate != 0 {
		t.Errorf("idle queue rates %v %+v", r, qs[0].MessagesReadyDetails)
	}
}

// TestStatsTickerSamples: the Server's own sampling goroutine computes
// rates at Options.StatsInterval, and Shutdown stops it (goleak in
// TestMain fails otherwise).
func TestStatsTickerSamples(t *testing.T) {
	s, amqpURL := startBroker(t, func(o *Options) { o.StatsInterval = 200 * time.Millisecond })
	conn := dial(t, amqpURL)
	ch := openCh(t, conn)
	if _, err := ch.QueueDeclare("tick", false, false, false, false, nil); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		if err := ch.PublishWithContext(context.Background(), "", "tick", false, false, amqp.Publishing{Body: []byte("x")}); err != nil {
			t.Fatal(err)
		}
		qs, err := s.Queues(QueuesOptions{VHost: "/", Name: "tick"})
		if err != nil {
			t.Fatal(err)
		}
		if qs[0].MessageStats.Rates[StatPublish] > 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("publish rate still 0 after 10 s of publishing")
		}
		time.Sleep(10 * time.Millisecond)
	}
}

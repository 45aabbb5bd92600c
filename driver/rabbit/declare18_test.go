package rabbit

import (
	"errors"
	"fmt"
	"log/slog"
	"reflect"
	"sort"
	"strings"
	"testing"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/oslogo/oslogo/driver"
)

// fakeDeclarer records declarations as text and fails the ones listed in
// fail (by the text's prefix) once each.
type fakeDeclarer struct {
	ops  []string
	fail map[string]error
}

func (f *fakeDeclarer) do(op string) error {
	f.ops = append(f.ops, op)
	for prefix, err := range f.fail {
		if strings.HasPrefix(op, prefix) {
			delete(f.fail, prefix)
			return err
		}
	}
	return nil
}

func (f *fakeDeclarer) ExchangeDeclare(name, kind string, durable, autoDelete, internal, noWait bool, args amqp.Table) error {
	return f.do(fmt.Sprintf("exchange %s %s durable=%v auto_delete=%v", name, kind, durable, autoDelete))
}

func (f *fakeDeclarer) QueueDeclare(name string, durable, autoDelete, exclusive, noWait bool, args amqp.Table) (amqp.Queue, error) {
	return amqp.Queue{Name: name}, f.do(fmt.Sprintf("queue %s durable=%v auto_delete=%v %s", name, durable, autoDelete, tableString(args)))
}

func (f *fakeDeclarer) QueueBind(name, key, exchange string, noWait bool, args amqp.Table) error {
	return f.do(fmt.Sprintf("bind %s %s %s", name, exchange, key))
}

func (f *fakeDeclarer) QueueDelete(name string, ifUnused, ifEmpty, noWait bool) (int, error) {
	return 0, f.do("delete " + name)
}

// tableString writes an argument table with its Go types, sorted.
func tableString(t amqp.Table) string {
	var kv []string
	for k, v := range t {
		kv = append(kv, fmt.Sprintf("%s=%v(%T)", k, v, v))
	}
	sort.Strings(kv)
	return "{" + strings.Join(kv, " ") + "}"
}

func parseTestConfig(t *testing.T, opts map[string]string) Config {
	t.Helper()
	c, err := ParseConfig(opts)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// TestDeclarations18 checks what an RPC server, its reply queue and a
// publisher declare for each option set, against what oslo.messaging 18.1
// declares (impl_rabbit.py: _get_queue_arguments, declare_topic_consumer,
// declare_fanout_consumer, declare_direct_consumer, topic_send,
// fanout_send; the table of /work/shared/peers/README.md for the kolla
// set). TestKollaDeclarationsMatchPython compares the kolla set with the
// queues the Python 18.1 peer leaves on RabbitMQ.
func TestDeclarations18(t *testing.T) {
	quiet := slog.New(slog.DiscardHandler)
	kolla := map[string]string{"rabbit_quorum_queue": "true", "rabbit_transient_quorum_queue": "true",
		"rabbit_stream_fanout": "true", "rabbit_qos_prefetch_count": "10"}
	with := func(base map[string]string, kv ...string) map[string]string {
		m := map[string]string{}
		for k, v := range base {
			m[k] = v
		}
		for i := 0; i < len(kv); i += 2 {
			m[kv[i]] = kv[i+1]
		}
		return m
	}
	tests := []struct {
		name   string
		opts   map[string]string
		server []string // T, T.S, fanout queue (named Q here)
		reply  string
		pubX   []string // topic exchange and fanout exchange a publisher declares
		stream bool
	}{
		{"defaults", nil, []string{
			"exchange openstack topic durable=false auto_delete=false", "queue T durable=false auto_delete=false {}", "bind T openstack T",
			"exchange openstack topic durable=false auto_delete=false", "queue T.S durable=false auto_delete=false {}", "bind T.S openstack T.S",
			"exchange T_fanout fanout durable=false auto_delete=true", "queue Q durable=false auto_delete=false {x-expires=1800000(int32)}", "bind Q T_fanout T",
		}, "queue R durable=false auto_delete=false {x-expires=1800000(int32)}",
			[]string{"exchange openstack topic durable=false auto_delete=false", "exchange T_fanout fanout durable=false auto_delete=true"}, false},
		{"quorum", map[string]string{"rabbit_quorum_queue": "true", "rabbit_quorum_delivery_limit": "3"}, []string{
			"exchange openstack topic durable=true auto_delete=false", "queue T durable=true auto_delete=false {x-delivery-limit=3(int32) x-queue-type=quorum(string)}", "bind T openstack T",
			"exchange openstack topic durable=true auto_delete=false", "queue T.S durable=true auto_delete=false {x-delivery-limit=3(int32) x-queue-type=quorum(string)}", "bind T.S openstack T.S",
			"exchange T_fanout fanout durable=false auto_delete=true", "queue Q durable=false auto_delete=false {x-expires=1800000(int32)}", "bind Q T_fanout T",
		}, "queue R durable=false auto_delete=false {x-expires=1800000(int32)}",
			[]string{"exchange openstack topic durable=true auto_delete=false", "exchange T_fanout fanout durable=false auto_delete=true"}, false},
		{"transient quorum", map[string]string{"rabbit_transient_quorum_queue": "true", "rabbit_quorum_max_memory_length": "7", "rabbit_quorum_max_memory_bytes": "4096"}, []string{
			"exchange openstack topic durable=false auto_delete=false", "queue T durable=false auto_delete=false {}", "bind T openstack T",
			"exchange openstack topic durable=false auto_delete=false", "queue T.S durable=false auto_delete=false {}", "bind T.S openstack T.S",
			"exchange T_fanout fanout durable=true auto_delete=true", "queue Q durable=true auto_delete=false {x-expires=1800000(int32) x-max-in-memory-bytes=4096(int32) x-max-in-memory-length=7(int32) x-queue-type=quorum(string)}", "bind Q T_fanout T",
		}, "queue R durable=true auto_delete=false {x-expires=1800000(int32) x-max-in-memory-bytes=4096(int32) x-max-in-memory-length=7(int32) x-queue-type=quorum(string)}",
			[]string{"exchange openstack topic durable=false auto_delete=false", "exchange T_fanout fanout durable=true auto_delete=true"}, false},
		{"kolla", kolla, []string{
			"exchange openstack topic durable=true auto_delete=false", "queue T durable=true auto_delete=false {x-queue-type=quorum(string)}", "bind T openstack T",
			"exchange openstack topic durable=true auto_delete=false", "queue T.S durable=true auto_delete=false {x-queue-type=quorum(string)}", "bind T.S openstack T.S",
			"exchange T_fanout fanout durable=true auto_delete=true", "queue T_fanout durable=true auto_delete=false {x-max-age=1800s(string) x-queue-type=stream(string)}", "bind T_fanout T_fanout T",
		}, "queue R durable=true auto_delete=false {x-expires=1800000(int32) x-queue-type=quorum(string)}",
			[]string{"exchange openstack topic durable=true auto_delete=false", "exchange T_fanout fanout durable=true auto_delete=true"}, true},
		{"kolla ttl 0", with(kolla, "rabbit_transient_queues_ttl", "0"), []string{
			"exchange openstack topic durable=true auto_delete=false", "queue T durable=true auto_delete=false {x-queue-type=quorum(string)}", "bind T openstack T",
			"exchange openstack topic durable=true auto_delete=false", "queue T.S durable=true auto_delete=false {x-queue-type=quorum(string)}", "bind T.S openstack T.S",
			"exchange T_fanout fanout durable=true auto_delete=true", "queue T_fanout durable=true auto_delete=false {x-queue-type=stream(string)}", "bind T_fanout T_fanout T",
		}, "queue R durable=true auto_delete=false {x-queue-type=quorum(string)}",
			[]string{"exchange openstack topic durable=true auto_delete=false", "exchange T_fanout fanout durable=true auto_delete=true"}, true},
		{"ha durable auto-delete", map[string]string{"rabbit_ha_queues": "true", "amqp_durable_queues": "true", "amqp_auto_delete": "true", "rabbit_transient_queues_ttl": "60"}, []string{
			"exchange openstack topic durable=true auto_delete=true", "queue T durable=true auto_delete=true {x-ha-policy=all(string)}", "bind T openstack T",
			"exchange openstack topic durable=true auto_delete=true", "queue T.S durable=true auto_delete=true {x-ha-policy=all(string)}", "bind T.S openstack T.S",
			"exchange T_fanout fanout durable=false auto_delete=true", "queue Q durable=false auto_delete=false {x-expires=60000(int32) x-ha-policy=all(string)}", "bind Q T_fanout T",
		}, "queue R durable=false auto_delete=false {x-expires=60000(int32) x-ha-policy=all(string)}",
			[]string{"exchange openstack topic durable=true auto_delete=true", "exchange T_fanout fanout durable=false auto_delete=true"}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := parseTestConfig(t, tt.opts)
			d, err := OpenString("rabbit://127.0.0.1:1/", driver.Options{Config: tt.opts})
			if err != nil {
				t.Fatal(err)
			}
			defer d.Close()
			fanoutQ, err := d.fanoutQueueName("T")
			if err != nil {
				t.Fatal(err)
			}
			if tt.stream != (fanoutQ == "T_fanout") {
				t.Fatalf("fanout queue %q", fanoutQ)
			}
			f := &fakeDeclarer{}
			for _, p := range rpcQueuePlans(cfg, driver.Target{Exchange: "openstack", Topic: "T", Server: "S"}, fanoutQ, quiet) {
				if err := p.declare(f); err != nil {
					t.Fatal(err)
				}
			}
			got := strings.Join(f.ops, "\n")
			want := strings.Join(tt.server, "\n") // Q is the fanout queue's generated name
			want = strings.ReplaceAll(want, "queue Q ", "queue "+fanoutQ+" ")
			want = strings.ReplaceAll(want, "bind Q ", "bind "+fanoutQ+" ")
			if got != want {
				t.Errorf("server declares\n%s\nwant\n%s", got, want)
			}
			f = &fakeDeclarer{}
			if err := replyQueuePlan(cfg, "R", quiet).declare(f); err != nil {
				t.Fatal(err)
			}
			if got := strings.Join(f.ops, "\n"); got != tt.reply {
				t.Errorf("reply queue\n%s\nwant\n%s", got, tt.reply)
			}
			f = &fakeDeclarer{}
			for _, p := range []*exchangePlan{d.topicExchangePlan("openstack"), d.fanoutExchangePlan("T")} {
				if err := p.declare(f); err != nil {
					t.Fatal(err)
				}
			}
			if got, want := strings.Join(f.ops, "\n"), strings.Join(tt.pubX, "\n"); got != want {
				t.Errorf("publisher declares\n%s\nwant\n%s", got, want)
			}
			// Consumer arguments: the stream is read from "last".
			l := &rpcListener{d: d, target: driver.Target{Exchange: "openstack", Topic: "T", Server: "S"}, fanoutQ: fanoutQ}
			specs := l.queues()
			args := specs[2].consumerArgs(d.cfg)
			if tt.stream {
				if !reflect.DeepEqual(args, amqp.Table{"x-stream-offset": "last"}) {
					t.Errorf("stream consumer arguments %v", args)
				}
			} else if args != nil {
				t.Errorf("fanout consumer arguments %v", args)
			}
			// A reply is published to the default exchange with mandatory
			// (direct_mandatory_flag), a fanout cast to T_fanout with key "".
			msg := d.requestMessage(driver.Target{Exchange: "openstack", Topic: "T", Fanout: true}, nil, "u", driver.SendOptions{})
			if msg.exchange != "T_fanout" || msg.key != "" || msg.mandatory {
				t.Errorf("fanout cast to %q/%q mandatory=%v", msg.exchange, msg.key, msg.mandatory)
			}
		})
	}
}

// runFake runs a plan as runDeclare does (each attempt on a "new channel"),
// on f.
func runFake(t *testing.T, decl func(declarer) error, f *fakeDeclarer) error {
	t.Helper()
	var err error
	for range maxDeclareAttempts {
		err = decl(f)
		var again *againError
		if !errors.As(err, &again) {
			return err
		}
		err = again.err
	}
	return err
}

// TestDeclareRecovery18 checks the recovery paths 18.1 has on declaring a
// consumer's queue (14.6-17.3): PRECONDITION_FAILED on 'durable' falls back
// to non-durable, NOT_FOUND on queue.declare deletes and declares the
// queue again, every other error is returned with RabbitMQ's text.
func TestDeclareRecovery18(t *testing.T) {
	quiet := slog.New(slog.DiscardHandler)
	cfg := parseTestConfig(t, map[string]string{"amqp_durable_queues": "true"})
	plan := func() *queuePlan {
		return rpcQueuePlans(cfg, driver.Target{Exchange: "openstack", Topic: "T", Server: "S"}, "T_fanout_x", quiet)[0]
	}
	durable406 := &amqp.Error{Code: amqp.PreconditionFailed, Reason: "PRECONDITION_FAILED - inequivalent arg 'durable' for exchange 'openstack' in vhost 'v': received 'true' but current is 'false'"}
	type406 := &amqp.Error{Code: amqp.PreconditionFailed, Reason: "PRECONDITION_FAILED - inequivalent arg 'x-queue-type' for queue 'T' in vhost 'v': received the value 'quorum' of type 'longstr' but current is none"}
	notFound := &amqp.Error{Code: amqp.NotFound, Reason: "NOT_FOUND - home node 'rabbit@down' of durable queue 'T' in vhost 'v' is down or inaccessible"}
	internal := &amqp.Error{Code: amqp.InternalError, Reason: "INTERNAL_ERROR"}
	tests := []struct {
		name    string
		fail    map[string]error
		ops     []string
		wantErr error
	}{
		{"durable mismatch falls back to non-durable", map[string]error{"exchange openstack": durable406}, []string{
			"exchange openstack topic durable=true auto_delete=false",
			"exchange openstack topic durable=false auto_delete=false", "queue T durable=false auto_delete=false {}", "bind T openstack T",
		}, nil},
		{"durable mismatch on the queue", map[string]error{"queue T ": durable406}, []string{
			"exchange openstack topic durable=true auto_delete=false", "queue T durable=true auto_delete=false {}",
			"exchange openstack topic durable=false auto_delete=false", "queue T durable=false auto_delete=false {}", "bind T openstack T",
		}, nil},
		{"other 406 returned", map[string]error{"queue T ": type406}, []string{
			"exchange openstack topic durable=true auto_delete=false", "queue T durable=true auto_delete=false {}",
		}, type406},
		{"404 on queue.declare: delete and declare again", map[string]error{"queue T ": notFound}, []string{
			"exchange openstack topic durable=true auto_delete=false", "queue T durable=true auto_delete=false {}",
			"delete T", "exchange openstack topic durable=true auto_delete=false", "queue T durable=true auto_delete=false {}", "bind T openstack T",
		}, nil},
		{"404 on queue.bind: declared again, not deleted", map[string]error{"bind T ": notFound}, []string{
			"exchange openstack topic durable=true auto_delete=false", "queue T durable=true auto_delete=false {}", "bind T openstack T",
			"exchange openstack topic durable=true auto_delete=false", "queue T durable=true auto_delete=false {}", "bind T openstack T",
		}, nil},
		{"541 returned, nothing deleted", map[string]error{"queue T ": internal}, []string{
			"exchange openstack topic durable=true auto_delete=false", "queue T durable=true auto_delete=false {}",
		}, internal},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := &fakeDeclarer{fail: tt.fail}
			p := plan()
			err := runFake(t, p.declare, f)
			if !errors.Is(err, tt.wantErr) || (tt.wantErr == nil) != (err == nil) {
				t.Fatalf("err %v, want %v", err, tt.wantErr)
			}
			if err != nil && !strings.Contains(err.Error(), tt.wantErr.(*amqp.Error).Reason) {
				t.Errorf("error %q lacks RabbitMQ's text", err)
			}
			if got, want := strings.Join(f.ops, "\n"), strings.Join(tt.ops, "\n"); got != want {
				t.Errorf("declared\n%s\nwant\n%s", got, want)
			}
			if p.mode != modeNormal {
				t.Errorf("plan left in mode %d", p.mode)
			}
		})
	}
	// A publisher's exchange falls back too (18.1's _publish).
	d, err := OpenString("rabbit://127.0.0.1:1/", driver.Options{Config: map[string]string{"amqp_durable_queues": "true"}})
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	f := &fakeDeclarer{fail: map[string]error{"exchange openstack": durable406}}
	if err := runFake(t, d.topicExchangePlan("openstack").declare, f); err != nil {
		t.Fatal(err)
	}
	if got := strings.Join(f.ops, "\n"); got != "exchange openstack topic durable=true auto_delete=false\nexchange openstack topic durable=false auto_delete=false" {
		t.Errorf("publisher declared\n%s", got)
	}
}

// TestOptions18 checks 18.1's defaults, the options 18.1 added, and the
// 14 names it removed: ignored with a warning in a file, an error in the
// URL query (oslo.config's NoSuchOptError).
func TestOptions18(t *testing.T) {
	def := DefaultConfig()
	if def.HeartbeatRate != 3 || !def.SSLVerifyHost || def.ReconnectSplay != 0 || def.TransientTTL != 1800 || def.Hostname == "" || def.Processname == "" {
		t.Errorf("defaults %+v", def)
	}
	c, err := ParseConfig(map[string]string{"kombu_reconnect_splay": "2.5", "rabbit_transient_quorum_queue": "yes",
		"rabbit_stream_fanout": "on", "rabbit_qos_prefetch_count": "1", "use_queue_manager": "1", "hostname": "h", "processname": "p",
		"rabbit_quorum_max_memory_length": "9"})
	if err != nil {
		t.Fatal(err)
	}
	if c.ReconnectSplay != 2500*time.Millisecond || !c.TransientQuorum || !c.StreamFanout || !c.UseQueueManager || c.Hostname != "h" || c.Processname != "p" || c.QuorumMemLength != 9 {
		t.Errorf("%+v", c)
	}
	for n := 1; n < 4; n++ {
		if b := c.backoff(n); b < def.backoff(n) || b >= def.backoff(n)+2500*time.Millisecond {
			t.Errorf("backoff(%d) = %v with a 2.5 s splay", n, b)
		}
	}
	// Refused as 18.1 refuses them, with its words.
	for opts, want := range map[string]string{
		"rabbit_stream_fanout=true rabbit_transient_quorum_queue=true": "rabbit_stream_fanout need rabbit_qos_prefetch_count to be set to a value greater than 0",
		"rabbit_stream_fanout=true rabbit_qos_prefetch_count=1":        "rabbit_stream_fanout need rabbit_transient_quorum_queue to be set to true",
		"rpc_conn_pool_size=1": "rpc_conn_pool_size: 1 must be greater than or equal to conn_pool_min_size: 2",
	} {
		m := map[string]string{}
		for _, kv := range strings.Fields(opts) {
			k, v, _ := strings.Cut(kv, "=")
			m[k] = v
		}
		if _, err := OpenString("rabbit://h/", driver.Options{Config: m}); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%s: %v, want %q", opts, err, want)
		}
	}
	// Removed names: a warning naming the replacement, the value ignored.
	var logs strings.Builder
	log := slog.New(slog.NewTextHandler(&logs, nil))
	d, err := OpenString("rabbit://h/", driver.Options{Logger: log, Config: map[string]string{
		"rabbit_use_ssl": "true", "kombu_ssl_ca_certs": "/ca.pem", "heartbeat_in_pthread": "true", "rabbit_quroum_max_memory_bytes": "5",
		"heartbeat_rate": "2", "ssl_enforce_fips_mode": "true", "conn_pool_ttl": "60"}})
	if err != nil {
		t.Fatal(err)
	}
	d.Close()
	got := d.Config()
	if got.SSL || got.SSLCAFile != "" || got.QuorumMemBytes != 0 {
		t.Errorf("a removed option took effect: %+v", got)
	}
	for _, want := range []string{
		"rabbit_use_ssl is ignored: oslo.messaging 18.1 removed it, use ssl",
		"kombu_ssl_ca_certs is ignored: oslo.messaging 18.1 removed it, use ssl_ca_file",
		"heartbeat_in_pthread is ignored: oslo.messaging 18.1 removed it (18.1 always runs the heartbeat in a native thread",
		"rabbit_quroum_max_memory_bytes is ignored: oslo.messaging 18.1 removed it, use rabbit_quorum_max_memory_bytes",
		"heartbeat_rate has no effect",
		"ssl_enforce_fips_mode has no effect",
		"conn_pool_ttl has no effect",
	} {
		if !strings.Contains(logs.String(), want) {
			t.Errorf("no warning %q in\n%s", want, logs.String())
		}
	}
	if _, err := OpenString("rabbit://h/?rabbit_use_ssl=true", driver.Options{}); err == nil || !strings.Contains(err.Error(), "use ssl") {
		t.Errorf("removed option in the URL: %v", err)
	}
	// use_queue_manager needs a lock_path, as oslo.concurrency does.
	t.Setenv("OSLO_LOCK_PATH", "")
	if _, err := OpenString("rabbit://h/?use_queue_manager=true", driver.Options{}); err == nil || !strings.Contains(err.Error(), "lock_path") {
		t.Errorf("use_queue_manager without lock_path: %v", err)
	}
}

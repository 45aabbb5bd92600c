package rabbit

import (
	"encoding/json"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/oslogo/oslogo/config"
	"github.com/oslogo/oslogo/driver"
	"github.com/oslogo/oslogo/internal/oslo18"
	"github.com/oslogo/oslogo/messaging"
)

// optionValues gives the value of every [oslo_messaging_rabbit] option of
// 18.1 held by c, as oslo.config types it (seconds as numbers).
func optionValues(c Config) map[string]any {
	sec := func(d time.Duration) float64 { return d.Seconds() }
	return map[string]any{
		"rpc_conn_pool_size": c.RPCConnPoolSize, "conn_pool_min_size": c.ConnPoolMinSize, "conn_pool_ttl": sec(c.ConnPoolTTL),
		"amqp_durable_queues": c.DurableQueues, "amqp_auto_delete": c.AutoDelete,
		"ssl": c.SSL, "ssl_version": c.SSLVersion, "ssl_key_file": c.SSLKeyFile, "ssl_cert_file": c.SSLCertFile, "ssl_ca_file": c.SSLCAFile,
		"ssl_enforce_hostname_verification": c.SSLVerifyHost, "ssl_enforce_fips_mode": c.SSLFIPSMode,
		"kombu_reconnect_delay": sec(c.ReconnectDelay), "kombu_reconnect_splay": sec(c.ReconnectSplay), "kombu_compression": c.Compression,
		"kombu_missing_consumer_retry_timeout": sec(c.MissingConsumer), "kombu_failover_strategy": c.FailoverStrategy,
		"rabbit_login_method": c.LoginMethod, "rabbit_retry_interval": sec(c.RetryInterval), "rabbit_retry_backoff": sec(c.RetryBackoff),
		"rabbit_interval_max": sec(c.IntervalMax), "rabbit_ha_queues": c.HAQueues, "rabbit_quorum_queue": c.QuorumQueue,
		"rabbit_transient_quorum_queue": c.TransientQuorum, "rabbit_quorum_delivery_limit": c.QuorumDelivery,
		"rabbit_quorum_max_memory_length": c.QuorumMemLength, "rabbit_quorum_max_memory_bytes": c.QuorumMemBytes,
		"rabbit_transient_queues_ttl": c.TransientTTL, "rabbit_qos_prefetch_count": c.Prefetch,
		"heartbeat_timeout_threshold": c.HeartbeatTimeout, "heartbeat_rate": c.HeartbeatRate,
		"direct_mandatory_flag": c.DirectMandatory, "enable_cancel_on_failover": c.CancelOnFailover,
		"use_queue_manager": c.UseQueueManager, "hostname": c.Hostname, "processname": c.Processname,
		"rabbit_stream_fanout": c.StreamFanout,
	}
}

// TestKollaNovaConf loads an operator's kolla-ansible nova.conf unchanged
// (testdata/kolla-nova.conf) as an oslogo service reads its configuration
// (config package, messaging.TransportConfigFrom) and opens rabbit:// with
// it: every [oslo_messaging_rabbit] option comes out as the Python 18.1
// peer reads the same file, the removed heartbeat_in_pthread is ignored
// with a warning, and the queue manager names the queues as 18.1 does.
func TestKollaNovaConf(t *testing.T) {
	const file = "testdata/kolla-nova.conf"
	conf := config.New()
	if err := config.RegisterMessagingOpts(conf); err != nil {
		t.Fatal(err)
	}
	if err := conf.LoadFiles(file); err != nil {
		t.Fatal(err)
	}
	var logs strings.Builder
	log := slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelWarn}))
	tc, err := messaging.TransportConfigFrom(conf, log)
	if err != nil {
		t.Fatal(err)
	}
	if tc.LockPath != "/var/lib/nova/tmp" || tc.ControlExchange != "openstack" || !slices.Equal(tc.Notifications.Drivers, []string{"messagingv2"}) {
		t.Errorf("transport configuration %+v", tc)
	}
	raw := conf.String(config.DefaultGroup, "transport_url")
	// The container's lock_path does not exist here; the counter's lock
	// goes to a folder of the test's.
	t.Cleanup(func() { _ = os.Remove(filepath.Join(shmDir, "controller1_nova-conductor_qmanager")) })
	_ = os.Remove(filepath.Join(shmDir, "controller1_nova-conductor_qmanager"))
	d, err := OpenString(raw, driver.Options{Config: tc.DriverConfig, LockPath: t.TempDir(), Logger: log})
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()

	want := DefaultConfig()
	want.QuorumQueue, want.TransientQuorum, want.StreamFanout, want.Prefetch = true, true, true, 1
	want.UseQueueManager, want.Hostname, want.Processname = true, "controller1", "nova-conductor"
	if got := d.Config(); got != want {
		t.Errorf("driver configuration\n%+v\nwant\n%+v", got, want)
	}
	var hosts []string
	for _, h := range d.dialer.hosts {
		hosts = append(hosts, h.Username+"@"+h.Addr)
	}
	slices.Sort(hosts)
	if strings.Join(hosts, " ") != "openstack@192.0.2.11:5672 openstack@192.0.2.12:5672 openstack@192.0.2.13:5672" || d.dialer.vhost != "/" {
		t.Errorf("hosts %v vhost %q", hosts, d.dialer.vhost)
	}
	if q, err := d.replyQueue(); err != nil || q != "reply_controller1:nova-conductor:1" {
		t.Errorf("reply queue %q, %v", q, err)
	}
	if q, err := d.fanoutQueueName("conductor"); err != nil || q != "conductor_fanout" {
		t.Errorf("fanout queue %q, %v", q, err)
	}
	if !strings.Contains(logs.String(), "heartbeat_in_pthread is ignored: oslo.messaging 18.1 removed it") {
		t.Errorf("no warning for heartbeat_in_pthread:\n%s", logs.String())
	}
	for _, secret := range []string{"Xk3pQ9vT2mLw", "Pq2wE4rT6yU8"} {
		if strings.Contains(logs.String(), secret) {
			t.Errorf("a password in the logs:\n%s", logs.String())
		}
	}

	// The Python 18.1 peer reads the same file the same way.
	peer := oslo18.Get(t)
	out, err := peer.Command("-c", `
import json, sys
from oslo_config import cfg
from oslo_messaging._drivers import impl_rabbit, amqp
conf = cfg.ConfigOpts()
conf.register_opts(impl_rabbit.rabbit_opts + amqp.amqp_opts, group="oslo_messaging_rabbit")
conf(["--config-file", sys.argv[1]], project="nova", default_config_files=[])
g = conf.oslo_messaging_rabbit
print(json.dumps({o.name: g[o.name] for o in impl_rabbit.rabbit_opts + amqp.amqp_opts}))
`, file).CombinedOutput()
	if err != nil {
		t.Fatalf("python: %v\n%s", err, out)
	}
	var py map[string]any
	if err := json.Unmarshal(out, &py); err != nil {
		t.Fatalf("%s: %v", out, err)
	}
	goVals := optionValues(d.Config())
	if len(py) != len(goVals) {
		t.Errorf("18.1 has %d options, the Go table %d", len(py), len(goVals))
	}
	for name, pv := range py {
		gv, ok := goVals[name]
		if !ok {
			t.Errorf("18.1 option %s has no Go field", name)
			continue
		}
		if pv == nil {
			pv = "" // kombu_compression unset
		}
		if fmt.Sprint(pv) != fmt.Sprint(gv) {
			t.Errorf("%s: 18.1 reads %v, oslogo %v", name, pv, gv)
		}
	}
}

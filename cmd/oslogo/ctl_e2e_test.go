package main

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/oslogo/oslogo/broker"
)

// embeddedBroker runs the embedded broker with the management API, in
// process, with a data directory.
type embeddedBroker struct {
	s       *broker.Server
	amqpURL string
	apiURL  string
}

func startEmbedded(t *testing.T, dataDir string) *embeddedBroker {
	t.Helper()
	opts := broker.DefaultOptions()
	opts.AMQPAddr = "127.0.0.1:0"
	opts.HTTPAddr = "127.0.0.1:0"
	opts.DataDir = dataDir
	s, err := broker.New(opts)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Start(); err != nil {
		t.Fatal(err)
	}
	b := &embeddedBroker{s: s, amqpURL: fmt.Sprintf("amqp://guest:guest@%s/", s.Addr()), apiURL: "http://" + s.HTTPAddr().String()}
	t.Cleanup(b.stop)
	return b
}

func (b *embeddedBroker) stop() {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_ = b.s.Shutdown(ctx)
}

// ctlTarget is one API that the same ctl command lines run against.
type ctlTarget struct {
	name    string
	amqpURL string
	apiURL  string
}

func (tg ctlTarget) ctl(t *testing.T, args ...string) (int, string, string) {
	t.Helper()
	return run(t, append([]string{"ctl", "--url", tg.apiURL}, args...)...)
}

// mustCtl runs a ctl command that must succeed.
func (tg ctlTarget) mustCtl(t *testing.T, args ...string) string {
	t.Helper()
	code, out, errs := tg.ctl(t, args...)
	if code != 0 {
		t.Fatalf("%s: oslogo ctl %v: exit %d: %s", tg.name, args, code, errs)
	}
	return out
}

// waitCtl repeats a ctl command until its output satisfies ok (RabbitMQ's
// API shows message counts once its statistics are collected, every second
// on the test node).
func (tg ctlTarget) waitCtl(t *testing.T, ok func(string) bool, args ...string) string {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		out := tg.mustCtl(t, args...)
		if ok(out) {
			return out
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: oslogo ctl %v: still %q", tg.name, args, out)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// ctlQueues declares the queues of the comparison on a broker: ctl.a with 3
// messages, ctl.b empty, ctl.c with 2 messages delivered to its consumer
// and not acknowledged. The connection stays open until the test ends.
func ctlQueues(t *testing.T, amqpURL string) *amqp.Connection {
	t.Helper()
	conn, err := amqp.DialConfig(amqpURL, amqp.Config{Properties: amqp.Table{"connection_name": "ctl-e2e"}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = conn.Close() })
	ch, err := conn.Channel()
	if err != nil {
		t.Fatal(err)
	}
	for q, n := range map[string]int{"ctl.a": 3, "ctl.b": 0, "ctl.c": 2} {
		if _, err := ch.QueueDeclare(q, true, false, false, false, amqp.Table{"x-max-length": int32(100)}); err != nil {
			t.Fatal(err)
		}
		for i := range n {
			if err := ch.Publish("", q, false, false, amqp.Publishing{Body: fmt.Appendf(nil, "m%d", i)}); err != nil {
				t.Fatal(err)
			}
		}
	}
	if _, err := ch.Consume("ctl.c", "ctl-consumer", false, false, false, false, nil); err != nil {
		t.Fatal(err)
	}
	return conn
}

// TestCtlAgainstEmbeddedAndRabbitMQ runs the same oslogo ctl command lines
// against the embedded broker and against RabbitMQ 3.10.8 with its
// management plugin (a node the test starts), and checks that
// `list_queues name messages consumers` prints the same output for the
// same queues on both, and that the administration commands do what they
// say on both.
func TestCtlAgainstEmbeddedAndRabbitMQ(t *testing.T) {
	rmq := startCtlRabbit(t)
	emb := startEmbedded(t, t.TempDir())
	targets := []ctlTarget{{"embedded", emb.amqpURL, emb.apiURL}, {"rabbitmq", rmq.AMQPURL, rmq.APIURL}}
	conns := map[string]*amqp.Connection{}
	for _, tg := range targets {
		conns[tg.name] = ctlQueues(t, tg.amqpURL)
	}

	want := "Timeout: 60.0 seconds ...\nListing queues for vhost / ...\nname\tmessages\tconsumers\nctl.a\t3\t0\nctl.b\t0\t0\nctl.c\t2\t1\n"
	outs := map[string]string{}
	for _, tg := range targets {
		outs[tg.name] = tg.waitCtl(t, func(s string) bool { return s == want }, "list_queues", "name", "messages", "consumers")
	}
	if outs["embedded"] != outs["rabbitmq"] {
		t.Fatalf("list_queues differs:\nembedded %q\nrabbitmq %q", outs["embedded"], outs["rabbitmq"])
	}
	t.Logf("list_queues name messages consumers, the same on both:\n%s", outs["rabbitmq"])

	// On the RabbitMQ node, oslogo ctl prints what the real rabbitmqctl
	// prints (rows sorted: rabbitmqctl lists in its own order).
	rabbitCtl := targets[1]
	rabbitCtl.mustCtl(t, "set_policy", "--apply-to", "queues", "ctlcmp", "^ctl\\.", `{"max-length":100}`)
	for _, args := range [][]string{
		{"list_queues", "name", "messages", "consumers"},
		{"list_queues", "name", "durable", "auto_delete", "arguments", "messages_ready", "messages_unacknowledged", "policy"},
		{"list_exchanges"},
		{"list_exchanges", "name", "type", "durable", "auto_delete", "internal"},
		{"list_bindings"},
		{"list_users"},
		{"list_vhosts"},
		{"list_permissions"},
		{"list_policies"},
		{"list_connections"},
		{"list_queues", "-q", "name", "messages"},
		{"list_queues", "--no-table-headers"},
	} {
		header := !slices.Contains(args, "--no-table-headers")
		ours := sortedRows(rabbitCtl.waitCtl(t, func(s string) bool {
			theirs, err := rmq.Ctl(args...)
			return err == nil && sortedRows(s, header) == sortedRows(theirs, header)
		}, args...), header)
		theirs, _ := rmq.Ctl(args...)
		if ours != sortedRows(theirs, header) {
			t.Errorf("oslogo ctl %v:\n%s\nrabbitmqctl:\n%s", args, ours, theirs)
		}
	}
	rabbitCtl.mustCtl(t, "clear_policy", "ctlcmp")

	for _, tg := range targets {
		t.Run(tg.name, func(t *testing.T) {
			tg.mustCtl(t, "add_user", "ctluser", "pw1")
			if code, _, errs := tg.ctl(t, "add_user", "ctluser", "again"); code != exitRemote || !strings.Contains(errs, "already exists") {
				t.Errorf("add_user twice: exit %d %q", code, errs)
			}
			tg.mustCtl(t, "set_user_tags", "ctluser", "management")
			tg.mustCtl(t, "change_password", "ctluser", "pw2")
			tg.mustCtl(t, "add_vhost", "ctlvhost")
			tg.mustCtl(t, "set_permissions", "-p", "ctlvhost", "ctluser", "^ctl", ".*", ".*")
			if out := tg.mustCtl(t, "list_users"); !strings.Contains(out, "\nctluser\t[management]\n") {
				t.Errorf("list_users: %q", out)
			}
			if out := tg.mustCtl(t, "list_vhosts"); !strings.Contains(out, "\nctlvhost\n") || !strings.HasPrefix(out, "Listing vhosts ...\nname\n") {
				t.Errorf("list_vhosts: %q", out)
			}
			if out := tg.mustCtl(t, "list_permissions", "-p", "ctlvhost"); !strings.Contains(out, "\nctluser\t^ctl\t.*\t.*\n") {
				t.Errorf("list_permissions: %q", out)
			}
			// The new password and tag work: whoami as ctluser.
			req, _ := http.NewRequest("GET", tg.apiURL+"/api/whoami", nil)
			req.SetBasicAuth("ctluser", "pw2")
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			if resp.StatusCode != http.StatusOK {
				t.Errorf("whoami as ctluser/pw2: %d", resp.StatusCode)
			}
			http.DefaultClient.CloseIdleConnections()

			if out := tg.mustCtl(t, "list_exchanges"); !strings.Contains(out, "\namq.topic\ttopic\n") || !strings.Contains(out, "\n\tdirect\n") {
				t.Errorf("list_exchanges: %q", out)
			}
			if out := tg.mustCtl(t, "list_bindings"); !strings.Contains(out, "\n\texchange\tctl.a\tqueue\tctl.a\t[]\n") {
				t.Errorf("list_bindings: %q", out)
			}
			if out := tg.mustCtl(t, "list_queues", "name", "arguments", "durable"); !strings.Contains(out, "\nctl.a\t[{\"x-max-length\",100}]\ttrue\n") {
				t.Errorf("list_queues arguments: %q", out)
			}
			out := tg.waitCtl(t, func(s string) bool { return strings.Contains(s, "\nguest\t127.0.0.1\t") }, "list_connections")
			if !strings.HasPrefix(out, "Listing connections ...\nuser\tpeer_host\tpeer_port\tstate\n") {
				t.Errorf("list_connections: %q", out)
			}
			tg.waitCtl(t, func(s string) bool { return strings.Contains(s, "\tguest\t1\t2\n") }, "list_channels")
			out = tg.waitCtl(t, func(s string) bool { return strings.Contains(s, "\tctl-consumer\ttrue\t0\ttrue\t[]\n") }, "list_consumers")
			if !strings.HasPrefix(out, "Listing consumers in vhost / ...\nqueue_name\tchannel_pid\tconsumer_tag\tack_required\tprefetch_count\tactive\targuments\nctl.c\t") {
				t.Errorf("list_consumers: %q", out)
			}
			if out := tg.mustCtl(t, "status"); !strings.Contains(out, "Node name: ") || !strings.Contains(out, "(none)") {
				t.Errorf("status: %q", out)
			}

			tg.mustCtl(t, "purge_queue", "ctl.a")
			if out := tg.mustCtl(t, "delete_queue", "ctl.b"); !strings.HasSuffix(out, "Queue was successfully deleted with 0 ready messages\n") {
				t.Errorf("delete_queue: %q", out)
			}
			tg.waitCtl(t, func(s string) bool { return s == "name\tmessages\nctl.a\t0\nctl.c\t2\n" }, "-q", "list_queues")

			// close_connection: the connection named in list_connections
			// gets connection.close 320 with the reason.
			out = tg.mustCtl(t, "-q", "--no-table-headers", "list_connections", "name", "client_properties")
			name := ""
			for _, line := range strings.Split(strings.TrimSpace(out), "\n") {
				if n, props, ok := strings.Cut(line, "\t"); ok && strings.Contains(props, `{"connection_name","ctl-e2e"}`) {
					name = n
				}
			}
			if name == "" {
				t.Fatalf("no ctl-e2e connection in %q", out)
			}
			closed := conns[tg.name].NotifyClose(make(chan *amqp.Error, 1))
			tg.mustCtl(t, "close_connection", name, "ctl test")
			select {
			case e := <-closed:
				if e == nil || e.Code != amqp.ConnectionForced || !strings.Contains(e.Reason, "ctl test") {
					t.Errorf("close_connection: %v", e)
				}
			case <-time.After(15 * time.Second):
				t.Error("close_connection: the connection was not closed")
			}

			// Policies and definitions.
			{
				tg.mustCtl(t, "set_policy", "-p", "ctlvhost", "--apply-to", "queues", "--priority", "2", "ctlpol", "^ctl", `{"max-length":10}`)
				if out := tg.mustCtl(t, "list_policies", "-p", "ctlvhost"); !strings.Contains(out, "\nctlvhost\tctlpol\t^ctl\tqueues\t{\"max-length\":10}\t2\n") {
					t.Errorf("list_policies: %q", out)
				}
				tg.mustCtl(t, "clear_policy", "-p", "ctlvhost", "ctlpol")
				if out := tg.mustCtl(t, "-q", "list_policies", "-p", "ctlvhost"); strings.Contains(out, "ctlpol") {
					t.Errorf("list_policies after clear_policy: %q", out)
				}
			}
			{
				file := filepath.Join(t.TempDir(), "defs.json")
				tg.mustCtl(t, "export_definitions", file)
				data, err := os.ReadFile(file)
				if err != nil || !strings.Contains(string(data), `"ctluser"`) || !strings.Contains(string(data), `"ctl.a"`) {
					t.Errorf("export_definitions: %v %.300s", err, data)
				}
				tg.mustCtl(t, "delete_user", "ctluser")
				tg.mustCtl(t, "import_definitions", file)
				if out := tg.mustCtl(t, "list_users"); !strings.Contains(out, "\nctluser\t[management]\n") {
					t.Errorf("list_users after import_definitions: %q", out)
				}
			}

			tg.mustCtl(t, "delete_user", "ctluser")
			if code, _, errs := tg.ctl(t, "delete_user", "ctluser"); code != exitRemote || !strings.Contains(errs, `user "ctluser" does not exist`) {
				t.Errorf("delete_user twice: exit %d %q", code, errs)
			}
			tg.mustCtl(t, "delete_vhost", "ctlvhost")
			if out := tg.mustCtl(t, "list_vhosts"); strings.Contains(out, "ctlvhost") {
				t.Errorf("list_vhosts after delete_vhost: %q", out)
			}

			// The watermark setter is oslogo's extension.
			code, out, errs := tg.ctl(t, "set_vm_memory_high_watermark", "0.4")
			if tg.name == "embedded" && (code != 0 || !regexp.MustCompile(`^Setting memory threshold on \S+@\S+ to 0.4 ...\n$`).MatchString(out)) {
				t.Errorf("set_vm_memory_high_watermark: exit %d %q %q", code, out, errs)
			}
			if tg.name == "rabbitmq" && (code != exitRemote || !strings.Contains(errs, "oslogo's extension")) {
				t.Errorf("set_vm_memory_high_watermark on RabbitMQ: exit %d %q", code, errs)
			}
		})
	}
}

// sortedRows sorts the rows below the banner lines and the header row.
func sortedRows(out string, header bool) string {
	lines := strings.Split(strings.TrimRight(out, "\n"), "\n")
	i := 0
	for i < len(lines) && (strings.HasSuffix(lines[i], "...") || strings.HasPrefix(lines[i], "Timeout:")) {
		i++
	}
	if i < len(lines) && header {
		i++ // the header row
	}
	body := slices.Clone(lines[min(i, len(lines)):])
	slices.Sort(body)
	return strings.Join(append(lines[:min(i, len(lines))], body...), "\n") + "\n"
}

package main

import (
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"
)

// fakeAPI is a management API that answers canned JSON and records the
// requests it got.
type fakeAPI struct {
	t       *testing.T
	srv     *httptest.Server
	answers map[string]string // "GET /api/queues/%2F" -> JSON; "!404 ..." for an error status

	mu   sync.Mutex
	reqs []fakeReq
}

type fakeReq struct {
	method, path, user, pass, body string
	header                         http.Header
}

func newFakeAPI(t *testing.T, answers map[string]string) *fakeAPI {
	f := &fakeAPI{t: t, answers: answers}
	f.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		u, p, _ := r.BasicAuth()
		key := r.Method + " " + r.URL.EscapedPath()
		f.mu.Lock()
		f.reqs = append(f.reqs, fakeReq{r.Method, r.URL.RequestURI(), u, p, string(b), r.Header.Clone()})
		f.mu.Unlock()
		ans, ok := f.answers[key]
		if !ok {
			if r.Method == http.MethodGet {
				w.WriteHeader(http.StatusNotFound)
				_, _ = io.WriteString(w, `{"error":"Object Not Found","reason":"Not Found"}`)
				return
			}
			w.WriteHeader(http.StatusNoContent)
			return
		}
		code := http.StatusOK
		if strings.HasPrefix(ans, "!") {
			var rest string
			code = atoiPrefix(ans[1:], &rest)
			ans = rest
		}
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(code)
		_, _ = io.WriteString(w, ans)
	}))
	t.Cleanup(f.srv.Close)
	return f
}

func atoiPrefix(s string, rest *string) int {
	n := 0
	i := 0
	for ; i < len(s) && s[i] >= '0' && s[i] <= '9'; i++ {
		n = n*10 + int(s[i]-'0')
	}
	*rest = strings.TrimSpace(s[i:])
	return n
}

func (f *fakeAPI) requests() []fakeReq {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]fakeReq(nil), f.reqs...)
}

const fakeQueues = `[{"name":"demo.q","vhost":"/","durable":true,"arguments":{"x-message-ttl":60000,"x-queue-type":"classic"},
"messages":3,"messages_ready":2,"messages_unacknowledged":1,"consumers":1,"policy":null,"owner_pid_details":{"name":"c1"}},
{"name":"empty","vhost":"/","durable":false,"arguments":{},"messages":0,"consumers":0}]`

// TestCtlListFormats: list commands print rabbitmqctl 3.10.8's output
// (captured from rabbitmqctl against a 3.10.8 node): banner lines, the
// header row, tab-separated values, queue arguments as [{"k",v}], tags as
// [a, b]; -q drops the banner, --no-table-headers the header, and
// --formatter json gives one object per line.
func TestCtlListFormats(t *testing.T) {
	f := newFakeAPI(t, map[string]string{
		"GET /api/queues/%2F":    fakeQueues,
		"GET /api/queues/other":  `[]`,
		"GET /api/users":         `[{"name":"guest","tags":["administrator"]},{"name":"bob","tags":["monitoring","management"]}]`,
		"GET /api/policies/%2F":  `[{"vhost":"/","name":"p1","pattern":"^demo","apply-to":"queues","definition":{"max-length":10},"priority":0}]`,
		"GET /api/policies/v2":   `[]`,
		"GET /api/bindings/%2F":  `[{"source":"","vhost":"/","destination":"demo.q","destination_type":"queue","routing_key":"demo.q","arguments":{}}]`,
		"GET /api/permissions":   `[{"user":"guest","vhost":"/","configure":".*","write":".*","read":".*"},{"user":"x","vhost":"v2","configure":"","write":"","read":""}]`,
		"GET /api/consumers/%2F": `[{"queue":{"name":"demo.q","vhost":"/"},"channel_details":{"name":"c (1)"},"consumer_tag":"ctag","ack_required":true,"prefetch_count":5,"active":true,"arguments":{}}]`,
		"GET /api/connections":   `[]`,
	})
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"list_queues"}, "Timeout: 60.0 seconds ...\nListing queues for vhost / ...\nname\tmessages\ndemo.q\t3\nempty\t0\n"},
		{[]string{"list_queues", "name", "messages", "consumers"}, "Timeout: 60.0 seconds ...\nListing queues for vhost / ...\nname\tmessages\tconsumers\ndemo.q\t3\t1\nempty\t0\t0\n"},
		{[]string{"list_queues", "-t", "5", "name", "arguments", "durable", "policy", "owner_pid"},
			"Timeout: 5.0 seconds ...\nListing queues for vhost / ...\nname\targuments\tdurable\tpolicy\towner_pid\n" +
				"demo.q\t[{\"x-message-ttl\",60000},{\"x-queue-type\",\"classic\"}]\ttrue\t\tc1\nempty\t[]\tfalse\t\t\n"},
		{[]string{"list_queues", "-q", "name", "messages_ready"}, "name\tmessages_ready\ndemo.q\t2\nempty\t\n"},
		{[]string{"list_queues", "--no-table-headers"}, "Timeout: 60.0 seconds ...\nListing queues for vhost / ...\ndemo.q\t3\nempty\t0\n"},
		{[]string{"list_queues", "--formatter", "json"}, "[\n{\"name\":\"demo.q\",\"messages\":3}\n,{\"name\":\"empty\",\"messages\":0}\n]\n"},
		{[]string{"list_queues", "-p", "other"}, "Timeout: 60.0 seconds ...\nListing queues for vhost other ...\n"},
		{[]string{"list_queues", "-p", "other", "--formatter", "json"}, "[\n]\n"},
		{[]string{"list_users"}, "Listing users ...\nuser\ttags\nguest\t[administrator]\nbob\t[monitoring, management]\n"},
		{[]string{"list_users", "--formatter", "json"}, "[\n{\"user\":\"guest\",\"tags\":[\"administrator\"]}\n,{\"user\":\"bob\",\"tags\":[\"monitoring\",\"management\"]}\n]\n"},
		{[]string{"list_policies"}, "Listing policies for vhost \"/\" ...\nvhost\tname\tpattern\tapply-to\tdefinition\tpriority\n/\tp1\t^demo\tqueues\t{\"max-length\":10}\t0\n"},
		{[]string{"list_policies", "-p", "v2"}, "Listing policies for vhost \"v2\" ...\n\n"},
		{[]string{"list_policies", "-p", "v2", "--formatter", "json"}, "[]\n"},
		{[]string{"list_bindings"}, "Listing bindings for vhost /...\nsource_name\tsource_kind\tdestination_name\tdestination_kind\trouting_key\targuments\n\texchange\tdemo.q\tqueue\tdemo.q\t[]\n"},
		{[]string{"list_permissions"}, "Listing permissions for vhost \"/\" ...\nuser\tconfigure\twrite\tread\nguest\t.*\t.*\t.*\n"},
		{[]string{"list_consumers"}, "Listing consumers in vhost / ...\nqueue_name\tchannel_pid\tconsumer_tag\tack_required\tprefetch_count\tactive\targuments\ndemo.q\tc (1)\tctag\ttrue\t5\ttrue\t[]\n"},
		{[]string{"list_connections"}, "Listing connections ...\n"},
	} {
		code, out, errs := run(t, append([]string{"ctl", "--url", f.srv.URL}, tc.args...)...)
		if code != 0 || out != tc.want {
			t.Errorf("ctl %v: exit %d, stderr %q\n got %q\nwant %q", tc.args, code, errs, out, tc.want)
		}
	}
	for _, args := range [][]string{
		{"list_queues", "nosuchcolumn"},
		{"list_users", "user"},
		{"list_queues", "--formatter", "xml"},
		{"no_such_command"},
		{"add_user", "onlyname"},
		{"set_permissions", "u", ".*", ".*"},
		{"set_policy", "p", "^x", "not json"},
		{"set_policy", "--apply-to", "everything", "p", "^x", "{}"},
		{"set_vm_memory_high_watermark", "1.5"},
		{"set_vm_memory_high_watermark", "absolute", "lots"},
		{},
	} {
		code, _, errs := run(t, append([]string{"ctl", "--url", f.srv.URL}, args...)...)
		if code != exitUsage || errs == "" {
			t.Errorf("ctl %v: exit %d (want %d), stderr %q", args, code, exitUsage, errs)
		}
	}
}

// TestCtlWrites: each command that changes something sends the request
// RabbitMQ's API expects (method, escaped path, body), prints
// rabbitmqctl's banner, and names what was missing on a 404.
func TestCtlWrites(t *testing.T) {
	f := newFakeAPI(t, map[string]string{
		"GET /api/users/bob":     `{"name":"bob","password_hash":"HASH","hashing_algorithm":"rabbit_password_hashing_sha256","tags":["monitoring"]}`,
		"GET /api/users/old":     `{"name":"old","password_hash":"H2","tags":"management,policymaker"}`,
		"GET /api/queues/v1/q":   `{"name":"q","messages_ready":4}`,
		"GET /api/overview":      `{"node":"rabbit@h"}`,
		"DELETE /api/users/gone": `!404 {"error":"Object Not Found","reason":"Not Found"}`,
	})
	for _, tc := range []struct {
		args     []string
		out      string
		last     string // "METHOD URI body" of the last request
		wantCode int
	}{
		{[]string{"add_user", "openstack", "stack2018"},
			"Adding user \"openstack\" ...\nDone. Don't forget to grant the user permissions to some virtual hosts! See 'oslogo ctl help' for set_permissions.\n",
			`PUT /api/users/openstack {"password":"stack2018","tags":""}`, 0},
		{[]string{"add_user", "bob", "x"}, "Adding user \"bob\" ...\n", `GET /api/users/bob `, exitRemote},
		{[]string{"set_permissions", "openstack", ".*", ".*", ".*"}, "Setting permissions for user \"openstack\" in vhost \"/\" ...\n",
			`PUT /api/permissions/%2F/openstack {"configure":".*","read":".*","write":".*"}`, 0},
		{[]string{"set_permissions", "-p", "a/b", "u", "^c", "", "r"}, "Setting permissions for user \"u\" in vhost \"a/b\" ...\n",
			`PUT /api/permissions/a%2Fb/u {"configure":"^c","read":"r","write":""}`, 0},
		{[]string{"set_user_tags", "bob", "administrator", "management"}, "Setting tags for user \"bob\" to [administrator, management] ...\n",
			`PUT /api/users/bob {"hashing_algorithm":"rabbit_password_hashing_sha256","password_hash":"HASH","tags":"administrator,management"}`, 0},
		{[]string{"change_password", "old", "new"}, "Changing password for user \"old\" ...\n",
			`PUT /api/users/old {"password":"new","tags":"management,policymaker"}`, 0},
		{[]string{"change_password", "nobody", "new"}, "Changing password for user \"nobody\" ...\n", `GET /api/users/nobody `, exitRemote},
		{[]string{"delete_user", "gone"}, "Deleting user \"gone\" ...\n", `DELETE /api/users/gone `, exitRemote},
		{[]string{"add_vhost", "v1"}, "Adding vhost \"v1\" ...\n", `PUT /api/vhosts/v1 {}`, 0},
		{[]string{"delete_vhost", "v1"}, "Deleting vhost \"v1\" ...\n", `DELETE /api/vhosts/v1 `, 0},
		{[]string{"set_policy", "-p", "v1", "--priority", "3", "--apply-to", "queues", "p1", "^demo", `{"max-length":10}`},
			"Setting policy \"p1\" for pattern \"^demo\" to \"{\"max-length\":10}\" with priority \"3\" for vhost \"v1\" ...\n",
			`PUT /api/policies/v1/p1 {"apply-to":"queues","definition":{"max-length":10},"pattern":"^demo","priority":3}`, 0},
		{[]string{"clear_policy", "p1"}, "Clearing policy \"p1\" on vhost \"/\" ...\n", `DELETE /api/policies/%2F/p1 `, 0},
		{[]string{"purge_queue", "-p", "v1", "q"}, "Purging queue 'q' in vhost 'v1' ...\n", `DELETE /api/queues/v1/q/contents `, 0},
		{[]string{"delete_queue", "-p", "v1", "--if-empty", "q"}, "Deleting queue 'q' on vhost 'v1' ...\nQueue was successfully deleted with 4 ready messages\n",
			`DELETE /api/queues/v1/q?if-empty=true `, 0},
		{[]string{"close_connection", "127.0.0.1:1 -> 127.0.0.1:2", "go away"}, "Closing connection 127.0.0.1:1 -> 127.0.0.1:2, reason: go away...\n",
			`DELETE /api/connections/127.0.0.1:1%20-%3E%20127.0.0.1:2 `, 0},
		{[]string{"set_vm_memory_high_watermark", "0.0001"}, "Setting memory threshold on rabbit@h to 0.0001 ...\n",
			`PUT /api/nodes/rabbit@h/memory-high-watermark {"fraction":0.0001}`, 0},
		{[]string{"set_vm_memory_high_watermark", "absolute", "2GiB"}, "Setting memory threshold on rabbit@h to 2147483648 bytes ...\n",
			`PUT /api/nodes/rabbit@h/memory-high-watermark {"bytes":2147483648}`, 0},
	} {
		code, out, errs := run(t, append([]string{"ctl", "--url", f.srv.URL}, tc.args...)...)
		reqs := f.requests()
		last := reqs[len(reqs)-1]
		got := last.method + " " + last.path + " " + last.body
		if code != tc.wantCode || out != tc.out || got != tc.last {
			t.Errorf("ctl %v: exit %d (want %d), stderr %q\n out %q\nwant %q\n last request %q\n      want %q", tc.args, code, tc.wantCode, errs, out, tc.out, got, tc.last)
		}
		if tc.args[0] == "close_connection" && last.header.Get("X-Reason") != "go away" {
			t.Errorf("close_connection: X-Reason %q", last.header.Get("X-Reason"))
		}
	}
}

// TestCtlConnectionSettings: guest/guest on localhost:15672 by default;
// OSLOGO_MGMT_* override the default and flags override those; user
// information in the URL is used when nothing else names a user. Errors
// name the URL without the password, and the exit code tells an
// unreachable API (3) from a refusal (1) and a timeout (2).
func TestCtlConnectionSettings(t *testing.T) {
	f := newFakeAPI(t, map[string]string{"GET /api/vhosts": `[{"name":"/"}]`})
	creds := func() string {
		r := f.requests()
		return r[len(r)-1].user + ":" + r[len(r)-1].pass
	}
	if code, _, errs := run(t, "ctl", "--url", f.srv.URL, "list_vhosts"); code != 0 || creds() != "guest:guest" {
		t.Fatalf("defaults: exit %d %s, sent %s", code, errs, creds())
	}
	t.Setenv(envMgmtURL, f.srv.URL)
	t.Setenv(envMgmtUser, "envuser")
	t.Setenv(envMgmtPassword, "envpass")
	if code, _, errs := run(t, "ctl", "list_vhosts"); code != 0 || creds() != "envuser:envpass" {
		t.Fatalf("environment: exit %d %s, sent %s", code, errs, creds())
	}
	if code, _, errs := run(t, "ctl", "list_vhosts", "--username", "flaguser", "--password", "flagpass"); code != 0 || creds() != "flaguser:flagpass" {
		t.Fatalf("flags: exit %d %s, sent %s", code, errs, creds())
	}
	t.Setenv(envMgmtUser, "")
	t.Setenv(envMgmtPassword, "")
	withCreds := strings.Replace(f.srv.URL, "http://", "http://urluser:s3cr3t@", 1)
	if code, _, errs := run(t, "ctl", "--url", withCreds, "list_vhosts"); code != 0 || creds() != "urluser:s3cr3t" {
		t.Fatalf("URL user information: exit %d %s, sent %s", code, errs, creds())
	}
	// A refusal (401): exit 1, the URL without the password.
	f.answers["GET /api/users"] = `!401 {"error":"not_authorized","reason":"Login failed"}`
	code, _, errs := run(t, "ctl", "--url", withCreds, "list_users")
	if code != exitRemote || !strings.Contains(errs, "401 Login failed") || strings.Contains(errs, "s3cr3t") || !strings.Contains(errs, "/api/users") {
		t.Errorf("401: exit %d, stderr %q", code, errs)
	}
	// Nobody listening: exit 3.
	dead := httptest.NewServer(http.NotFoundHandler())
	deadURL := strings.Replace(dead.URL, "http://", "http://u:s3cr3t@", 1)
	dead.Close()
	code, _, errs = run(t, "ctl", "--url", deadURL, "list_queues")
	if code != exitUnreachable || strings.Contains(errs, "s3cr3t") || !strings.Contains(errs, strings.TrimPrefix(dead.URL, "http://")) {
		t.Errorf("unreachable: exit %d, stderr %q", code, errs)
	}
	code, _, errs = run(t, "ctl", "--url", "ftp://u:s3cr3t@host/", "list_queues")
	if code != exitUsage || strings.Contains(errs, "s3cr3t") {
		t.Errorf("bad scheme: exit %d, stderr %q", code, errs)
	}
	// No answer in time: exit 2.
	release := make(chan struct{})
	slow := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-release:
		case <-r.Context().Done():
		}
	}))
	defer slow.Close()
	defer close(release)
	start := time.Now()
	code, _, errs = run(t, "ctl", "--url", slow.URL, "--timeout", "300ms", "list_queues")
	if code != exitTimeout || time.Since(start) > 5*time.Second || !strings.Contains(errs, "no answer in 300ms") {
		t.Errorf("timeout: exit %d after %v, stderr %q", code, time.Since(start), errs)
	}
}

// TestCtlStatus: status reads /api/overview and /api/nodes.
func TestCtlStatus(t *testing.T) {
	f := newFakeAPI(t, map[string]string{
		"GET /api/overview": `{"node":"rabbit@h","rabbitmq_version":"3.10.8","listeners":[{"protocol":"amqp","ip_address":"127.0.0.1","port":5672}]}`,
		"GET /api/nodes":    `[{"name":"rabbit@h","os_pid":"42","uptime":61000,"mem_used":1000,"mem_limit":2000,"mem_alarm":true}]`,
	})
	code, out, errs := run(t, "ctl", "--url", f.srv.URL, "status")
	want := "Status of node rabbit@h ...\nRuntime\n\nOS PID: 42\nUptime (seconds): 61\nRabbitMQ version: 3.10.8\nNode name: rabbit@h\n\n" +
		"Alarms\n\nMemory alarm on node rabbit@h\n\nMemory\n\nTotal memory used: 1000 bytes\nMemory high watermark: 2000 bytes\n\n" +
		"Listeners\n\nInterface: 127.0.0.1, port: 5672, protocol: amqp\n"
	if code != 0 || out != want {
		t.Errorf("status: exit %d %s\n got %q\nwant %q", code, errs, out, want)
	}
	code, out, _ = run(t, "ctl", "--url", f.srv.URL, "status", "--formatter", "json")
	var st map[string]any
	if code != 0 || json.Unmarshal([]byte(out), &st) != nil || st["node_name"] != "rabbit@h" || st["mem_alarm"] != true {
		t.Errorf("status json: exit %d %q", code, out)
	}
}

package broker

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http/httptest"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"
)

// Password hashes computed by RabbitMQ 3.10.8 itself
// (rabbitmqctl eval 'base64:encode(rabbit_password:hash(Module, Password)).'
// and the guest user of a fresh node's export).
var rabbitHashes = []struct{ alg, hash, password string }{
	{"rabbit_password_hashing_sha256", "nc3MQiJm9R0eqEXruOCS2qCTGb3nLLIKC5nml5I9jwwjPKIr", "guest"},
	{"rabbit_password_hashing_sha512", "vF5Y1rtOjPbWcXYrRSc9+1QxszJdPzRKPy1f7MXZNfeJV7eXPiSeJ1LEBzGpzltd5nliz8LNAo/hmPNnZk7gGt22IQE=", "s5pw"},
	{"rabbit_password_hashing_md5", "QS8d/EML0ail1+QYPvG7GNRj7HI=", "m5pw"},
}

func TestPasswordHashesFromRabbitMQ(t *testing.T) {
	for _, h := range rabbitHashes {
		if _, err := decodeHashAlg(h.hash, h.alg); err != nil {
			t.Fatalf("%s: %v", h.alg, err)
		}
		u := newUser(User{Name: "u", PasswordHash: h.hash, HashingAlgorithm: h.alg}, false)
		if !u.checkPassword(h.password) || u.checkPassword(h.password+"x") || u.hashAlgorithm() != h.alg {
			t.Errorf("%s: password check failed", h.alg)
		}
	}
	if _, err := decodeHashAlg(rabbitHashes[1].hash, "rabbit_password_hashing_sha256"); err == nil {
		t.Error("a sha512 hash accepted as sha256")
	}
	if _, err := decodeHashAlg(rabbitHashes[0].hash, "rabbit_password_hashing_bcrypt"); err == nil {
		t.Error("unknown algorithm accepted")
	}
}

// rabbitExport is a definitions file exported by RabbitMQ 3.10.8 (GET
// /api/definitions), cut down to one vhost and three users (one per hash
// module).
const rabbitExport = `{"rabbit_version":"3.10.8","rabbitmq_version":"3.10.8","product_name":"RabbitMQ","product_version":"3.10.8",
"users":[{"name":"guest","password_hash":"nc3MQiJm9R0eqEXruOCS2qCTGb3nLLIKC5nml5I9jwwjPKIr","hashing_algorithm":"rabbit_password_hashing_sha256","tags":["administrator"],"limits":{}},
{"name":"s5","password_hash":"vF5Y1rtOjPbWcXYrRSc9+1QxszJdPzRKPy1f7MXZNfeJV7eXPiSeJ1LEBzGpzltd5nliz8LNAo/hmPNnZk7gGt22IQE=","hashing_algorithm":"rabbit_password_hashing_sha512","tags":[],"limits":{}},
{"name":"m5","password_hash":"QS8d/EML0ail1+QYPvG7GNRj7HI=","hashing_algorithm":"rabbit_password_hashing_md5","tags":"management,policymaker","limits":{}}],
"vhosts":[{"name":"/"},{"name":"dv"}],
"permissions":[{"user":"guest","vhost":"dv","configure":".*","write":".*","read":".*"},{"user":"guest","vhost":"/","configure":".*","write":".*","read":".*"},
{"user":"s5","vhost":"dv","configure":".*","write":".*","read":"^r"},{"user":"m5","vhost":"dv","configure":".*","write":".*","read":".*"}],
"topic_permissions":[],"parameters":[],"global_parameters":[{"name":"internal_cluster_id","value":"rabbitmq-cluster-id-3A0brj2BkkvUBfnTcxgyTw"}],
"policies":[{"vhost":"dv","name":"pol","pattern":"^d","apply-to":"queues","definition":{"dead-letter-exchange":"dx","max-length":5},"priority":3}],
"queues":[{"name":"dq","vhost":"dv","durable":true,"auto_delete":false,"arguments":{"x-max-length":10,"x-message-ttl":1000}},{"name":"tq","vhost":"dv","durable":false,"auto_delete":false,"arguments":{}}],
"exchanges":[{"name":"dx","vhost":"dv","type":"topic","durable":true,"auto_delete":false,"internal":false,"arguments":{}},{"name":"dx2","vhost":"dv","type":"fanout","durable":true,"auto_delete":false,"internal":true,"arguments":{"alternate-exchange":"amq.fanout"}}],
"bindings":[{"source":"dx","vhost":"dv","destination":"dq","destination_type":"queue","routing_key":"a.*","arguments":{"x-foo":"bar"}},{"source":"dx","vhost":"dv","destination":"dx2","destination_type":"exchange","routing_key":"b","arguments":{}}]}`

func TestDefinitionsHTTPAccess(t *testing.T) {
	_, _, base := startPolicyBroker(t, nil)
	notAdmin := `{"error":"not_authorised","reason":"Not administrator user"}`
	for i, s := range []struct {
		user, pass, method, path, body string
		code                           int
		want                           string
	}{
		{"", "", "GET", "/api/definitions", "", 401, ""},
		{"", "", "POST", "/api/definitions", "{}", 401, ""},
		{"guest", "nope", "GET", "/api/definitions", "", 401, "Login failed"},
		{"mgr", "mgrpw", "GET", "/api/definitions", "", 401, notAdmin},
		{"pm", "pmpw", "GET", "/api/definitions/%2F", "", 401, notAdmin},
		{"mon", "monpw", "POST", "/api/definitions", "{}", 401, notAdmin},
		{"pm", "pmpw", "POST", "/api/definitions/%2F", "{}", 401, notAdmin},
		{"guest", "guest", "POST", "/api/definitions", "notjson", 400, `{"error":"bad_request","reason":"failed_to_parse_json"}`},
		{"guest", "guest", "POST", "/api/definitions", `{"users":[{"name":"bad","password_hash":"xx","tags":""}]}`, 400, "password hash is not base64"},
		{"guest", "guest", "POST", "/api/definitions", `{"users":[{"name":"nohash","password_hash":"","tags":""}]}`, 400, "has no password_hash"},
		{"guest", "guest", "POST", "/api/definitions", `{"queues":[{"name":"q","vhost":"nosuch","durable":true,"arguments":{}}]}`, 400, "unknown vhost 'nosuch'"},
		{"guest", "guest", "POST", "/api/definitions", `{"topic_permissions":[{"user":"guest","vhost":"/","exchange":"amq.topic","write":".*","read":".*"}]}`, 400, "topic permissions are not supported"},
		{"guest", "guest", "POST", "/api/definitions", `{"parameters":[{"vhost":"/","component":"federation-upstream","name":"u","value":{}}]}`, 400, "runtime parameters"},
		{"guest", "guest", "POST", "/api/definitions", `{"policies":[{"vhost":"/","name":"p","pattern":".*","definition":{"foo":1}}]}`, 400, "are not recognised policy settings"},
		{"guest", "guest", "POST", "/api/definitions", `{"queues":[{"name":"q","vhost":"/","durable":true,"arguments":{"x-max-length":"x"}}]}`, 400, "x-max-length"},
		{"guest", "guest", "POST", "/api/definitions", `{"exchanges":[{"name":"e","vhost":"/","type":"nope"}]}`, 400, "unknown exchange type"},
		// A refused file changes nothing: the user of the first entry is not created.
		{"guest", "guest", "POST", "/api/definitions", `{"users":[{"name":"partial","password":"pw","tags":""}],"exchanges":[{"name":"e","vhost":"/","type":"nope"}]}`, 400, "unknown exchange type"},
		{"guest", "guest", "GET", "/api/users/partial", "", 404, ""},
		{"guest", "guest", "GET", "/api/definitions/nosuch", "", 404, ""},
		// A pre-3.6 file: an MD5 hash without hashing_algorithm.
		{"guest", "guest", "POST", "/api/definitions", `{"users":[{"name":"old","password_hash":"QS8d/EML0ail1+QYPvG7GNRj7HI=","tags":"management"}]}`, 204, ""},
		{"old", "m5pw", "GET", "/api/whoami", "", 200, `"name":"old"`},
		{"guest", "guest", "POST", "/api/definitions", `{}`, 204, ""},
	} {
		code, got := apiCall(t, base, s.user, s.pass, s.method, s.path, s.body)
		if code != s.code || (s.want != "" && !strings.Contains(got, s.want)) {
			t.Errorf("step %d: %s %s as %q: %d %s, want %d %s", i, s.method, s.path, s.user, code, got, s.code, s.want)
		}
	}
}

// TestDefinitionsFromRabbitMQFile: a file exported by RabbitMQ 3.10.8
// loads; its users log in with their passwords (sha256, sha512 and md5
// hashes as RabbitMQ computed them), and its permissions, policy, queues,
// exchanges and bindings are in place; the export gives them back.
func TestDefinitionsFromRabbitMQFile(t *testing.T) {
	s, amqpURL, base := startPolicyBroker(t, func(o *Options) { o.LoopbackUsers = nil })
	if code, got := apiCall(t, base, "guest", "guest", "POST", "/api/definitions", rabbitExport); code != 204 {
		t.Fatalf("import: %d %s", code, got)
	}
	// Imported again: all equivalent, nothing changes.
	if code, got := apiCall(t, base, "guest", "guest", "POST", "/api/definitions", rabbitExport); code != 204 {
		t.Fatalf("second import: %d %s", code, got)
	}
	host := strings.TrimPrefix(amqpURL, "amqp://guest:guest@")
	for _, u := range []struct{ user, pass string }{{"guest", "guest"}, {"s5", "s5pw"}, {"m5", "m5pw"}} {
		c, err := amqp.Dial("amqp://" + u.user + ":" + u.pass + "@" + host + "dv")
		if err != nil {
			t.Fatalf("%s logs in to dv: %v", u.user, err)
		}
		c.Close()
		if _, err := amqp.Dial("amqp://" + u.user + ":wrong@" + host + "dv"); err == nil {
			t.Fatalf("%s logs in with a wrong password", u.user)
		}
	}
	if code, _ := apiCall(t, base, "m5", "m5pw", "GET", "/api/policies/dv/pol", ""); code != 200 {
		t.Errorf("m5 (management,policymaker tags from a string) reads a policy: %d", code)
	}
	v := getQueuePolicy(t, base, "dv", "dq")
	if v.Policy == nil || *v.Policy != "pol" {
		t.Errorf("dq policy: %v", v)
	}
	q, err := s.Queues(QueuesOptions{VHost: "dv", Name: "dq"})
	if err != nil || q[0].Arguments["x-max-length"] != int64(10) || !q[0].Durable {
		t.Errorf("dq: %+v %v", q, err)
	}
	bs, _ := s.Bindings("dv")
	var keys []string
	for _, b := range bs {
		if b.Source != "" {
			keys = append(keys, b.Source+">"+b.Destination+":"+b.RoutingKey)
		}
	}
	if strings.Join(keys, " ") != "dx>dq:a.* dx>dx2:b" {
		t.Errorf("bindings: %v", keys)
	}
	// The export has what was imported (and the broker's own vhost "other").
	var in, out Definitions
	if err := json.Unmarshal([]byte(rabbitExport), &in); err != nil {
		t.Fatal(err)
	}
	out = s.ExportDefinitions()
	for _, name := range []string{"s5", "m5"} {
		var got, want DefinitionUser
		for _, u := range out.Users {
			if u.Name == name {
				got = u
			}
		}
		for _, u := range in.Users {
			if u.Name == name {
				want = u
			}
		}
		if got.PasswordHash != want.PasswordHash || got.HashingAlgorithm != want.HashingAlgorithm {
			t.Errorf("exported %s: %+v, imported %+v", name, got, want)
		}
	}
	pick := func(d Definitions) string {
		var b strings.Builder
		for _, q := range d.Queues {
			if q.VHost == "dv" {
				fmt.Fprintf(&b, "q %s %v %v %v;", q.Name, q.Durable, q.AutoDelete, q.Arguments)
			}
		}
		for _, e := range d.Exchanges {
			if e.VHost == "dv" {
				fmt.Fprintf(&b, "e %s %s %v %v %v %v;", e.Name, e.Type, e.Durable, e.AutoDelete, e.Internal, e.Arguments)
			}
		}
		for _, x := range d.Bindings {
			fmt.Fprintf(&b, "b %s %s %s %s %v;", x.Source, x.Destination, x.DestinationType, x.RoutingKey, x.Arguments)
		}
		for _, p := range d.Policies {
			fmt.Fprintf(&b, "p %s %s %s %s %d %v;", p.VHost, p.Name, p.Pattern, p.ApplyTo, p.Priority, p.Definition)
		}
		perms := slices.Clone(d.Permissions)
		slices.SortFunc(perms, func(a, b PermissionInfo) int { return strings.Compare(a.User, b.User) })
		for _, p := range perms {
			if p.VHost == "dv" {
				fmt.Fprintf(&b, "perm %s %s %s %s;", p.User, p.Configure, p.Write, p.Read)
			}
		}
		return b.String()
	}
	// Numbers compare as printed: json.Number on one side, int64 on the other.
	if a, b := pick(in), pick(out); a != b {
		t.Errorf("export differs from the RabbitMQ file:\n got %s\nwant %s", b, a)
	}
}

// TestDefinitionsVHostExportImport: /api/definitions/{vhost} has RabbitMQ's
// shape (no users, no vhost fields in queues, exchanges and bindings) and
// loads into another vhost.
func TestDefinitionsVHostExportImport(t *testing.T) {
	s, _, base := startPolicyBroker(t, nil)
	if code, got := apiCall(t, base, "guest", "guest", "POST", "/api/definitions/%2F",
		`{"rabbit_version":"3.10.8","parameters":[],"policies":[{"vhost":"elsewhere","name":"pol","pattern":"^d","apply-to":"queues","definition":{"max-length":5},"priority":3}],`+
			`"queues":[{"name":"dq","durable":true,"auto_delete":false,"arguments":{}}],"exchanges":[{"name":"dx","type":"topic","durable":true,"auto_delete":false,"internal":false,"arguments":{}}],`+
			`"bindings":[{"source":"dx","destination":"dq","destination_type":"queue","routing_key":"a.*","arguments":{}}]}`); code != 204 {
		t.Fatalf("import into /: %d %s", code, got)
	}
	code, body := apiCall(t, base, "guest", "guest", "GET", "/api/definitions/%2F", "")
	want := `{"rabbit_version":"3.10.8","parameters":[],"policies":[{"vhost":"/","name":"pol","pattern":"^d","apply-to":"queues","definition":{"max-length":5},"priority":3}],` +
		`"queues":[{"name":"dq","durable":true,"auto_delete":false,"arguments":{}}],"exchanges":[{"name":"dx","type":"topic","durable":true,"auto_delete":false,"internal":false,"arguments":{}}],` +
		`"bindings":[{"source":"dx","destination":"dq","destination_type":"queue","routing_key":"a.*","arguments":{}}]}`
	if code != 200 || body != want {
		t.Fatalf("export of /: %d\n got %s\nwant %s", code, body, want)
	}
	if code, got := apiCall(t, base, "guest", "guest", "POST", "/api/definitions/other", body); code != 204 {
		t.Fatalf("import into other: %d %s", code, got)
	}
	other, err := s.ExportVHostDefinitions("other")
	if err != nil {
		t.Fatal(err)
	}
	root, _ := s.ExportVHostDefinitions("/")
	root.Policies[0].VHost = "other"
	if !reflect.DeepEqual(other, root) {
		t.Errorf("other: %+v\nwant %+v", other, root)
	}
}

// TestAdministrationSurvivesRestart: with a data directory, users,
// permissions, vhosts and policies changed through the API are there after
// a restart (a policy applies again to the recovered queue); deletions
// too. A failed definitions write is a 500 and is retried by the next
// change.
func TestAdministrationSurvivesRestart(t *testing.T) {
	dir := t.TempDir()
	var mu sync.Mutex
	failing := false
	start := func() (*Server, string, string) {
		s, u := startBroker(t, func(o *Options) { o.DataDir = dir })
		s.storeIO.writeDefinitions = func(path string, data []byte) error {
			mu.Lock()
			f := failing
			mu.Unlock()
			if f {
				return syscall.ENOSPC
			}
			return writeFileAtomic(path, data)
		}
		hs := httptest.NewServer(s.ManagementHandler())
		t.Cleanup(hs.Close)
		return s, u, hs.URL
	}
	stop := func(s *Server) {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := s.Shutdown(ctx); err != nil {
			t.Fatal(err)
		}
	}
	must := func(base, method, path, body string, want int) {
		t.Helper()
		if code, got := apiCall(t, base, "guest", "guest", method, path, body); code != want {
			t.Fatalf("%s %s: %d %s, want %d", method, path, code, got, want)
		}
	}
	s, _, base := start()
	must(base, "PUT", "/api/vhosts/kept", "", 201)
	// The creator of a vhost has every permission there (RabbitMQ's rule).
	must(base, "PUT", "/api/permissions/kept/guest", `{"configure":".*","write":".*","read":".*"}`, 204)
	must(base, "PUT", "/api/users/alice", `{"password":"alicepw","tags":"management"}`, 201)
	must(base, "PUT", "/api/users/bob", `{"password_hash":"`+rabbitHashes[1].hash+`","hashing_algorithm":"rabbit_password_hashing_sha512","tags":""}`, 201)
	must(base, "PUT", "/api/permissions/kept/alice", `{"configure":"^a","write":".*","read":".*"}`, 201)
	must(base, "PUT", "/api/permissions/kept/bob", `{"configure":".*","write":".*","read":".*"}`, 201)
	must(base, "PUT", "/api/policies/kept/short", `{"pattern":"^dq$","definition":{"max-length":2},"priority":1}`, 201)
	must(base, "PUT", "/api/queues/kept/dq", `{"durable":true}`, 201)
	mu.Lock()
	failing = true
	mu.Unlock()
	must(base, "PUT", "/api/users/carol", `{"password":"carolpw","tags":""}`, 500)
	mu.Lock()
	failing = false
	mu.Unlock()
	stop(s)

	s, amqpURL, base := start()
	host := strings.TrimPrefix(amqpURL, "amqp://guest:guest@")
	// carol's write failed but she was kept in memory, and written by the
	// next successful save (the shutdown has none: she is not on disk).
	for _, u := range []struct{ user, pass, vhost string }{{"alice", "alicepw", "kept"}, {"bob", "s5pw", "kept"}, {"guest", "guest", ""}} {
		c, err := amqp.Dial("amqp://" + u.user + ":" + u.pass + "@" + host + u.vhost)
		if err != nil {
			t.Fatalf("%s after restart: %v", u.user, err)
		}
		c.Close()
	}
	if code, got := apiCall(t, base, "guest", "guest", "GET", "/api/permissions/kept/alice", ""); code != 200 || !strings.Contains(got, `"configure":"^a"`) {
		t.Errorf("alice's permissions after restart: %d %s", code, got)
	}
	if v := getQueuePolicy(t, base, "kept", "dq"); v.Policy == nil || *v.Policy != "short" {
		t.Errorf("recovered dq policy: %v", v)
	}
	if code, got := apiCall(t, base, "guest", "guest", "GET", "/api/users/carol", ""); code != 404 {
		t.Errorf("carol (never saved): %d %s", code, got)
	}
	must(base, "DELETE", "/api/users/alice", "", 204)
	must(base, "DELETE", "/api/policies/kept/short", "", 204)
	must(base, "DELETE", "/api/permissions/kept/bob", "", 204)
	stop(s)

	s, _, base = start()
	if code, _ := apiCall(t, base, "guest", "guest", "GET", "/api/users/alice", ""); code != 404 {
		t.Errorf("deleted alice is back: %d", code)
	}
	if ps, _ := s.Policies(""); len(ps) != 0 {
		t.Errorf("deleted policy is back: %+v", ps)
	}
	if code, _ := apiCall(t, base, "guest", "guest", "GET", "/api/permissions/kept/bob", ""); code != 404 {
		t.Errorf("cleared permission is back: %d", code)
	}
	if v := getQueuePolicy(t, base, "kept", "dq"); v.Policy != nil {
		t.Errorf("dq still has a policy: %v", v)
	}
	raw, err := os.ReadFile(filepath.Join(dir, "definitions.json"))
	if err != nil || strings.Contains(string(raw), "alicepw") || strings.Contains(string(raw), "carolpw") {
		t.Errorf("definitions.json holds a plain password or is unreadable: %v", err)
	}
}

// TestAdministrationInMemoryWithoutDataDir: without a data directory a
// restart starts again from Options.
func TestAdministrationInMemoryWithoutDataDir(t *testing.T) {
	s, _, base := startPolicyBroker(t, nil)
	if code, got := apiCall(t, base, "guest", "guest", "PUT", "/api/users/alice", `{"password":"pw","tags":""}`); code != 201 {
		t.Fatalf("PUT user: %d %s", code, got)
	}
	if _, err := s.SetPolicy(Policy{VHost: "/", Name: "p", Pattern: ".*", Definition: map[string]any{"max-length": 1}}); err != nil {
		t.Fatal(err)
	}
	s2, _, base2 := startPolicyBroker(t, nil)
	if code, _ := apiCall(t, base2, "guest", "guest", "GET", "/api/users/alice", ""); code != 404 {
		t.Errorf("alice on a new broker without data dir: %d", code)
	}
	if ps, _ := s2.Policies(""); len(ps) != 0 {
		t.Errorf("policies on a new broker: %+v", ps)
	}
}

// TestVHostDeleteDropsPermissions: permissions in a deleted vhost go with
// it (as in RabbitMQ), so a vhost created again with the same name does
// not give them back, and exports do not name the deleted vhost.
func TestVHostDeleteDropsPermissions(t *testing.T) {
	s, _, base := startPolicyBroker(t, nil)
	if _, err := s.SetPermission("mgr", "other", Permission{Configure: ".*", Write: ".*", Read: ".*"}); err != nil {
		t.Fatal(err)
	}
	if err := s.DeleteVHost("other"); err != nil {
		t.Fatal(err)
	}
	for _, p := range s.ExportDefinitions().Permissions {
		if p.VHost == "other" {
			t.Errorf("export names the deleted vhost: %+v", p)
		}
	}
	if _, err := s.AddVHost("other"); err != nil {
		t.Fatal(err)
	}
	if code, got := apiCall(t, base, "guest", "guest", "GET", "/api/permissions/other/mgr", ""); code != 404 {
		t.Errorf("mgr's permission in the recreated vhost: %d %s", code, got)
	}
}

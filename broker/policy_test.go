package broker

import (
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"
)

// apiCall sends one management request with basic auth (user "" for none)
// and returns the status and body.
func apiCall(t testing.TB, base, user, pass, method, path, body string) (int, string) {
	t.Helper()
	var rd io.Reader
	if body != "" {
		rd = strings.NewReader(body)
	}
	req, err := http.NewRequest(method, base+path, rd)
	if err != nil {
		t.Fatal(err)
	}
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	if user != "" {
		req.SetBasicAuth(user, pass)
	}
	resp, err := mgmtHTTPClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, string(b)
}

// policyUsers adds, to the management test users, policymakers with and
// without permissions in "/".
var policyUsers = append(append([]User(nil), mgmtUsers...),
	User{Name: "pm", Password: "pmpw", Tags: []string{"policymaker"}, Permissions: map[string]Permission{"/": {".*", ".*", ".*"}}},
	User{Name: "pmnovh", Password: "pmpw", Tags: []string{"policymaker"}, Permissions: map[string]Permission{"other": {".*", ".*", ".*"}}},
)

// startPolicyBroker runs a broker and serves its management API through
// httptest.
func startPolicyBroker(t *testing.T, mod func(*Options)) (*Server, string, string) {
	t.Helper()
	s, u := startBroker(t, func(o *Options) {
		o.Users = policyUsers
		o.VHosts = []string{"/", "other"}
		if mod != nil {
			mod(o)
		}
	})
	hs := httptest.NewServer(s.ManagementHandler())
	t.Cleanup(hs.Close)
	return s, u, hs.URL
}

func TestPolicyHTTPAccess(t *testing.T) {
	_, _, base := startPolicyBroker(t, nil)
	body := `{"pattern":"^pq","definition":{"max-length":3},"priority":1,"apply-to":"queues"}`
	type step struct {
		user, pass, method, path, body string
		code                           int
		want                           string
	}
	notObject := `{"error":"not_authorised","reason":"User not authorised to access object"}`
	for i, s := range []step{
		{"", "", "GET", "/api/policies", "", 401, ""},
		{"", "", "PUT", "/api/policies/%2F/p", body, 401, ""},
		{"guest", "wrong", "PUT", "/api/policies/%2F/p", body, 401, `"Login failed"`},
		{"notag", "notagpw", "GET", "/api/policies", "", 401, `"Not management user"`},
		// A management user may list, not read one or write (RabbitMQ 3.10.8: 401, not 403).
		{"mgr", "mgrpw", "PUT", "/api/policies/%2F/p", body, 401, notObject},
		{"mon", "monpw", "PUT", "/api/policies/%2F/p", body, 401, notObject},
		// A policymaker needs permissions in the vhost.
		{"pmnovh", "pmpw", "PUT", "/api/policies/%2F/p", body, 401, notObject},
		{"pm", "pmpw", "PUT", "/api/policies/%2F/p", body, 201, ""},
		{"pm", "pmpw", "PUT", "/api/policies/%2F/p", body, 204, ""},
		{"guest", "guest", "PUT", "/api/policies/other/o", `{"pattern":".*","definition":{"message-ttl":5}}`, 201, ""},
		{"mgr", "mgrpw", "GET", "/api/policies", "", 200,
			`[{"vhost":"/","name":"p","pattern":"^pq","apply-to":"queues","definition":{"max-length":3},"priority":1}]`},
		{"mgr", "mgrpw", "GET", "/api/policies/%2F/p", "", 401, notObject},
		{"mgr", "mgrpw", "GET", "/api/policies/other", "", 401, `"User not authorised to access virtual host"`},
		{"pm", "pmpw", "GET", "/api/policies/%2F/p", "", 200,
			`{"vhost":"/","name":"p","pattern":"^pq","apply-to":"queues","definition":{"max-length":3},"priority":1}`},
		{"guest", "guest", "GET", "/api/policies", "", 200,
			`[{"vhost":"/","name":"p","pattern":"^pq","apply-to":"queues","definition":{"max-length":3},"priority":1},` +
				`{"vhost":"other","name":"o","pattern":".*","apply-to":"all","definition":{"message-ttl":5},"priority":0}]`},
		{"guest", "guest", "GET", "/api/policies/other", "", 200,
			`[{"vhost":"other","name":"o","pattern":".*","apply-to":"all","definition":{"message-ttl":5},"priority":0}]`},
		{"guest", "guest", "GET", "/api/policies/%2F/nope", "", 404, `{"error":"Object Not Found","reason":"Not Found"}`},
		{"guest", "guest", "GET", "/api/policies/nosuch", "", 404, `{"error":"Object Not Found","reason":"Not Found"}`},
		{"guest", "guest", "PUT", "/api/policies/nosuch/p", body, 404, `{"error":"not_found","reason":"vhost_not_found"}`},
		{"mgr", "mgrpw", "DELETE", "/api/policies/%2F/p", "", 401, notObject},
		{"pm", "pmpw", "DELETE", "/api/policies/%2F/nope", "", 404, `{"error":"Object Not Found","reason":"Not Found"}`},
		{"pm", "pmpw", "DELETE", "/api/policies/%2F/p", "", 204, ""},
		{"guest", "guest", "GET", "/api/policies/%2F", "", 200, `[]`},
		{"guest", "guest", "POST", "/api/policies/%2F/p", body, 405, ""},
	} {
		code, got := apiCall(t, base, s.user, s.pass, s.method, s.path, s.body)
		if code != s.code || (s.want != "" && !strings.Contains(got, s.want)) {
			t.Errorf("step %d: %s %s as %q: %d %s, want %d %s", i, s.method, s.path, s.user, code, got, s.code, s.want)
		}
	}
}

// TestPolicyValidationTexts checks refused policies get RabbitMQ 3.10.8's
// answers (captured from a node with the management plugin).
func TestPolicyValidationTexts(t *testing.T) {
	_, _, base := startPolicyBroker(t, nil)
	for _, c := range []struct{ body, reason string }{
		{`{"pattern":"^pq","definition":{"foo":1,"bar":2},"apply-to":"queues"}`,
			`Validation failed\n\n[{&lt;&lt;\"bar\"&gt;&gt;,2},{&lt;&lt;\"foo\"&gt;&gt;,1}] are not recognised policy settings\n`},
		{`{"pattern":"^pq","definition":{"message-ttl":-1}}`, `Validation failed\n\n-1 is not a valid message TTL\n`},
		{`{"pattern":"^pq","definition":{"expires":0,"max-length":"x"}}`, `Validation failed\n\n0 is not a valid queue expiry\n`},
		{`{"pattern":"^pq","definition":{"overflow":"x"}}`, `Validation failed\n\n&lt;&lt;\"x\"&gt;&gt; is not a valid overflow value\n`},
		{`{"pattern":"^pq","definition":{"overflow":1}}`, `Validation failed\n\n1 is not a valid overflow value\n`},
		{`{"pattern":"^pq","definition":{"dead-letter-exchange":1}}`, `Validation failed\n\n1 is not a valid dead letter exchange name\n`},
		{`{"pattern":"^pq","definition":{"dead-letter-exchange":null}}`, `Validation failed\n\nnull is not a valid dead letter exchange name\n`},
		{`{"pattern":"^pq","definition":{"delivery-limit":-2,"max-length-bytes":-1,"dead-letter-routing-key":3}}`,
			`Validation failed\n\n3 is not a valid dead letter routing key\n`},
		{`{"pattern":"^pq","definition":{"delivery-limit":-2}}`, `Validation failed\n\n-2 is not a valid delivery limit\n`},
		{`{"pattern":"^pq","definition":{"max-length-bytes":-1}}`, `Validation failed\n\n-1 is not a valid maximum length in bytes\n`},
		{`{"pattern":"^pq","definition":{"max-length":"x"}}`, `Validation failed\n\n&lt;&lt;\"x\"&gt;&gt; is not a valid maximum length\n`},
		{`{"pattern":"^pq","definition":{"max-length":1.5}}`, `Validation failed\n\n1.5 is not a valid maximum length\n`},
		{`{"pattern":"^pq","definition":{"message-ttl":"1"}}`, `Validation failed\n\n&lt;&lt;\"1\"&gt;&gt; is not a valid message TTL\n`},
		{`{"pattern":"^pq","definition":{"expires":true}}`, `Validation failed\n\ntrue is not a valid queue expiry\n`},
		{`{"pattern":"^pq","definition":{"max-length":1},"apply-to":"foo"}`,
			`Validation failed\n\napply-to 'foo' unrecognised; should be 'queues', 'exchanges' or 'all'\n`},
		{`{"pattern":"^pq","definition":{}}`, `Validation failed\n\nno policy provided\n`},
		{`{"definition":{"max-length":1}}`, `[{key_missing,pattern}]`},
		{`{"pattern":"^pq"}`, `[{key_missing,definition}]`},
		{`{"pattern":"^pq","definition":{"max-length":1},"priority":"x"}`,
			`Validation failed\n\npriority should be a number, actually was &lt;&lt;\"x\"&gt;&gt;\n`},
	} {
		code, got := apiCall(t, base, "guest", "guest", "PUT", "/api/policies/%2F/p1", c.body)
		var e struct{ Error, Reason string }
		_ = json.Unmarshal([]byte(got), &e)
		want := strings.ReplaceAll(strings.ReplaceAll(c.reason, `\n`, "\n"), `\"`, `"`)
		if code != 400 || e.Error != "bad_request" || e.Reason != want {
			t.Errorf("%s: %d %s, want 400 reason %q", c.body, code, got, want)
		}
	}
	// Settings RabbitMQ accepts without effect here are kept; those that
	// would change behaviour this broker lacks are refused.
	if code, got := apiCall(t, base, "guest", "guest", "PUT", "/api/policies/%2F/ha", `{"pattern":".*","definition":{"ha-mode":"all","queue-mode":"lazy"}}`); code != 201 {
		t.Errorf("ha-mode: %d %s", code, got)
	}
	if code, got := apiCall(t, base, "guest", "guest", "PUT", "/api/policies/%2F/ae", `{"pattern":".*","definition":{"alternate-exchange":"x"}}`); code != 400 || !strings.Contains(got, "not supported") {
		t.Errorf("alternate-exchange: %d %s", code, got)
	}
}

// queuePolicyView is what GET /api/queues/{vhost}/{name} shows of policies.
type queuePolicyView struct {
	Policy    *string        `json:"policy"`
	Effective map[string]any `json:"effective_policy_definition"`
}

func getQueuePolicy(t *testing.T, base, vhost, name string) queuePolicyView {
	t.Helper()
	code, body := apiCall(t, base, "guest", "guest", "GET", "/api/queues/"+vhost+"/"+name, "")
	if code != 200 {
		t.Fatalf("GET queue %s: %d %s", name, code, body)
	}
	var v queuePolicyView
	if err := json.Unmarshal([]byte(body), &v); err != nil {
		t.Fatal(err)
	}
	return v
}

func (v queuePolicyView) String() string {
	b, _ := json.Marshal(v)
	return string(b)
}

// TestPolicyMatching: the highest priority matching policy applies, to
// queues declared before and after it, ties go to the first name, apply-to
// exchanges leaves queues alone, and changes and deletions are applied to
// existing queues at once.
func TestPolicyMatching(t *testing.T) {
	s, amqpURL, base := startPolicyBroker(t, nil)
	ch := openCh(t, dial(t, amqpURL))
	declare := func(name string) {
		if _, err := ch.QueueDeclare(name, false, false, false, false, nil); err != nil {
			t.Fatal(err)
		}
	}
	put := func(name, body string) {
		if code, got := apiCall(t, base, "guest", "guest", "PUT", "/api/policies/%2F/"+name, body); code != 201 && code != 204 {
			t.Fatalf("PUT policy %s: %d %s", name, code, got)
		}
	}
	expect := func(q, policy string, def string) {
		t.Helper()
		v := getQueuePolicy(t, base, "%2F", q)
		got := "null"
		if v.Policy != nil {
			got = *v.Policy
		}
		eff, _ := json.Marshal(v.Effective)
		if got != policy || string(eff) != def {
			t.Errorf("queue %s: policy %s %s, want %s %s", q, got, eff, policy, def)
		}
	}
	declare("pq.before")
	declare("other")
	expect("pq.before", "null", "{}")
	put("low", `{"pattern":"^pq","definition":{"max-length":7},"priority":1}`)
	put("high", `{"pattern":"^pq\\.","definition":{"max-length":5,"ha-mode":"all"},"priority":2}`)
	put("exch", `{"pattern":".*","definition":{"message-ttl":1},"priority":9,"apply-to":"exchanges"}`)
	declare("pq.after")
	expect("pq.before", "high", `{"ha-mode":"all","max-length":5}`)
	expect("pq.after", "high", `{"ha-mode":"all","max-length":5}`)
	expect("other", "null", "{}")
	// Equal priorities: the first name wins.
	put("b-tie", `{"pattern":"^other$","definition":{"max-length":2}}`)
	put("a-tie", `{"pattern":"^other$","definition":{"max-length":3}}`)
	expect("other", "a-tie", `{"max-length":3}`)
	// A changed policy that no longer matches, and a cleared one.
	put("high", `{"pattern":"^nomatch","definition":{"max-length":5},"priority":2}`)
	expect("pq.before", "low", `{"max-length":7}`)
	if code, got := apiCall(t, base, "guest", "guest", "DELETE", "/api/policies/%2F/low", ""); code != 204 {
		t.Fatalf("DELETE: %d %s", code, got)
	}
	expect("pq.before", "null", "{}")
	// The typed methods give the same.
	ps, err := s.Policies("/")
	if err != nil || len(ps) != 4 {
		t.Fatalf("Policies: %v %+v", err, ps)
	}
	if _, err := s.Policies("nosuch"); err != ErrNotFound {
		t.Errorf("Policies(nosuch): %v", err)
	}
	// Deleting a vhost drops its policies.
	if _, err := s.SetPolicy(Policy{VHost: "other", Name: "x", Pattern: ".*", Definition: map[string]any{"max-length": 1}}); err != nil {
		t.Fatal(err)
	}
	if err := s.DeleteVHost("other"); err != nil {
		t.Fatal(err)
	}
	if ps, _ := s.Policies(""); len(ps) != 4 {
		t.Errorf("after deleting vhost other: %+v", ps)
	}
}

// TestPolicyShortensExistingQueue: a lower max-length set by a policy drops
// from the head of an existing queue at once (dead-lettering), as RabbitMQ
// 3.10's classic queues do; clearing it does not bring messages back.
func TestPolicyShortensExistingQueue(t *testing.T) {
	s, amqpURL, _ := startPolicyBroker(t, nil)
	ch := openCh(t, dial(t, amqpURL))
	if _, err := ch.QueueDeclare("dlq", false, false, false, false, nil); err != nil {
		t.Fatal(err)
	}
	if _, err := ch.QueueDeclare("short", false, false, false, false, amqp.Table{"x-dead-letter-exchange": "", "x-dead-letter-routing-key": "dlq"}); err != nil {
		t.Fatal(err)
	}
	if err := ch.Confirm(false); err != nil {
		t.Fatal(err)
	}
	for i := range 5 {
		dc, err := ch.PublishWithDeferredConfirm("", "short", false, false, amqp.Publishing{Body: []byte{'0' + byte(i)}})
		if err != nil || !dc.Wait() {
			t.Fatal("publish", err)
		}
	}
	if _, err := s.SetPolicy(Policy{VHost: "/", Name: "two", Pattern: "^short$", Definition: map[string]any{"max-length": 2}}); err != nil {
		t.Fatal(err)
	}
	q, err := ch.QueueDeclarePassive("short", false, false, false, false, amqp.Table{"x-dead-letter-exchange": "", "x-dead-letter-routing-key": "dlq"})
	if err != nil || q.Messages != 2 {
		t.Fatalf("short after policy: %+v %v", q, err)
	}
	d, ok, err := ch.Get("short", true)
	if err != nil || !ok || string(d.Body) != "3" {
		t.Fatalf("head after drop: %q %v %v", d.Body, ok, err)
	}
	eventually(t, "dead letters", func() (bool, string) {
		q, err := ch.QueueDeclarePassive("dlq", false, false, false, false, nil)
		return err == nil && q.Messages == 3, "dlq " + string(rune('0'+q.Messages))
	})
	if err := s.ClearPolicy("/", "two"); err != nil {
		t.Fatal(err)
	}
	if err := s.ClearPolicy("/", "two"); err != ErrNotFound {
		t.Errorf("second clear: %v", err)
	}
}

// TestResolvePolicy: the rules TestAdministrationMatchesRabbitMQ checks
// against a RabbitMQ node, as a table: lower numbers win, the argument's
// dead-letter settings win, overflow is the argument's on classic queues
// and the policy's on quorum queues.
func TestResolvePolicy(t *testing.T) {
	none := queueLimits{maxLen: -1, maxBytes: -1, msgTTL: -1, deliveryLimit: -1}
	args := queueLimits{maxLen: 5, maxBytes: 40, msgTTL: 60000, deliveryLimit: 5, expires: time.Minute,
		overflow: overflowRejectPub, dlx: "dlx.arg", dlrk: "ka", hasDLRK: true}
	def := map[string]any{"max-length": int64(3), "max-length-bytes": int64(12), "message-ttl": int64(200),
		"delivery-limit": int64(1), "expires": int64(300), "overflow": overflowDropHead,
		"dead-letter-exchange": "dlx.pol", "dead-letter-routing-key": "kb"}
	got := resolvePolicy(args, def, false)
	want := queueLimits{maxLen: 3, maxBytes: 12, msgTTL: 200, deliveryLimit: 1, expires: 300 * time.Millisecond,
		overflow: overflowRejectPub, dlx: "dlx.arg", dlrk: "ka", hasDLRK: true}
	if got != want {
		t.Errorf("classic, policy lower:\n got %+v\nwant %+v", got, want)
	}
	high := map[string]any{"max-length": int64(50), "max-length-bytes": int64(400), "message-ttl": int64(600000),
		"delivery-limit": int64(50), "expires": int64(6000000)}
	if got := resolvePolicy(args, high, false); got != args {
		t.Errorf("classic, policy higher:\n got %+v\nwant %+v", got, args)
	}
	if got := resolvePolicy(args, def, true); got.overflow != overflowDropHead {
		t.Errorf("quorum overflow: %q, want the policy's", got.overflow)
	}
	got = resolvePolicy(none, def, false)
	want = queueLimits{maxLen: 3, maxBytes: 12, msgTTL: 200, deliveryLimit: 1, expires: 300 * time.Millisecond,
		overflow: overflowDropHead, dlx: "dlx.pol", dlrk: "kb", hasDLRK: true}
	if got != want {
		t.Errorf("no arguments:\n got %+v\nwant %+v", got, want)
	}
	if got := resolvePolicy(none, map[string]any{"dead-letter-exchange": ""}, false); got.dlx != "\x00default" {
		t.Errorf("policy DLX \"\" (default exchange): %q", got.dlx)
	}
	if got := resolvePolicy(args, nil, false); got != args {
		t.Errorf("no policy: %+v", got)
	}
}

// TestPolicyChurnUnderTraffic changes and clears policies on queues while
// clients publish, consume, reject (dead-lettering) and let messages
// expire; the race detector checks that limits changed by a policy are
// only read under the queue's lock.
func TestPolicyChurnUnderTraffic(t *testing.T) {
	s, amqpURL, _ := startPolicyBroker(t, nil)
	conn := dial(t, amqpURL)
	setup := openCh(t, conn)
	for _, q := range []string{"churn.a", "churn.b", "churn.dl"} {
		if _, err := setup.QueueDeclare(q, false, false, false, false, nil); err != nil {
			t.Fatal(err)
		}
	}
	stop := make(chan struct{})
	var wg sync.WaitGroup
	worker := func(f func(ch *amqp.Channel, i int) error) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			ch, err := conn.Channel()
			if err != nil {
				t.Error(err)
				return
			}
			defer ch.Close()
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				if err := f(ch, i); err != nil {
					t.Error(err)
					return
				}
			}
		}()
	}
	for _, q := range []string{"churn.a", "churn.b"} {
		worker(func(ch *amqp.Channel, i int) error {
			return ch.Publish("", q, false, false, amqp.Publishing{Body: []byte("x"), Expiration: map[bool]string{true: "5", false: ""}[i%3 == 0]})
		})
		worker(func(ch *amqp.Channel, i int) error {
			d, ok, err := ch.Get(q, false)
			if err != nil || !ok {
				time.Sleep(time.Millisecond)
				return err
			}
			if i%2 == 0 {
				return d.Nack(false, false)
			}
			return d.Ack(false)
		})
	}
	defs := []map[string]any{
		{"max-length": 3, "overflow": "reject-publish-dlx", "dead-letter-exchange": "", "dead-letter-routing-key": "churn.dl"},
		{"max-length-bytes": 10, "message-ttl": 1, "expires": 60000},
		{"max-length": 0, "dead-letter-exchange": "amq.fanout"},
		{"overflow": "drop-head", "max-length": 1},
	}
	deadline := time.Now().Add(2 * time.Second)
	for i := 0; time.Now().Before(deadline); i++ {
		if i%5 == 4 {
			_ = s.ClearPolicy("/", "churn")
			continue
		}
		if _, err := s.SetPolicy(Policy{VHost: "/", Name: "churn", Pattern: "^churn\\.[ab]$", Definition: defs[i%len(defs)]}); err != nil {
			t.Fatal(err)
		}
		time.Sleep(2 * time.Millisecond)
	}
	close(stop)
	wg.Wait()
	if qs, err := s.Queues(QueuesOptions{VHost: "/"}); err != nil || len(qs) != 3 {
		t.Fatalf("queues after churn: %v %d", err, len(qs))
	}
}

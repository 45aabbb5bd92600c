package broker

import (
	"encoding/json"
	"fmt"
	"net/http/httptest"
	"net/url"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/oslogo/oslogo/internal/testrabbit"

	amqp "github.com/rabbitmq/amqp091-go"
)

// adminTarget is a broker under test: its AMQP URL (with guest/guest, no
// vhost) and management API.
type adminTarget struct {
	name string
	amqp string // amqp://guest:guest@host:port/
	api  string
}

func (a adminTarget) call(t *testing.T, method, path, body string, want ...int) string {
	t.Helper()
	code, got := apiCall(t, a.api, "guest", "guest", method, path, body)
	for _, w := range want {
		if code == w {
			return got
		}
	}
	t.Fatalf("%s: %s %s: %d %s, want %v", a.name, method, path, code, got, want)
	return ""
}

// TestAdministrationMatchesRabbitMQ runs the same administration scenarios
// against the embedded broker and a RabbitMQ 3.10 node of its own (with the
// management plugin) and checks both give the same answers; then it moves
// definitions between the two in both directions.
func TestAdministrationMatchesRabbitMQ(t *testing.T) {
	node := startRabbitNode(t)
	rabbit := adminTarget{name: "rabbitmq", amqp: node.AMQPURL, api: node.APIURL}
	s, amqpURL, _ := startPolicyBroker(t, func(o *Options) { o.LoopbackUsers = nil })
	hs := httptest.NewServer(s.ManagementHandler())
	t.Cleanup(hs.Close)
	ours := adminTarget{name: "oslogo", amqp: amqpURL, api: hs.URL}

	t.Run("PolicyResolution", func(t *testing.T) {
		want := policyScenarioExpectations
		for _, target := range []adminTarget{ours, rabbit} {
			got := runPolicyScenarios(t, target)
			for _, k := range sortedKeys(want) {
				if got[k] != want[k] {
					t.Errorf("%s: %s: got %q, want %q", target.name, k, got[k], want[k])
				}
			}
		}
	})
	t.Run("DefinitionsFromRabbitMQ", func(t *testing.T) { definitionsFromRabbitMQ(t, node, rabbit, ours, s) })
	t.Run("DefinitionsToRabbitMQ", func(t *testing.T) { definitionsToRabbitMQ(t, rabbit, ours) })
}

func sortedKeys(m map[string]string) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

// policyScenarioExpectations are RabbitMQ 3.10.8's answers (the test
// checks the node gives them too): where a queue argument and a policy
// both set a value, the lower of message-ttl, expires, max-length,
// max-length-bytes and delivery-limit applies, and the argument's
// dead-letter-exchange, dead-letter-routing-key and (classic queues)
// overflow. A quorum queue takes the policy's overflow.
var policyScenarioExpectations = map[string]string{
	"max-length arg 5 policy 3":                           "3",
	"max-length arg 3 policy 5":                           "3",
	"max-length-bytes arg 40 policy 12":                   "3",
	"max-length-bytes arg 12 policy 40":                   "3",
	"message-ttl arg 60000 policy 200":                    "expired",
	"message-ttl arg 200 policy 60000":                    "expired",
	"expires arg 60000 policy 300":                        "deleted",
	"expires arg 300 policy 60000":                        "deleted",
	"dead-letter-exchange arg and policy":                 "arg",
	"dead-letter-exchange policy only":                    "pol",
	"dead-letter-routing-key arg and policy":              "ka",
	"dead-letter-routing-key policy only":                 "kb",
	"overflow arg reject-publish policy drop-head":        "nack m1",
	"overflow arg drop-head policy reject-publish":        "ack m2",
	"quorum overflow arg reject-publish policy drop-head": "ack m2",
	"quorum delivery-limit arg 5 policy 1":                "2 deliveries",
	"quorum delivery-limit arg 1 policy 5":                "2 deliveries",
	"existing queue, new max-length 2":                    "2 head 3",
	"policy and effective definition":                     `dlxpol {"dead-letter-exchange":"dlx.pol"}`,
}

// runPolicyScenarios sets policies, declares queues with arguments and
// observes which value is in force, through AMQP only (RabbitMQ's
// management statistics lag).
func runPolicyScenarios(t *testing.T, a adminTarget) map[string]string {
	const vh = "polres"
	a.call(t, "PUT", "/api/vhosts/"+vh, "", 201, 204)
	t.Cleanup(func() { apiCall(t, a.api, "guest", "guest", "DELETE", "/api/vhosts/"+vh, "") })
	a.call(t, "PUT", "/api/permissions/"+vh+"/guest", `{"configure":".*","write":".*","read":".*"}`, 201, 204)
	conn, err := amqp.Dial(a.amqp + vh)
	if err != nil {
		t.Fatalf("%s: %v", a.name, err)
	}
	defer conn.Close()
	out := map[string]string{}
	n := 0
	// scenario declares a queue name with args under a policy matching
	// only it.
	scenario := func(def string, args amqp.Table, quorum bool) (*amqp.Channel, string) {
		n++
		q := fmt.Sprintf("s%d", n)
		a.call(t, "PUT", "/api/policies/"+vh+"/p"+q, `{"pattern":"^`+q+`$","apply-to":"queues","definition":`+def+`}`, 201)
		ch, err := conn.Channel()
		if err != nil {
			t.Fatal(err)
		}
		if err := ch.Confirm(false); err != nil {
			t.Fatal(err)
		}
		if quorum {
			args["x-queue-type"] = "quorum"
		}
		if _, err := ch.QueueDeclare(q, quorum, false, false, false, args); err != nil {
			t.Fatalf("%s: declare %s %v: %v", a.name, q, args, err)
		}
		return ch, q
	}
	publish := func(ch *amqp.Channel, q, body string) bool {
		dc, err := ch.PublishWithDeferredConfirm("", q, false, false, amqp.Publishing{Body: []byte(body)})
		if err != nil {
			t.Fatal(err)
		}
		ok, err := dc.WaitContext(t.Context())
		if err != nil {
			t.Fatal(err)
		}
		return ok
	}
	count := func(ch *amqp.Channel, q string) int {
		qi, err := ch.QueueDeclarePassive(q, false, false, false, false, nil)
		if err != nil {
			return -1
		}
		return qi.Messages
	}
	waitFor := func(cond func() bool) bool {
		deadline := time.Now().Add(10 * time.Second)
		for !cond() {
			if time.Now().After(deadline) {
				return false
			}
			time.Sleep(50 * time.Millisecond)
		}
		return true
	}
	for _, c := range []struct{ arg, pol int }{{5, 3}, {3, 5}} {
		ch, q := scenario(fmt.Sprintf(`{"max-length":%d}`, c.pol), amqp.Table{"x-max-length": c.arg}, false)
		for i := range 10 {
			publish(ch, q, fmt.Sprint(i))
		}
		out[fmt.Sprintf("max-length arg %d policy %d", c.arg, c.pol)] = fmt.Sprint(count(ch, q))
	}
	for _, c := range []struct{ arg, pol int }{{40, 12}, {12, 40}} {
		ch, q := scenario(fmt.Sprintf(`{"max-length-bytes":%d}`, c.pol), amqp.Table{"x-max-length-bytes": c.arg}, false)
		for range 10 {
			publish(ch, q, "four")
		}
		out[fmt.Sprintf("max-length-bytes arg %d policy %d", c.arg, c.pol)] = fmt.Sprint(count(ch, q))
	}
	for _, c := range []struct{ arg, pol int }{{60000, 200}, {200, 60000}} {
		ch, q := scenario(fmt.Sprintf(`{"message-ttl":%d}`, c.pol), amqp.Table{"x-message-ttl": c.arg}, false)
		publish(ch, q, "m")
		res := "kept"
		if waitFor(func() bool { return count(ch, q) == 0 }) {
			res = "expired"
		}
		out[fmt.Sprintf("message-ttl arg %d policy %d", c.arg, c.pol)] = res
	}
	for _, c := range []struct{ arg, pol int }{{60000, 300}, {300, 60000}} {
		_, q := scenario(fmt.Sprintf(`{"expires":%d}`, c.pol), amqp.Table{"x-expires": c.arg}, false)
		// A declaration is a use that restarts the expiry: look once only,
		// well after the lower value and well before the higher.
		time.Sleep(2 * time.Second)
		res := "kept"
		ch, err := conn.Channel()
		if err != nil {
			t.Fatal(err)
		}
		if _, err := ch.QueueDeclarePassive(q, false, false, false, false, nil); err != nil {
			res = "deleted"
		} else {
			ch.Close()
		}
		out[fmt.Sprintf("expires arg %d policy %d", c.arg, c.pol)] = res
	}
	// Dead-lettering targets: two fanout exchanges and a direct one.
	setup, err := conn.Channel()
	if err != nil {
		t.Fatal(err)
	}
	for _, d := range []struct{ ex, kind, q, key string }{
		{"dlx.arg", "fanout", "res.arg", ""}, {"dlx.pol", "fanout", "res.pol", ""},
		{"dlx.direct", "direct", "res.ka", "ka"}, {"dlx.direct", "direct", "res.kb", "kb"},
	} {
		if err := setup.ExchangeDeclare(d.ex, d.kind, false, false, false, false, nil); err != nil {
			t.Fatal(err)
		}
		if _, err := setup.QueueDeclare(d.q, false, false, false, false, nil); err != nil {
			t.Fatal(err)
		}
		if err := setup.QueueBind(d.q, d.key, d.ex, false, nil); err != nil {
			t.Fatal(err)
		}
	}
	// reject publishes one message, rejects it and reports which of the
	// result queues got it.
	reject := func(ch *amqp.Channel, q string, results ...string) string {
		publish(ch, q, "dead")
		d, ok, err := ch.Get(q, false)
		if err != nil || !ok {
			t.Fatalf("%s: get %s: %v %v", a.name, q, ok, err)
		}
		if err := d.Nack(false, false); err != nil {
			t.Fatal(err)
		}
		var got string
		waitFor(func() bool {
			for _, r := range results {
				if count(setup, r) > 0 {
					got = r
					m, _, _ := setup.Get(r, true)
					_ = m
					return true
				}
			}
			return false
		})
		return got
	}
	ch, q := scenario(`{"dead-letter-exchange":"dlx.pol"}`, amqp.Table{"x-dead-letter-exchange": "dlx.arg"}, false)
	out["dead-letter-exchange arg and policy"] = strings.TrimPrefix(reject(ch, q, "res.arg", "res.pol"), "res.")
	ch, q = scenario(`{"dead-letter-exchange":"dlx.pol"}`, amqp.Table{}, false)
	out["dead-letter-exchange policy only"] = strings.TrimPrefix(reject(ch, q, "res.arg", "res.pol"), "res.")
	ch, q = scenario(`{"dead-letter-routing-key":"kb"}`, amqp.Table{"x-dead-letter-exchange": "dlx.direct", "x-dead-letter-routing-key": "ka"}, false)
	out["dead-letter-routing-key arg and policy"] = strings.TrimPrefix(reject(ch, q, "res.ka", "res.kb"), "res.")
	ch, q = scenario(`{"dead-letter-routing-key":"kb"}`, amqp.Table{"x-dead-letter-exchange": "dlx.direct"}, false)
	out["dead-letter-routing-key policy only"] = strings.TrimPrefix(reject(ch, q, "res.ka", "res.kb"), "res.")
	// Overflow: the second of two messages into a one-message queue.
	overflow := func(ch *amqp.Channel, q string) string {
		publish(ch, q, "m1")
		acked := publish(ch, q, "m2")
		d, _, _ := ch.Get(q, true)
		if acked {
			return "ack " + string(d.Body)
		}
		return "nack " + string(d.Body)
	}
	ch, q = scenario(`{"overflow":"drop-head","max-length":1}`, amqp.Table{"x-overflow": "reject-publish"}, false)
	out["overflow arg reject-publish policy drop-head"] = overflow(ch, q)
	ch, q = scenario(`{"overflow":"reject-publish","max-length":1}`, amqp.Table{"x-overflow": "drop-head"}, false)
	out["overflow arg drop-head policy reject-publish"] = overflow(ch, q)
	ch, q = scenario(`{"overflow":"drop-head","max-length":1}`, amqp.Table{"x-overflow": "reject-publish"}, true)
	out["quorum overflow arg reject-publish policy drop-head"] = overflow(ch, q)
	// Delivery limit (quorum queues): deliveries before the message is
	// dropped, rejecting with requeue each time.
	for _, c := range []struct{ arg, pol int }{{5, 1}, {1, 5}} {
		ch, q := scenario(fmt.Sprintf(`{"delivery-limit":%d}`, c.pol), amqp.Table{"x-delivery-limit": c.arg}, true)
		publish(ch, q, "m")
		deliveries := 0
		for deliveries < 20 {
			d, ok, err := ch.Get(q, false)
			if err != nil {
				t.Fatal(err)
			}
			if !ok {
				// A requeued message may take a moment to be back.
				time.Sleep(100 * time.Millisecond)
				if d, ok, _ = ch.Get(q, false); !ok {
					break
				}
			}
			deliveries++
			if err := d.Nack(false, true); err != nil {
				t.Fatal(err)
			}
		}
		out[fmt.Sprintf("quorum delivery-limit arg %d policy %d", c.arg, c.pol)] = fmt.Sprintf("%d deliveries", deliveries)
	}
	// A policy set on an existing queue with messages.
	ch, err = conn.Channel()
	if err != nil {
		t.Fatal(err)
	}
	if err := ch.Confirm(false); err != nil {
		t.Fatal(err)
	}
	if _, err := ch.QueueDeclare("existing", false, false, false, false, nil); err != nil {
		t.Fatal(err)
	}
	for i := range 5 {
		publish(ch, "existing", fmt.Sprint(i))
	}
	a.call(t, "PUT", "/api/policies/"+vh+"/pexisting", `{"pattern":"^existing$","definition":{"max-length":2}}`, 201)
	waitFor(func() bool { return count(ch, "existing") == 2 })
	d, _, _ := ch.Get("existing", true)
	out["existing queue, new max-length 2"] = fmt.Sprintf("%d head %s", count(ch, "existing")+1, d.Body)
	// What the management API shows (RabbitMQ's statistics lag: wait).
	ch, q = scenario(`{"dead-letter-exchange":"dlx.pol"}`, amqp.Table{}, false)
	_ = ch
	a.call(t, "PUT", "/api/policies/"+vh+"/dlxpol", `{"pattern":"^`+q+`$","definition":{"dead-letter-exchange":"dlx.pol"},"priority":5}`, 201)
	var shown string
	waitFor(func() bool {
		var v queuePolicyView
		body := a.call(t, "GET", "/api/queues/"+vh+"/"+url.PathEscape(q), "", 200)
		if err := json.Unmarshal([]byte(body), &v); err != nil || v.Policy == nil {
			return false
		}
		eff, _ := json.Marshal(v.Effective)
		shown = *v.Policy + " " + string(eff)
		return *v.Policy == "dlxpol"
	})
	out["policy and effective definition"] = shown
	return out
}

// setupDefinitionsSource creates, through the management API, the same
// administration on a broker: a vhost, two users (one with a sha512 hash),
// their permissions, a policy, a durable queue with arguments, a topic
// exchange and two bindings.
func setupDefinitionsSource(t *testing.T, a adminTarget, vh, prefix, sha512Hash string) {
	a.call(t, "PUT", "/api/vhosts/"+vh, "", 201)
	// The user who creates a vhost through the API has every permission
	// there already, in RabbitMQ and here.
	a.call(t, "PUT", "/api/permissions/"+vh+"/guest", `{"configure":".*","write":".*","read":".*"}`, 204)
	a.call(t, "PUT", "/api/users/"+prefix+"256", `{"password":"`+prefix+`256pw","tags":"management"}`, 201)
	a.call(t, "PUT", "/api/users/"+prefix+"512", `{"password_hash":"`+sha512Hash+`","hashing_algorithm":"rabbit_password_hashing_sha512","tags":""}`, 201)
	a.call(t, "PUT", "/api/permissions/"+vh+"/"+prefix+"256", `{"configure":".*","write":".*","read":".*"}`, 201)
	a.call(t, "PUT", "/api/permissions/"+vh+"/"+prefix+"512", `{"configure":"^c","write":".*","read":"^r"}`, 201)
	a.call(t, "PUT", "/api/policies/"+vh+"/lim", `{"pattern":"^dq","apply-to":"queues","definition":{"max-length":5,"message-ttl":60000},"priority":2}`, 201)
	a.call(t, "PUT", "/api/queues/"+vh+"/dq", `{"durable":true,"arguments":{"x-max-length":10,"x-dead-letter-exchange":"dx"}}`, 201)
	a.call(t, "PUT", "/api/exchanges/"+vh+"/dx", `{"type":"topic","durable":true}`, 201)
	a.call(t, "PUT", "/api/exchanges/"+vh+"/dx2", `{"type":"fanout","durable":true}`, 201)
	a.call(t, "POST", "/api/bindings/"+vh+"/e/dx/q/dq", `{"routing_key":"a.*","arguments":{"x-k":"v"}}`, 201)
	a.call(t, "POST", "/api/bindings/"+vh+"/e/dx/e/dx2", `{"routing_key":"b"}`, 201)
}

// checkDefinitionsLoaded checks, on the broker that imported them, that the
// users log in with their passwords and the rest is in place.
func checkDefinitionsLoaded(t *testing.T, a adminTarget, vh, prefix, sha512Password string) {
	host := strings.TrimSuffix(strings.TrimPrefix(a.amqp, "amqp://guest:guest@"), "/")
	for _, u := range []struct{ user, pass string }{{prefix + "256", prefix + "256pw"}, {prefix + "512", sha512Password}} {
		c, err := amqp.Dial("amqp://" + u.user + ":" + u.pass + "@" + host + "/" + vh)
		if err != nil {
			t.Errorf("%s: %s logs in to %s: %v", a.name, u.user, vh, err)
			continue
		}
		c.Close()
		if c, err := amqp.Dial("amqp://" + u.user + ":wrong@" + host + "/" + vh); err == nil {
			c.Close()
			t.Errorf("%s: %s logs in with a wrong password", a.name, u.user)
		}
	}
	var perm PermissionInfo
	if err := json.Unmarshal([]byte(a.call(t, "GET", "/api/permissions/"+vh+"/"+prefix+"512", "", 200)), &perm); err != nil ||
		perm.Configure != "^c" || perm.Read != "^r" {
		t.Errorf("%s: permissions of %s512: %+v %v", a.name, prefix, perm, err)
	}
	var pol Policy
	if err := json.Unmarshal([]byte(a.call(t, "GET", "/api/policies/"+vh+"/lim", "", 200)), &pol); err != nil ||
		pol.Pattern != "^dq" || pol.Priority != 2 || pol.ApplyTo != "queues" || fmt.Sprint(pol.Definition) != "map[max-length:5 message-ttl:60000]" {
		t.Errorf("%s: policy: %+v %v", a.name, pol, err)
	}
	conn, err := amqp.Dial(a.amqp + vh)
	if err != nil {
		t.Fatalf("%s: %v", a.name, err)
	}
	defer conn.Close()
	ch, err := conn.Channel()
	if err != nil {
		t.Fatal(err)
	}
	// Redeclaring with the same arguments succeeds only if they were kept.
	if _, err := ch.QueueDeclare("dq", true, false, false, false, amqp.Table{"x-max-length": int64(10), "x-dead-letter-exchange": "dx"}); err != nil {
		t.Errorf("%s: dq with its arguments: %v", a.name, err)
		return
	}
	if err := ch.ExchangeDeclarePassive("dx2", "fanout", true, false, false, false, nil); err != nil {
		t.Errorf("%s: dx2: %v", a.name, err)
		return
	}
	var bs []BindingInfo
	if err := json.Unmarshal([]byte(a.call(t, "GET", "/api/bindings/"+vh, "", 200)), &bs); err != nil {
		t.Fatal(err)
	}
	var keys []string
	for _, b := range bs {
		if b.Source != "" {
			keys = append(keys, fmt.Sprintf("%s>%s:%s %v", b.Source, b.Destination, b.RoutingKey, b.Arguments))
		}
	}
	sort.Strings(keys)
	if strings.Join(keys, ", ") != "dx>dq:a.* map[x-k:v], dx>dx2:b map[]" {
		t.Errorf("%s: bindings %v", a.name, keys)
	}
}

// definitionsFromRabbitMQ: RabbitMQ's export (hashes computed by the node)
// loads into the embedded broker.
func definitionsFromRabbitMQ(t *testing.T, node *testrabbit.Node, rabbit, ours adminTarget, s *Server) {
	h := rabbitEval(t, node, `base64:encode(rabbit_password:hash(rabbit_password_hashing_sha512, <<"r512pw">>)).`)
	h = strings.TrimSuffix(strings.TrimPrefix(h, `<<"`), `">>`)
	setupDefinitionsSource(t, rabbit, "fromrmq", "r", h)
	export := rabbit.call(t, "GET", "/api/definitions", "", 200)
	ours.call(t, "POST", "/api/definitions", export, 204)
	checkDefinitionsLoaded(t, ours, "fromrmq", "r", "r512pw")
	if v := getQueuePolicy(t, ours.api, "fromrmq", "dq"); v.Policy == nil || *v.Policy != "lim" {
		t.Errorf("imported dq has no policy: %v", v)
	}
	_ = s
}

// definitionsToRabbitMQ: the embedded broker's export loads into RabbitMQ.
func definitionsToRabbitMQ(t *testing.T, rabbit, ours adminTarget) {
	setupDefinitionsSource(t, ours, "fromoslogo", "o", rabbitHashes[1].hash)
	export := ours.call(t, "GET", "/api/definitions", "", 200)
	rabbit.call(t, "POST", "/api/definitions", export, 204)
	checkDefinitionsLoaded(t, rabbit, "fromoslogo", "o", rabbitHashes[1].password)

	// A file from RabbitMQ 3.5: an MD5 hash without hashing_algorithm.
	old := `{"rabbit_version":"3.5.7","users":[{"name":"old35","password_hash":"` + rabbitHashes[2].hash + `","tags":""}],` +
		`"permissions":[{"user":"old35","vhost":"fromoslogo","configure":".*","write":".*","read":".*"}]}`
	for _, a := range []adminTarget{rabbit, ours} {
		a.call(t, "POST", "/api/definitions", old, 204)
		host := strings.TrimSuffix(strings.TrimPrefix(a.amqp, "amqp://guest:guest@"), "/")
		c, err := amqp.Dial("amqp://old35:" + rabbitHashes[2].password + "@" + host + "/fromoslogo")
		if err != nil {
			t.Errorf("%s: user of a 3.5 file: %v", a.name, err)
			continue
		}
		c.Close()
	}
}

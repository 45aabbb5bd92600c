package broker

import (
	"net"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/oslogo/oslogo/broker/internal/amqp091"
)

func TestTopicTrie(t *testing.T) {
	keys := []string{"a.b.c", "a.*.c", "a.#", "#", "*.b.*", "a.b", "#.c", "a.#.c", "*"}
	cases := map[string][]string{
		"a.b.c":   {"#", "#.c", "*.b.*", "a.#", "a.#.c", "a.*.c", "a.b.c"},
		"a.b":     {"#", "a.#", "a.b"},
		"a":       {"#", "*", "a.#"},
		"x.y.z.c": {"#", "#.c"},
		"a.c":     {"#", "#.c", "a.#", "a.#.c"},
		"":        {"#"},
	}
	root := &topicNode{}
	bs := map[string]*binding{}
	for _, k := range keys {
		bs[k] = &binding{key: k}
		root.insert(k, bs[k])
	}
	for rk, want := range cases {
		seen := map[string]bool{}
		root.match(rk, func(b *binding) { seen[b.key] = true })
		var got []string
		for k := range seen {
			got = append(got, k)
		}
		sort.Strings(got)
		if len(got) != len(want) {
			t.Errorf("%q: got %v want %v", rk, got, want)
			continue
		}
		for i := range got {
			if got[i] != want[i] {
				t.Errorf("%q: got %v want %v", rk, got, want)
				break
			}
		}
	}
	for _, k := range keys {
		root.remove(k, bs[k])
	}
	if len(root.children) != 0 {
		t.Fatalf("trie not pruned: %v", root.children)
	}
}

func TestHeadersMatch(t *testing.T) {
	h := amqp091.Table{"a": int32(1), "b": "x"}
	cases := []struct {
		args amqp091.Table
		want bool
	}{
		{amqp091.Table{"x-match": "all", "a": int64(1), "b": "x"}, true},
		{amqp091.Table{"x-match": "all", "a": int64(1), "c": "x"}, false},
		{amqp091.Table{"x-match": "any", "a": int64(2), "b": "x"}, true},
		{amqp091.Table{"x-match": "any", "a": int64(2)}, false},
		{amqp091.Table{"a": nil}, true},
	}
	for i, c := range cases {
		if got := headersMatch(c.args, h); got != c.want {
			t.Errorf("case %d: got %v", i, got)
		}
	}
}

func TestScanProps(t *testing.T) {
	p := amqp091.BasicProperties{Flags: amqp091.FlagContentType | amqp091.FlagHeaders | amqp091.FlagDeliveryMode | amqp091.FlagPriority | amqp091.FlagReplyTo | amqp091.FlagExpiration,
		ContentType: "text/plain", Headers: amqp091.Table{"k": "v"}, DeliveryMode: 2, Priority: 7, ReplyTo: "r", Expiration: "1500"}
	persistent, prio, ttl, ok := scanProps(p.Append(nil))
	if !ok || !persistent || prio != 7 || ttl != 1500 {
		t.Fatalf("got %v %v %v %v", persistent, prio, ttl, ok)
	}
	if _, _, _, ok := scanProps([]byte{0xff}); ok {
		t.Fatal("short props accepted")
	}
}

func TestAuthHelpers(t *testing.T) {
	if !isLoopback(&net.TCPAddr{IP: net.ParseIP("127.0.0.1")}) || !isLoopback(&net.TCPAddr{IP: net.ParseIP("::1")}) {
		t.Fatal("loopback not recognised")
	}
	if isLoopback(&net.TCPAddr{IP: net.ParseIP("10.1.2.3")}) {
		t.Fatal("remote address counted as loopback")
	}
	a, _ := net.Pipe()
	defer a.Close()
	if !isLoopback(a.RemoteAddr()) {
		t.Fatal("in-process pipe is local")
	}
	if u, p, ok := parseAuth("PLAIN", "\x00guest\x00pw"); !ok || u != "guest" || p != "pw" {
		t.Fatalf("PLAIN: %q %q %v", u, p, ok)
	}
	resp := amqp091.AppendTable(nil, amqp091.Table{"LOGIN": "nova", "PASSWORD": "x"})[4:]
	if u, p, ok := parseAuth("AMQPLAIN", string(resp)); !ok || u != "nova" || p != "x" {
		t.Fatalf("AMQPLAIN: %q %q %v", u, p, ok)
	}
	if _, _, ok := parseAuth("EXTERNAL", ""); ok {
		t.Fatal("unsupported mechanism accepted")
	}
	// RabbitMQ's hash format: base64(salt + sha256(salt + password)).
	u := newUser(User{Name: "n", PasswordHash: HashPassword("secret")}, false)
	if !u.checkPassword("secret") || u.checkPassword("Secret") {
		t.Fatal("password check")
	}
	if u := newUser(User{Name: "n", Password: "guest"}, true); !u.loopback || !u.checkPassword("guest") {
		t.Fatal("plain password user")
	}
}

// TestTopicManyHashesStaysPolynomial: a binding key of eight "#" words
// against a 40-word routing key is matched once per (node, position)
// state; a walk that tries every split took 78 s for one publish, under the
// vhost's lock (found by FuzzTopicMatch). The 10 s bound only detects that
// blow-up; the match takes milliseconds.
func TestTopicManyHashesStaysPolynomial(t *testing.T) {
	root := &topicNode{}
	b := &binding{key: "#.#.#.#.#.#.#.#.x"}
	root.insert(b.key, b)
	other := &binding{key: "#.#.#.#.#.#.#.#"}
	root.insert(other.key, other)
	rk := strings.Repeat("w.", 39) + "y" // 40 words, no "x": every split fails for b
	done := make(chan map[*binding]bool, 1)
	go func() {
		got := map[*binding]bool{}
		root.match(rk, func(b *binding) { got[b] = true })
		done <- got
	}()
	select {
	case got := <-done:
		if got[b] || !got[other] {
			t.Fatalf("matched %v: want only %q", got, other.key)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("one topic match still running after 10 s")
	}
}

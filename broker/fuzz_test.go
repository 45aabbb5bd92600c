package broker

import (
	"errors"
	"io"
	"net"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/oslogo/oslogo/broker/internal/amqp091"
)

// fuzzFrames turns fuzz input into well-delimited frames, so the fuzzer
// explores method arguments, content and channel state rather than frame
// delimiting (TestBadInput covers that): each frame is
// [type][channel][payload length][payload], a frame type of 1 (method),
// 2 (header), 3 (body) or 8 (heartbeat) picked by the type byte.
func fuzzFrames(data []byte) []byte {
	var out []byte
	for len(data) >= 3 {
		typ := [4]byte{amqp091.FrameMethod, amqp091.FrameHeader, amqp091.FrameBody, amqp091.FrameHeartbeat}[data[0]%4]
		ch := uint16(data[1] % 4)
		n := int(data[2])
		data = data[3:]
		n = min(n, len(data))
		payload := data[:n]
		data = data[n:]
		out = append(out, typ, byte(ch>>8), byte(ch))
		out = amqp091.AppendLong(out, uint32(len(payload)))
		out = append(out, payload...)
		out = append(out, amqp091.FrameEnd)
	}
	return out
}

// fuzzSeed encodes frames in fuzzFrames' input format.
func fuzzSeed(frames ...[]byte) []byte {
	var out []byte
	for _, f := range frames {
		typ := map[byte]byte{amqp091.FrameMethod: 0, amqp091.FrameHeader: 1, amqp091.FrameBody: 2, amqp091.FrameHeartbeat: 3}[f[0]]
		payload := f[7 : len(f)-1]
		out = append(out, typ, f[2], byte(len(payload)))
		out = append(out, payload...)
	}
	return out
}

func methodFrame(ch uint16, m amqp091.Method) []byte { return amqp091.AppendMethodFrame(nil, ch, m) }

// FuzzConnection sends arbitrary frames on an open connection, then
// connection.close: the broker must answer (close-ok, or a connection.close
// of its own for a protocol error) within seconds, never crash, and keep
// accepting connections.
func FuzzConnection(f *testing.F) {
	props := amqp091.AppendShort(nil, 0)
	f.Add(fuzzSeed(
		methodFrame(1, &amqp091.ChannelOpen{}),
		methodFrame(1, &amqp091.QueueDeclare{Queue: "fz"}),
		methodFrame(1, &amqp091.ConfirmSelect{}),
		methodFrame(1, &amqp091.BasicPublish{RoutingKey: "fz"}),
		amqp091.AppendHeaderFrame(nil, 1, amqp091.ClassBasic, 3, props),
		amqp091.AppendBodyFrames(nil, 1, []byte("abc"), 4096),
		methodFrame(1, &amqp091.BasicConsume{Queue: "fz"}),
		methodFrame(1, &amqp091.BasicAck{DeliveryTag: 1}),
	))
	f.Add(fuzzSeed(
		methodFrame(2, &amqp091.ChannelOpen{}),
		methodFrame(2, &amqp091.ExchangeDeclare{Exchange: "fx", Type: "topic"}),
		methodFrame(2, &amqp091.QueueDeclare{Queue: "", Exclusive: true}),
		methodFrame(2, &amqp091.QueueBind{Queue: "", Exchange: "fx", RoutingKey: "a.#"}),
		methodFrame(2, &amqp091.TxSelect{}),
		methodFrame(2, &amqp091.BasicPublish{Exchange: "fx", RoutingKey: "a.b", Mandatory: true}),
		amqp091.AppendHeaderFrame(nil, 2, amqp091.ClassBasic, 0, props),
		methodFrame(2, &amqp091.TxCommit{}),
		methodFrame(2, &amqp091.BasicGet{Queue: ""}),
		methodFrame(2, &amqp091.BasicNack{DeliveryTag: 1, Requeue: true}),
		methodFrame(2, &amqp091.QueuePurge{Queue: ""}),
		methodFrame(2, &amqp091.ExchangeDelete{Exchange: "fx"}),
		methodFrame(2, &amqp091.ChannelClose{}),
	))
	// A publish whose content never comes: a protocol error (505).
	f.Add(fuzzSeed(
		methodFrame(1, &amqp091.ChannelOpen{}),
		methodFrame(1, &amqp091.BasicPublish{RoutingKey: "x"}),
		methodFrame(1, &amqp091.BasicQos{PrefetchCount: 1}),
	))
	f.Add(fuzzSeed(
		methodFrame(3, &amqp091.ChannelOpen{}),
		methodFrame(3, &amqp091.BasicQos{PrefetchCount: 1}),
		methodFrame(3, &amqp091.BasicPublish{RoutingKey: "nowhere"}),
		amqp091.AppendHeaderFrame(nil, 3, amqp091.ClassBasic, 0, props),
		methodFrame(3, &amqp091.BasicRecover{Requeue: true}),
		amqp091.AppendHeartbeat(nil),
	))
	s, _ := startBroker(f, nil)
	f.Fuzz(func(t *testing.T, data []byte) {
		r := rawDial(t, s)
		_ = r.nc.SetDeadline(time.Now().Add(5 * time.Second))
		// A write may fail once the broker has closed the connection on a
		// protocol error; the close exchange below still has to finish.
		_, _ = r.nc.Write(fuzzFrames(data))
		_, _ = r.nc.Write(amqp091.AppendMethodFrame(nil, 0, &amqp091.ConnectionClose{ReplyCode: 200}))
		for {
			fr, err := r.fr.ReadFrame()
			if err != nil {
				if errors.Is(err, os.ErrDeadlineExceeded) {
					t.Fatal("no close-ok and no connection.close within 5 s")
				}
				var ne net.Error
				if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) || errors.As(err, &ne) || errors.Is(err, net.ErrClosed) {
					break // closed by the broker after its connection.close
				}
				t.Fatalf("reading the broker's frames: %v", err)
			}
			if fr.Type != amqp091.FrameMethod || fr.Channel != 0 {
				continue
			}
			c, m, _, err := amqp091.ParseMethodFrame(fr.Payload)
			if err != nil {
				t.Fatalf("broker sent a malformed method frame: %v", err)
			}
			if c == 10 && (m == 51 || m == 50) { // close-ok, or its own close
				break
			}
		}
		_ = r.nc.Close()
	})
}

// topicWords splits a topic key into words. RabbitMQ 3.10 reads "" as no
// words at all (routing key "" matches "", "#" and "#.#", not "*").
func topicWords(s string) []string {
	if s == "" {
		return nil
	}
	return strings.Split(s, ".")
}

// refTopicMatch is the reference the trie is checked against: a dynamic
// programme over (pattern word, routing key word), with "*" one word and
// "#" zero or more.
func refTopicMatch(pattern, rk string) bool {
	p, w := topicWords(pattern), topicWords(rk)
	// m[i][j]: p[i:] matches w[j:].
	m := make([][]bool, len(p)+1)
	for i := range m {
		m[i] = make([]bool, len(w)+1)
	}
	m[len(p)][len(w)] = true
	for i := len(p) - 1; i >= 0; i-- {
		for j := len(w); j >= 0; j-- {
			switch {
			case p[i] == "#":
				m[i][j] = m[i+1][j] || j < len(w) && m[i][j+1]
			case j < len(w):
				m[i][j] = (p[i] == "*" || p[i] == w[j]) && m[i+1][j+1]
			}
		}
	}
	return m[0][0]
}

// TestTopicMatchesRabbitMQ: what RabbitMQ 3.10.8 routed, observed with one
// queue per binding key on a topic exchange of the local node, for every
// routing key below; the trie and the reference both give the same.
func TestTopicMatchesRabbitMQ(t *testing.T) {
	keys := []string{"", "*", "#", "#.*", "*.#", "*.*", "a.*", "a.#", "#.a", ".", "a.", "#.#", "a..b", "a.*.b", "a.#.b", "#.#.a", "*.*.*", "*.", ".*", "#.", ".#", "#..#"}
	observed := map[string][]string{
		"a":       {"*", "#", "#.*", "*.#", "a.#", "#.a", "#.#", "#.#.a"},
		".":       {"#", "#.*", "*.#", "*.*", ".", "#.#", "*.", ".*", "#.", ".#", "#..#"},
		"a.":      {"#", "#.*", "*.#", "*.*", "a.*", "a.#", "a.", "#.#", "*.", "#.", "#..#"},
		".a":      {"#", "#.*", "*.#", "*.*", "#.a", "#.#", "#.#.a", ".*", ".#", "#..#"},
		"a..b":    {"#", "#.*", "*.#", "a.#", "#.#", "a..b", "a.*.b", "a.#.b", "*.*.*", "#..#"},
		"a.b":     {"#", "#.*", "*.#", "*.*", "a.*", "a.#", "#.#", "a.#.b"},
		"..":      {"#", "#.*", "*.#", "#.#", "*.*.*", "#.", ".#", "#..#"},
		"a.b.c.a": {"#", "#.*", "*.#", "a.#", "#.a", "#.#", "#.#.a"},
		"#":       {"*", "#", "#.*", "*.#", "#.#"},
		"*":       {"*", "#", "#.*", "*.#", "#.#"},
		"":        {"", "#", "#.#"},
	}
	root := &topicNode{}
	for _, k := range keys {
		root.insert(k, &binding{key: k})
	}
	for rk, want := range observed {
		got := map[string]bool{}
		root.match(rk, func(b *binding) { got[b.key] = true })
		wantSet := map[string]bool{}
		for _, k := range want {
			wantSet[k] = true
		}
		for _, k := range keys {
			if got[k] != wantSet[k] {
				t.Errorf("routing key %q, binding %q: broker %v, RabbitMQ %v", rk, k, got[k], wantSet[k])
			}
			if ref := refTopicMatch(k, rk); ref != wantSet[k] {
				t.Errorf("routing key %q, binding %q: reference %v, RabbitMQ %v", rk, k, ref, wantSet[k])
			}
		}
	}
}

// FuzzTopicMatch binds up to 8 keys (one per line of keys) in a topic
// trie and routes rk: the bindings visited are exactly those the reference
// matches, before and after removing every other binding, and removing
// them all leaves an empty trie. Keys have at most 3 "#" words: the trie
// backtracks over every way "#" words can split the routing key (as
// RabbitMQ's does), which is exponential in their number.
func FuzzTopicMatch(f *testing.F) {
	f.Add("notifications.info\nnotifications.*\n#\n*.error\nnova.#.error", "notifications.info")
	f.Add("a.b.c\na.*.c\na.#\n#\n*.b.*\na.b\n#.c\na.#.c\n*", "a.b.c")
	f.Add("#.#\n#..#\n.\n*.\n\n#", "..")
	f.Add("compute\ncompute.host1\ncompute_fanout\ncompute.*", "compute.host1")
	f.Add("a.#.#.b\n#.a.#\na.*.#", "a.x.a.y.b")
	f.Fuzz(func(t *testing.T, keyList, rk string) {
		if len(rk) > 255 {
			return
		}
		keys := strings.Split(keyList, "\n")
		if len(keys) > 8 {
			keys = keys[:8]
		}
		root := &topicNode{}
		var bs []*binding
		for _, k := range keys {
			if len(k) > 255 || strings.Count("."+k+".", ".#.") > 3 {
				continue
			}
			b := &binding{key: k}
			bs = append(bs, b)
			root.insert(k, b)
		}
		check := func(live []*binding) {
			t.Helper()
			got := map[*binding]bool{}
			root.match(rk, func(b *binding) { got[b] = true })
			isLive := map[*binding]bool{}
			for _, b := range live {
				isLive[b] = true
				if want := refTopicMatch(b.key, rk); got[b] != want {
					t.Fatalf("binding %q, routing key %q: trie %v, reference %v", b.key, rk, got[b], want)
				}
			}
			for b := range got {
				if !isLive[b] {
					t.Fatalf("routing key %q reached removed binding %q", rk, b.key)
				}
			}
		}
		check(bs)
		var kept []*binding
		for i, b := range bs {
			if i%2 == 0 {
				root.remove(b.key, b)
			} else {
				kept = append(kept, b)
			}
		}
		check(kept)
		for _, b := range kept {
			root.remove(b.key, b)
		}
		if len(root.children) != 0 || len(root.bindings) != 0 {
			t.Fatalf("trie not empty after removing every binding: %d children", len(root.children))
		}
	})
}

// TestNewPermissionPatternsCompileAsUsed: New validates a permission
// pattern exactly as the broker compiles it, so what it accepts never
// panics later (999 nested groups compile; 1,001 are past regexp's
// nesting limit and are refused with an error, not a panic). Seen reading
// the code FuzzBrokerFile drives; its corpus keeps the case.
func TestNewPermissionPatternsCompileAsUsed(t *testing.T) {
	nested := func(n int) string { return strings.Repeat("(", n) + "a" + strings.Repeat(")", n) }
	for _, tc := range []struct {
		pattern string
		ok      bool
	}{{nested(999), true}, {nested(1001), false}, {"", true}, {"(", false}} {
		for _, p := range []Permission{{Configure: tc.pattern, Write: ".*", Read: ".*"}, {Configure: ".*", Write: ".*", Read: tc.pattern}} {
			opts := DefaultOptions()
			opts.Users = []User{{Name: "u", Password: "p", Permissions: map[string]Permission{"/": p}}}
			func() {
				defer func() {
					if r := recover(); r != nil {
						t.Fatalf("New panicked on %.20q: %.80v", tc.pattern, r)
					}
				}()
				if _, err := New(opts); (err == nil) != tc.ok {
					t.Errorf("pattern %.20q (%d bytes): New error %v, want accepted %v", tc.pattern, len(tc.pattern), err, tc.ok)
				}
			}()
		}
	}
}

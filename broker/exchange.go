package broker

import (
	"fmt"
	"sort"
	"strings"

	"github.com/oslogo/oslogo/broker/internal/amqp091"
)

// Exchange types.
const (
	kindDirect  = "direct"
	kindFanout  = "fanout"
	kindTopic   = "topic"
	kindHeaders = "headers"
)

type exchange struct {
	vh         *vhost
	name       string
	kind       string
	durable    bool
	autoDelete bool
	internal   bool
	args       amqp091.Table
	altName    string // alternate-exchange

	// Bindings, guarded by vh.mu.
	bindings []*binding
	direct   map[string][]*binding
	topic    *topicNode

	// stats count publish_in and publish_out (stats.go).
	stats atomicCounts
}

// binding routes from src to a queue or, for exchange-to-exchange
// bindings, another exchange.
type binding struct {
	src     *exchange
	q       *queue
	dst     *exchange
	key     string
	args    amqp091.Table
	argsKey string
}

func (b *binding) same(o *binding) bool {
	return b.q == o.q && b.dst == o.dst && b.key == o.key && b.argsKey == o.argsKey
}

// tableKey renders a table canonically so bindings with equal arguments
// compare equal.
func tableKey(t amqp091.Table) string {
	if len(t) == 0 {
		return ""
	}
	keys := make([]string, 0, len(t))
	for k := range t {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var b strings.Builder
	for _, k := range keys {
		fmt.Fprintf(&b, "%q=%#v;", k, t[k])
	}
	return b.String()
}

func validKind(k string) bool {
	switch k {
	case kindDirect, kindFanout, kindTopic, kindHeaders:
		return true
	}
	return false
}

func newExchange(vh *vhost, name, kind string, durable, autoDelete, internal bool, args amqp091.Table) *exchange {
	e := &exchange{vh: vh, name: name, kind: kind, durable: durable, autoDelete: autoDelete, internal: internal, args: args}
	if ae, ok := args["alternate-exchange"].(string); ok {
		e.altName = ae
	}
	switch kind {
	case kindDirect:
		e.direct = map[string][]*binding{}
	case kindTopic:
		e.topic = &topicNode{}
	}
	return e
}

// addBinding adds b unless an equal binding exists; it reports whether it
// added one. Caller holds vh.mu for writing.
func (e *exchange) addBinding(b *binding) bool {
	for _, o := range e.bindings {
		if o.same(b) {
			return false
		}
	}
	e.bindings = append(e.bindings, b)
	switch e.kind {
	case kindDirect:
		e.direct[b.key] = append(e.direct[b.key], b)
	case kindTopic:
		e.topic.insert(b.key, b)
	}
	return true
}

// removeBinding removes the binding equal to b, reporting whether it
// existed. Caller holds vh.mu for writing.
func (e *exchange) removeBinding(b *binding) bool {
	for i, o := range e.bindings {
		if !o.same(b) {
			continue
		}
		e.bindings = append(e.bindings[:i], e.bindings[i+1:]...)
		switch e.kind {
		case kindDirect:
			e.direct[o.key] = removeB(e.direct[o.key], o)
			if len(e.direct[o.key]) == 0 {
				delete(e.direct, o.key)
			}
		case kindTopic:
			e.topic.remove(o.key, o)
		}
		return true
	}
	return false
}

func removeB(list []*binding, b *binding) []*binding {
	for i, o := range list {
		if o == b {
			return append(list[:i:i], list[i+1:]...)
		}
	}
	return list
}

// routeInto appends the queues a message published to e reaches to out.
// headers is only consulted by headers exchanges. As in RabbitMQ
// (rabbit_exchange:route1), each exchange is visited at most once per
// publish, so exchange-to-exchange cycles cost one visit per exchange and
// each queue receives the message once. An exchange whose own bindings
// match nothing passes the message to its alternate exchange. Caller holds
// e.vh.mu.
func (e *exchange) routeInto(rk string, headers func() amqp091.Table, out *routeResult) {
	out.origin = e
	out.seen, out.seenSet, out.pending = out.seen[:0], nil, out.pending[:0]
	e.routeOwn(rk, headers, out)
	for len(out.pending) > 0 {
		x := out.pending[len(out.pending)-1]
		out.pending = out.pending[:len(out.pending)-1]
		x.routeOwn(rk, headers, out)
	}
}

// routeOwn matches e's own bindings: queues go to out, exchanges not yet
// seen to out.pending.
func (e *exchange) routeOwn(rk string, headers func() amqp091.Table, out *routeResult) {
	out.visits++
	matched := false
	visit := func(b *binding) {
		matched = true
		if b.q != nil {
			out.add(b.q)
		} else if b.dst != nil {
			out.addExchange(b.dst)
		}
	}
	switch e.kind {
	case kindDirect:
		for _, b := range e.direct[rk] {
			visit(b)
		}
	case kindFanout:
		for _, b := range e.bindings {
			visit(b)
		}
	case kindTopic:
		e.topic.match(rk, visit)
	case kindHeaders:
		out.usedHeaders = true
		h := headers()
		for _, b := range e.bindings {
			if headersMatch(b.args, h) {
				visit(b)
			}
		}
	}
	if !matched && e.altName != "" {
		if ae := e.vh.exchanges[e.altName]; ae != nil {
			out.addExchange(ae)
		}
	}
}

// routeResult collects destination queues without duplicates, and the
// exchanges seen on the way.
type routeResult struct {
	queues []*queue
	set    map[*queue]struct{}

	origin  *exchange   // the exchange published to
	seen    []*exchange // other exchanges reached, each once
	seenSet map[*exchange]struct{}
	pending []*exchange // seen but not yet visited
	visits  int         // exchanges visited (each at most once)
	// usedHeaders is set when a headers exchange was consulted: the result
	// then depends on the message, not only on exchange and routing key.
	usedHeaders bool
}

// addExchange queues x for a visit unless this publish has reached it
// before. Few exchanges are searched in a slice, more in a map.
func (r *routeResult) addExchange(x *exchange) {
	if x == r.origin {
		return
	}
	if r.seenSet == nil {
		for _, o := range r.seen {
			if o == x {
				return
			}
		}
		if len(r.seen) < 16 {
			r.seen = append(r.seen, x)
			r.pending = append(r.pending, x)
			return
		}
		r.seenSet = make(map[*exchange]struct{}, 32)
		for _, o := range r.seen {
			r.seenSet[o] = struct{}{}
		}
	}
	if _, ok := r.seenSet[x]; ok {
		return
	}
	r.seenSet[x] = struct{}{}
	r.pending = append(r.pending, x)
}

func (r *routeResult) add(q *queue) {
	if len(r.queues) < 16 {
		for _, o := range r.queues {
			if o == q {
				return
			}
		}
		r.queues = append(r.queues, q)
		return
	}
	if r.set == nil {
		r.set = make(map[*queue]struct{}, 32)
		for _, o := range r.queues {
			r.set[o] = struct{}{}
		}
	}
	if _, ok := r.set[q]; ok {
		return
	}
	r.set[q] = struct{}{}
	r.queues = append(r.queues, q)
}

func headersMatch(args, h amqp091.Table) bool {
	mode, _ := args["x-match"].(string)
	any := mode == "any" || mode == "any-with-x"
	withX := strings.HasSuffix(mode, "-with-x")
	n := 0
	for k, want := range args {
		if !withX && strings.HasPrefix(k, "x-") {
			continue
		}
		n++
		got, ok := h[k]
		match := ok && (want == nil || valuesEqual(want, got))
		if any && match {
			return true
		}
		if !any && !match {
			return false
		}
	}
	return !any
}

func valuesEqual(a, b any) bool {
	if ai, ok := asInt(a); ok {
		bi, ok := asInt(b)
		return ok && ai == bi
	}
	return fmt.Sprint(a) == fmt.Sprint(b)
}

func asInt(v any) (int64, bool) {
	switch v := v.(type) {
	case int8:
		return int64(v), true
	case uint8:
		return int64(v), true
	case int16:
		return int64(v), true
	case uint16:
		return int64(v), true
	case int32:
		return int64(v), true
	case uint32:
		return int64(v), true
	case int64:
		return v, true
	case int:
		return int64(v), true
	case uint64:
		return int64(v), true
	}
	return 0, false
}

// topicNode is a trie over the dot-separated words of binding keys; "*"
// and "#" are ordinary children with special matching.
type topicNode struct {
	children map[string]*topicNode
	bindings []*binding
}

func (n *topicNode) insert(key string, b *binding) {
	for _, w := range topicKeyWords(key) {
		if n.children == nil {
			n.children = map[string]*topicNode{}
		}
		c := n.children[w]
		if c == nil {
			c = &topicNode{}
			n.children[w] = c
		}
		n = c
	}
	n.bindings = append(n.bindings, b)
}

func (n *topicNode) remove(key string, b *binding) {
	words := topicKeyWords(key)
	path := []*topicNode{n}
	for _, w := range words {
		n = n.children[w]
		if n == nil {
			return
		}
		path = append(path, n)
	}
	n.bindings = removeB(n.bindings, b)
	// Prune empty nodes bottom-up.
	for i := len(words) - 1; i >= 0; i-- {
		c := path[i+1]
		if len(c.bindings) > 0 || len(c.children) > 0 {
			break
		}
		delete(path[i].children, words[i])
	}
}

// topicKeyWords splits a binding key into words. As in RabbitMQ, "" is no
// words at all: it matches routing key "" only (and "#" matches both).
func topicKeyWords(key string) []string {
	if key == "" {
		return nil
	}
	return strings.Split(key, ".")
}

// match visits the bindings whose keys match rk (a binding may be visited
// more than once).
func (n *topicNode) match(rk string, visit func(*binding)) {
	m := topicMatcher{rk: rk, visit: visit}
	pos := 0
	if rk == "" {
		pos = 1 // no words: as if every word were consumed
	}
	m.match(n, pos)
}

// topicMatcher walks the trie for one routing key. Each "#" tries every
// number of words, so keys with several "#" reach the same node at the same
// position by many paths: once one "#" has been expanded, each (node,
// position) state is walked once, which keeps a match polynomial in the key
// length (a 40-word key against "#.#.#.#.#.#.#.#" took 78 s before).
type topicMatcher struct {
	rk    string
	visit func(*binding)
	seen  map[topicState]struct{} // nil until a "#" is expanded
}

type topicState struct {
	n   *topicNode
	pos int
}

// match visits from node n at byte offset pos of the routing key; pos
// beyond len(rk) means every word has been consumed.
func (m *topicMatcher) match(n *topicNode, pos int) {
	if m.seen != nil {
		st := topicState{n, pos}
		if _, done := m.seen[st]; done {
			return
		}
		m.seen[st] = struct{}{}
	}
	rk := m.rk
	if pos > len(rk) {
		for _, b := range n.bindings {
			m.visit(b)
		}
		if h := n.children["#"]; h != nil {
			m.match(h, pos)
		}
		return
	}
	if n.children == nil {
		return
	}
	end := strings.IndexByte(rk[pos:], '.')
	if end < 0 {
		end = len(rk)
	} else {
		end += pos
	}
	if c := n.children[rk[pos:end]]; c != nil {
		m.match(c, end+1)
	}
	if c := n.children["*"]; c != nil {
		m.match(c, end+1)
	}
	if h := n.children["#"]; h != nil {
		if m.seen == nil {
			m.seen = map[topicState]struct{}{}
		}
		// "#" swallows zero or more words.
		p := pos
		for {
			m.match(h, p)
			if p > len(rk) {
				break
			}
			i := strings.IndexByte(rk[p:], '.')
			if i < 0 {
				p = len(rk) + 1
			} else {
				p += i + 1
			}
		}
	}
}

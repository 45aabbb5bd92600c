package broker

import (
	"encoding/json"
	"fmt"
	"maps"
	"math"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// Policies, as RabbitMQ 3.10 has them: per vhost, a name, a pattern
// matched against queue (and exchange) names, what they apply to, a
// priority and a definition of queue settings. The highest-priority policy
// whose pattern matches a queue applies to it; where a queue argument and
// the policy set the same setting, resolvePolicy decides as RabbitMQ does.
//
// The policy set is copy-on-write: readers (queue creation) load it
// without a lock; writers (SetPolicy, ClearPolicy) hold pol.mu while they
// store a new set and re-apply it to the vhost's queues. Lock order:
// pol.mu, then a vhost's mu, then a queue's mu. A queue is created under
// its vhost's write lock and takes the set then, so a writer's re-apply
// (which lists the vhost's queues under the same lock after storing the
// new set) either sees the queue or the queue sees the new set.

// Policy is one policy in the shape of RabbitMQ's management API and
// definitions files.
type Policy struct {
	VHost      string         `json:"vhost"`
	Name       string         `json:"name"`
	Pattern    string         `json:"pattern"`
	ApplyTo    string         `json:"apply-to"`
	Definition map[string]any `json:"definition"`
	Priority   int            `json:"priority"`
}

// PolicyError is a policy RabbitMQ would refuse; Reason is RabbitMQ's
// validation text (the HTTP API answers 400 "Validation failed\n\n<Reason>\n").
type PolicyError struct {
	Reason string
}

// Error is the refusal with its reason, as RabbitMQ words it.
func (e *PolicyError) Error() string { return "broker: policy: " + e.Reason }

// policyKeysIgnored are settings RabbitMQ 3.10 accepts that have no effect
// on this single-node broker (mirroring, lazy mode, queue placement and
// version): they are kept and shown, not applied.
var policyKeysIgnored = map[string]bool{
	"ha-mode": true, "ha-params": true, "ha-sync-mode": true, "ha-sync-batch-size": true,
	"ha-promote-on-shutdown": true, "ha-promote-on-failure": true, "queue-mode": true,
	"queue-master-locator": true, "queue-version": true,
}

// policyKeysUnsupported are RabbitMQ settings that would change behaviour
// this broker does not have; they are refused rather than ignored.
var policyKeysUnsupported = map[string]bool{
	"alternate-exchange": true, "max-in-memory-length": true, "max-in-memory-bytes": true,
	"dead-letter-strategy": true, "federation-upstream": true, "federation-upstream-set": true,
	"max-age": true, "stream-max-segment-size-bytes": true, "queue-leader-locator": true,
	"initial-cluster-size": true,
}

// policyValidators check the supported settings, with RabbitMQ 3.10.8's
// texts.
var policyValidators = map[string]func(any) string{
	"message-ttl":             intAtLeast(0, "is not a valid message TTL"),
	"expires":                 intAtLeast(1, "is not a valid queue expiry"),
	"max-length":              intAtLeast(0, "is not a valid maximum length"),
	"max-length-bytes":        intAtLeast(0, "is not a valid maximum length in bytes"),
	"delivery-limit":          intAtLeast(0, "is not a valid delivery limit"),
	"dead-letter-exchange":    isString("is not a valid dead letter exchange name"),
	"dead-letter-routing-key": isString("is not a valid dead letter routing key"),
	"overflow": func(v any) string {
		switch v {
		case overflowDropHead, overflowRejectPub, overflowRejectPubDLX:
			return ""
		}
		return erlTerm(v) + " is not a valid overflow value"
	},
}

func intAtLeast(lo int64, text string) func(any) string {
	return func(v any) string {
		if i, ok := jsonInt(v); ok && i >= lo {
			return ""
		}
		return erlTerm(v) + " " + text
	}
}

func isString(text string) func(any) string {
	return func(v any) string {
		if _, ok := v.(string); ok {
			return ""
		}
		return erlTerm(v) + " " + text
	}
}

// jsonInt returns v as an integer if it is a whole JSON number.
func jsonInt(v any) (int64, bool) {
	switch n := v.(type) {
	case json.Number:
		i, err := strconv.ParseInt(string(n), 10, 64)
		return i, err == nil
	case float64:
		if n == math.Trunc(n) && math.Abs(n) < 1<<53 {
			return int64(n), true
		}
	case int:
		return int64(n), true
	case int64:
		return n, true
	}
	return 0, false
}

// erlTerm writes a JSON value as RabbitMQ's error texts print it (Erlang's
// ~p of the decoded term).
func erlTerm(v any) string {
	switch x := v.(type) {
	case nil:
		return "null"
	case bool:
		return strconv.FormatBool(x)
	case string:
		return `<<"` + x + `">>`
	case json.Number:
		return string(x)
	case float64:
		if x == math.Trunc(x) && math.Abs(x) < 1e15 {
			return strconv.FormatInt(int64(x), 10)
		}
		return strconv.FormatFloat(x, 'g', -1, 64)
	case []any:
		parts := make([]string, len(x))
		for i, e := range x {
			parts[i] = erlTerm(e)
		}
		return "[" + strings.Join(parts, ",") + "]"
	case map[string]any:
		keys := slices.Sorted(maps.Keys(x))
		parts := make([]string, len(keys))
		for i, k := range keys {
			parts[i] = erlTerm(k) + " => " + erlTerm(x[k])
		}
		return "#{" + strings.Join(parts, ",") + "}"
	}
	return fmt.Sprint(v)
}

// validatePolicy checks p as RabbitMQ 3.10.8 does and fills defaults
// (apply-to "all"). The first problem found is reported, in RabbitMQ's
// order: unknown settings, then each setting by name.
func validatePolicy(p *Policy) (*regexp.Regexp, error) {
	if p.Name == "" {
		return nil, &PolicyError{Reason: "policy name is empty"}
	}
	switch p.ApplyTo {
	case "":
		p.ApplyTo = "all"
	case "queues", "exchanges", "all":
	default:
		return nil, &PolicyError{Reason: fmt.Sprintf("apply-to '%s' unrecognised; should be 'queues', 'exchanges' or 'all'", p.ApplyTo)}
	}
	re, err := regexp.Compile(p.Pattern)
	if err != nil {
		return nil, &PolicyError{Reason: fmt.Sprintf("pattern should be regular expression but is invalid: %v", err)}
	}
	if len(p.Definition) == 0 {
		return nil, &PolicyError{Reason: "no policy provided"}
	}
	keys := slices.Sorted(maps.Keys(p.Definition))
	var unknown []string
	for _, k := range keys {
		if policyValidators[k] == nil && !policyKeysIgnored[k] && !policyKeysUnsupported[k] {
			unknown = append(unknown, "{"+erlTerm(k)+","+erlTerm(p.Definition[k])+"}")
		}
	}
	if len(unknown) > 0 {
		return nil, &PolicyError{Reason: "[" + strings.Join(unknown, ",") + "] are not recognised policy settings"}
	}
	for _, k := range keys {
		if policyKeysUnsupported[k] {
			return nil, &PolicyError{Reason: fmt.Sprintf("%s is not supported by this broker", erlTerm(k))}
		}
		if v := policyValidators[k]; v != nil {
			if msg := v(p.Definition[k]); msg != "" {
				return nil, &PolicyError{Reason: msg}
			}
		}
	}
	def := make(map[string]any, len(p.Definition))
	for k, v := range p.Definition {
		if n, ok := v.(json.Number); ok {
			if i, isInt := jsonInt(n); isInt {
				v = i
			} else if f, ferr := n.Float64(); ferr == nil {
				v = f
			}
		}
		def[k] = v
	}
	p.Definition = def
	return re, nil
}

// policy is a validated Policy.
type policy struct {
	Policy
	re *regexp.Regexp
}

func (p *policy) appliesToQueues() bool { return p.ApplyTo != "exchanges" }

// policySet is an immutable snapshot of all policies.
type policySet struct {
	// byVHost lists each vhost's policies highest priority first, equal
	// priorities by name.
	byVHost map[string][]*policy
}

// policyState is the Server's policies.
type policyState struct {
	mu  sync.Mutex // serialises writers
	set atomic.Pointer[policySet]
}

func (s *Server) policySnapshot() *policySet {
	if ps := s.pol.set.Load(); ps != nil {
		return ps
	}
	return &policySet{}
}

// match returns the policy for a queue name in vhost, or nil.
func (ps *policySet) match(vhost, name string) *policy {
	for _, p := range ps.byVHost[vhost] {
		if p.appliesToQueues() && p.re.MatchString(name) {
			return p
		}
	}
	return nil
}

// Policies returns the policies of vhost ("" for all), sorted by vhost
// and name; an unknown vhost is ErrNotFound.
func (s *Server) Policies(vhost string) ([]Policy, error) {
	if vhost != "" && s.vhost(vhost) == nil {
		return nil, ErrNotFound
	}
	ps := s.policySnapshot()
	out := []Policy{}
	for vh, list := range ps.byVHost {
		if vhost != "" && vh != vhost {
			continue
		}
		for _, p := range list {
			cp := p.Policy
			cp.Definition = maps.Clone(p.Definition)
			out = append(out, cp)
		}
	}
	sort.Slice(out, func(i, j int) bool {
		if out[i].VHost != out[j].VHost {
			return out[i].VHost < out[j].VHost
		}
		return out[i].Name < out[j].Name
	})
	return out, nil
}

// SetPolicy creates or replaces a policy and applies it at once to the
// vhost's queues; it reports whether the policy is new. An invalid policy
// is a *PolicyError; an unknown vhost ErrNotFound. With a data directory
// the policy is saved with the durable definitions.
func (s *Server) SetPolicy(p Policy) (bool, error) {
	re, err := validatePolicy(&p)
	if err != nil {
		return false, err
	}
	s.pol.mu.Lock()
	if s.vhost(p.VHost) == nil {
		s.pol.mu.Unlock()
		return false, ErrNotFound
	}
	created := s.replacePolicyLocked(p.VHost, p.Name, &policy{Policy: p, re: re})
	s.pol.mu.Unlock()
	if err := s.saveDefinitions(); err != nil {
		return created, fmt.Errorf("%w: policy set, but the definitions write failed: %w", ErrNotSaved, err)
	}
	return created, nil
}

// ClearPolicy deletes a policy; the vhost's queues are re-evaluated.
func (s *Server) ClearPolicy(vhost, name string) error {
	s.pol.mu.Lock()
	found := false
	for _, p := range s.policySnapshot().byVHost[vhost] {
		found = found || p.Name == name
	}
	if !found {
		s.pol.mu.Unlock()
		return ErrNotFound
	}
	s.replacePolicyLocked(vhost, name, nil)
	s.pol.mu.Unlock()
	if err := s.saveDefinitions(); err != nil {
		return fmt.Errorf("%w: policy cleared, but the definitions write failed: %w", ErrNotSaved, err)
	}
	return nil
}

// replacePolicyLocked stores a new set with the named policy replaced by
// np (removed when nil) and re-applies the vhost's policies to its queues.
// It reports whether the name was new.
func (s *Server) replacePolicyLocked(vhost, name string, np *policy) bool {
	old := s.policySnapshot()
	ns := &policySet{byVHost: make(map[string][]*policy, len(old.byVHost)+1)}
	for vh, list := range old.byVHost {
		if vh != vhost {
			ns.byVHost[vh] = list
		}
	}
	created := true
	var list []*policy
	for _, p := range old.byVHost[vhost] {
		if p.Name == name {
			created = false
			continue
		}
		list = append(list, p)
	}
	if np != nil {
		list = append(list, np)
	}
	sortPolicies(list)
	if len(list) > 0 {
		ns.byVHost[vhost] = list
	}
	s.pol.set.Store(ns)
	if vh := s.vhost(vhost); vh != nil {
		qs, _ := vh.snapshotLists()
		for _, q := range qs {
			q.applyPolicy(ns.match(vhost, q.name))
		}
	}
	return created
}

// sortPolicies orders a vhost's policies as match tries them: highest
// priority first, equal priorities by name.
func sortPolicies(list []*policy) {
	sort.SliceStable(list, func(i, j int) bool {
		if list[i].Priority != list[j].Priority {
			return list[i].Priority > list[j].Priority
		}
		return list[i].Name < list[j].Name
	})
}

// dropVHostPolicies forgets a deleted vhost's policies.
func (s *Server) dropVHostPolicies(vhost string) {
	s.pol.mu.Lock()
	defer s.pol.mu.Unlock()
	old := s.policySnapshot()
	if old.byVHost[vhost] == nil {
		return
	}
	ns := &policySet{byVHost: maps.Clone(old.byVHost)}
	delete(ns.byVHost, vhost)
	s.pol.set.Store(ns)
}

// queueLimits are the settings a policy may change on a queue.
type queueLimits struct {
	maxLen, maxBytes, msgTTL, deliveryLimit int64 // -1: not set
	expires                                 time.Duration
	overflow, dlx, dlrk                     string
	hasDLRK                                 bool
}

// queuePolicy is a queue's policy state, guarded by its mu.
type queuePolicy struct {
	args queueLimits // from the queue's arguments; set once at creation
	name string      // applied policy, "" for none
	def  map[string]any
	// ttl mirrors msgTTL >= 0 for publishers that read it without the
	// queue's lock (whether to read the clock).
	ttl atomic.Bool
}

func (q *queue) limitsLocked() queueLimits {
	return queueLimits{maxLen: q.maxLen, maxBytes: q.maxBytes, msgTTL: q.msgTTL, deliveryLimit: q.deliveryLimit,
		expires: q.expires, overflow: q.overflow, dlx: q.dlx, dlrk: q.dlrk, hasDLRK: q.hasDLRK}
}

func (q *queue) setLimitsLocked(l queueLimits) {
	q.maxLen, q.maxBytes, q.msgTTL, q.deliveryLimit = l.maxLen, l.maxBytes, l.msgTTL, l.deliveryLimit
	q.expires, q.overflow, q.dlx, q.dlrk, q.hasDLRK = l.expires, l.overflow, l.dlx, l.dlrk, l.hasDLRK
	q.pol.ttl.Store(l.msgTTL >= 0)
}

// initPolicy records the queue's argument settings and applies the
// vhost's matching policy; called by newQueue, under the vhost's lock,
// before the queue is visible.
func (q *queue) initPolicy() {
	q.pol.args = q.limitsLocked()
	q.pol.ttl.Store(q.msgTTL >= 0)
	if p := q.vh.srv.policySnapshot().match(q.vh.name, q.name); p != nil {
		q.mu.Lock()
		q.setLimitsLocked(resolvePolicy(q.pol.args, p.Definition, q.quorum))
		q.pol.name, q.pol.def = p.Name, p.Definition
		q.mu.Unlock()
	}
}

// mayExpire reports whether the queue has a message TTL, without its lock.
func (q *queue) mayExpire() bool { return q.pol.ttl.Load() }

// deadLetterTarget returns the queue's dead-letter exchange ("" for none,
// "\x00default" for the default exchange) and routing key.
func (q *queue) deadLetterTarget() (dlx, dlrk string, hasDLRK bool) {
	q.mu.Lock()
	defer q.mu.Unlock()
	return q.dlx, q.dlrk, q.hasDLRK
}

// applyPolicy applies p (nil: none) to an existing queue. As RabbitMQ's
// classic queues do, a lower length limit drops messages from the head
// at once under drop-head (dead-lettering them), and a new expiry restarts
// the idle timer; messages already queued keep the TTL they were given.
func (q *queue) applyPolicy(p *policy) {
	var dls []deadLetter
	q.mu.Lock()
	if q.deleted {
		q.mu.Unlock()
		return
	}
	var def map[string]any
	name := ""
	if p != nil {
		def, name = p.Definition, p.Name
	}
	old := q.limitsLocked()
	nl := resolvePolicy(q.pol.args, def, q.quorum)
	q.setLimitsLocked(nl)
	q.pol.name, q.pol.def = name, def
	if q.overflow == "" || q.overflow == overflowDropHead {
		for q.readyCount > 0 && ((q.maxLen >= 0 && int64(q.readyCount) > q.maxLen) ||
			(q.maxBytes >= 0 && q.readyBytes > q.maxBytes)) {
			e := q.popLocked(q.headLocked())
			q.forgetLocked(e)
			dls = append(dls, deadLetter{e: e, reason: "maxlen"})
		}
	}
	if nl.expires != old.expires {
		q.touchLocked()
	}
	q.mu.Unlock()
	q.vh.deadLetter(q, dls)
}

// resolvePolicy merges a policy definition into a queue's argument
// settings as RabbitMQ 3.10.8 does: for message-ttl, expires, max-length,
// max-length-bytes and delivery-limit the lower value wins; for
// dead-letter-exchange and dead-letter-routing-key the argument wins; for
// overflow the argument wins on classic queues and the policy on quorum
// queues.
func resolvePolicy(args queueLimits, def map[string]any, quorum bool) queueLimits {
	l := args
	lower := func(cur *int64, key string) {
		if v, ok := jsonInt(def[key]); ok && (*cur < 0 || v < *cur) {
			*cur = v
		}
	}
	lower(&l.maxLen, "max-length")
	lower(&l.maxBytes, "max-length-bytes")
	lower(&l.msgTTL, "message-ttl")
	lower(&l.deliveryLimit, "delivery-limit")
	if v, ok := jsonInt(def["expires"]); ok && v > 0 {
		if d := time.Duration(v) * time.Millisecond; l.expires <= 0 || d < l.expires {
			l.expires = d
		}
	}
	if o, ok := def["overflow"].(string); ok && (l.overflow == "" || quorum) {
		l.overflow = o
	}
	if d, ok := def["dead-letter-exchange"].(string); ok && l.dlx == "" {
		l.dlx = d
		if d == "" {
			l.dlx = "\x00default"
		}
	}
	if r, ok := def["dead-letter-routing-key"].(string); ok && !l.hasDLRK {
		l.dlrk, l.hasDLRK = r, true
	}
	return l
}

// queuePolicyInfo returns the applied policy's name (nil for none) and
// definition, for QueueInfo; the caller holds q.mu.
func (q *queue) queuePolicyInfoLocked() (*string, map[string]any) {
	if q.pol.name == "" {
		return nil, map[string]any{}
	}
	n := q.pol.name
	return &n, maps.Clone(q.pol.def)
}

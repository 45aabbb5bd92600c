package broker

import (
	"crypto/md5"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"regexp"
	"sort"
	"strings"

	"github.com/oslogo/oslogo/broker/internal/amqp091"
)

// Definitions export and import in RabbitMQ 3.10's format (GET and POST
// /api/definitions): what `rabbitmqctl export_definitions` writes and the
// management UI downloads, so that a file exported from RabbitMQ loads
// here and the other way round.

// Definitions is a whole broker's definitions, as RabbitMQ 3.10 exports
// them.
type Definitions struct {
	RabbitVersion    string               `json:"rabbit_version,omitempty"`
	RabbitMQVersion  string               `json:"rabbitmq_version,omitempty"`
	ProductName      string               `json:"product_name,omitempty"`
	ProductVersion   string               `json:"product_version,omitempty"`
	Users            []DefinitionUser     `json:"users"`
	VHosts           []DefinitionVHost    `json:"vhosts"`
	Permissions      []PermissionInfo     `json:"permissions"`
	TopicPermissions []map[string]any     `json:"topic_permissions"`
	Parameters       []map[string]any     `json:"parameters"`
	GlobalParameters []map[string]any     `json:"global_parameters"`
	Policies         []Policy             `json:"policies"`
	Queues           []DefinitionQueue    `json:"queues"`
	Exchanges        []DefinitionExchange `json:"exchanges"`
	Bindings         []DefinitionBinding  `json:"bindings"`
}

// DefinitionUser is a user with its password hash. Tags are a list (3.10)
// or, in older files, a comma-separated string; Password (plain) is
// accepted on import, as RabbitMQ does.
type DefinitionUser struct {
	Name             string         `json:"name"`
	Password         string         `json:"password,omitempty"`
	PasswordHash     string         `json:"password_hash"`
	HashingAlgorithm string         `json:"hashing_algorithm"`
	Tags             any            `json:"tags"`
	Limits           map[string]any `json:"limits"`
}

// DefinitionVHost is a vhost entry.
type DefinitionVHost struct {
	Name string `json:"name"`
}

// DefinitionQueue is a queue; VHost is empty in a per-vhost file.
type DefinitionQueue struct {
	Name       string         `json:"name"`
	VHost      string         `json:"vhost,omitempty"`
	Durable    bool           `json:"durable"`
	AutoDelete bool           `json:"auto_delete"`
	Arguments  map[string]any `json:"arguments"`
}

// DefinitionExchange is an exchange; VHost is empty in a per-vhost file.
type DefinitionExchange struct {
	Name       string         `json:"name"`
	VHost      string         `json:"vhost,omitempty"`
	Type       string         `json:"type"`
	Durable    bool           `json:"durable"`
	AutoDelete bool           `json:"auto_delete"`
	Internal   bool           `json:"internal"`
	Arguments  map[string]any `json:"arguments"`
}

// DefinitionBinding is a binding; VHost is empty in a per-vhost file.
type DefinitionBinding struct {
	Source          string         `json:"source"`
	VHost           string         `json:"vhost,omitempty"`
	Destination     string         `json:"destination"`
	DestinationType string         `json:"destination_type"`
	RoutingKey      string         `json:"routing_key"`
	Arguments       map[string]any `json:"arguments"`
}

// VHostDefinitions is one vhost's definitions (/api/definitions/{vhost}).
type VHostDefinitions struct {
	RabbitVersion string               `json:"rabbit_version,omitempty"`
	Parameters    []map[string]any     `json:"parameters"`
	Policies      []Policy             `json:"policies"`
	Queues        []DefinitionQueue    `json:"queues"`
	Exchanges     []DefinitionExchange `json:"exchanges"`
	Bindings      []DefinitionBinding  `json:"bindings"`
}

// ExportDefinitions returns the broker's definitions. As RabbitMQ, queues
// include non-durable ones but not exclusive ones; the default and amq.*
// exchanges and the default exchange's bindings are left out.
func (s *Server) ExportDefinitions() Definitions {
	d := Definitions{RabbitVersion: s.opts.ProductVersion, RabbitMQVersion: s.opts.ProductVersion,
		ProductName: "RabbitMQ", ProductVersion: s.opts.ProductVersion,
		Users: []DefinitionUser{}, VHosts: []DefinitionVHost{}, Permissions: orEmpty(s.Permissions()),
		TopicPermissions: []map[string]any{}, Parameters: []map[string]any{}, GlobalParameters: []map[string]any{}}
	for _, u := range s.Users() {
		d.Users = append(d.Users, DefinitionUser{Name: u.Name, PasswordHash: u.PasswordHash,
			HashingAlgorithm: u.HashingAlgorithm, Tags: u.Tags, Limits: map[string]any{}})
	}
	d.Policies, _ = s.Policies("")
	d.Queues, d.Exchanges, d.Bindings = []DefinitionQueue{}, []DefinitionExchange{}, []DefinitionBinding{}
	for _, vh := range s.vhostList() {
		d.VHosts = append(d.VHosts, DefinitionVHost{Name: vh.name})
		qs, es, bs := vh.exportTopology()
		d.Queues, d.Exchanges, d.Bindings = append(d.Queues, qs...), append(d.Exchanges, es...), append(d.Bindings, bs...)
	}
	return d
}

// ExportVHostDefinitions returns one vhost's definitions, without vhost
// fields in its queues, exchanges and bindings (as RabbitMQ).
func (s *Server) ExportVHostDefinitions(vhost string) (VHostDefinitions, error) {
	vh := s.vhost(vhost)
	if vh == nil {
		return VHostDefinitions{}, ErrNotFound
	}
	d := VHostDefinitions{RabbitVersion: s.opts.ProductVersion, Parameters: []map[string]any{}}
	d.Policies, _ = s.Policies(vhost)
	d.Queues, d.Exchanges, d.Bindings = vh.exportTopology()
	for i := range d.Queues {
		d.Queues[i].VHost = ""
	}
	for i := range d.Exchanges {
		d.Exchanges[i].VHost = ""
	}
	for i := range d.Bindings {
		d.Bindings[i].VHost = ""
	}
	return d, nil
}

func (vh *vhost) exportTopology() ([]DefinitionQueue, []DefinitionExchange, []DefinitionBinding) {
	qs, es, bs := []DefinitionQueue{}, []DefinitionExchange{}, []DefinitionBinding{}
	vh.mu.RLock()
	defer vh.mu.RUnlock()
	for _, q := range vh.queues {
		if !q.exclusive {
			qs = append(qs, DefinitionQueue{Name: q.name, VHost: vh.name, Durable: q.durable, AutoDelete: q.autoDelete, Arguments: jsonTable(q.args)})
		}
	}
	for _, e := range vh.exchanges {
		if e.name == "" || reservedName(e.name) {
			continue
		}
		es = append(es, DefinitionExchange{Name: e.name, VHost: vh.name, Type: e.kind, Durable: e.durable,
			AutoDelete: e.autoDelete, Internal: e.internal, Arguments: jsonTable(e.args)})
	}
	for _, e := range vh.exchanges {
		if e.name == "" {
			continue
		}
		for _, b := range e.bindings {
			db := DefinitionBinding{Source: e.name, VHost: vh.name, RoutingKey: b.key, Arguments: jsonTable(b.args)}
			switch {
			case b.q != nil && !b.q.exclusive:
				db.Destination, db.DestinationType = b.q.name, "queue"
			case b.dst != nil:
				db.Destination, db.DestinationType = b.dst.name, "exchange"
			default:
				continue
			}
			bs = append(bs, db)
		}
	}
	sort.Slice(qs, func(i, j int) bool { return qs[i].Name < qs[j].Name })
	sort.Slice(es, func(i, j int) bool { return es[i].Name < es[j].Name })
	sort.SliceStable(bs, func(i, j int) bool {
		a, b := bs[i], bs[j]
		if a.Source != b.Source {
			return a.Source < b.Source
		}
		if a.Destination != b.Destination {
			return a.Destination < b.Destination
		}
		return a.RoutingKey < b.RoutingKey
	})
	return qs, es, bs
}

// DefinitionsError is a definitions file the broker refuses; nothing of it
// was applied.
type DefinitionsError struct {
	Reason string
}

// Error is the refusal with its reason, as RabbitMQ words it.
func (e *DefinitionsError) Error() string { return "broker: definitions: " + e.Reason }

func defErr(format string, a ...any) error {
	return &DefinitionsError{Reason: fmt.Sprintf(format, a...)}
}

// ImportDefinitions adds d to the broker, as RabbitMQ's import does:
// users (replacing those with the same name, keeping their permissions),
// vhosts, permissions, policies, queues, exchanges and bindings; what
// exists already and is equivalent is left alone. The file is checked
// before anything is applied: a user without a usable password hash, a
// refused policy, an unknown exchange type or queue argument, topic
// permissions or runtime parameters (not supported here) give a
// *DefinitionsError and change nothing. With a data directory the result
// is saved with the durable definitions.
func (s *Server) ImportDefinitions(d Definitions) error {
	users, err := importUsers(d.Users, d.RabbitVersion)
	if err != nil {
		return err
	}
	if len(d.TopicPermissions) > 0 {
		return defErr("topic permissions are not supported by this broker")
	}
	if len(d.Parameters) > 0 {
		return defErr("runtime parameters (federation, shovel) are not supported by this broker")
	}
	newVHosts := map[string]bool{}
	for _, v := range d.VHosts {
		if v.Name == "" {
			return defErr("vhost with empty name")
		}
		newVHosts[v.Name] = true
	}
	known := func(vh string) bool { return newVHosts[vh] || s.vhost(vh) != nil }
	userKnown := map[string]bool{}
	for _, u := range users {
		userKnown[u.Name] = true
	}
	for _, p := range d.Permissions {
		if !known(p.VHost) {
			return defErr("permissions of user '%s' for unknown vhost '%s'", p.User, p.VHost)
		}
		if !userKnown[p.User] && s.lookupUser(p.User) == nil {
			return defErr("permissions for unknown user '%s'", p.User)
		}
		for _, re := range []string{p.Configure, p.Write, p.Read} {
			if _, err := regexp.Compile(re); err != nil {
				return defErr("permissions of user '%s': %v", p.User, err)
			}
		}
	}
	if err := s.checkVHostItems(known, d.Policies, d.Queues, d.Exchanges, d.Bindings); err != nil {
		return err
	}
	for _, v := range d.VHosts {
		if _, err := s.AddVHost(v.Name); err != nil {
			return err
		}
	}
	for _, u := range users {
		if _, err := s.PutUser(u); err != nil {
			return err
		}
	}
	for _, p := range d.Permissions {
		if _, err := s.SetPermission(p.User, p.VHost, Permission{Configure: p.Configure, Write: p.Write, Read: p.Read}); err != nil {
			return err
		}
	}
	return s.applyVHostItems(d.Policies, d.Queues, d.Exchanges, d.Bindings)
}

// ImportVHostDefinitions adds one vhost's policies, queues, exchanges and
// bindings to vhost, whatever vhost their entries name (as RabbitMQ's
// POST /api/definitions/{vhost}).
func (s *Server) ImportVHostDefinitions(vhost string, d VHostDefinitions) error {
	if s.vhost(vhost) == nil {
		return ErrNotFound
	}
	if len(d.Parameters) > 0 {
		return defErr("runtime parameters (federation, shovel) are not supported by this broker")
	}
	for i := range d.Policies {
		d.Policies[i].VHost = vhost
	}
	for i := range d.Queues {
		d.Queues[i].VHost = vhost
	}
	for i := range d.Exchanges {
		d.Exchanges[i].VHost = vhost
	}
	for i := range d.Bindings {
		d.Bindings[i].VHost = vhost
	}
	known := func(vh string) bool { return vh == vhost }
	if err := s.checkVHostItems(known, d.Policies, d.Queues, d.Exchanges, d.Bindings); err != nil {
		return err
	}
	return s.applyVHostItems(d.Policies, d.Queues, d.Exchanges, d.Bindings)
}

// importUsers turns definition users into Users, checking their hashes.
func importUsers(in []DefinitionUser, version string) ([]User, error) {
	var out []User
	for _, du := range in {
		if du.Name == "" {
			return nil, defErr("user with empty name")
		}
		u := User{Name: du.Name, Password: du.Password, Tags: []string{}}
		switch t := du.Tags.(type) {
		case nil:
		case string:
			for _, tag := range strings.Split(t, ",") {
				if tag = strings.TrimSpace(tag); tag != "" {
					u.Tags = append(u.Tags, tag)
				}
			}
		case []any:
			for _, x := range t {
				tag, ok := x.(string)
				if !ok {
					return nil, defErr("user '%s': tags must be strings", du.Name)
				}
				u.Tags = append(u.Tags, tag)
			}
		case []string:
			u.Tags = append(u.Tags, t...)
		default:
			return nil, defErr("user '%s': tags must be a string or a list", du.Name)
		}
		if du.Password == "" {
			if du.PasswordHash == "" {
				return nil, defErr("user '%s' has no password_hash (users without a password are not supported)", du.Name)
			}
			if du.HashingAlgorithm == "" {
				// Files from RabbitMQ before 3.6 have MD5 hashes and no
				// hashing_algorithm: RabbitMQ takes rabbit_version 3.0 to
				// 3.5 for MD5. A hash of MD5's size is one in any case.
				b, err := base64.StdEncoding.DecodeString(du.PasswordHash)
				old := strings.HasPrefix(version, "3.") && len(version) > 3 && version[2] >= '0' && version[2] <= '5' && version[3] == '.'
				if old || (err == nil && len(b) == 4+md5.Size) {
					du.HashingAlgorithm = hashMD5
				}
			}
			if _, err := decodeHashAlg(du.PasswordHash, du.HashingAlgorithm); err != nil {
				return nil, defErr("user '%s': %v", du.Name, err)
			}
			u.PasswordHash, u.HashingAlgorithm = du.PasswordHash, du.HashingAlgorithm
		}
		out = append(out, u)
	}
	return out, nil
}

// checkVHostItems validates policies, queues, exchanges and bindings
// without applying them.
func (s *Server) checkVHostItems(known func(string) bool, ps []Policy, qs []DefinitionQueue, es []DefinitionExchange, bs []DefinitionBinding) error {
	for _, p := range ps {
		if !known(p.VHost) {
			return defErr("policy '%s' for unknown vhost '%s'", p.Name, p.VHost)
		}
		cp := p
		if _, err := validatePolicy(&cp); err != nil {
			var pe *PolicyError
			if errors.As(err, &pe) {
				return defErr("policy '%s' in vhost '%s': %s", p.Name, p.VHost, pe.Reason)
			}
			return err
		}
	}
	for _, q := range qs {
		if !known(q.VHost) {
			return defErr("queue '%s' in unknown vhost '%s'", q.Name, q.VHost)
		}
		if q.Name == "" {
			return defErr("queue with empty name in vhost '%s'", q.VHost)
		}
		tmp := newVhost(s, q.VHost)
		if _, aerr := tmp.newQueue(queueSpec{name: q.Name, durable: q.Durable, autoDelet: q.AutoDelete, args: jsonToTable(q.Arguments)}, nil); aerr != nil {
			return defErr("queue '%s' in vhost '%s': %s", q.Name, q.VHost, aerr.text)
		}
	}
	for _, e := range es {
		if !known(e.VHost) {
			return defErr("exchange '%s' in unknown vhost '%s'", e.Name, e.VHost)
		}
		if !validKind(e.Type) {
			return defErr("exchange '%s' in vhost '%s': unknown exchange type '%s'", e.Name, e.VHost, e.Type)
		}
	}
	for _, b := range bs {
		if !known(b.VHost) {
			return defErr("binding from '%s' in unknown vhost '%s'", b.Source, b.VHost)
		}
		if b.DestinationType != "queue" && b.DestinationType != "exchange" {
			return defErr("binding from '%s': destination_type must be queue or exchange", b.Source)
		}
	}
	return nil
}

// applyVHostItems applies checked policies, queues, exchanges and bindings
// and saves the durable definitions once.
func (s *Server) applyVHostItems(ps []Policy, qs []DefinitionQueue, es []DefinitionExchange, bs []DefinitionBinding) error {
	for _, p := range ps {
		if _, err := s.SetPolicy(p); err != nil {
			return err
		}
	}
	for _, qd := range qs {
		vh := s.vhost(qd.VHost)
		if vh == nil {
			return defErr("vhost '%s' is gone", qd.VHost)
		}
		spec := queueSpec{name: qd.Name, durable: qd.Durable, autoDelet: qd.AutoDelete, args: jsonToTable(qd.Arguments)}
		vh.mu.Lock()
		if q := vh.queues[qd.Name]; q != nil {
			vh.mu.Unlock()
			if aerr := q.equivalent(spec); aerr != nil {
				return defErr("%s", aerr.text)
			}
			continue
		}
		q, aerr := vh.newQueue(spec, nil)
		if aerr != nil {
			vh.mu.Unlock()
			return defErr("%s", aerr.text)
		}
		vh.queues[qd.Name] = q
		vh.bump()
		vh.mu.Unlock()
		q.mu.Lock()
		q.touchLocked()
		q.mu.Unlock()
	}
	for _, ed := range es {
		vh := s.vhost(ed.VHost)
		if vh == nil {
			return defErr("vhost '%s' is gone", ed.VHost)
		}
		vh.mu.Lock()
		if e := vh.exchanges[ed.Name]; e != nil {
			vh.mu.Unlock()
			if e.kind != ed.Type || e.durable != ed.Durable || e.autoDelete != ed.AutoDelete {
				return defErr("inequivalent exchange '%s' in vhost '%s'", ed.Name, ed.VHost)
			}
			continue
		}
		if ed.Name == "" || reservedName(ed.Name) {
			vh.mu.Unlock()
			continue
		}
		vh.exchanges[ed.Name] = newExchange(vh, ed.Name, ed.Type, ed.Durable, ed.AutoDelete, ed.Internal, jsonToTable(ed.Arguments))
		vh.bump()
		vh.mu.Unlock()
	}
	for _, bd := range bs {
		vh := s.vhost(bd.VHost)
		if vh == nil {
			return defErr("vhost '%s' is gone", bd.VHost)
		}
		args := jsonToTable(bd.Arguments)
		vh.mu.Lock()
		src := vh.exchanges[bd.Source]
		b := &binding{src: src, key: bd.RoutingKey, args: args, argsKey: tableKey(args)}
		if bd.DestinationType == "queue" {
			b.q = vh.queues[bd.Destination]
		} else {
			b.dst = vh.exchanges[bd.Destination]
		}
		if src == nil || src.name == "" || (b.q == nil && b.dst == nil) {
			vh.mu.Unlock()
			return defErr("binding from '%s' to %s '%s' in vhost '%s': no such exchange or %s", bd.Source, bd.DestinationType, bd.Destination, bd.VHost, bd.DestinationType)
		}
		src.addBinding(b)
		vh.bump()
		vh.mu.Unlock()
	}
	if err := s.saveDefinitions(); err != nil {
		return fmt.Errorf("%w: definitions imported, but the definitions write failed: %w", ErrNotSaved, err)
	}
	return nil
}

// jsonToTable converts decoded JSON (numbers as json.Number or float64)
// to an AMQP table: whole numbers become longs, others doubles.
func jsonToTable(v map[string]any) amqp091.Table {
	if len(v) == 0 {
		return nil
	}
	t := amqp091.Table{}
	for k, x := range v {
		t[k] = jsonToValue(x)
	}
	return t
}

func jsonToValue(x any) any {
	switch x := x.(type) {
	case json.Number:
		if i, err := x.Int64(); err == nil {
			return i
		}
		f, _ := x.Float64()
		return f
	case float64:
		if i, ok := jsonInt(x); ok {
			return i
		}
		return x
	case map[string]any:
		return jsonToTable(x)
	case []any:
		out := make([]any, len(x))
		for i, e := range x {
			out[i] = jsonToValue(e)
		}
		return out
	}
	return x
}

// loadAdministrationLocked restores, from the data directory's
// definitions at start (s.mu held), the policies and, once they were
// administered at run time, the users and permissions. Policies are in
// place before the queues are created, so recovered queues get theirs.
func (s *Server) loadAdministrationLocked(d *defs) error {
	ps := &policySet{byVHost: map[string][]*policy{}}
	for _, vd := range d.VHosts {
		for _, p := range vd.Policies {
			p.VHost = vd.Name
			re, err := validatePolicy(&p)
			if err != nil {
				return fmt.Errorf("broker: definitions: policy %q: %w", p.Name, err)
			}
			ps.byVHost[vd.Name] = append(ps.byVHost[vd.Name], &policy{Policy: p, re: re})
		}
		sortPolicies(ps.byVHost[vd.Name])
	}
	s.pol.set.Store(ps)
	if !d.Accounts {
		return nil
	}
	users, err := importUsers(d.Users, "")
	if err != nil {
		return fmt.Errorf("broker: definitions: %w", err)
	}
	loop := map[string]bool{}
	for _, n := range s.opts.LoopbackUsers {
		loop[n] = true
	}
	s.users = map[string]*user{}
	for _, u := range users {
		s.users[u.Name] = newUser(u, loop[u.Name])
	}
	for _, p := range d.Permissions {
		u := s.users[p.User]
		if u == nil {
			continue
		}
		if _, err := regexp.Compile(p.Configure + "|" + p.Write + "|" + p.Read); err != nil {
			return fmt.Errorf("broker: definitions: permissions of %q: %w", p.User, err)
		}
		u.perms[p.VHost] = newPerm(Permission{Configure: p.Configure, Write: p.Write, Read: p.Read})
	}
	s.accountsDurable.Store(true)
	return nil
}

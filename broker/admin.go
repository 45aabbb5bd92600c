package broker

import (
	"errors"
	"fmt"
	"maps"
	"regexp"
)

// Administration at run time: vhosts, users and permissions, as the
// management API's PUT and DELETE need them. With a data directory all of
// them are saved with the durable definitions: vhosts always, users and
// permissions once one of them was changed at run time (from then on the
// saved accounts replace Options.Users at start; see saveAccounts and
// loadAdministrationLocked). Without a data directory they live in memory
// only.
//
// A user is never changed in place: connections read their *user without
// a lock, so a change replaces the map entry with a new value and
// connections opened before keep the permissions they were admitted with.

// AddVHost creates a vhost; it reports false if it already existed.
func (s *Server) AddVHost(name string) (bool, error) {
	if name == "" {
		return false, errors.New("broker: empty vhost name")
	}
	s.mu.Lock()
	if s.vhosts[name] != nil {
		s.mu.Unlock()
		return false, nil
	}
	s.vhosts[name] = newVhost(s, name)
	s.mu.Unlock()
	if err := s.saveDefinitions(); err != nil {
		return true, fmt.Errorf("broker: vhost created but not saved: %w", err)
	}
	return true, nil
}

// DeleteVHost removes a vhost: new connections to it are refused at once,
// its connections are closed with 320 CONNECTION_FORCED, and its queues
// (with their messages) are deleted.
func (s *Server) DeleteVHost(name string) error {
	s.mu.Lock()
	vh := s.vhosts[name]
	if vh == nil {
		s.mu.Unlock()
		return ErrNotFound
	}
	delete(s.vhosts, name)
	// Permissions in the vhost go with it, as in RabbitMQ: a vhost created
	// again with the same name starts without them.
	for un, u := range s.users {
		if _, ok := u.perms[name]; ok {
			nu := *u
			nu.perms = maps.Clone(u.perms)
			delete(nu.perms, name)
			s.users[un] = &nu
		}
	}
	s.mu.Unlock()
	s.dropVHostPolicies(name)
	for _, c := range s.connList() {
		if info, _, open := c.mon.snapshot(); open && info.vhost == name {
			c.forceClose("CONNECTION_FORCED - vhost '" + name + "' is deleted")
		}
	}
	qs, _ := vh.snapshotLists()
	for _, q := range qs {
		vh.deleteQueue(q, "vhost deleted")
	}
	if err := s.saveDefinitions(); err != nil {
		return fmt.Errorf("broker: vhost deleted but not saved: %w", err)
	}
	return nil
}

// PutUser creates or replaces a user (keeping the permissions of a user it
// replaces); it reports whether the user is new. Exactly one of
// u.Password and u.PasswordHash must be set; u.Permissions is ignored.
func (s *Server) PutUser(u User) (bool, error) {
	if u.Name == "" {
		return false, errors.New("broker: user with empty name")
	}
	if (u.Password == "") == (u.PasswordHash == "") {
		return false, errors.New("broker: exactly one of password and password_hash is needed")
	}
	if u.PasswordHash != "" {
		if _, err := decodeHashAlg(u.PasswordHash, u.HashingAlgorithm); err != nil {
			return false, fmt.Errorf("broker: password_hash: %w", err)
		}
	}
	u.Permissions = nil
	s.mu.Lock()
	loopback := false
	for _, n := range s.opts.LoopbackUsers {
		loopback = loopback || n == u.Name
	}
	nu := newUser(u, loopback)
	old := s.users[u.Name]
	if old != nil {
		nu.perms = old.perms
	} else {
		// A new user has no permissions until they are set, as in RabbitMQ.
		nu.perms = map[string]*perm{}
	}
	s.users[u.Name] = nu
	s.mu.Unlock()
	return old == nil, s.saveAccounts("user changed")
}

// saveAccounts marks users and permissions as administered at run time
// (from now on the data directory keeps them, see saveDefinitions) and
// saves the definitions.
func (s *Server) saveAccounts(what string) error {
	s.accountsDurable.Store(true)
	if err := s.saveDefinitions(); err != nil {
		return fmt.Errorf("%w: %s, but the definitions write failed: %w", ErrNotSaved, what, err)
	}
	return nil
}

// ErrNotSaved is returned (wrapped) by the administration methods when
// the change was made in memory but writing the data directory's
// definitions failed; the next successful save writes it.
var ErrNotSaved = errors.New("broker: change not saved")

// DeleteUser removes a user and closes its connections with 320
// CONNECTION_FORCED, as RabbitMQ 3.10 does.
func (s *Server) DeleteUser(name string) error {
	s.mu.Lock()
	if s.users[name] == nil {
		s.mu.Unlock()
		return ErrNotFound
	}
	delete(s.users, name)
	s.mu.Unlock()
	for _, c := range s.connList() {
		if info, _, open := c.mon.snapshot(); open && info.user == name {
			c.forceClose("CONNECTION_FORCED - user '" + name + "' is deleted")
		}
	}
	return s.saveAccounts("user deleted")
}

// SetPermission sets a user's permissions in a vhost; it reports whether
// the user had none there. A user configured without permissions (all
// vhosts) is first given ".*" in every existing vhost.
func (s *Server) SetPermission(user, vhost string, p Permission) (bool, error) {
	for _, re := range []string{p.Configure, p.Write, p.Read} {
		if _, err := regexp.Compile(re); err != nil {
			return false, fmt.Errorf("broker: permission regex: %w", err)
		}
	}
	s.mu.Lock()
	u := s.users[user]
	if u == nil || s.vhosts[vhost] == nil {
		s.mu.Unlock()
		return false, ErrNotFound
	}
	nu := s.userWithPermsLocked(u)
	_, had := nu.perms[vhost]
	nu.perms[vhost] = newPerm(p)
	s.users[user] = nu
	s.mu.Unlock()
	return !had, s.saveAccounts("permissions set")
}

// ClearPermission removes a user's permissions in a vhost.
func (s *Server) ClearPermission(user, vhost string) error {
	s.mu.Lock()
	u := s.users[user]
	if u == nil || !u.vhostAllowed(vhost) || s.vhosts[vhost] == nil {
		s.mu.Unlock()
		return ErrNotFound
	}
	nu := s.userWithPermsLocked(u)
	delete(nu.perms, vhost)
	s.users[user] = nu
	s.mu.Unlock()
	return s.saveAccounts("permissions cleared")
}

// userWithPermsLocked copies u with an explicit permission map of its own.
func (s *Server) userWithPermsLocked(u *user) *user {
	nu := *u
	if u.perms == nil {
		nu.perms = map[string]*perm{}
		for name := range s.vhosts {
			nu.perms[name] = newPerm(Permission{Configure: ".*", Write: ".*", Read: ".*"})
		}
	} else {
		nu.perms = maps.Clone(u.perms)
	}
	return &nu
}

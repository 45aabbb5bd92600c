package broker

import (
	"bytes"
	"crypto/md5"
	"crypto/rand"
	"crypto/sha256"
	"crypto/sha512"
	"crypto/subtle"
	"encoding/base64"
	"fmt"
	"net"
	"regexp"
	"strings"

	"github.com/oslogo/oslogo/broker/internal/amqp091"
)

// HashPassword returns password hashed in RabbitMQ's
// rabbit_password_hashing_sha256 format, suitable for User.PasswordHash.
func HashPassword(password string) string {
	var salt [4]byte
	_, _ = rand.Read(salt[:])
	return hashWithSalt(salt[:], password)
}

func hashWithSalt(salt []byte, password string) string {
	h := sha256.Sum256(append(append([]byte(nil), salt...), password...))
	return base64.StdEncoding.EncodeToString(append(append([]byte(nil), salt...), h[:]...))
}

func decodeHash(s string) ([]byte, error) { return decodeHashAlg(s, "") }

// RabbitMQ's password hashing modules.
const (
	hashSHA256 = "rabbit_password_hashing_sha256"
	hashSHA512 = "rabbit_password_hashing_sha512"
	hashMD5    = "rabbit_password_hashing_md5"
)

// hashFunc returns the hash of a RabbitMQ hashing module ("" is sha256).
func hashFunc(alg string) (func([]byte) []byte, int, bool) {
	switch alg {
	case "", hashSHA256:
		return func(b []byte) []byte { h := sha256.Sum256(b); return h[:] }, sha256.Size, true
	case hashSHA512:
		return func(b []byte) []byte { h := sha512.Sum512(b); return h[:] }, sha512.Size, true
	case hashMD5:
		return func(b []byte) []byte { h := md5.Sum(b); return h[:] }, md5.Size, true
	}
	return nil, 0, false
}

// decodeHashAlg checks a RabbitMQ password hash: base64 of a 4-byte salt
// and the hash of salt+password.
func decodeHashAlg(s, alg string) ([]byte, error) {
	_, size, ok := hashFunc(alg)
	if !ok {
		return nil, fmt.Errorf("unsupported hashing algorithm %q", alg)
	}
	b, err := base64.StdEncoding.DecodeString(s)
	if err != nil || len(b) != 4+size {
		return nil, fmt.Errorf("password hash is not base64(salt[4] + %s)", strings.TrimPrefix(orSHA256(alg), "rabbit_password_hashing_"))
	}
	return b, nil
}

func orSHA256(alg string) string {
	if alg == "" {
		return hashSHA256
	}
	return alg
}

// defaultGuest is RabbitMQ's default user: guest/guest with every
// permission on "/".
func defaultGuest() User {
	return User{Name: "guest", Password: "guest", Tags: []string{"administrator"},
		Permissions: map[string]Permission{"/": {Configure: ".*", Write: ".*", Read: ".*"}}}
}

// perm holds one vhost's compiled resource regexes; a nil regex is ".*",
// which matches every name without running a regex.
type perm struct {
	configure, write, read *regexp.Regexp
	src                    Permission // as configured, for the management API
}

func newPerm(p Permission) *perm {
	return &perm{configure: compilePerm(p.Configure), write: compilePerm(p.Write), read: compilePerm(p.Read), src: p}
}

type user struct {
	name     string
	hash     []byte // salt + hash(salt + password)
	alg      string // RabbitMQ hashing module of hash; "" is sha256
	tags     []string
	loopback bool
	// perms by vhost. A vhost missing here may not be opened, as in
	// RabbitMQ, where a new user has no permissions until given some.
	perms map[string]*perm
}

func newUser(u User, loopback bool) *user {
	var hash []byte
	alg := ""
	if u.PasswordHash != "" {
		hash, _ = decodeHashAlg(u.PasswordHash, u.HashingAlgorithm)
		if u.HashingAlgorithm != hashSHA256 {
			alg = u.HashingAlgorithm
		}
	} else {
		var salt [4]byte
		_, _ = rand.Read(salt[:])
		hash, _ = decodeHash(hashWithSalt(salt[:], u.Password))
	}
	usr := &user{name: u.Name, hash: hash, alg: alg, tags: u.Tags, loopback: loopback, perms: map[string]*perm{}}
	for vh, p := range u.Permissions {
		usr.perms[vh] = newPerm(p)
	}
	return usr
}

// compilePerm compiles a validated permission regex; ".*" becomes nil.
// RabbitMQ matches a permission regex anywhere in the name (`^bob\.`
// anchors itself, `bob` allows "alice.bob"); the empty string allows
// nothing.
func compilePerm(re string) *regexp.Regexp {
	if re == ".*" {
		return nil
	}
	return regexp.MustCompile(permPattern(re))
}

// permPattern is the regex a permission compiles to.
func permPattern(re string) string {
	if re == "" {
		return "^$"
	}
	return re
}

func (u *user) checkPassword(pw string) bool {
	f, _, _ := hashFunc(u.alg)
	h := f(append(append([]byte(nil), u.hash[:4]...), pw...))
	return subtle.ConstantTimeCompare(h, u.hash[4:]) == 1
}

// hashAlgorithm is the RabbitMQ name of the user's password hash.
func (u *user) hashAlgorithm() string { return orSHA256(u.alg) }

// allowsAll reports whether u's permissions on vh are ".*" for all three
// kinds, so that per-name checks (and their cache) can be skipped.
func (u *user) allowsAll(vh string) bool {
	p := u.perms[vh]
	return p != nil && p.configure == nil && p.write == nil && p.read == nil
}

func (u *user) vhostAllowed(vh string) bool {
	_, ok := u.perms[vh]
	return ok
}

type permKind int

const (
	permConfigure permKind = iota
	permWrite
	permRead
)

func (k permKind) String() string {
	switch k {
	case permConfigure:
		return "configure"
	case permWrite:
		return "write"
	}
	return "read"
}

// check returns an access-refused error unless u may act on the resource.
// Regexes run on declarations, binds and the first use of a name on a
// channel, never per message. The default exchange is checked under the
// name "amq.default", as RabbitMQ checks it.
func (u *user) check(vh string, kind permKind, resType, name string) *amqpError {
	p := u.perms[vh]
	if p != nil {
		re := p.read
		switch kind {
		case permConfigure:
			re = p.configure
		case permWrite:
			re = p.write
		}
		checked := name
		if resType == "exchange" && name == "" {
			checked = "amq.default"
		}
		if re == nil || re.MatchString(checked) {
			return nil
		}
	}
	return errf(amqp091.AccessRefused, "%s access to %s '%s' in vhost '%s' refused for user '%s'", kind, resType, name, vh, u.name)
}

// validatePermissions rejects permissions for a vhost the options do not
// create: they would never apply, and usually mean a typo.
func validatePermissions(o *Options) error {
	vhosts := map[string]bool{"/": true}
	for _, v := range o.VHosts {
		vhosts[v] = true
	}
	for _, u := range o.Users {
		for vh := range u.Permissions {
			if !vhosts[vh] {
				return fmt.Errorf("broker: user %q has permissions for vhost %q, which is not in VHosts", u.Name, vh)
			}
		}
	}
	return nil
}

// parseAuth extracts the user name and password from a PLAIN or AMQPLAIN
// response.
func parseAuth(mechanism, response string) (string, string, bool) {
	switch mechanism {
	case "PLAIN":
		parts := bytes.Split([]byte(response), []byte{0})
		if len(parts) != 3 {
			return "", "", false
		}
		return string(parts[1]), string(parts[2]), true
	case "AMQPLAIN":
		// The response is a field table without its length prefix.
		b := amqp091.AppendLong(nil, uint32(len(response)))
		b = append(b, response...)
		r := amqp091.NewReader(b)
		t := r.ReadTable()
		if r.Err() != nil {
			return "", "", false
		}
		login, ok1 := t["LOGIN"].(string)
		pw, ok2 := t["PASSWORD"].(string)
		return login, pw, ok1 && ok2
	}
	return "", "", false
}

// isLoopback reports whether a connection comes from this host; in-process
// pipes count as loopback.
func isLoopback(a net.Addr) bool {
	ta, ok := a.(*net.TCPAddr)
	if !ok {
		return a == nil || a.Network() == "pipe"
	}
	return ta.IP.IsLoopback()
}

// Stats are counters of a running Server.
type Stats struct {
	// LoginFailures counts connections refused during the handshake for
	// their credentials: a wrong user name or password, an unsupported
	// mechanism, a loopback-only user from another host, or a vhost the
	// user has no permissions on.
	LoginFailures uint64
}

// Stats returns the server's counters.
func (s *Server) Stats() Stats {
	return Stats{LoginFailures: s.loginFailures.Load()}
}

// loginRefused counts and logs a refused login with the client's address
// and the user name it gave; the password is never logged.
func (s *Server) loginRefused(c *conn, userName, why string) {
	s.loginFailures.Add(1)
	c.log.Warn("login refused", "remote", c.nc.RemoteAddr().String(), "user", userName, "reason", why)
}

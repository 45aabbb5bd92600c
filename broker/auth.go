package broker

import (
	"bytes"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"errors"
	"net"
	"regexp"

	"oslogo/broker/internal/amqp091"
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

func decodeHash(s string) ([]byte, error) {
	b, err := base64.StdEncoding.DecodeString(s)
	if err != nil || len(b) != 4+sha256.Size {
		return nil, errors.New("password hash is not base64(salt[4] + sha256)")
	}
	return b, nil
}

type perm struct {
	configure, write, read *regexp.Regexp
}

type user struct {
	name     string
	hash     []byte // salt + sha256
	tags     []string
	loopback bool
	// perms by vhost; nil means everything everywhere.
	perms map[string]*perm
}

func newUser(u User, loopback bool) *user {
	var hash []byte
	if u.PasswordHash != "" {
		hash, _ = decodeHash(u.PasswordHash)
	} else {
		var salt [4]byte
		_, _ = rand.Read(salt[:])
		hash, _ = decodeHash(hashWithSalt(salt[:], u.Password))
	}
	usr := &user{name: u.Name, hash: hash, tags: u.Tags, loopback: loopback}
	if u.Permissions != nil {
		usr.perms = map[string]*perm{}
		for vh, p := range u.Permissions {
			usr.perms[vh] = &perm{
				configure: regexp.MustCompile(anchor(p.Configure)),
				write:     regexp.MustCompile(anchor(p.Write)),
				read:      regexp.MustCompile(anchor(p.Read)),
			}
		}
	}
	return usr
}

// anchor makes a permission regex match whole names, as RabbitMQ's do.
func anchor(re string) string {
	if re == "" {
		return "^$"
	}
	return "^(?:" + re + ")$"
}

func (u *user) checkPassword(pw string) bool {
	h := sha256.Sum256(append(append([]byte(nil), u.hash[:4]...), pw...))
	return subtle.ConstantTimeCompare(h[:], u.hash[4:]) == 1
}

func (u *user) vhostAllowed(vh string) bool {
	if u.perms == nil {
		return true
	}
	_, ok := u.perms[vh]
	return ok
}

type permKind int

const (
	permConfigure permKind = iota
	permWrite
	permRead
)

// check returns an access-refused error unless u may act on the resource.
// Regexes run on declarations, binds and the first use of a name on a
// channel, never per message.
func (u *user) check(vh string, kind permKind, resType, name string) *amqpError {
	if u.perms == nil {
		return nil
	}
	p := u.perms[vh]
	var re *regexp.Regexp
	var what string
	if p != nil {
		switch kind {
		case permConfigure:
			re, what = p.configure, "configure"
		case permWrite:
			re, what = p.write, "write"
		default:
			re, what = p.read, "read"
		}
	}
	if re != nil && re.MatchString(name) {
		return nil
	}
	if what == "" {
		what = "any"
	}
	return errf(amqp091.AccessRefused, "access to %s '%s' in vhost '%s' refused for user '%s'", resType, name, vh, u.name)
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

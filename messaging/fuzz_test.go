package messaging_test

import (
	"context"
	"fmt"
	"net/url"
	"strings"
	"testing"

	"github.com/oslogo/oslogo/messaging"

	_ "github.com/oslogo/oslogo/driver/rabbit" // rabbit:// and kombu://
)

// rotate maps letters and digits onto other letters and digits and leaves
// every other byte alone: two passwords that differ only so parse alike,
// so no text the transport shows may tell them apart.
func rotate(s string) string {
	b := []byte(s)
	for i, c := range b {
		switch {
		case c >= 'a' && c <= 'z':
			b[i] = 'a' + (c-'a'+13)%26
		case c >= 'A' && c <= 'Z':
			b[i] = 'A' + (c-'A'+13)%26
		case c >= '0' && c <= '9':
			b[i] = '0' + (c-'0'+5)%10
		}
	}
	return string(b)
}

func escapeAll(s string) string {
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' {
			b.WriteByte(c)
		} else {
			fmt.Fprintf(&b, "%%%02X", c)
		}
	}
	return b.String()
}

var fuzzSchemes = []string{"rabbit", "kombu+rabbit", "memory", "fake", "nosuch", "Rabbit", ""}

// FuzzOpenTransport opens transport URLs built around a password (written
// percent-encoded, or as is when it holds nothing that ends a user info):
// OpenTransport never panics, and neither its error nor the opened
// transport's String may depend on the password, which the rotated
// password checks; String is url.URL.Redacted of the URL.
func FuzzOpenTransport(f *testing.F) {
	f.Add(uint8(0), "openstack", "stack2018", "127.0.0.1:5672", "", true)
	f.Add(uint8(1), "u1", "p,w@x", "h1:5672,u2:p2@h2:5673", "vh", true)
	f.Add(uint8(2), "", "", "", "", false)
	f.Add(uint8(0), "u", "pa:ss", "host:99999", "v", false)
	f.Add(uint8(0), "u", "s3cret", "[::1", "v", false)
	f.Add(uint8(3), "u", "s3cret", "h", "?a=1", false)
	f.Add(uint8(5), "u", "s3cret", "h:5672", "x?rabbit_qos_prefetch_count=x", true)
	f.Fuzz(func(t *testing.T, scheme uint8, user, pass, hosts, path string, escape bool) {
		if !escape && (strings.ContainsAny(user, ":/?#%@,") || strings.ContainsAny(pass, "/?#%@,")) {
			// Not a user info any more: "," separates rabbit:// hosts, so
			// "u:p,w@h" is the host "u:p" and the user info "w"; oslo reads
			// it so too, which is why credentials are percent-encoded.
			return
		}
		switch fuzzSchemes[int(scheme)%len(fuzzSchemes)] {
		case "rabbit", "kombu+rabbit", "Rabbit":
			if strings.Contains(hosts+path, "?") {
				return // query options may name files (ssl_ca_file) to read
			}
		case "memory", "fake":
			if len(hosts) > 2 {
				return // every host is an in-process broker kept for the process's life
			}
		}
		build := func(pass string) string {
			userinfo := user + ":" + pass
			if escape {
				userinfo = escapeAll(user) + ":" + escapeAll(pass)
			}
			return fuzzSchemes[int(scheme)%len(fuzzSchemes)] + "://" + userinfo + "@" + hosts + "/" + path
		}
		raw, rawRot := build(pass), build(rotate(pass))
		tr, err := messaging.OpenTransport(context.Background(), raw, messaging.DefaultTransportConfig())
		trRot, errRot := messaging.OpenTransport(context.Background(), rawRot, messaging.DefaultTransportConfig())
		for _, t := range []*messaging.Transport{tr, trRot} {
			if t != nil {
				defer t.Close()
			}
		}
		if (err == nil) != (errRot == nil) {
			t.Fatalf("OpenTransport accepts one password and not the other: %v / %v", err, errRot)
		}
		if err != nil {
			if err.Error() != errRot.Error() {
				t.Fatalf("OpenTransport's error depends on the password:\n%v\n%v", err, errRot)
			}
			return
		}
		if tr.String() != trRot.String() {
			t.Fatalf("Transport.String depends on the password: %q / %q", tr.String(), trRot.String())
		}
		u, err := url.Parse(raw)
		if err != nil {
			t.Fatalf("OpenTransport accepted %q, url.Parse does not: %v", raw, err)
		}
		if tr.String() != u.Redacted() {
			t.Fatalf("String() = %q, want %q", tr.String(), u.Redacted())
		}
	})
}

// TestOpenUnknownOptionsSameError: a memory:// URL with several unknown
// options always gets the same error, naming the first in sorted order
// (found by FuzzOpenTransport: the error named a random one).
func TestOpenUnknownOptionsSameError(t *testing.T) {
	for range 20 {
		_, err := messaging.OpenTransport(context.Background(), "memory://?zz=1&b=2&aa=3", messaging.DefaultTransportConfig())
		if err == nil || !strings.Contains(err.Error(), `unknown option "aa"`) {
			t.Fatalf("error %v, want one naming \"aa\"", err)
		}
	}
}

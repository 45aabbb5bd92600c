package main

import (
	"fmt"
	"log/slog"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/oslogo/oslogo/broker"
)

// rotate maps letters and digits onto other letters and digits and leaves
// every other byte alone: two passwords that differ only so are read
// alike, so no error may tell them apart.
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

// brokerFromFile applies a config file and builds the broker from it, as
// oslogo broker does short of starting it.
func brokerFromFile(data string) (broker.Options, error) {
	opts := broker.DefaultOptions()
	level := slog.LevelInfo
	if err := applyBrokerFile(data, &opts, &level); err != nil {
		return opts, err
	}
	_, err := broker.New(opts)
	return opts, err
}

var brokerFileSeeds = []string{
	"amqp = \"127.0.0.1:5672\"\ndata = \"/var/lib/oslogo\"\nmemory_high_watermark = 1073741824\nmax_connections = 1000\nlog_level = \"debug\"\nvhosts = [\"nova\", \"neutron\"]\nloopback_users = []\n",
	"vhosts = [\"nova\"]\n[[users]]\nname = \"nova\"\npassword = \"secret\"\ntags = [\"administrator\"]\n[users.permissions.nova]\nconfigure = \"^nova.*\"\nwrite = \".*\"\nread = \".*\"\n",
	"[[users]]\nname = \"h\"\npassword_hash = \"kI3GCqW5JLMJa4iX1lo7X4D6XbYqlLgxIs30+P6tENUV2POR\"\n[users.permissions.\"/\"]\nconfigure = \"(\"\n",
	"users = 3",
}

// FuzzBrokerFile reads a broker config file: applying it and building the
// broker from it never panic, and an error never shows a user's password.
func FuzzBrokerFile(f *testing.F) {
	for _, s := range brokerFileSeeds {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, data string) {
		opts, err := brokerFromFile(data)
		if err == nil {
			return
		}
		for _, u := range opts.Users {
			if len(u.Password) >= 4 && strings.Contains(err.Error(), u.Password) && !strings.Contains(u.Name, u.Password) {
				t.Fatalf("error %q shows the password of %q", err, u.Name)
			}
		}
	})
}

// tomlString writes s as a TOML basic string, every byte but letters and
// digits escaped, so that rotating the letters and digits of s changes
// nothing else.
func tomlString(s string) string {
	var b strings.Builder
	b.WriteByte('"')
	for _, r := range s {
		if r < 0x80 && (r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9') {
			b.WriteRune(r)
		} else {
			fmt.Fprintf(&b, "\\U%08X", r)
		}
	}
	b.WriteByte('"')
	return b.String()
}

// FuzzBrokerFilePassword writes a user's password, as a TOML string,
// into a config file between fuzzed text: whatever the file, applying it
// and building the broker give the same error for the rotated password, so
// no error shows the password's letters or digits.
func FuzzBrokerFilePassword(f *testing.F) {
	f.Add("vhosts = [\"nova\"]", "s3cret", "tags = []")
	f.Add("", "p\u00e9ss w\u00f6rd\n\"", "password_hash = \"x\"")
	f.Add("", "s3cret", "[users.permissions.v]\nread = \"(\"")
	f.Add("x = ", "s3cret", "")
	f.Fuzz(func(t *testing.T, before, pass, after string) {
		if !utf8.ValidString(pass) {
			return // TOML files are UTF-8
		}
		build := func(pass string) string {
			return before + "\n[[users]]\nname = \"u\"\npassword = " + tomlString(pass) + "\n" + after
		}
		_, err := brokerFromFile(build(pass))
		_, errRot := brokerFromFile(build(rotate(pass)))
		if (err == nil) != (errRot == nil) || err != nil && err.Error() != errRot.Error() {
			t.Fatalf("the error depends on the password:\n%v\n%v", err, errRot)
		}
	})
}

// TestBrokerFileErrorHidesPassword: a password value the TOML parser
// refuses is not quoted back in the error (the parser's message shows the
// text it stumbled on).
func TestBrokerFileErrorHidesPassword(t *testing.T) {
	for _, v := range []string{"s3cret", "\"s3cret", "'s3cret", "\"\"\"s3cret", "s3cret\"", "[s3cret]", "{s3cret}", "s3 cret", "\"s3cret\" s3cret"} {
		for _, key := range []string{"password", "password_hash"} {
			_, err := brokerFromFile("[[users]]\nname = \"u\"\n" + key + " = " + v + "\n")
			if err == nil {
				t.Fatalf("%s = %s accepted", key, v)
			}
			for _, leak := range []string{"s3", "cret", `"s"`, `'s'`} {
				if strings.Contains(err.Error(), leak) {
					t.Errorf("%s = %s: error %q shows %s", key, v, err, leak)
				}
			}
		}
	}
}

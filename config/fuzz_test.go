package config

import (
	"errors"
	"fmt"
	"strings"
	"testing"
)

func FuzzLoad(f *testing.F) {
	seeds := []string{
		"[DEFAULT]\nurl = 'rabbit://openstack:stack2018@127.0.0.1:5672/'\n",
		"[g]\nk = a\n  b\n\n# c\n; d\nk: \"q\"\n",
		"[DEFAULT] url = x\n",
		"k = v\n",
		"\ufeff[g]\r\nk=\r\n \r\n",
		"[]\n",
	}
	for _, s := range seeds {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, in string) {
		c := New()
		if err := RegisterMessagingOpts(c); err != nil {
			t.Fatal(err)
		}
		err := c.LoadReader("fuzz.conf", strings.NewReader(in))
		if err != nil {
			var pe *ParseError
			if !errors.As(err, &pe) {
				t.Fatalf("error %v is not a *ParseError", err)
			}
			if lines := strings.Count(in, "\n") + strings.Count(in, "\r") + 1; pe.Line < 1 || pe.Line > lines {
				t.Fatalf("line %d out of range 1..%d", pe.Line, lines)
			}
			if len(c.Files()) != 0 {
				t.Fatal("a failed load was applied")
			}
			return
		}
		l := c.layers[0]
		for g, keys := range l.groups {
			if g == "" {
				t.Fatal("empty group name")
			}
			for k := range keys {
				if k == "" || strings.ContainsAny(k, "=:\n") || strings.TrimSpace(k) != k {
					t.Fatalf("bad key %q", k)
				}
			}
		}
		// Reading values never panics, whatever their content.
		_ = c.Validate()
		for _, g := range []string{DefaultGroup, RabbitGroup, NotificationsGroup} {
			for k := range c.Section(g) {
				_ = c.Int(g, k)
				_ = c.Duration(g, k)
				_ = c.List(g, k)
				_ = c.Strings(g, k)
			}
		}
	})
}

// writeINI writes a parsed layer back as a file: every value quoted (so
// that the quotes splitKeyValue strips are the ones written), later lines
// of a multi-line value indented as continuation lines.
func writeINI(l *layer) string {
	var b strings.Builder
	for g, keys := range l.groups {
		b.WriteString("[" + g + "]\n")
		for k, vals := range keys {
			for _, v := range vals {
				parts := strings.Split(v.s, "\n")
				b.WriteString(k + " = \"" + parts[0] + "\"\n")
				for _, p := range parts[1:] {
					b.WriteString("    " + p + "\n")
				}
			}
		}
	}
	return b.String()
}

// layerValues is a layer without where each value came from.
func layerValues(l *layer) map[string]map[string][]string {
	out := map[string]map[string][]string{}
	for g, keys := range l.groups {
		out[g] = map[string][]string{}
		for k, vals := range keys {
			for _, v := range vals {
				out[g][k] = append(out[g][k], v.s)
			}
		}
	}
	return out
}

// FuzzParseRoundTrip parses a file, writes what it read back as a file and
// parses that: the groups, keys and values (every assignment, in order)
// are the same.
func FuzzParseRoundTrip(f *testing.F) {
	for _, s := range []string{
		"[DEFAULT]\ntransport_url = rabbit://openstack:stack2018@127.0.0.1:5672/\ncontrol_exchange=nova\n",
		"[oslo_messaging_rabbit]\nrabbit_qos_prefetch_count: 10\nheartbeat_timeout_threshold = '30'\n[Oslo_Messaging_Rabbit]\nssl = \"\"\n",
		"[g]\nk = first\n  second\n\tthird\nk = again\n[a]]\nx = \"\n",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, in string) {
		l, err := parse("fuzz.conf", strings.NewReader(in))
		if err != nil {
			return
		}
		out := writeINI(l)
		l2, err := parse("again.conf", strings.NewReader(out))
		if err != nil {
			t.Fatalf("written back as\n%s\nit does not parse: %v", out, err)
		}
		if a, b := fmt.Sprintf("%q", layerValues(l)), fmt.Sprintf("%q", layerValues(l2)); a != b {
			t.Fatalf("read %s\nwritten back as\n%s\nread %s", a, out, b)
		}
	})
}

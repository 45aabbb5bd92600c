package config

import (
	"errors"
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

package config

import (
	"encoding/json"
	"os/exec"
	"reflect"
	"testing"
)

// TestAgainstOsloConfig reads the same files with Python oslo.config
// (python3-oslo.config, installed by scripts/setup.d/10-debian-peers.sh)
// and with this package, and compares what both see.
func TestAgainstOsloConfig(t *testing.T) {
	if _, err := exec.LookPath("/usr/bin/python3"); err != nil {
		t.Fatalf("python3 is needed (scripts/setup.sh installs it): %v", err)
	}
	cases := [][]string{
		{"[DEFAULT]\nurl = 'rabbit://openstack:stack2018@127.0.0.1:5672/'\n"},
		{"[DEFAULT]\nurl = \"a\"b\"\nKey = v\nkey = lower\n"},
		{"[DEFAULT]\nurl = first\n  second\n\tthird\n\nm = 1\nm = 2\n", "[DEFAULT]\nm = 3\nurl = 'q'\n  more\n"},
		{"[DEFAULT]\n# url = c\n; url = d\nurl = x # y\nurl: z=1\n"},
		{"[mygroup]\nk = lower\n[default]\nurl = nope\n", "[MYGROUP]\nk = upper\n"},
		{"[DEFAULT]\nold = o\nnew = n\n"},
		{"[DEFAULT]\nnew = n\n", "[DEFAULT]\nold = o\n"},
		{"[legacy]\nolder = l\n"},
		{"[oslo_messaging_rabbit]\nrabbit_use_ssl = yes\n"},
		{"[oslo_messaging_rabbit]\nrabbit_use_ssl = yes\nssl = off\n"},
		{"[DEFAULT] url = x\n"},
		{"url = x\n"},
		{"[DEFAULT]\n  orphan\n"},
		{"[DEFAULT]\nnot an assignment\n"},
		{"[DEFAULT]\nurl = '\nKey = ''\n"},
	}
	for i, files := range cases {
		paths := write(t, files...)
		out, err := exec.Command("/usr/bin/python3", append([]string{"testdata/oslo_read.py"}, paths...)...).Output()
		if err != nil {
			t.Fatalf("python oslo.config: %v", err)
		}
		var py map[string]any
		if err := json.Unmarshal(out, &py); err != nil {
			t.Fatalf("%s: %v", out, err)
		}

		c := New()
		for _, r := range []struct {
			g    string
			opts []Opt
		}{
			{"", []Opt{{Name: "url"}, {Name: "Key"}, {Name: "m", Type: MultiString},
				{Name: "new", DeprecatedNames: []string{"old", "legacy/older"}}}},
			{"MyGroup", []Opt{{Name: "k"}}},
			{RabbitGroup, []Opt{{Name: "ssl", Type: Bool, Default: "False", DeprecatedNames: []string{"rabbit_use_ssl"}}}},
		} {
			if err := c.Register(r.g, r.opts...); err != nil {
				t.Fatal(err)
			}
		}
		err = c.LoadFiles(paths...)
		if _, pyErr := py["error"]; pyErr || err != nil {
			if !pyErr || err == nil {
				t.Errorf("case %d %q: oslo.config says %v, Go says %v", i, files, py["error"], err)
			}
			continue
		}
		str := func(g, n string) any {
			if v, set := c.Lookup(g, n); set {
				return v
			}
			return nil // oslo's None
		}
		var m []any
		for _, v := range c.Strings("", "m") {
			m = append(m, v)
		}
		if m == nil {
			m = []any{}
		}
		got := map[string]any{
			"url": str("", "url"), "Key": str("", "Key"), "m": m, "new": str("", "new"),
			"MyGroup.k": str("MyGroup", "k"), "ssl": c.Bool(RabbitGroup, "ssl"),
		}
		if !reflect.DeepEqual(got, py) {
			t.Errorf("case %d %q:\nGo     %v\noslo   %v", i, files, got, py)
		}
	}
}

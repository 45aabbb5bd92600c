package testrabbit

import (
	"os"
	"os/exec"
	"slices"
	"strings"
	"testing"
)

func vhosts(t *testing.T) []string {
	t.Helper()
	out, err := exec.Command("rabbitmqctl", "-q", "list_vhosts", "name").Output()
	if err != nil {
		t.Fatalf("rabbitmqctl list_vhosts: %v", err)
	}
	return strings.Fields(string(out))
}

type fakeM struct {
	t    *testing.T
	seen string
}

func (m *fakeM) Run() int {
	m.seen = Vhost()
	if !strings.HasPrefix(m.seen, prefix) {
		m.t.Errorf("vhost %q lacks the prefix %q", m.seen, prefix)
	}
	found := false
	for _, v := range vhosts(m.t) {
		found = found || v == m.seen
	}
	if !found {
		m.t.Errorf("vhost %q does not exist while the tests run", m.seen)
	}
	return 7
}

// TestWrapMakesAndDeletesVhost: the tests run in a vhost that exists while
// they run and is gone afterwards; the tests' exit code is kept.
func TestWrapMakesAndDeletesVhost(t *testing.T) {
	if u := os.Getenv(EnvURL); u != "" {
		t.Setenv(EnvURL, "")
		os.Unsetenv(EnvURL)
	}
	m := &fakeM{t: t}
	if code := Wrap(m).Run(); code != 7 {
		t.Errorf("exit code %d, want the tests' 7", code)
	}
	if m.seen == "" {
		t.Fatal("the tests did not run")
	}
	for _, v := range vhosts(t) {
		if v == m.seen {
			t.Errorf("vhost %q left behind", v)
		}
	}
	if os.Getenv(EnvURL) != "" {
		t.Errorf("%s still set after the run", EnvURL)
	}
}

// TestNewVhost: NewVhost's vhost exists while the test runs, is named after
// the wrapped vhost, and is gone after the test.
func TestNewVhost(t *testing.T) {
	if os.Getenv(EnvURL) == "" {
		t.Setenv(EnvURL, "rabbit://guest:guest@127.0.0.1:5672/"+prefix+"1_1")
	}
	var name string
	t.Run("inner", func(t *testing.T) {
		u := NewVhost(t, "kolla-qm")
		name = strings.TrimPrefix(u[strings.LastIndex(u, "/"):], "/")
		if name != Vhost()+"_kolla-qm" {
			t.Errorf("vhost %q, want %q", name, Vhost()+"_kolla-qm")
		}
		if !slices.Contains(vhosts(t), name) {
			t.Errorf("vhost %q does not exist while the test runs", name)
		}
	})
	if slices.Contains(vhosts(t), name) {
		t.Errorf("vhost %q left behind", name)
	}
}

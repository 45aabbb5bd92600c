package testrabbit

import (
	"fmt"
	"net/url"
	"regexp"
	"testing"
)

var vhostSafe = regexp.MustCompile(`[^A-Za-z0-9_.-]+`)

// NewVhost creates one more vhost on the tests' broker, named after the
// wrapped vhost and suffix (so a crashed run's leftovers are removed with
// it), and deletes it when t ends. It returns the vhost's transport URL.
// Tests that need a broker state of their own (oslo.messaging 18 with quorum
// queues refuses a vhost where 14 declared the control exchange
// non-durable) use one per case.
func NewVhost(t testing.TB, suffix string) string {
	t.Helper()
	base, err := url.Parse(URL())
	if err != nil {
		t.Fatalf("testrabbit: %s: %v", EnvURL, err)
	}
	name := fmt.Sprintf("%s_%s", Vhost(), vhostSafe.ReplaceAllString(suffix, "_"))
	if err := ctl("add_vhost", name); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := ctl("delete_vhost", name); err != nil {
			t.Errorf("testrabbit: %v", err)
		}
	})
	if err := ctl("set_permissions", "-p", name, "guest", ".*", ".*", ".*"); err != nil {
		t.Fatal(err)
	}
	base.Path = "/" + name
	base.RawPath = ""
	return base.String()
}

package testrabbit

import (
	"net/url"
	"testing"
)

// ExtraURL creates a further vhost of this test binary, named after the
// main one with "_"+name appended, for tests that need a broker state of
// their own (a configuration whose durable exchanges clash with the main
// vhost's, as quorum queues do with a non-durable control exchange), and
// deletes it when t ends. It returns the vhost's transport URL. With
// OSLOGO_RABBIT_URL set by hand (no vhost of its own), it fails t.
func ExtraURL(t testing.TB, name string) string {
	t.Helper()
	base, err := url.Parse(URL())
	if err != nil {
		t.Fatalf("testrabbit: %v", err)
	}
	vhost := Vhost() + "_" + name
	if err := ctl("add_vhost", vhost); err != nil {
		t.Fatalf("testrabbit: %v", err)
	}
	t.Cleanup(func() { _ = ctl("delete_vhost", vhost) })
	if err := ctl("set_permissions", "-p", vhost, "guest", ".*", ".*", ".*"); err != nil {
		t.Fatalf("testrabbit: %v", err)
	}
	base.Path = "/" + vhost
	base.RawPath = ""
	return base.String()
}

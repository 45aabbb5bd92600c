package broker

import (
	"net/http"
	"testing"
)

// TestMgmtNewVHostGrantsCreator: a vhost created through the API gives the
// user who created it full permissions there, as RabbitMQ's API does
// (rabbit_vhost:put_vhost; `oslogo ctl add_vhost` then `set_policy -p` in
// it works as on RabbitMQ, TestCtlAgainstEmbeddedAndRabbitMQ). Other users
// get nothing, and a vhost that existed is left alone.
func TestMgmtNewVHostGrantsCreator(t *testing.T) {
	_, _, base := startMgmt(t)
	c := mgmtClient{t, base}
	if code, _, b := c.do("PUT", "/api/vhosts/fresh", "guest", nil); code != http.StatusCreated {
		t.Fatalf("PUT vhost: %d %s", code, b)
	}
	var p PermissionInfo
	c.getJSON("/api/permissions/fresh/guest", &p)
	if p.Configure != ".*" || p.Write != ".*" || p.Read != ".*" {
		t.Errorf("creator's permissions: %+v", p)
	}
	if code, _, _ := c.do("GET", "/api/permissions/fresh/mgr", "guest", nil); code != http.StatusNotFound {
		t.Errorf("another user's permissions in the new vhost: %d, want 404", code)
	}
	if code, _, b := c.do("PUT", "/api/permissions/fresh/guest", "guest", map[string]string{"configure": "^x", "write": "", "read": ""}); code/100 != 2 {
		t.Fatalf("PUT permissions: %d %s", code, b)
	}
	if code, _, _ := c.do("PUT", "/api/vhosts/fresh", "guest", nil); code != http.StatusNoContent {
		t.Fatalf("PUT existing vhost: %d", code)
	}
	c.getJSON("/api/permissions/fresh/guest", &p)
	if p.Configure != "^x" {
		t.Errorf("an existing vhost's PUT changed the permissions: %+v", p)
	}
}

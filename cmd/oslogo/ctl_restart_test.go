package main

import (
	"net/http"
	"strings"
	"testing"
)

// TestCtlChangesSurviveRestart: users, tags, vhosts, permissions and
// policies made with oslogo ctl on the embedded broker with a data
// directory are there after a restart, and the new user logs in with its
// password.
func TestCtlChangesSurviveRestart(t *testing.T) {
	dir := t.TempDir()
	b1 := startEmbedded(t, dir)
	tg := ctlTarget{"embedded", b1.amqpURL, b1.apiURL}
	tg.mustCtl(t, "add_user", "openstack", "stack2018")
	tg.mustCtl(t, "set_user_tags", "openstack", "management")
	tg.mustCtl(t, "add_vhost", "nova")
	tg.mustCtl(t, "set_permissions", "-p", "nova", "openstack", ".*", ".*", ".*")
	tg.mustCtl(t, "set_permissions", "openstack", "^os", "", ".*")
	tg.mustCtl(t, "set_policy", "-p", "nova", "--apply-to", "queues", "--priority", "1", "ttl", "^notifications", `{"message-ttl":60000}`)
	b1.stop()

	b2 := startEmbedded(t, dir)
	tg = ctlTarget{"embedded after restart", b2.amqpURL, b2.apiURL}
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"-q", "list_users"}, "\nopenstack\t[management]\n"},
		{[]string{"-q", "list_vhosts"}, "\nnova\n"},
		{[]string{"-q", "list_permissions", "-p", "nova"}, "\nopenstack\t.*\t.*\t.*\n"},
		{[]string{"-q", "list_permissions"}, "\nopenstack\t^os\t\t.*\n"},
		{[]string{"-q", "list_policies", "-p", "nova"}, "\nnova\tttl\t^notifications\tqueues\t{\"message-ttl\":60000}\t1\n"},
	} {
		if out := tg.mustCtl(t, c.args...); !strings.Contains(out, c.want) {
			t.Errorf("after the restart, oslogo ctl %v: %q, want a line %q", c.args, out, strings.TrimSpace(c.want))
		}
	}
	req, _ := http.NewRequest("GET", b2.apiURL+"/api/whoami", nil)
	req.SetBasicAuth("openstack", "stack2018")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	http.DefaultClient.CloseIdleConnections()
	if resp.StatusCode != http.StatusOK {
		t.Errorf("openstack/stack2018 after the restart: %d", resp.StatusCode)
	}
}

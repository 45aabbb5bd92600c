package broker

import "testing"

// TestPermissionRegexMatchesAnywhere: RabbitMQ runs a permission regex
// against the resource name unanchored (re:run), so `^bob\.` is how an
// operator anchors it, `bob` allows any name containing "bob", and the
// empty string allows nothing (checked against RabbitMQ 3.10.8).
func TestPermissionRegexMatchesAnywhere(t *testing.T) {
	cases := []struct {
		re, name string
		allowed  bool
	}{
		{`^bob\.`, "bob.q", true},
		{`^bob\.`, "alice.bob.q", false},
		{`bob`, "alice.bob.q", true},
		{`^bob$`, "bob.q", false},
		{`.*`, "anything", true},
		{``, "anything", false},
		{``, "", true},
		{`compute|scheduler`, "reply_compute_1", true},
	}
	for _, tc := range cases {
		u := newUser(User{Name: "u", Password: "pw", Permissions: map[string]Permission{"/": {Configure: tc.re, Write: tc.re, Read: tc.re}}}, false)
		err := u.check("/", permConfigure, "queue", tc.name)
		if got := err == nil; got != tc.allowed {
			t.Errorf("permission %q on %q: allowed %v, want %v", tc.re, tc.name, got, tc.allowed)
		}
	}
}

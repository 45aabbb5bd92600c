package mgmtclient

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func TestPathEscapesSegments(t *testing.T) {
	for _, tc := range []struct {
		segs []string
		want string
	}{
		{[]string{"queues", "/", "q"}, "/api/queues/%2F/q"},
		{[]string{"permissions", "a/b", "user name"}, "/api/permissions/a%2Fb/user%20name"},
		{[]string{"connections", "127.0.0.1:1 -> 127.0.0.1:2"}, "/api/connections/127.0.0.1:1%20-%3E%20127.0.0.1:2"},
	} {
		if got := Path(tc.segs...); got != tc.want {
			t.Errorf("Path(%q) = %q, want %q", tc.segs, got, tc.want)
		}
	}
}

// TestClientKeepsPathAndHidesPassword: a base URL's path prefix is kept,
// the vhost "/" reaches the server as %2F, user information in the URL is
// sent as basic auth, and no error holds the password.
func TestClientKeepsPathAndHidesPassword(t *testing.T) {
	var gotPath, gotUser, gotPass string
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		gotPath = r.URL.EscapedPath()
		gotUser, gotPass, _ = r.BasicAuth()
		w.WriteHeader(http.StatusNotFound)
		_, _ = w.Write([]byte(`{"error":"Object Not Found","reason":"Not Found"}`))
	}))
	defer srv.Close()
	c, err := New(Config{URL: strings.Replace(srv.URL, "http://", "http://u:pa55@", 1) + "/prefix/"})
	if err != nil {
		t.Fatal(err)
	}
	defer c.CloseIdleConnections()
	err = c.Get(context.Background(), Path("queues", "/", "q"), nil)
	var ae *APIError
	if !errors.As(err, &ae) || ae.Status != 404 || !IsNotFound(err) || ae.Reason != "Not Found" {
		t.Fatalf("error: %v", err)
	}
	if gotPath != "/prefix/api/queues/%2F/q" || gotUser != "u" || gotPass != "pa55" {
		t.Errorf("request: path %q, user %q:%q", gotPath, gotUser, gotPass)
	}
	if strings.Contains(err.Error(), "pa55") || c.URL() != srv.URL+"/prefix" {
		t.Errorf("error %q, URL %q", err, c.URL())
	}
	if _, err := New(Config{URL: "http://u:pa55@[::1"}); err == nil || strings.Contains(err.Error(), "pa55") {
		t.Errorf("bad URL: %v", err)
	}
}

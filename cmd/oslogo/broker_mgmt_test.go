package main

import (
	"encoding/json"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"testing"
)

// TestBrokerCommandHTTP: --http and the config file's http key start the
// management API.
func TestBrokerCommandHTTP(t *testing.T) {
	cfg := filepath.Join(t.TempDir(), "broker.toml")
	if err := os.WriteFile(cfg, []byte("http = \"127.0.0.1:0\"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, args := range [][]string{
		{"broker", "--amqp", "127.0.0.1:0", "--http", "127.0.0.1:0"},
		{"broker", "--amqp", "127.0.0.1:0", "--config-file", cfg},
	} {
		out := background(t, args...)
		waitOutput(t, out, "management API on http://")
		base := regexp.MustCompile(`management API on (http://\S+)/api/`).FindStringSubmatch(out.String())[1]
		req, err := http.NewRequest("GET", base+"/api/whoami", nil)
		if err != nil {
			t.Fatal(err)
		}
		req.SetBasicAuth("guest", "guest")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		var who struct{ Name string }
		if resp.StatusCode != http.StatusOK || json.Unmarshal(body, &who) != nil || who.Name != "guest" {
			t.Fatalf("%v: whoami %d %s", args, resp.StatusCode, body)
		}
	}
}

package main

import (
	"io"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	amqp "github.com/rabbitmq/amqp091-go"
)

func TestBrokerCommand(t *testing.T) {
	dir := t.TempDir()
	cfg := filepath.Join(dir, "broker.toml")
	if err := os.WriteFile(cfg, []byte(`
vhosts = ["nova"]
[[users]]
name = "nova"
password = "secret"
[users.permissions."nova"]
configure = ".*"
write = ".*"
read = ".*"
`), 0o600); err != nil {
		t.Fatal(err)
	}
	out := background(t, "broker", "--amqp", "127.0.0.1:0", "--data", filepath.Join(dir, "data"), "--config-file", cfg)
	waitOutput(t, out, "listening on amqp://")
	addr := regexp.MustCompile(`amqp://(\S+)`).FindStringSubmatch(out.String())[1]
	c, err := amqp.Dial("amqp://nova:secret@" + addr + "/nova")
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	ch, err := c.Channel()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := ch.QueueDeclare("cmd.q", true, false, false, false, nil); err != nil {
		t.Fatal(err)
	}
	if _, err := amqp.Dial("amqp://guest:guest@" + addr + "/"); err == nil {
		t.Fatal("guest still accepted when the config file lists users")
	}
	if _, err := os.Stat(filepath.Join(dir, "data", "definitions.json")); err != nil {
		t.Fatalf("durable queue not saved: %v", err)
	}
}

func TestBrokerCommandBadConfig(t *testing.T) {
	bad := filepath.Join(t.TempDir(), "bad.toml")
	if err := os.WriteFile(bad, []byte("users = 3"), 0o600); err != nil {
		t.Fatal(err)
	}
	if code, _, _ := run(t, "broker", "--config-file", bad); code != exitUsage {
		t.Fatalf("bad config exit code %d", code)
	}
}

func TestBrokerCommandProfiles(t *testing.T) {
	out := background(t, "broker", "--amqp", "127.0.0.1:0", "--profile", "127.0.0.1:0")
	waitOutput(t, out, "listening on amqp://")
	m := regexp.MustCompile(`profiles on (http://\S+)`).FindStringSubmatch(out.String())
	if m == nil {
		t.Fatalf("no profile address in %q", out.String())
	}
	resp, err := http.Get(m[1])
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK || !strings.Contains(string(body), "goroutine") {
		t.Fatalf("profile index: %d %q", resp.StatusCode, body)
	}
}

// TestGoMemoryLimitWanted: `oslogo broker` has the broker set the Go
// runtime's soft memory limit from its watermark (broker's
// TestGoMemoryLimitFollowsWatermark), unless GOMEMLIMIT is set.
func TestGoMemoryLimitWanted(t *testing.T) {
	t.Setenv("GOMEMLIMIT", "")
	if !goMemoryLimitWanted() {
		t.Error("no memory limit without GOMEMLIMIT")
	}
	t.Setenv("GOMEMLIMIT", "1GiB")
	if goMemoryLimitWanted() {
		t.Error("GOMEMLIMIT from the environment overridden")
	}
}

package main

import (
	"bufio"
	"context"
	"encoding/json"
	"log/slog"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/oslogo/oslogo/broker"
)

// TestBrokerHelpListsEveryFlagWithDefault: `oslogo broker --help` shows
// every flag with its default.
func TestBrokerHelpListsEveryFlagWithDefault(t *testing.T) {
	code, out, _ := run(t, "broker", "--help")
	if code != 0 {
		t.Fatalf("exit %d", code)
	}
	flags := regexp.MustCompile(`(?m)^  -(\S+)(?: \S+)?\n?\s*(.*)$`).FindAllStringSubmatch(out, -1)
	seen := map[string]bool{}
	for _, f := range flags {
		seen[f[1]] = true
		if !strings.Contains(f[2], "(default") {
			t.Errorf("flag -%s: no default in %q", f[1], f[2])
		}
	}
	for _, want := range []string{"amqp", "http", "prometheus", "data", "config-file", "log-format", "log-level", "v", "profile"} {
		if !seen[want] {
			t.Errorf("flag -%s not in --help:\n%s", want, out)
		}
	}
}

// tomlKeys lists the keys of the config format, dotted, following toml
// tags (map levels are left out: they are names, such as vhosts).
func tomlKeys(t reflect.Type, prefix string) []string {
	for t.Kind() == reflect.Pointer || t.Kind() == reflect.Slice || t.Kind() == reflect.Map {
		t = t.Elem()
	}
	if t.Kind() != reflect.Struct {
		return nil
	}
	var out []string
	for i := range t.NumField() {
		k := t.Field(i).Tag.Get("toml")
		out = append(out, prefix+k)
		out = append(out, tomlKeys(t.Field(i).Type, prefix+k+".")...)
	}
	return out
}

// TestExampleBrokerConfigIsTheDefaults: docs/oslogo-broker.toml loads,
// gives exactly the options of no file (DefaultOptions, info, text), and
// mentions every key the format has (set, or commented out).
func TestExampleBrokerConfigIsTheDefaults(t *testing.T) {
	b, err := os.ReadFile("../../docs/oslogo-broker.toml")
	if err != nil {
		t.Fatal(err)
	}
	opts := broker.DefaultOptions()
	level, format := slog.LevelDebug, ""
	if err := applyBrokerFileLog(string(b), &opts, &level, &format); err != nil {
		t.Fatal(err)
	}
	if want := broker.DefaultOptions(); !reflect.DeepEqual(opts, want) {
		t.Errorf("example file changes the options:\n got %+v\nwant %+v", opts, want)
	}
	if level != slog.LevelInfo || format != "text" {
		t.Errorf("log level %v, format %q", level, format)
	}
	for _, k := range tomlKeys(reflect.TypeFor[brokerFile](), "") {
		last := k[strings.LastIndex(k, ".")+1:]
		re := regexp.MustCompile(`(?m)^(# )?(\[\[?(\w+\.)*)?` + regexp.QuoteMeta(last) + `(\]\]?| =|\.)`)
		if !re.MatchString(string(b)) {
			t.Errorf("key %s is not in the example file", k)
		}
	}
}

// brokerStderr runs `oslogo <args>` until the test ends and returns its
// stdout and stderr.
func brokerStderr(t *testing.T, args ...string) (stdout, stderr *syncBuffer) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	var out, errb syncBuffer
	done := make(chan int, 1)
	go func() { done <- runMain(ctx, &cmdEnv{stdout: &out, stderr: &errb}, args) }()
	t.Cleanup(func() {
		cancel()
		if code := <-done; code != 0 {
			t.Errorf("%v exited %d: %s", args, code, errb.String())
		}
	})
	return &out, &errb
}

// TestBrokerJSONLogs: with --log-format json every log line is one JSON
// object with slog's time, level and msg.
func TestBrokerJSONLogs(t *testing.T) {
	out, errb := brokerStderr(t, "broker", "--amqp", "127.0.0.1:0", "--log-format", "json", "--log-level", "debug")
	waitOutput(t, out, "listening on amqp://")
	waitOutput(t, errb, "broker started")
	sc := bufio.NewScanner(strings.NewReader(errb.String()))
	lines := 0
	for sc.Scan() {
		var rec map[string]any
		if err := json.Unmarshal(sc.Bytes(), &rec); err != nil {
			t.Fatalf("log line %q: %v", sc.Text(), err)
		}
		if _, err := time.Parse(time.RFC3339Nano, rec["time"].(string)); err != nil || rec["level"] == nil || rec["msg"] == nil {
			t.Errorf("log line %q lacks time, level or msg", sc.Text())
		}
		lines++
	}
	if lines == 0 {
		t.Fatal("no log line")
	}
	if code, _, errs := run(t, "broker", "--log-format", "xml"); code != exitUsage || !strings.Contains(errs, "xml") {
		t.Errorf("--log-format xml: exit %d, %q", code, errs)
	}
	if code, _, errs := run(t, "broker", "--log-level", "loud"); code != exitUsage || !strings.Contains(errs, "loud") {
		t.Errorf("--log-level loud: exit %d, %q", code, errs)
	}
}

// TestSystemdUnitStartsBroker: dist/oslogo-broker.service is a simple
// (not notify) unit with the hardening options, and its ExecStart line,
// with the example config as the credential and temporary directories for
// /var/lib, starts the broker.
func TestSystemdUnitStartsBroker(t *testing.T) {
	b, err := os.ReadFile("../../dist/oslogo-broker.service")
	if err != nil {
		t.Fatal(err)
	}
	unit := string(b)
	for _, want := range []string{"Type=simple", "DynamicUser=yes", "NoNewPrivileges=yes", "ProtectSystem=strict",
		"ProtectHome=yes", "PrivateTmp=yes", "CapabilityBoundingSet=\n", "RestrictAddressFamilies=AF_INET AF_INET6 AF_UNIX",
		"SystemCallFilter=@system-service", "StateDirectory=oslogo", "LoadCredential=broker.toml:"} {
		if !strings.Contains(unit, want) {
			t.Errorf("unit lacks %q", strings.TrimSpace(want))
		}
	}
	m := regexp.MustCompile(`(?m)^ExecStart=(\S+) (.*)$`).FindStringSubmatch(unit)
	if m == nil || filepath.Base(m[1]) != "oslogo" {
		t.Fatalf("ExecStart: %v", m)
	}
	creds, state := t.TempDir(), t.TempDir()
	example, err := os.ReadFile("../../docs/oslogo-broker.toml")
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(creds, "broker.toml"), example, 0o600); err != nil {
		t.Fatal(err)
	}
	line := strings.ReplaceAll(m[2], "%d", creds)
	line = strings.ReplaceAll(line, "/var/lib/oslogo", state)
	args := append(strings.Fields(line), "--amqp", "127.0.0.1:0")
	out, errb := brokerStderr(t, args...)
	waitOutput(t, out, "listening on amqp://")
	waitOutput(t, errb, `"msg":"broker started"`)
}

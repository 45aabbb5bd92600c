package main

import (
	"bytes"
	"context"
	"encoding/json"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// syncBuffer is written by a command running in another goroutine.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// run runs one oslogo command line in-process.
func run(t *testing.T, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	var out, errb syncBuffer
	code = runMain(context.Background(), &cmdEnv{stdout: &out, stderr: &errb}, args)
	return code, out.String(), errb.String()
}

// background runs a long-lived command until the test ends.
func background(t *testing.T, args ...string) *syncBuffer {
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
	return &out
}

func waitOutput(t *testing.T, b *syncBuffer, substr string) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for !strings.Contains(b.String(), substr) {
		if time.Now().After(deadline) {
			t.Fatalf("no %q in output %q", substr, b.String())
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func TestServeCallCast(t *testing.T) {
	url := "memory://" + t.Name()
	srv := background(t, "serve", "--url", url, "--topic", "T", "--server", "s1")
	waitOutput(t, srv, "serving topic T as server s1")

	if code, out, errs := run(t, "call", "--url", url, "--topic", "T", "add", "a=2", "b=3"); code != 0 || out != "5\n" {
		t.Fatalf("call add: exit %d, stdout %q, stderr %q", code, out, errs)
	}
	if code, out, _ := run(t, "call", "--url", url, "--topic", "T", "--server", "s1", "echo", `data={"k": [1, "x"]}`); code != 0 || strings.TrimSpace(out) != `{"k":[1,"x"]}` {
		t.Fatalf("call echo with JSON: exit %d, %q", code, out)
	}
	if code, out, _ := run(t, "call", "--url", url, "--topic", "T", "echo", "data=plain words"); code != 0 || out != "\"plain words\"\n" {
		t.Fatalf("call echo with a string: exit %d, %q", code, out)
	}
	if code, out, _ := run(t, "call", "--url", url, "--topic", "T", "func_call", "hostname=c1", "getdate=now"); code != 0 || !strings.HasPrefix(out, `["s1","`) {
		t.Fatalf("func_call: exit %d, %q", code, out)
	}
	code, _, errs := run(t, "call", "--url", url, "--topic", "T", "fail", "message=bad value")
	if code != exitRemote || errs != "builtins.ValueError: bad value (via "+url+")\n" {
		t.Fatalf("call fail: exit %d, stderr %q", code, errs)
	}
	code, _, errs = run(t, "call", "--url", url, "--topic", "nobody", "--timeout", "100ms", "add")
	if code != exitTimeout || !strings.Contains(errs, "MessagingTimeout") || !strings.Contains(errs, "(via "+url+")") || strings.Count(errs, "\n") != 1 {
		t.Fatalf("call timeout: exit %d, stderr %q", code, errs)
	}
	code, _, errs = run(t, "call", "--url", url, "--topic", "T", "nosuch")
	if code != 1 || !strings.HasPrefix(errs, "oslo_messaging.rpc.dispatcher.NoSuchMethod: ") {
		t.Fatalf("call nosuch: exit %d, stderr %q", code, errs)
	}
	for i := 0; i < 3; i++ {
		if code, _, errs := run(t, "cast", "--url", url, "--topic", "T", "count"); code != 0 {
			t.Fatalf("cast: exit %d, %s", code, errs)
		}
	}
	deadline := time.Now().Add(20 * time.Second)
	for {
		_, out, _ := run(t, "call", "--url", url, "--topic", "T", "counted")
		if out == "3\n" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("counted = %q after 3 casts", out)
		}
	}
}

func TestFanoutCast(t *testing.T) {
	url := "memory://" + t.Name()
	for _, s := range []string{"a", "b"} {
		waitOutput(t, background(t, "serve", "--url", url, "--topic", "F", "--server", s), "serving")
	}
	if code, _, errs := run(t, "cast", "--url", url, "--topic", "F", "--fanout", "count"); code != 0 {
		t.Fatalf("fanout cast: exit %d, %s", code, errs)
	}
	for _, s := range []string{"a", "b"} {
		deadline := time.Now().Add(20 * time.Second)
		for {
			_, out, _ := run(t, "call", "--url", url, "--topic", "F", "--server", s, "counted")
			if out == "1\n" {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("server %s counted %q after a fanout cast", s, out)
			}
		}
	}
}

func TestNotifyListen(t *testing.T) {
	url := "memory://" + t.Name()
	// The publisher declares the queue, so notifications sent before the
	// listener starts wait for it.
	for _, p := range []string{"info", "error"} {
		code, _, errs := run(t, "notify", "--url", url, "--publisher-id", "volume.host1", "--event-type", "volume.create.end", "--priority", p, `{"volume_id": "v1", "size": 1}`)
		if code != 0 {
			t.Fatalf("notify: exit %d, %s", code, errs)
		}
	}
	code, out, errs := run(t, "listen", "--url", url, "--count", "2", "--timeout", "20s")
	if code != 0 {
		t.Fatalf("listen: exit %d, %s", code, errs)
	}
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if len(lines) != 2 {
		t.Fatalf("listen printed %d lines: %q", len(lines), out)
	}
	priorities := map[string]bool{}
	for _, line := range lines {
		var n map[string]any
		if err := json.Unmarshal([]byte(line), &n); err != nil {
			t.Fatalf("line %q: %v", line, err)
		}
		for _, k := range []string{"priority", "publisher_id", "event_type", "payload", "timestamp", "message_id"} {
			if _, ok := n[k]; !ok {
				t.Errorf("line %q lacks %s", line, k)
			}
		}
		if n["event_type"] != "volume.create.end" || n["publisher_id"] != "volume.host1" {
			t.Errorf("line %q", line)
		}
		priorities[n["priority"].(string)] = true
	}
	if !priorities["info"] || !priorities["error"] {
		t.Errorf("priorities %v", priorities)
	}
	code, _, errs = run(t, "listen", "--url", url, "--count", "1", "--timeout", "50ms")
	if code != 2 || !strings.Contains(errs, "timed out") {
		t.Fatalf("listen with nothing to hear: exit %d, %q", code, errs)
	}
}

func TestDemo(t *testing.T) {
	for _, args := range [][]string{{"demo", "--url", "memory://demo"}, {"demo"}} {
		code, out, errs := run(t, args...)
		if code != 0 || !strings.Contains(out, "demo complete") || strings.Contains(out, "FAILED") {
			t.Fatalf("%v: exit %d\n%s\n%s", args, code, out, errs)
		}
		for _, step := range []string{"[1] fanout", "[2] cast", "[3] call", "[4] the add service", "[5] notifications", "volume.create.end"} {
			if !strings.Contains(out, step) {
				t.Errorf("%v: transcript lacks %q", args, step)
			}
		}
	}
}

func TestUsageErrors(t *testing.T) {
	cases := []struct {
		args []string
		code int
		want string
	}{
		{[]string{"call", "--bogus"}, exitUsage, "flag provided but not defined"},
		{[]string{"call", "--url", "memory://", "add"}, exitUsage, "--topic is required"},
		{[]string{"call", "--url", "memory://", "--topic", "T"}, exitUsage, "missing METHOD"},
		{[]string{"call", "--url", "memory://", "--topic", "T", "add", "novalue"}, exitUsage, "not key=value"},
		{[]string{"call", "--url", "nosuch://x", "--topic", "T", "add"}, exitUsage, "no transport for scheme"},
		{[]string{"call", "--config-file", "/nonexistent.conf", "--topic", "T", "add"}, exitUsage, "nonexistent.conf"},
		{[]string{"notify", "--url", "memory://", "{}"}, exitUsage, "--publisher-id and --event-type are required"},
		{[]string{"notify", "--url", "memory://", "--publisher-id", "p", "--event-type", "e", "--priority", "loud"}, exitUsage, "unknown notification priority"},
		{[]string{"frobnicate"}, exitUsage, "unknown command"},
		{[]string{"call", "--url", "memory://", "--topic", "T", "add", "a=1", "a=2"}, exitUsage, `"a" given twice`},
		{[]string{"call", "--url", "memory://", "--topic", "T", "add", `a={"x": 1`}, exitUsage, "looks like JSON but does not parse"},
		{[]string{"call", "--url", "memory://", "--topic", "T", "add", `a=[1,`}, exitUsage, "looks like JSON but does not parse"},
		{[]string{"notify", "--url", "memory://", "--publisher-id", "p", "--event-type", "e", `{"size": }`}, exitUsage, "looks like JSON but does not parse"},
		{[]string{"call", "--url", "memory://", "--topic", "T", "--timeout", "soon", "add"}, exitUsage, "neither seconds nor a duration"},
		{[]string{"serve", "--url", "memory://", "--topic", "T", "extra"}, exitUsage, `unexpected argument "extra"`},
	}
	for _, tc := range cases {
		code, out, errs := run(t, tc.args...)
		if code != tc.code || !strings.Contains(errs, tc.want) || strings.Count(errs, "\n") != 1 || out != "" {
			t.Errorf("%v: exit %d, stdout %q, stderr %q; want exit %d and one line with %q", tc.args, code, out, errs, tc.code, tc.want)
		}
	}
}

func TestHelpAndVersion(t *testing.T) {
	for name := range commands {
		code, out, _ := run(t, name, "--help")
		if code != 0 || !strings.Contains(out, "usage: oslogo "+name) {
			t.Errorf("%s --help: exit %d, %q", name, code, out)
		}
	}
	if code, out, _ := run(t, "version"); code != 0 || !strings.HasPrefix(out, "oslogo ") {
		t.Errorf("version: %d %q", code, out)
	}
	if code, out, _ := run(t, "--help"); code != 0 || !strings.Contains(out, "demo") {
		t.Errorf("--help: %d %q", code, out)
	}
}

// TestFlagsAfterArguments: flags are taken wherever they are typed, a bare
// timeout is seconds, and "--" ends the flags.
func TestFlagsAfterArguments(t *testing.T) {
	url := "memory://" + t.Name()
	srv := background(t, "serve", "--url", url, "--topic", "T", "--server", "s1")
	waitOutput(t, srv, "serving topic T as server s1")
	if code, out, errs := run(t, "call", "--url", url, "add", "a=2", "--topic", "T", "b=3", "--timeout", "2"); code != 0 || out != "5\n" {
		t.Fatalf("flags after the method: exit %d, stdout %q, stderr %q", code, out, errs)
	}
	if code, out, errs := run(t, "call", "--url", url, "--topic", "T", "echo", "--", "data=--topic"); code != 0 || out != "\"--topic\"\n" {
		t.Fatalf("after --: exit %d, stdout %q, stderr %q", code, out, errs)
	}
	code, _, errs := run(t, "call", "sleep", "--url", url, "--topic", "T", "seconds=1", "--timeout", "0.2")
	if code != exitTimeout || !strings.Contains(errs, "MessagingTimeout") {
		t.Fatalf("--timeout 0.2 (seconds): exit %d, stderr %q", code, errs)
	}
}

func TestSecondsFlag(t *testing.T) {
	for in, want := range map[string]time.Duration{"2": 2 * time.Second, "0.5": 500 * time.Millisecond, "30s": 30 * time.Second, "1m": time.Minute, "0": 0} {
		var d time.Duration
		if err := (secondsFlag{&d}).Set(in); err != nil || d != want {
			t.Errorf("%q: %v, %v; want %v", in, d, err, want)
		}
	}
	for _, in := range []string{"-1", "-2s", "two", ""} {
		var d time.Duration
		if err := (secondsFlag{&d}).Set(in); err == nil {
			t.Errorf("%q accepted as %v", in, d)
		}
	}
}

func TestRedactURL(t *testing.T) {
	cases := map[string]string{
		"rabbit://guest:secret@127.0.0.1:5672/":              "rabbit://guest:xxxxx@127.0.0.1:5672/",
		"rabbit://u1:s1@h1:5672,u2:s2@h2:5673/vh":            "rabbit://u1:xxxxx@h1:5672,u2:xxxxx@h2:5673/vh",
		"rabbit://u1:s1@h1,h2/":                              "rabbit://u1:xxxxx@h1,h2/",
		"rabbit://user@h/":                                   "rabbit://user@h/",
		"rabbit://u:pa/ss@h/vh":                              "rabbit://u:xxxxx@h/vh",
		"rabbit://u:p,w@h1,u2:q?x@h2/?ssl=1":                 "rabbit://u:xxxxx@h1,u2:xxxxx@h2/?ssl=1",
		"memory://TestX":                                     "memory://TestX",
		"kombu://openstack:stack2018@10.0.0.1:5672/nova?a=b": "kombu://openstack:xxxxx@10.0.0.1:5672/nova?a=b",
	}
	for in, want := range cases {
		if got := redactURL(in); got != want {
			t.Errorf("redactURL(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestParseKeywordArgs(t *testing.T) {
	got, err := parseKeywordArgs([]string{"a=2", "b=x y", "c=[1,2]", "d=", "e=true", "f=a=b"})
	if err != nil {
		t.Fatal(err)
	}
	b, _ := json.Marshal(got)
	if string(b) != `{"a":2,"b":"x y","c":[1,2],"d":"","e":true,"f":"a=b"}` {
		t.Errorf("parsed %s", b)
	}
}

package main

import (
	"bytes"
	"context"
	"strings"
	"testing"
)

func TestNotifications(t *testing.T) {
	var out bytes.Buffer
	if err := run(context.Background(), []string{"-url", "memory://notifications"}, &out); err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSpace(out.String()), "\n")
	if len(lines) != 2 || !strings.HasPrefix(lines[0], "info volume.create.start from volume.host1@lvm") ||
		!strings.HasPrefix(lines[1], "info volume.create.end") || !strings.Contains(lines[1], `"status":"available"`) || !strings.Contains(lines[1], "req-1") {
		t.Fatalf("output:\n%s", out.String())
	}
}

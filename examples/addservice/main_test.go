package main

import (
	"bytes"
	"context"
	"strings"
	"testing"
)

func TestAddService(t *testing.T) {
	var out bytes.Buffer
	if err := run(context.Background(), []string{"-config-file", "my.conf"}, &out); err != nil {
		t.Fatal(err)
	}
	got := out.String()
	for _, want := range []string{"The Server!", "receive message", "result : 5", "result_two : 5"} {
		if !strings.Contains(got, want) {
			t.Errorf("output lacks %q:\n%s", want, got)
		}
	}
}

package main

import (
	"bytes"
	"context"
	"strings"
	"testing"
)

func TestTimeServer(t *testing.T) {
	var out bytes.Buffer
	if err := run(context.Background(), []string{"-url", "memory://timeserver"}, &out); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"client1: received broadcast_time", "client2: received broadcast_time", "client1: received notify_time", "received call_reply"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("output lacks %q:\n%s", want, out.String())
		}
	}
	if strings.Contains(out.String(), "client2: received notify_time") {
		t.Errorf("the cast to client1 reached client2:\n%s", out.String())
	}
}

package main

import (
	"strings"
	"testing"
)

// TestDemoMasksPassword: `oslogo demo --url` prints the transport URL with
// its password masked, as `oslogo serve` does.
func TestDemoMasksPassword(t *testing.T) {
	const password = "s3cret-Vd52"
	code, out, errs := run(t, "demo", "--url", "memory://nova:"+password+"@demo/")
	if code != 0 {
		t.Fatalf("exit %d\n%s\n%s", code, out, errs)
	}
	if strings.Contains(out+errs, password) {
		t.Fatalf("password printed:\n%s\n%s", out, errs)
	}
	if !strings.Contains(out, "memory://nova:xxxxx@demo/") {
		t.Fatalf("URL not shown masked:\n%s", out)
	}
	if got := redactedURL("rabbit://nova:" + password + "@host:5672/%zz"); strings.Contains(got, password) {
		t.Fatalf("unparseable URL printed: %q", got)
	}
}

// TestServeMasksPassword: `oslogo serve` names its transport with the
// password masked.
func TestServeMasksPassword(t *testing.T) {
	const password = "s3cret-Rw18"
	out := background(t, "serve", "--url", "memory://nova:"+password+"@serve/", "--topic", "masked")
	waitOutput(t, out, "serving topic")
	if strings.Contains(out.String(), password) || !strings.Contains(out.String(), "memory://nova:xxxxx@serve/") {
		t.Fatalf("serve output: %q", out.String())
	}
}

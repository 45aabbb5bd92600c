package oslo18

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestPeerImports18: after `make setup`, the recorded interpreter imports
// the 18.1.0 oslo_messaging, not Debian's 14.0.3.
func TestPeerImports18(t *testing.T) {
	p := Get(t)
	if strings.Contains(p.Package, "/usr/lib/python3/dist-packages/") {
		t.Fatalf("loaded Debian's package %s", p.Package)
	}
	out, err := p.Command("-c", "import oslo_messaging._drivers.impl_rabbit as r; print([o.name for o in r.rabbit_opts if o.name == 'use_queue_manager'])").CombinedOutput()
	if err != nil {
		t.Fatalf("%v: %s", err, out)
	}
	if !strings.Contains(string(out), "use_queue_manager") {
		t.Fatalf("the peer has no use_queue_manager option (not 16.0 or later): %s", out)
	}
	if _, err := os.Stat(p.Script("common.py")); err != nil {
		t.Fatalf("runner scripts: %v", err)
	}
}

// TestMissingSetupFails: without the set-up record the error names
// `make setup` (the tests fail rather than skip).
func TestMissingSetupFails(t *testing.T) {
	_, err := readEnv(filepath.Join(t.TempDir(), "oslo18.env"))
	if err == nil {
		t.Fatal("no error for a missing record")
	}
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "go.mod"), []byte("module x\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	t.Chdir(dir)
	if _, err := load(); err == nil || !strings.Contains(err.Error(), "make setup") {
		t.Fatalf("load in a repository without set-up: %v, want an error naming make setup", err)
	}
}

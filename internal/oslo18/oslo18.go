// Package oslo18 tells tests how to run the oslo.messaging 18.1.0 peer that
// scripts/setup.d/40-oslo-messaging-18.sh provides (Debian packages 14.0.3
// only): the Python interpreter and the environment that make
// `import oslo_messaging` load the 18.1.0 copy under .peers/.
//
// A test that needs the peer fails, with a message naming `make setup`, when
// the set-up step has not been run; it never skips.
package oslo18

import (
	"bufio"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
)

// Version is the oslo.messaging release the peer is.
const Version = "18.1.0"

// EnvFile is where the set-up step records the interpreter and PYTHONPATH,
// relative to the repository root.
const EnvFile = ".peers/oslo18.env"

// Peer is how to run the 18.1.0 peer.
type Peer struct {
	// Python is the interpreter: /usr/bin/python3 with a local copy, or the
	// venv's python.
	Python string
	// Env is os.Environ() with PYTHONPATH set for the peer.
	Env []string
	// Package is the oslo_messaging/__init__.py the interpreter imports.
	Package string
	// Root is the repository root.
	Root string
}

var (
	once    sync.Once
	peer    Peer
	peerErr error
)

// Python returns the interpreter and environment that run the 18.1.0 peer,
// or fails t when the set-up step has not provided it.
func Python(t testing.TB) (python string, env []string) {
	t.Helper()
	p := Get(t)
	return p.Python, p.Env
}

// Get is Python with the whole Peer.
func Get(t testing.TB) Peer {
	t.Helper()
	p, err := Load()
	if err != nil {
		t.Fatalf("oslo.messaging %s peer: %v", Version, err)
	}
	return p
}

// Load finds the peer without a testing.TB (for commands such as the
// benchmark driver). The import check runs once per process.
func Load() (Peer, error) {
	once.Do(func() { peer, peerErr = load() })
	return peer, peerErr
}

// Command is an exec.Cmd running the peer's Python with args.
func (p Peer) Command(args ...string) *exec.Cmd {
	cmd := exec.Command(p.Python, args...)
	cmd.Env = p.Env
	return cmd
}

// Script is the path of interop/python18/<name>.
func (p Peer) Script(name string) string {
	return filepath.Join(p.Root, "interop", "python18", name)
}

func load() (Peer, error) {
	root, err := repoRoot()
	if err != nil {
		return Peer{}, err
	}
	vars, err := readEnv(filepath.Join(root, EnvFile))
	if err != nil {
		return Peer{}, fmt.Errorf("%v: run `make setup` (scripts/setup.d/40-oslo-messaging-18.sh) first", err)
	}
	p := Peer{Python: vars["PYTHON"], Root: root}
	if p.Python == "" {
		return Peer{}, fmt.Errorf("%s names no PYTHON: run `make setup` again", EnvFile)
	}
	env := make([]string, 0, len(os.Environ())+1)
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "PYTHONPATH=") {
			env = append(env, kv)
		}
	}
	if pp := vars["PYTHONPATH"]; pp != "" {
		env = append(env, "PYTHONPATH="+pp)
	}
	p.Env = env
	out, err := p.Command("-c", "import oslo_messaging; print(oslo_messaging.__file__)").CombinedOutput()
	if err != nil {
		return Peer{}, fmt.Errorf("import oslo_messaging with %s: %v: %s: run `make setup`", p.Python, err, strings.TrimSpace(string(out)))
	}
	p.Package = strings.TrimSpace(string(out))
	if !strings.Contains(p.Package, "oslo.messaging-"+Version) && !strings.Contains(p.Package, "oslo18-venv") {
		return Peer{}, fmt.Errorf("import oslo_messaging loaded %s, not the %s copy: run `make setup`", p.Package, Version)
	}
	return p, nil
}

func readEnv(path string) (map[string]string, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	vars := map[string]string{}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if k, v, ok := strings.Cut(sc.Text(), "="); ok {
			vars[k] = v
		}
	}
	return vars, sc.Err()
}

// repoRoot walks up from the working directory (a package directory under
// go test) to the directory holding go.mod.
func repoRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errors.New("no go.mod above the working directory")
		}
		dir = parent
	}
}

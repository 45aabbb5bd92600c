package messaging_test

import (
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// TestREADMESnippetBuilds: the README's first Go block is a complete
// program that builds against this repository, in a module of its own
// (replace directive to the repository; the repository's go.sum, so no
// download is needed beyond what the repository's build needs).
func TestREADMESnippetBuilds(t *testing.T) {
	root, err := filepath.Abs("..")
	if err != nil {
		t.Fatal(err)
	}
	readme, err := os.ReadFile(filepath.Join(root, "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	m := regexp.MustCompile("(?s)```go\n(.*?)```").FindSubmatch(readme)
	if m == nil {
		t.Fatal("no ```go block in README.md")
	}
	src := string(m[1])
	if !strings.HasPrefix(src, "package main\n") {
		t.Fatalf("the README's first Go block is not a complete program:\n%s", src)
	}
	dir := t.TempDir()
	gomod := "module readmesnippet\n\ngo 1.26\n\nrequire github.com/oslogo/oslogo v0.0.0\n\nreplace github.com/oslogo/oslogo => " + root + "\n"
	sum, err := os.ReadFile(filepath.Join(root, "go.sum"))
	if err != nil {
		t.Fatal(err)
	}
	for name, data := range map[string][]byte{"go.mod": []byte(gomod), "go.sum": sum, "main.go": []byte(src)} {
		if err := os.WriteFile(filepath.Join(dir, name), data, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	cmd := exec.Command("go", "build", "-o", filepath.Join(dir, "snippet"), ".")
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "GOFLAGS=-mod=mod "+os.Getenv("GOFLAGS"), "GOWORK=off")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build of the README snippet: %v\n%s\n--- main.go ---\n%s", err, out, src)
	}
}

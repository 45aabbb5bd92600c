package config

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

func FuzzLoad(f *testing.F) {
	seeds := []string{
		"[DEFAULT]\nurl = 'rabbit://openstack:stack2018@127.0.0.1:5672/'\n",
		"[g]\nk = a\n  b\n\n# c\n; d\nk: \"q\"\n",
		"[DEFAULT] url = x\n",
		"k = v\n",
		"\ufeff[g]\r\nk=\r\n \r\n",
		"[]\n",
	}
	for _, s := range seeds {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, in string) {
		c := New()
		if err := RegisterMessagingOpts(c); err != nil {
			t.Fatal(err)
		}
		err := c.LoadReader("fuzz.conf", strings.NewReader(in))
		if err != nil {
			var pe *ParseError
			if !errors.As(err, &pe) {
				t.Fatalf("error %v is not a *ParseError", err)
			}
			if lines := strings.Count(in, "\n") + strings.Count(in, "\r") + 1; pe.Line < 1 || pe.Line > lines {
				t.Fatalf("line %d out of range 1..%d", pe.Line, lines)
			}
			if len(c.Files()) != 0 {
				t.Fatal("a failed load was applied")
			}
			return
		}
		l := c.layers[0]
		for g, keys := range l.groups {
			if g == "" {
				t.Fatal("empty group name")
			}
			for k := range keys {
				if k == "" || strings.ContainsAny(k, "=:\n") || strings.TrimSpace(k) != k {
					t.Fatalf("bad key %q", k)
				}
			}
		}
		// Reading values never panics, whatever their content.
		_ = c.Validate()
		for _, g := range []string{DefaultGroup, RabbitGroup, NotificationsGroup} {
			for k := range c.Section(g) {
				_ = c.Int(g, k)
				_ = c.Duration(g, k)
				_ = c.List(g, k)
				_ = c.Strings(g, k)
			}
		}
	})
}

// writeINI writes a parsed layer back as a file: every value quoted (so
// that the quotes splitKeyValue strips are the ones written), later lines
// of a multi-line value indented as continuation lines.
func writeINI(l *layer) string {
	var b strings.Builder
	for g, keys := range l.groups {
		b.WriteString("[" + g + "]\n")
		for k, vals := range keys {
			for _, v := range vals {
				parts := strings.Split(v.s, "\n")
				if strings.ContainsRune("#;[", rune(k[0])) {
					// A key read from "\x1c#k = v" (the separator is
					// stripped, as oslo.config strips it) would start a
					// comment or a section if written bare.
					b.WriteString("\x1c")
				}
				b.WriteString(k + " = \"" + parts[0] + "\"\n")
				for _, p := range parts[1:] {
					b.WriteString("    " + p + "\n")
				}
			}
		}
	}
	return b.String()
}

// layerValues is a layer without where each value came from.
func layerValues(l *layer) map[string]map[string][]string {
	out := map[string]map[string][]string{}
	for g, keys := range l.groups {
		out[g] = map[string][]string{}
		for k, vals := range keys {
			for _, v := range vals {
				out[g][k] = append(out[g][k], v.s)
			}
		}
	}
	return out
}

// FuzzParseRoundTrip parses a file, writes what it read back as a file and
// parses that: the groups, keys and values (every assignment, in order)
// are the same.
func FuzzParseRoundTrip(f *testing.F) {
	for _, s := range []string{
		"[DEFAULT]\ntransport_url = rabbit://openstack:stack2018@127.0.0.1:5672/\ncontrol_exchange=nova\n",
		"[oslo_messaging_rabbit]\nrabbit_qos_prefetch_count: 10\nheartbeat_timeout_threshold = '30'\n[Oslo_Messaging_Rabbit]\nssl = \"\"\n",
		"[g]\nk = first\n  second\n\tthird\nk = again\n[a]]\nx = \"\n",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, in string) {
		l, err := parse("fuzz.conf", strings.NewReader(in))
		if err != nil {
			return
		}
		out := writeINI(l)
		l2, err := parse("again.conf", strings.NewReader(out))
		if err != nil {
			t.Fatalf("written back as\n%s\nit does not parse: %v", out, err)
		}
		if a, b := fmt.Sprintf("%q", layerValues(l)), fmt.Sprintf("%q", layerValues(l2)); a != b {
			t.Fatalf("read %s\nwritten back as\n%s\nread %s", a, out, b)
		}
	})
}

// TestParseCorpusAgainstOsloConfig parses every seed of FuzzLoad and
// FuzzParseRoundTrip with oslo.config's own INI parser (Python) and with
// parse: both refuse the same files, at the same line, and read the same
// assignments from the others. Files that are not UTF-8 (which Python
// refuses to read) and files that start with a BOM are left out.
func TestParseCorpusAgainstOsloConfig(t *testing.T) {
	var inputs []string
	for _, target := range []string{"FuzzLoad", "FuzzParseRoundTrip"} {
		files, err := filepath.Glob(filepath.Join("testdata", "fuzz", target, "*"))
		if err != nil {
			t.Fatal(err)
		}
		for _, f := range files {
			b, err := os.ReadFile(f)
			if err != nil {
				t.Fatal(err)
			}
			lines := strings.SplitN(string(b), "\n", 3)
			if len(lines) < 2 || lines[0] != "go test fuzz v1" {
				t.Fatalf("%s: not a corpus file", f)
			}
			s, err := strconv.Unquote(strings.TrimSuffix(strings.TrimPrefix(lines[1], "string("), ")"))
			if err != nil {
				t.Fatalf("%s: %v", f, err)
			}
			inputs = append(inputs, s)
		}
	}
	if len(inputs) < 8 {
		t.Fatalf("only %d seeds", len(inputs))
	}
	dir := t.TempDir()
	var paths []string
	for i, s := range inputs {
		p := filepath.Join(dir, fmt.Sprintf("%d.conf", i))
		if err := os.WriteFile(p, []byte(s), 0o600); err != nil {
			t.Fatal(err)
		}
		paths = append(paths, p)
	}
	out, err := exec.Command("/usr/bin/python3", append([]string{"testdata/oslo_parse.py"}, paths...)...).Output()
	if err != nil {
		t.Fatalf("python oslo.config (scripts/setup.sh installs it): %v", err)
	}
	var py []struct {
		Groups map[string]map[string][]string `json:"groups"`
		Error  string                         `json:"error"`
		Line   int                            `json:"line"`
		Skip   string                         `json:"skip"`
	}
	if err := json.Unmarshal(out, &py); err != nil || len(py) != len(inputs) {
		t.Fatalf("%d results for %d files: %v", len(py), len(inputs), err)
	}
	compared := 0
	defer func() { t.Logf("%d of %d files compared", compared, len(inputs)) }()
	for i, s := range inputs {
		if py[i].Skip != "" || strings.HasPrefix(s, "\ufeff") {
			// Python does not read other encodings, nor skip a BOM; the Go
			// parser skips a BOM on purpose.
			continue
		}
		compared++
		l, err := parse("f.conf", strings.NewReader(s))
		if (err != nil) != (py[i].Error != "") {
			t.Errorf("%q: Go %v, oslo.config %q", s, err, py[i].Error)
			continue
		}
		if err != nil {
			var pe *ParseError
			if errors.As(err, &pe) && pe.Line != py[i].Line {
				t.Errorf("%q: Go refuses line %d, oslo.config line %d", s, pe.Line, py[i].Line)
			}
			continue
		}
		if got, want := fmt.Sprintf("%q", layerValues(l)), fmt.Sprintf("%q", py[i].Groups); got != want {
			t.Errorf("%q:\nGo          %s\noslo.config %s", s, got, want)
		}
	}
}

// TestParsePythonWhitespace: the characters U+001C to U+001F are
// whitespace to Python's strip(), so oslo.config trims them from keys,
// values and continuation lines and reads a line of them as blank; the
// parser does the same (found by TestParseCorpusAgainstOsloConfig).
func TestParsePythonWhitespace(t *testing.T) {
	cases := map[string]map[string][]string{
		"[g]\nk = v\x1f\n":          {"k": {"v"}},
		"[g]\n\x1ck\x1d = \x1ev\n":  {"k": {"v"}},
		"[g]\nk = a\n \x1fb\n":      {"k": {"a\nb"}},
		"[g]\nk = a\n\x1e\nj = b\n": {"k": {"a"}, "j": {"b"}},
	}
	for in, want := range cases {
		l, err := parse("f.conf", strings.NewReader(in))
		if err != nil {
			t.Errorf("%q: %v", in, err)
			continue
		}
		if got := layerValues(l)["g"]; fmt.Sprintf("%q", got) != fmt.Sprintf("%q", want) {
			t.Errorf("%q: got %q, want %q", in, got, want)
		}
	}
	// A line of U+001E ends a multi-line value: the indented line after it
	// continues nothing.
	if _, err := parse("f.conf", strings.NewReader("[g]\nk = a\n\x1e\n b\n")); err == nil {
		t.Error("continuation after a blank line accepted")
	}
}

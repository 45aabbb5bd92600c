package config

import (
	"errors"
	"reflect"
	"strings"
	"testing"
)

// flat turns a parsed layer into group -> key -> values for comparison.
func flat(l *layer) map[string]map[string][]string {
	out := map[string]map[string][]string{}
	for g, keys := range l.groups {
		out[g] = map[string][]string{}
		for k, vs := range keys {
			for _, v := range vs {
				out[g][k] = append(out[g][k], v.s)
			}
		}
	}
	return out
}

type kv = map[string]map[string][]string

func TestParse(t *testing.T) {
	tests := []struct {
		name string
		in   string
		want kv
	}{
		{"single quotes stripped", "[DEFAULT]\nurl = 'rabbit://u:p@h:5672/'\n",
			kv{"DEFAULT": {"url": {"rabbit://u:p@h:5672/"}}}},
		{"double quotes stripped", "[DEFAULT]\na = \"x y\"\n",
			kv{"DEFAULT": {"a": {"x y"}}}},
		{"only the outer pair", "[DEFAULT]\na = \"a\"b\"\n",
			kv{"DEFAULT": {"a": {`a"b`}}}},
		{"mismatched quotes kept", "[DEFAULT]\na = 'x\"\nb = 'x\n",
			kv{"DEFAULT": {"a": {`'x"`}, "b": {"'x"}}}},
		{"lone quote becomes empty", "[DEFAULT]\na = '\n",
			kv{"DEFAULT": {"a": {""}}}},
		{"backticks kept", "[DEFAULT]\na = `x`\n",
			kv{"DEFAULT": {"a": {"`x`"}}}},
		{"whitespace trimmed", "[DEFAULT]\n  \na_b   =   v w  \t\n",
			kv{"DEFAULT": {"a_b": {"v w"}}}},
		{"indented key is a continuation", "[DEFAULT]\n\ta = 1\n", nil},
		{"colon separator", "[g]\nk: v=w\n",
			kv{"g": {"k": {"v=w"}}}},
		{"equals before colon", "[g]\nurl = rabbit://h:1/\n",
			kv{"g": {"url": {"rabbit://h:1/"}}}},
		{"empty value", "[g]\nk =\n",
			kv{"g": {"k": {""}}}},
		{"comments", "# top\n; also\n[g]\n# k = 1\nk = 2 # not a comment\n;x=1\n",
			kv{"g": {"k": {"2 # not a comment"}}}},
		{"continuation", "[g]\nk = first\n  second\n\tthird\nn = 1\n",
			kv{"g": {"k": {"first\nsecond\nthird"}, "n": {"1"}}}},
		{"continuation after quoted value", "[g]\nk = 'x'\n  more\n",
			kv{"g": {"k": {"x\nmore"}}}},
		{"blank line ends a value", "[g]\nk = a\n\n[h]\n",
			kv{"g": {"k": {"a"}}}},
		{"repeated keys kept in order", "[g]\nk = 1\nk = 2\n[g]\nk = 3\n",
			kv{"g": {"k": {"1", "2", "3"}}}},
		{"group names lower-cased except DEFAULT", "[MyGroup]\nk = 1\n[default]\nk = 2\n[DEFAULT]\nk = 3\n",
			kv{"mygroup": {"k": {"1"}}, "default": {"k": {"2"}}, "DEFAULT": {"k": {"3"}}}},
		{"keys keep their case", "[g]\nFoo = 1\nfoo = 2\n",
			kv{"g": {"Foo": {"1"}, "foo": {"2"}}}},
		{"CRLF and BOM", "\ufeff[g]\r\nk = v\r\n",
			kv{"g": {"k": {"v"}}}},
		{"no final newline", "[g]\nk = v",
			kv{"g": {"k": {"v"}}}},
		{"empty file", "", kv{}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			l, err := parse("t.conf", strings.NewReader(tt.in))
			if tt.want == nil {
				if err == nil {
					t.Fatalf("parse succeeded with %v, want an error", flat(l))
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got := flat(l); !reflect.DeepEqual(got, tt.want) {
				t.Errorf("got %q\nwant %q", got, tt.want)
			}
		})
	}
}

func TestParseErrors(t *testing.T) {
	tests := []struct {
		in   string
		line int
		msg  string
	}{
		{"[DEFAULT] url = 'rabbit://h/'\n", 1, "invalid section (must end with ])"},
		{"[DEFAULT]\n\n[]\n", 3, "empty section name"},
		{"[g]\njust words\n", 2, "no ':' or '=' found in assignment"},
		{"[g]\n = v\n", 2, "unexpected continuation line"},
		{"[g]\n= v\n", 2, "key cannot be empty"},
		{"k = v\n[g]\n", 1, "section must be started before assignment"},
		{"[g]\n\n  orphan\n", 3, "unexpected continuation line"},
	}
	for _, tt := range tests {
		_, err := parse("bad.conf", strings.NewReader(tt.in))
		var pe *ParseError
		if !errors.As(err, &pe) {
			t.Errorf("%q: got %v, want a *ParseError", tt.in, err)
			continue
		}
		if pe.File != "bad.conf" || pe.Line != tt.line || pe.Msg != tt.msg {
			t.Errorf("%q: got %s:%d %q, want bad.conf:%d %q", tt.in, pe.File, pe.Line, pe.Msg, tt.line, tt.msg)
		}
		if !strings.HasPrefix(err.Error(), "config: bad.conf:") {
			t.Errorf("%q: message %q does not name the file", tt.in, err)
		}
	}
}

// TestParseErrorHidesValues: a syntax error names the file and line but
// not a value the line assigns, which may be a password.
func TestParseErrorHidesValues(t *testing.T) {
	const secret = "s3cret-Hb61"
	for _, in := range []string{
		"[DEFAULT] transport_url = rabbit://nova:" + secret + "@h/\n",
		"[DEFAULT]\n\n  transport_url = rabbit://nova:" + secret + "@h/\n",
		"transport_url = rabbit://nova:" + secret + "@h/\n[DEFAULT]\n",
		"[DEFAULT]\n= " + secret + "\n",
	} {
		_, err := parse("bad.conf", strings.NewReader(in))
		if err == nil || !strings.Contains(err.Error(), "bad.conf:") || strings.Contains(err.Error(), secret) {
			t.Errorf("%q: got %v, want the line without the value", in, err)
		}
	}
	_, err := parse("bad.conf", strings.NewReader("[DEFAULT] transport_url = x\n"))
	if err == nil || !strings.Contains(err.Error(), `"[DEFAULT] transport_url = …"`) {
		t.Errorf("the line up to its value is still shown: %v", err)
	}
}

package config

import (
	"flag"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"
)

// write puts each content in its own file under a temp dir and returns the
// paths in order.
func write(t *testing.T, contents ...string) []string {
	t.Helper()
	dir := t.TempDir()
	paths := make([]string, len(contents))
	for i, c := range contents {
		paths[i] = filepath.Join(dir, "f"+string(rune('1'+i))+".conf")
		if err := os.WriteFile(paths[i], []byte(c), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	return paths
}

func mustLoad(t *testing.T, c *Config, contents ...string) {
	t.Helper()
	if err := c.LoadFiles(write(t, contents...)...); err != nil {
		t.Fatal(err)
	}
}

func testOpts() []Opt {
	return []Opt{
		{Name: "s", Type: String, Default: "sdef"},
		{Name: "i", Type: Int, Default: "7", Min: Bound(1), Max: Bound(100)},
		{Name: "f", Type: Float, Default: "0.5"},
		{Name: "b", Type: Bool, Default: "False"},
		{Name: "l", Type: List, Default: "x,y"},
		{Name: "m", Type: MultiString},
		{Name: "d", Type: Duration, Default: "60"},
		{Name: "new", Type: String, DeprecatedNames: []string{"old", "legacy/older"}},
		{Name: "c", Type: String, Default: "a", Choices: []string{"a", "b"}},
	}
}

func newTest(t *testing.T) *Config {
	t.Helper()
	c := New()
	if err := c.Register("app", testOpts()...); err != nil {
		t.Fatal(err)
	}
	return c
}

func TestDefaults(t *testing.T) {
	c := newTest(t)
	if got := c.String("app", "s"); got != "sdef" {
		t.Errorf("String = %q", got)
	}
	if got := c.Int("app", "i"); got != 7 {
		t.Errorf("Int = %d", got)
	}
	if got := c.Float("app", "f"); got != 0.5 {
		t.Errorf("Float = %v", got)
	}
	if got := c.Bool("app", "b"); got {
		t.Errorf("Bool = %v", got)
	}
	if got := c.List("app", "l"); !reflect.DeepEqual(got, []string{"x", "y"}) {
		t.Errorf("List = %q", got)
	}
	if got := c.Strings("app", "m"); got != nil {
		t.Errorf("Strings = %q", got)
	}
	if got := c.Duration("app", "d"); got != time.Minute {
		t.Errorf("Duration = %v", got)
	}
	if v, set := c.Lookup("app", "s"); v != "sdef" || set {
		t.Errorf("Lookup = %q, %v", v, set)
	}
	if v, set := c.Lookup("app", "unknown"); v != "" || set {
		t.Errorf("Lookup(unknown) = %q, %v", v, set)
	}
	if err := c.Validate(); err != nil {
		t.Errorf("Validate: %v", err)
	}
}

func TestTypedValues(t *testing.T) {
	tests := []struct {
		line string
		get  func(*Config) any
		want any
	}{
		{"i = 42", func(c *Config) any { return c.Int("app", "i") }, 42},
		{"i = ' 42 '", func(c *Config) any { return c.Int("app", "i") }, 42},
		{"f = 2.25", func(c *Config) any { return c.Float("app", "f") }, 2.25},
		{"b = YES", func(c *Config) any { return c.Bool("app", "b") }, true},
		{"b = On", func(c *Config) any { return c.Bool("app", "b") }, true},
		{"b = 1", func(c *Config) any { return c.Bool("app", "b") }, true},
		{"b = no", func(c *Config) any { return c.Bool("app", "b") }, false},
		{"b = OFF", func(c *Config) any { return c.Bool("app", "b") }, false},
		{"l = a, b ,c,,", func(c *Config) any { return c.List("app", "l") }, []string{"a", "b", "c"}},
		{"l =", func(c *Config) any { return c.List("app", "l") }, []string(nil)},
		{"d = 60", func(c *Config) any { return c.Duration("app", "d") }, 60 * time.Second},
		{"d = 1.5", func(c *Config) any { return c.Duration("app", "d") }, 1500 * time.Millisecond},
		{"d = 90s", func(c *Config) any { return c.Duration("app", "d") }, 90 * time.Second},
		{"d = 1m30s", func(c *Config) any { return c.Duration("app", "d") }, 90 * time.Second},
		// A bad value falls back to the default (Validate reports it).
		{"i = abc", func(c *Config) any { return c.Int("app", "i") }, 7},
		{"d = soon", func(c *Config) any { return c.Duration("app", "d") }, time.Minute},
		// Unregistered keys parse too.
		{"other = 5", func(c *Config) any { return c.Int("app", "other") }, 5},
	}
	for _, tt := range tests {
		c := newTest(t)
		if err := c.LoadReader("t.conf", strings.NewReader("[app]\n"+tt.line+"\n")); err != nil {
			t.Fatal(err)
		}
		if got := tt.get(c); !reflect.DeepEqual(got, tt.want) {
			t.Errorf("%s: got %#v, want %#v", tt.line, got, tt.want)
		}
	}
}

func TestLayering(t *testing.T) {
	c := newTest(t)
	mustLoad(t, c,
		"[app]\ns = one\ni = 1\nm = a\nm = b\nonly1 = x\n",
		"[APP]\ns = two\nm = c\n",
		"[app]\ni = 3\n[other]\ns = elsewhere\n",
	)
	if got := c.String("app", "s"); got != "two" {
		t.Errorf("s = %q, want two (second file)", got)
	}
	if got := c.Int("app", "i"); got != 3 {
		t.Errorf("i = %d, want 3 (third file)", got)
	}
	if got := c.Strings("app", "m"); !reflect.DeepEqual(got, []string{"a", "b", "c"}) {
		t.Errorf("m = %q, want a b c", got)
	}
	if got, set := c.Lookup("app", "only1"); got != "x" || !set {
		t.Errorf("only1 = %q %v", got, set)
	}
	if got := c.Files(); len(got) != 3 || !strings.HasSuffix(got[2], "f3.conf") {
		t.Errorf("Files = %q", got)
	}
	// A later load is layered above the earlier ones.
	if err := c.LoadReader("late", strings.NewReader("[app]\ns = late\n")); err != nil {
		t.Fatal(err)
	}
	if got := c.String("app", "s"); got != "late" {
		t.Errorf("s = %q, want late", got)
	}
}

func TestLoadFilesAtomic(t *testing.T) {
	c := newTest(t)
	paths := write(t, "[app]\ns = good\n", "[app]\ns = x\nbroken line\n")
	err := c.LoadFiles(paths...)
	if err == nil || !strings.Contains(err.Error(), paths[1]+":3:") {
		t.Fatalf("err = %v, want it to name %s:3", err, paths[1])
	}
	if got := c.String("app", "s"); got != "sdef" || len(c.Files()) != 0 {
		t.Errorf("a failed LoadFiles applied something: s=%q files=%q", got, c.Files())
	}
	if err := c.LoadFiles(filepath.Join(t.TempDir(), "missing.conf")); err == nil || !strings.Contains(err.Error(), "missing.conf") {
		t.Errorf("missing file: %v", err)
	}
}

func TestDeprecatedNames(t *testing.T) {
	tests := []struct {
		name  string
		files []string
		want  string
	}{
		{"old name alone", []string{"[app]\nold = o\n"}, "o"},
		{"other group", []string{"[legacy]\nolder = l\n"}, "l"},
		{"new wins in the same file", []string{"[app]\nold = o\nnew = n\n[legacy]\nolder = l\n"}, "n"},
		{"deprecated beats older group alias in order", []string{"[legacy]\nolder = l\n[app]\nold = o\n"}, "o"},
		{"later file wins whatever the name", []string{"[app]\nnew = n\n", "[app]\nold = o\n"}, "o"},
		{"new in later file", []string{"[app]\nold = o\n", "[app]\nnew = n\n"}, "n"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := newTest(t)
			mustLoad(t, c, tt.files...)
			if got := c.String("app", "new"); got != tt.want {
				t.Errorf("new = %q, want %q", got, tt.want)
			}
			sec := c.Section("app")
			if sec["new"] != tt.want {
				t.Errorf("Section[new] = %q, want %q", sec["new"], tt.want)
			}
			if _, ok := sec["old"]; ok {
				t.Errorf("Section keeps the deprecated key: %v", sec)
			}
		})
	}
}

func TestSetPrecedence(t *testing.T) {
	c := newTest(t)
	mustLoad(t, c, "[app]\ns = file\nm = f1\nm = f2\n")
	if err := c.Set("app", "s", "flag"); err != nil {
		t.Fatal(err)
	}
	if err := c.LoadReader("later", strings.NewReader("[app]\ns = later-file\n")); err != nil {
		t.Fatal(err)
	}
	if got, set := c.Lookup("app", "s"); got != "flag" || !set {
		t.Errorf("s = %q %v, want flag over every file", got, set)
	}
	if err := c.SetStrings("app", "m", "x", "y"); err != nil {
		t.Fatal(err)
	}
	if got := c.Strings("app", "m"); !reflect.DeepEqual(got, []string{"x", "y"}) {
		t.Errorf("m = %q", got)
	}
	// A deprecated name sets the option it names.
	if err := c.Set("app", "old", "via-old"); err != nil {
		t.Fatal(err)
	}
	if got := c.String("app", "new"); got != "via-old" {
		t.Errorf("new = %q", got)
	}
	// Unregistered keys may be set; they show in Section.
	if err := c.Set("app", "extra", "e"); err != nil {
		t.Fatal(err)
	}
	if got := c.Section("app")["extra"]; got != "e" {
		t.Errorf("Section[extra] = %q", got)
	}
	// Invalid values for registered options are refused.
	for _, bad := range [][2]string{{"i", "abc"}, {"i", "0"}, {"b", "maybe"}, {"c", "z"}} {
		if err := c.Set("app", bad[0], bad[1]); err == nil {
			t.Errorf("Set(%s=%s) accepted", bad[0], bad[1])
		}
	}
	// Removing the override brings the files back.
	if err := c.SetStrings("app", "s"); err != nil {
		t.Fatal(err)
	}
	if got := c.String("app", "s"); got != "later-file" {
		t.Errorf("after removing the override s = %q", got)
	}
}

func TestValidate(t *testing.T) {
	tests := []struct {
		file string
		want []string // substrings of the error; nil means valid
	}{
		{"[app]\ni = 100\nf = -1e3\nd = 0.001\nc = b\nl = p,q\n", nil},
		{"[app]\ni = abc\n", []string{`config: [app] i: "abc" is not a number (from `, "f1.conf:2)"}},
		{"[app]\ni = 0\n", []string{"config: [app] i: 0 is less than the minimum 1"}},
		{"[app]\ni = 101\n", []string{"config: [app] i: 101 is greater than the maximum 100"}},
		{"[app]\nf = 1.2.3\n", []string{`[app] f: "1.2.3" is not a number`}},
		{"[app]\nb = maybe\n", []string{`[app] b: "maybe" is not a boolean`}},
		{"[app]\nd = soon\n", []string{`[app] d: "soon" is not a number`}},
		{"[app]\nc = z\n", []string{`[app] c: "z" is not one of a, b`}},
		{"[app]\ni = x\nb = y\n", []string{"[app] i:", "[app] b:"}},
		{"[app]\nunknown = whatever\n", nil},
	}
	for _, tt := range tests {
		c := newTest(t)
		mustLoad(t, c, tt.file)
		err := c.Validate()
		if tt.want == nil {
			if err != nil {
				t.Errorf("%q: %v", tt.file, err)
			}
			continue
		}
		if err == nil {
			t.Errorf("%q: Validate passed", tt.file)
			continue
		}
		for _, w := range tt.want {
			if !strings.Contains(err.Error(), w) {
				t.Errorf("%q: error %q lacks %q", tt.file, err, w)
			}
		}
	}
}

func TestValidateMessageFormat(t *testing.T) {
	c := New()
	if err := RegisterMessagingOpts(c); err != nil {
		t.Fatal(err)
	}
	if err := c.LoadReader("my.conf", strings.NewReader("[DEFAULT]\nrpc_response_timeout = abc\n")); err != nil {
		t.Fatal(err)
	}
	err := c.Validate()
	if err == nil || !strings.HasPrefix(err.Error(), `config: [DEFAULT] rpc_response_timeout: "abc" is not a number`) {
		t.Errorf("Validate = %v", err)
	}
}

func TestSecretNotShown(t *testing.T) {
	c := New()
	if err := c.Register("", Opt{Name: "pw", Type: String, Secret: true, Choices: []string{"a"}}); err != nil {
		t.Fatal(err)
	}
	mustLoad(t, c, "[DEFAULT]\npw = hunter2\n")
	err := c.Validate()
	if err == nil || strings.Contains(err.Error(), "hunter2") {
		t.Errorf("Validate = %v", err)
	}
}

func TestRegister(t *testing.T) {
	c := New()
	o := Opt{Name: "x", Type: Int, Default: "1", Min: Bound(0)}
	if err := c.Register("g", o); err != nil {
		t.Fatal(err)
	}
	same := o
	same.Min = Bound(0) // another pointer, same bound
	if err := c.Register("G", same); err != nil {
		t.Errorf("identical re-registration (group case differs): %v", err)
	}
	conflicts := []Opt{
		{Name: "x", Type: String, Default: "1"},
		{Name: "x", Type: Int, Default: "2", Min: Bound(0)},
		{Name: "x", Type: Int, Default: "1", Min: Bound(1)},
		{Name: "x", Type: Int, Default: "1"},
	}
	for _, bad := range conflicts {
		if err := c.Register("g", bad); err == nil {
			t.Errorf("conflicting %+v accepted", bad)
		}
	}
	invalid := []Opt{
		{Name: "", Type: String},
		{Name: "t", Type: Type(99)},
		{Name: "t", Type: Int, Default: "x"},
		{Name: "t", Type: Int, Default: "5", Max: Bound(4)},
		{Name: "t", Type: String, Min: Bound(1)},
		{Name: "t", Type: Int, Min: Bound(2), Max: Bound(1)},
		{Name: "t", Type: Bool, Choices: []string{"true"}},
		{Name: "t", Type: String, Default: "c", Choices: []string{"a"}},
		{Name: "t", Type: String, DeprecatedNames: []string{"grp/"}},
	}
	for _, bad := range invalid {
		if err := c.Register("g", bad); err == nil {
			t.Errorf("invalid %+v accepted", bad)
		}
	}
	// A failed call registers nothing, not even its valid options.
	if err := c.Register("g", Opt{Name: "ok", Type: String, Default: "v"}, invalid[2]); err == nil {
		t.Fatal("accepted")
	}
	if _, ok := c.Section("g")["ok"]; ok {
		t.Error("a failed Register left an option behind")
	}
	// Two definitions of one name in one call must agree.
	if err := c.Register("h", Opt{Name: "y"}, Opt{Name: "y", Default: "z"}); err == nil {
		t.Error("conflicting definitions in one call accepted")
	}
}

func TestGroupNames(t *testing.T) {
	c := New()
	if err := c.Register("MyApp", Opt{Name: "k", Default: "d"}); err != nil {
		t.Fatal(err)
	}
	if err := c.Register("", Opt{Name: "top", Default: "d"}); err != nil {
		t.Fatal(err)
	}
	mustLoad(t, c, "[myapp]\nk = v\n[default]\ntop = lower\n")
	if got := c.String("MYAPP", "k"); got != "v" {
		t.Errorf("k = %q; non-DEFAULT groups are case-insensitive", got)
	}
	if got := c.String("DEFAULT", "top"); got != "d" {
		t.Errorf("top = %q; [default] is not [DEFAULT]", got)
	}
	if got := c.String("default", "top"); got != "lower" {
		t.Errorf("[default] top = %q", got)
	}
}

func TestSection(t *testing.T) {
	c := New()
	if err := RegisterMessagingOpts(c); err != nil {
		t.Fatal(err)
	}
	mustLoad(t, c,
		"[oslo_messaging_rabbit]\nrabbit_use_ssl = true\nheartbeat_rate = 4\nx_custom = 1\n",
		"[oslo_messaging_rabbit]\nx_custom = 2\n")
	sec := c.Section(RabbitGroup)
	want := RabbitDefaults()
	want["rabbit_use_ssl"] = "true" // no longer a deprecated name of ssl in 18.1
	want["heartbeat_rate"] = "4"
	want["x_custom"] = "2"
	if !reflect.DeepEqual(sec, want) {
		t.Errorf("Section =\n%v\nwant\n%v", sec, want)
	}
	if got := c.Section("nothing"); len(got) != 0 {
		t.Errorf("empty group: %v", got)
	}
}

func TestSeedMyConf(t *testing.T) {
	c := New()
	if err := c.Register("", Opt{Name: "url", Type: String, Default: "0.0.0.0"}); err != nil {
		t.Fatal(err)
	}
	if err := c.LoadFiles("testdata/my.conf"); err != nil {
		t.Fatal(err)
	}
	if got := c.String("", "url"); got != "rabbit://openstack:stack2018@127.0.0.1:5672/" {
		t.Errorf("url = %q", got)
	}
}

func TestFileList(t *testing.T) {
	var files FileList
	fs := flag.NewFlagSet("t", flag.ContinueOnError)
	fs.Var(&files, "config-file", "")
	if err := fs.Parse([]string{"--config-file", "a.conf", "--config-file=b.conf"}); err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual([]string(files), []string{"a.conf", "b.conf"}) || files.String() != "a.conf,b.conf" {
		t.Errorf("files = %q (%s)", files, files.String())
	}
}

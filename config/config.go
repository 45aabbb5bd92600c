package config

import (
	"errors"
	"fmt"
	"io"
	"os"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"
)

// DefaultGroup is the group of options outside any named group, as oslo
// spells it in files. Passing "" as a group means DefaultGroup too.
const DefaultGroup = "DEFAULT"

// Config holds registered options and the values read for them. Layers of
// values, from lowest to highest precedence: option defaults, files in the
// order loaded, Set. A Config is safe for concurrent use.
type Config struct {
	mu        sync.RWMutex
	opts      map[string]map[string]*Opt // normalised group -> name -> option
	names     map[string]string          // normalised group -> name as first registered
	layers    []*layer
	overrides map[string]map[string][]value // normalised group -> name -> values given to Set
}

// New returns an empty Config: no options, no files.
func New() *Config {
	return &Config{
		opts:      map[string]map[string]*Opt{},
		names:     map[string]string{},
		overrides: map[string]map[string][]value{},
	}
}

// Register declares options of a group ("" or "DEFAULT" for the default
// group). Registering an option again with an identical definition is
// allowed, so that several packages can declare what they read; a
// different definition under the same name is an error. The default must
// itself be a valid value.
func (c *Config) Register(group string, opts ...Opt) error {
	g := normGroup(group)
	// Check everything first so that a failed call registers nothing.
	for i := range opts {
		if err := checkOpt(g, &opts[i]); err != nil {
			return err
		}
		for j := range i {
			if opts[j].Name == opts[i].Name && !opts[j].equal(&opts[i]) {
				return fmt.Errorf("config: [%s] %s: registered twice with different definitions", c.display(g, group), opts[i].Name)
			}
		}
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	for i := range opts {
		if old, ok := c.opts[g][opts[i].Name]; ok && !old.equal(&opts[i]) {
			return fmt.Errorf("config: [%s] %s: already registered with a different definition", c.display(g, group), opts[i].Name)
		}
	}
	if c.opts[g] == nil {
		c.opts[g] = map[string]*Opt{}
	}
	if _, ok := c.names[g]; !ok {
		c.names[g] = c.display(g, group)
	}
	for i := range opts {
		c.opts[g][opts[i].Name] = opts[i].clone()
	}
	return nil
}

func checkOpt(g string, o *Opt) error {
	where := func(format string, a ...any) error {
		return fmt.Errorf("config: [%s] %s: "+format, append([]any{g, o.Name}, a...)...)
	}
	switch {
	case o.Name == "":
		return fmt.Errorf("config: [%s]: option without a name", g)
	case !o.Type.valid():
		return where("unknown type %d", int(o.Type))
	case (o.Min != nil || o.Max != nil) && !o.Type.numeric():
		return where("bounds on a %s option", o.Type)
	case o.Min != nil && o.Max != nil && *o.Min > *o.Max:
		return where("minimum %s above maximum %s", fmtFloat(*o.Min), fmtFloat(*o.Max))
	case len(o.Choices) > 0 && o.Type != String && o.Type != List && o.Type != MultiString:
		return where("choices on a %s option", o.Type)
	}
	for _, d := range o.DeprecatedNames {
		dg, dn := splitDeprecated(g, d)
		if dn == "" || dg == "" {
			return where("bad deprecated name %q", d)
		}
	}
	for _, d := range defaultValues(o) {
		if err := o.check(d); err != nil {
			return where("default: %v", err)
		}
	}
	return nil
}

// splitDeprecated resolves "name" or "group/name" against the option's own
// group.
func splitDeprecated(g, d string) (group, name string) {
	if i := strings.LastIndexByte(d, '/'); i >= 0 {
		return normGroup(d[:i]), d[i+1:]
	}
	return g, d
}

// display is the group name to print: as registered, else as the caller
// spelt it.
func (c *Config) display(g, asGiven string) string {
	if n, ok := c.names[g]; ok {
		return n
	}
	if asGiven == "" {
		return DefaultGroup
	}
	return asGiven
}

// defaultValues is the default of o as a list of values.
func defaultValues(o *Opt) []string {
	if o.Default == "" {
		return nil
	}
	if o.Type == MultiString {
		return strings.Split(o.Default, "\n")
	}
	return []string{o.Default}
}

// LoadFiles reads the files in order and layers them above those already
// loaded: a later file overrides an earlier one, as repeated --config-file
// flags do in oslo.config. If any file cannot be read or parsed, none of
// them is applied and the error names the file and line.
func (c *Config) LoadFiles(paths ...string) error {
	layers := make([]*layer, 0, len(paths))
	for _, p := range paths {
		l, err := loadFile(p)
		if err != nil {
			return err
		}
		layers = append(layers, l)
	}
	c.mu.Lock()
	c.layers = append(c.layers, layers...)
	c.mu.Unlock()
	return nil
}

func loadFile(path string) (*layer, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("config: %w", err)
	}
	defer f.Close()
	return parse(path, f)
}

// LoadReader reads one file from r and layers it above those already
// loaded. The name appears in errors and in Files.
func (c *Config) LoadReader(name string, r io.Reader) error {
	l, err := parse(name, r)
	if err != nil {
		return err
	}
	c.mu.Lock()
	c.layers = append(c.layers, l)
	c.mu.Unlock()
	return nil
}

// Files returns the names of the files loaded, lowest precedence first.
func (c *Config) Files() []string {
	c.mu.RLock()
	defer c.mu.RUnlock()
	out := make([]string, len(c.layers))
	for i, l := range c.layers {
		out[i] = l.name
	}
	return out
}

// Set overrides an option with a value written as in a file, above every
// file (a command-line flag, for instance). A registered option's value must
// be valid; a deprecated name sets the option it names. For a MultiString
// option Set replaces every value with this one; see SetStrings.
func (c *Config) Set(group, name, value string) error {
	return c.SetStrings(group, name, value)
}

// SetStrings overrides an option with several values, for MultiString
// options; other types take the last value. With no values the override is
// removed and files and defaults apply again.
func (c *Config) SetStrings(group, name string, values ...string) error {
	g := normGroup(group)
	c.mu.Lock()
	defer c.mu.Unlock()
	if og, on, o := c.canonical(g, name); o != nil {
		g, name = og, on
		for _, v := range values {
			if err := o.check(v); err != nil {
				return c.valueError(g, o, "Set", err)
			}
		}
	}
	if len(values) == 0 {
		delete(c.overrides[g], name)
		return nil
	}
	if c.overrides[g] == nil {
		c.overrides[g] = map[string][]value{}
	}
	vs := make([]value, len(values))
	for i, v := range values {
		vs[i] = value{s: v, src: "Set"}
	}
	c.overrides[g][name] = vs
	return nil
}

// canonical finds the registered option that (g, name) names, directly or
// as a deprecated name.
func (c *Config) canonical(g, name string) (string, string, *Opt) {
	if o := c.opts[g][name]; o != nil {
		return g, name, o
	}
	for og, opts := range c.opts {
		for _, o := range opts {
			for _, d := range o.DeprecatedNames {
				if dg, dn := splitDeprecated(og, d); dg == g && dn == name {
					return og, o.Name, o
				}
			}
		}
	}
	return "", "", nil
}

// resolve returns the values given to (g, name) by Set or the files, nil if
// none. For a single-valued option only the last element matters. The walk
// is oslo.config's _get_file_value: files newest first, and inside a file
// the current name before the deprecated ones; a MultiString gathers values
// from every file, oldest first.
func (c *Config) resolve(g, name string) []value {
	if ov, ok := c.overrides[g][name]; ok {
		return ov
	}
	type key struct{ g, n string }
	keys := []key{{g, name}}
	o := c.opts[g][name]
	if o != nil {
		for _, d := range o.DeprecatedNames {
			dg, dn := splitDeprecated(g, d)
			keys = append(keys, key{dg, dn})
		}
	}
	multi := o == nil || o.Type == MultiString
	var out []value
	for i := len(c.layers) - 1; i >= 0; i-- {
		for _, k := range keys {
			vs := c.layers[i].groups[k.g][k.n]
			if len(vs) == 0 {
				continue
			}
			if !multi {
				return vs
			}
			out = append(slices.Clone(vs), out...)
		}
	}
	return out
}

// raw is the effective single value: Set, files, then default.
func (c *Config) raw(g, name string) (value, bool) {
	if vs := c.resolve(g, name); len(vs) > 0 {
		return vs[len(vs)-1], true
	}
	if o := c.opts[g][name]; o != nil {
		if d := defaultValues(o); len(d) > 0 {
			return value{s: d[len(d)-1], src: "default"}, false
		}
	}
	return value{}, false
}

// Lookup returns the raw value of an option, registered or not, and
// whether Set or a file gave it. An unset registered option returns its
// default. For a MultiString it is the last value; see Strings.
func (c *Config) Lookup(group, name string) (value string, set bool) {
	c.mu.RLock()
	defer c.mu.RUnlock()
	v, set := c.raw(normGroup(group), name)
	return v.s, set
}

// typed parses the effective value with parse; a value that does not parse
// falls back to the default (Validate reports it), and an unset option
// without default gives the zero value.
func typed[T any](c *Config, group, name string, parse func(string) (T, error)) T {
	c.mu.RLock()
	defer c.mu.RUnlock()
	g := normGroup(group)
	var zero T
	v, _ := c.raw(g, name)
	if strings.TrimSpace(v.s) == "" {
		return zero
	}
	if t, err := parse(v.s); err == nil {
		return t
	}
	if o := c.opts[g][name]; o != nil && o.Default != "" {
		if t, err := parse(o.Default); err == nil {
			return t
		}
	}
	return zero
}

// String returns the value of an option as text ("" if unset).
func (c *Config) String(group, name string) string {
	v, _ := c.Lookup(group, name)
	return v
}

// Int returns the value of an option as an integer. Like every typed
// getter, it returns the default if the configured value does not parse
// (Validate reports that), and 0 if there is neither.
func (c *Config) Int(group, name string) int {
	return typed(c, group, name, parseInt)
}

// Float returns the value of an option as a number.
func (c *Config) Float(group, name string) float64 {
	return typed(c, group, name, parseFloat)
}

// Bool returns the value of an option as a boolean.
func (c *Config) Bool(group, name string) bool {
	return typed(c, group, name, parseBool)
}

// Duration returns the value of an option as a duration: "60" and "1.5"
// are seconds, "90s" is Go syntax.
func (c *Config) Duration(group, name string) time.Duration {
	return typed(c, group, name, parseDuration)
}

// List returns the value of an option split on commas.
func (c *Config) List(group, name string) []string {
	return typed(c, group, name, func(s string) ([]string, error) { return parseList(s), nil })
}

// Strings returns every value of a MultiString option, or of an
// unregistered key, from all files in order (Set replaces them all). For
// other registered options it is the single effective value.
func (c *Config) Strings(group, name string) []string {
	c.mu.RLock()
	defer c.mu.RUnlock()
	g := normGroup(group)
	o := c.opts[g][name]
	if o != nil && o.Type != MultiString {
		if v, _ := c.raw(g, name); v.s != "" {
			return []string{v.s}
		}
		return nil
	}
	vs := c.resolve(g, name)
	if len(vs) == 0 {
		if o != nil {
			return defaultValues(o)
		}
		return nil
	}
	out := make([]string, len(vs))
	for i, v := range vs {
		out[i] = v.s
	}
	return out
}

// Section returns every key of a group after layering: each registered
// option with its effective value (default included, deprecated names
// resolved and left out), and every other key given by a file or Set, with
// its last value. Drivers read their own group this way.
func (c *Config) Section(group string) map[string]string {
	c.mu.RLock()
	defer c.mu.RUnlock()
	g := normGroup(group)
	out := map[string]string{}
	for _, l := range c.layers {
		for k, vs := range l.groups[g] {
			out[k] = vs[len(vs)-1].s
		}
	}
	for k, vs := range c.overrides[g] {
		out[k] = vs[len(vs)-1].s
	}
	for _, o := range c.opts[g] {
		for _, d := range o.DeprecatedNames {
			if dg, dn := splitDeprecated(g, d); dg == g && c.opts[g][dn] == nil {
				delete(out, dn)
			}
		}
	}
	for name := range c.opts[g] {
		v, _ := c.raw(g, name)
		out[name] = v.s
	}
	return out
}

// Validate checks that every registered option's values parse as its type
// and respect its bounds and choices. It reports every bad value, each as
// "config: [group] name: problem (from file:line)".
func (c *Config) Validate() error {
	c.mu.RLock()
	defer c.mu.RUnlock()
	groups := make([]string, 0, len(c.opts))
	for g := range c.opts {
		groups = append(groups, g)
	}
	sort.Strings(groups)
	var errs []error
	for _, g := range groups {
		names := make([]string, 0, len(c.opts[g]))
		for n := range c.opts[g] {
			names = append(names, n)
		}
		sort.Strings(names)
		for _, n := range names {
			o := c.opts[g][n]
			vs := c.resolve(g, n)
			if o.Type != MultiString && len(vs) > 0 {
				vs = vs[len(vs)-1:]
			}
			for _, v := range vs {
				if err := o.check(v.s); err != nil {
					errs = append(errs, c.valueError(g, o, v.src, err))
				}
			}
		}
	}
	return errors.Join(errs...)
}

// valueError formats a bad value, hiding it if the option is secret.
func (c *Config) valueError(g string, o *Opt, src string, err error) error {
	msg := err.Error()
	if o.Secret {
		msg = fmt.Sprintf("the value (not shown, the option is secret) is not a valid %s", o.Type)
	}
	return fmt.Errorf("config: [%s] %s: %s (from %s)", c.display(g, g), o.Name, msg, src)
}

package config

import (
	"fmt"
	"math"
	"slices"
	"strconv"
	"strings"
	"time"
)

// Type is the type of an option's value. Values are stored as the strings
// read from files; the type says how to parse and validate them.
type Type int

// Option types. Each parses the value the way the oslo.config type of the
// same name does, except Duration, which oslo does not have.
const (
	// String is any text (oslo StrOpt).
	String Type = iota
	// Int is a decimal integer (oslo IntOpt).
	Int
	// Float is a decimal number (oslo FloatOpt).
	Float
	// Bool is true/false, yes/no, on/off or 1/0, in any case (oslo BoolOpt).
	Bool
	// List is a comma-separated list; items are trimmed and a trailing comma
	// is ignored (oslo ListOpt).
	List
	// MultiString collects every assignment of the key, across all files,
	// in order (oslo MultiStrOpt). Its Default holds one value per line.
	MultiString
	// Duration is a number of seconds as oslo writes it ("60", "1.5"), or a
	// Go duration ("90s", "1m30s"). Min and Max are in seconds.
	Duration
)

var typeNames = [...]string{"string", "int", "float", "bool", "list", "multistring", "duration"}

// String returns the lower-case name of the type.
func (t Type) String() string {
	if t < 0 || int(t) >= len(typeNames) {
		return fmt.Sprintf("Type(%d)", int(t))
	}
	return typeNames[t]
}

func (t Type) valid() bool { return t >= 0 && int(t) < len(typeNames) }

func (t Type) numeric() bool { return t == Int || t == Float || t == Duration }

// Opt declares one option of a group.
type Opt struct {
	// Name is the key in the file, case-sensitive.
	Name string
	// Type says how the value parses.
	Type Type
	// Default is the value, written as in a file, used when no file and no
	// Set gives one. Empty means unset: the typed getters return the zero
	// value.
	Default string
	// Help describes the option for people.
	Help string
	// Secret marks a value (a password, a URL with credentials) that error
	// messages must not print.
	Secret bool
	// DeprecatedNames are older names still read: "name" in the same group
	// or "group/name". A value under the current name wins over one under a
	// deprecated name in the same file; a later file wins over an earlier
	// one whatever the name, as in oslo.config.
	DeprecatedNames []string
	// Min and Max, if set, bound Int, Float and Duration (in seconds) values.
	Min, Max *float64
	// Choices, if set, are the only values a String accepts, or the only
	// items a List or MultiString accepts.
	Choices []string
}

// Bound returns a pointer to v, to fill Opt.Min and Opt.Max.
func Bound(v float64) *float64 { return &v }

func (o *Opt) equal(p *Opt) bool {
	return o.Name == p.Name && o.Type == p.Type && o.Default == p.Default &&
		o.Help == p.Help && o.Secret == p.Secret &&
		slices.Equal(o.DeprecatedNames, p.DeprecatedNames) &&
		eqBound(o.Min, p.Min) && eqBound(o.Max, p.Max) &&
		slices.Equal(o.Choices, p.Choices)
}

func eqBound(a, b *float64) bool {
	if a == nil || b == nil {
		return a == b
	}
	return *a == *b
}

func (o *Opt) clone() *Opt {
	c := *o
	c.DeprecatedNames = slices.Clone(o.DeprecatedNames)
	c.Choices = slices.Clone(o.Choices)
	if o.Min != nil {
		c.Min = Bound(*o.Min)
	}
	if o.Max != nil {
		c.Max = Bound(*o.Max)
	}
	return &c
}

// check reports whether s is a valid value of the option: it parses as the
// type and respects bounds and choices. The empty string means unset and is
// valid for every type, as in oslo.config.
func (o *Opt) check(s string) error {
	if strings.TrimSpace(s) == "" {
		return nil
	}
	switch o.Type {
	case String:
		return o.checkChoice(s)
	case Int:
		n, err := parseInt(s)
		if err != nil {
			return err
		}
		return o.checkBounds(float64(n), s)
	case Float:
		f, err := parseFloat(s)
		if err != nil {
			return err
		}
		return o.checkBounds(f, s)
	case Duration:
		d, err := parseDuration(s)
		if err != nil {
			return err
		}
		return o.checkBounds(d.Seconds(), s)
	case Bool:
		_, err := parseBool(s)
		return err
	case List:
		for _, item := range parseList(s) {
			if err := o.checkChoice(item); err != nil {
				return err
			}
		}
	case MultiString:
		return o.checkChoice(s)
	}
	return nil
}

func (o *Opt) checkChoice(s string) error {
	if len(o.Choices) == 0 || slices.Contains(o.Choices, s) {
		return nil
	}
	return fmt.Errorf("%q is not one of %s", s, strings.Join(o.Choices, ", "))
}

func (o *Opt) checkBounds(f float64, s string) error {
	if o.Min != nil && f < *o.Min {
		return fmt.Errorf("%s is less than the minimum %s", strings.TrimSpace(s), fmtFloat(*o.Min))
	}
	if o.Max != nil && f > *o.Max {
		return fmt.Errorf("%s is greater than the maximum %s", strings.TrimSpace(s), fmtFloat(*o.Max))
	}
	return nil
}

func fmtFloat(f float64) string { return strconv.FormatFloat(f, 'g', -1, 64) }

func parseInt(s string) (int, error) {
	n, err := strconv.Atoi(strings.TrimSpace(s))
	if err != nil {
		return 0, fmt.Errorf("%q is not a number", s)
	}
	return n, nil
}

func parseFloat(s string) (float64, error) {
	f, err := strconv.ParseFloat(strings.TrimSpace(s), 64)
	if err != nil || math.IsNaN(f) || math.IsInf(f, 0) {
		return 0, fmt.Errorf("%q is not a number", s)
	}
	return f, nil
}

// parseDuration accepts seconds as oslo writes them, or Go syntax.
func parseDuration(s string) (time.Duration, error) {
	t := strings.TrimSpace(s)
	if f, err := strconv.ParseFloat(t, 64); err == nil {
		if math.IsNaN(f) || math.IsInf(f, 0) || math.Abs(f) > math.MaxInt64/float64(time.Second) {
			return 0, fmt.Errorf("%q is not a number of seconds in range", s)
		}
		return time.Duration(f * float64(time.Second)), nil
	}
	d, err := time.ParseDuration(t)
	if err != nil {
		return 0, fmt.Errorf("%q is not a number of seconds or a duration like 90s", s)
	}
	return d, nil
}

// parseBool accepts what oslo_config.types.Boolean accepts.
func parseBool(s string) (bool, error) {
	switch strings.ToLower(strings.TrimSpace(s)) {
	case "true", "yes", "on", "1":
		return true, nil
	case "false", "no", "off", "0":
		return false, nil
	}
	return false, fmt.Errorf("%q is not a boolean (true/false, yes/no, on/off, 1/0)", s)
}

// parseList splits like oslo_config.types.List: strip, drop trailing
// commas, split on commas, strip each item. The empty string is no items.
func parseList(s string) []string {
	s = strings.TrimRight(strings.TrimSpace(s), ",")
	if s == "" {
		return nil
	}
	items := strings.Split(s, ",")
	for i := range items {
		items[i] = strings.TrimSpace(items[i])
	}
	return items
}

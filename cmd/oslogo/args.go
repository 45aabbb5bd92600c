package main

import (
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"strconv"
	"strings"
	"time"
)

// Exit codes. A script tells apart "the server said no", "nobody answered in
// time" and "the broker could not be reached" without parsing stderr.
const (
	exitRemote      = 1  // the server raised: "<module>.<class>: <message>"
	exitTimeout     = 2  // MessagingTimeout: no answer before --timeout
	exitUnreachable = 3  // no broker of the URL could be connected to
	exitUsage       = 64 // bad flags or arguments (sysexits' EX_USAGE)
)

func usageError(err error) error { return &exitError{code: exitUsage, err: err} }

// parseInterspersed parses flags wherever they appear among the positional
// arguments, as people type them (`oslogo call add a=1 --topic T`); after a
// bare "--" everything is positional. It returns the positional arguments.
func parseInterspersed(fs *flag.FlagSet, args []string) ([]string, error) {
	var positional []string
	for {
		if err := fs.Parse(args); err != nil {
			return nil, err
		}
		rest := fs.Args()
		if len(rest) == 0 {
			return positional, nil
		}
		if consumed := len(args) - len(rest); consumed > 0 && args[consumed-1] == "--" {
			return append(positional, rest...), nil
		}
		positional = append(positional, rest[0])
		args = rest[1:]
	}
}

// secondsFlag is a duration flag that also takes a bare number of seconds,
// as oslo's config files write timeouts (`--timeout 2` is two seconds).
type secondsFlag struct{ d *time.Duration }

func newSecondsFlag(fs *flag.FlagSet, p *time.Duration, name string, value time.Duration, usage string) {
	*p = value
	fs.Var(secondsFlag{p}, name, usage+" (seconds, or a duration such as 500ms or 1m)")
}

func (s secondsFlag) String() string {
	if s.d == nil {
		return ""
	}
	return s.d.String()
}

func (s secondsFlag) Set(v string) error {
	if f, err := strconv.ParseFloat(v, 64); err == nil {
		if f < 0 {
			return errors.New("negative duration")
		}
		*s.d = time.Duration(f * float64(time.Second))
		return nil
	}
	d, err := time.ParseDuration(v)
	if err != nil {
		return fmt.Errorf("%q is neither seconds nor a duration", v)
	}
	if d < 0 {
		return errors.New("negative duration")
	}
	*s.d = d
	return nil
}

// parseKeywordArgs turns key=value arguments into oslo keyword arguments: a
// value that parses as JSON is that JSON (a=2 is a number), otherwise it is
// a string. A value that starts like a JSON object, array or string but does
// not parse is a mistake, not a string; so is a key given twice.
func parseKeywordArgs(args []string) (map[string]any, error) {
	out := make(map[string]any, len(args))
	for _, a := range args {
		k, v, ok := strings.Cut(a, "=")
		if !ok || k == "" {
			return nil, usageError(fmt.Errorf("argument %q is not key=value", a))
		}
		if _, dup := out[k]; dup {
			return nil, usageError(fmt.Errorf("argument %q given twice", k))
		}
		parsed, err := jsonOrString(v)
		if err != nil {
			return nil, usageError(fmt.Errorf("argument %q: %w", k, err))
		}
		out[k] = parsed
	}
	return out, nil
}

func jsonOrString(v string) (any, error) {
	if json.Valid([]byte(v)) {
		return json.RawMessage(v), nil
	}
	if t := strings.TrimSpace(v); t != "" && strings.ContainsRune(`{["`, rune(t[0])) {
		var probe any
		err := json.Unmarshal([]byte(t), &probe)
		return nil, fmt.Errorf("looks like JSON but does not parse: %v", err)
	}
	return v, nil
}

// redactURL hides every password of a transport URL, including each host's
// of a multi-host rabbit://u1:p1@h1,u2:p2@h2/ URL. The user information of a
// host is what precedes its "@" back to the previous host's ","; the first
// one reaches back to the scheme, so a stray "," in a password hides more,
// never less.
func redactURL(raw string) string {
	scheme, rest, ok := strings.Cut(raw, "://")
	if !ok {
		return raw
	}
	// The authority ends at the first "/", "?" or "#" after the last "@",
	// so that one of those unescaped in a password cannot end it early.
	from := max(strings.LastIndex(rest, "@"), 0)
	end := strings.IndexAny(rest[from:], "/?#")
	if end < 0 {
		end = len(rest)
	} else {
		end += from
	}
	pieces := strings.Split(rest[:end], "@")
	for i := 0; i < len(pieces)-1; i++ {
		hostPart, userinfo := "", pieces[i]
		if i > 0 {
			if c := strings.LastIndex(pieces[i], ","); c >= 0 {
				hostPart, userinfo = pieces[i][:c+1], pieces[i][c+1:]
			}
		}
		if user, _, hasPass := strings.Cut(userinfo, ":"); hasPass {
			pieces[i] = hostPart + user + ":xxxxx"
		}
	}
	return scheme + "://" + strings.Join(pieces, "@") + rest[end:]
}

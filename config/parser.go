package config

import (
	"fmt"
	"io"
	"strings"
	"unicode"
)

// ParseError reports a line of a configuration file that oslo.config would
// reject too.
type ParseError struct {
	File string // name given to LoadReader, or the path given to LoadFiles
	Line int    // 1-based
	Msg  string // what is wrong, in oslo's words
	// Text is the offending line up to the value it assigns, if any:
	// values are left out because they may be secrets (a transport_url
	// with a password).
	Text string
}

// Error formats the error as "config: FILE:LINE: MSG: TEXT".
func (e *ParseError) Error() string {
	if e.Text == "" {
		return fmt.Sprintf("config: %s:%d: %s", e.File, e.Line, e.Msg)
	}
	return fmt.Sprintf("config: %s:%d: %s: %q", e.File, e.Line, e.Msg, e.Text)
}

// withoutValue cuts a line after its first '=' or ':', where a value
// would start; an indented line continues a value and is left out whole.
func withoutValue(line string) string {
	if line != "" && (line[0] == ' ' || line[0] == '\t') {
		return ""
	}
	if i := strings.IndexAny(line, "=:"); i >= 0 && i < len(line)-1 {
		return line[:i+1] + " …"
	}
	return line
}

// value is one assignment as read from a file, with where it came from so
// that Validate can point at it.
type value struct {
	s   string
	src string // "file:line" or "Set"
}

// layer holds one parsed file: normalised group -> key -> every assignment
// of the key in file order.
type layer struct {
	name   string
	groups map[string]map[string][]value
}

// normGroup maps a group name to the key oslo.config looks it up by:
// DEFAULT as is, every other group lower-cased. The empty name is DEFAULT,
// as oslo's group=None.
func normGroup(g string) string {
	if g == "" || g == DefaultGroup {
		return DefaultGroup
	}
	return strings.ToLower(g)
}

// parse reads one file. It follows oslo_config/iniparser.py BaseParser.parse
// step by step; the comments name the Python branches.
func parse(name string, r io.Reader) (*layer, error) {
	l := &layer{name: name, groups: map[string]map[string][]value{}}
	data, err := io.ReadAll(r)
	if err != nil {
		return nil, fmt.Errorf("config: %s: %w", name, err)
	}
	// Python reads the file with universal newlines: \r\n and a lone \r end
	// a line too.
	text := strings.ReplaceAll(string(data), "\r\n", "\n")
	text = strings.ReplaceAll(text, "\r", "\n")
	text = strings.TrimPrefix(text, "\ufeff") // editors on Windows add a BOM
	var (
		lineno  int
		section string // raw name of the current section, "" before the first header
		key     string // pending assignment, "" if none
		keyLine int
		parts   []string
	)
	perr := func(msg, text string) error {
		return &ParseError{File: name, Line: lineno, Msg: msg, Text: withoutValue(text)}
	}
	flush := func() {
		g := normGroup(section)
		if l.groups[g] == nil {
			l.groups[g] = map[string][]value{}
		}
		v := value{s: strings.Join(parts, "\n"), src: fmt.Sprintf("%s:%d", name, keyLine)}
		l.groups[g][key] = append(l.groups[g][key], v)
		key, parts = "", nil
	}
	text = strings.TrimSuffix(text, "\n")
	for raw := range strings.SplitSeq(text, "\n") {
		lineno++
		line := strings.TrimRightFunc(raw, isPySpace)
		switch {
		case line == "":
			// Blank line, ends multi-line values.
			if key != "" {
				flush()
			}
			continue
		case line[0] == ' ' || line[0] == '\t':
			// Continuation of the previous assignment.
			if key == "" {
				return nil, perr("unexpected continuation line", line)
			}
			parts = append(parts, strings.TrimLeftFunc(line, isPySpace))
			continue
		}
		if key != "" {
			flush()
		}
		switch line[0] {
		case '[':
			if !strings.HasSuffix(line, "]") {
				return nil, perr("invalid section (must end with ])", line)
			}
			if len(line) <= 2 {
				return nil, perr("empty section name", line)
			}
			section = line[1 : len(line)-1]
		case '#', ';':
			// Comment.
		default:
			k, v, ok := splitKeyValue(line)
			if !ok {
				return nil, perr("no ':' or '=' found in assignment", line)
			}
			if k == "" {
				return nil, perr("key cannot be empty", line)
			}
			if section == "" {
				return nil, perr("section must be started before assignment", line)
			}
			key, keyLine, parts = k, lineno, []string{v}
		}
	}
	if key != "" {
		flush()
	}
	return l, nil
}

// isPySpace is Python's str.isspace for one character, which oslo's
// strip() calls use: Go's whitespace plus the separators U+001C to U+001F.
func isPySpace(r rune) bool {
	return unicode.IsSpace(r) || r >= 0x1c && r <= 0x1f
}

// splitKeyValue splits at the first '=' or ':', whichever comes first, trims
// both sides and strips one pair of matching quotes around the value.
func splitKeyValue(line string) (key, val string, ok bool) {
	i := strings.IndexAny(line, "=:")
	if i < 0 {
		return "", "", false
	}
	key = strings.TrimFunc(line[:i], isPySpace)
	val = strings.TrimFunc(line[i+1:], isPySpace)
	if len(val) >= 1 && (val[0] == '"' || val[0] == '\'') && val[len(val)-1] == val[0] {
		// Python's value[1:-1] on a one-character value gives "".
		if len(val) == 1 {
			val = ""
		} else {
			val = val[1 : len(val)-1]
		}
	}
	return key, val, true
}

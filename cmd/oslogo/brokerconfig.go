package main

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"reflect"
	"regexp"
	"sort"
	"strings"

	"github.com/oslogo/oslogo/broker"

	"github.com/BurntSushi/toml"
)

// brokerFile is the --config-file format (TOML). Every key must be one of
// these: a misspelt key is an error, not a silently different broker.
type brokerFile struct {
	AMQP                string     `toml:"amqp"`
	HTTP                string     `toml:"http"`
	Data                string     `toml:"data"`
	MemoryHighWatermark int64      `toml:"memory_high_watermark"`
	MaxConnections      int        `toml:"max_connections"`
	LogLevel            string     `toml:"log_level"`
	Users               []fileUser `toml:"users"`
	VHosts              []string   `toml:"vhosts"`
	LoopbackUsers       []string   `toml:"loopback_users"`
	TLS                 *fileTLS   `toml:"tls"`
	// DenyTransientNonExclQueues: see broker.Options.
	DenyTransientNonExclQueues bool `toml:"deny_transient_nonexcl_queues"`
}

type fileUser struct {
	Name         string                    `toml:"name"`
	Password     string                    `toml:"password"`
	PasswordHash string                    `toml:"password_hash"`
	Tags         []string                  `toml:"tags"`
	Permissions  map[string]filePermission `toml:"permissions"`
}

type filePermission struct {
	Configure string `toml:"configure"`
	Write     string `toml:"write"`
	Read      string `toml:"read"`
}

// fileTLS configures the AMQPS listener, with RabbitMQ's ssl_options
// meanings: VerifyPeer requires a client certificate signed by CAFile
// (verify_peer with fail_if_no_peer_cert).
type fileTLS struct {
	Listen     string `toml:"listen"`
	CertFile   string `toml:"cert_file"`
	KeyFile    string `toml:"key_file"`
	CAFile     string `toml:"ca_file"`
	VerifyPeer bool   `toml:"verify_peer"`
}

// applyBrokerFile applies a --config-file (TOML) over opts and sets level
// to the log level it asks for. Errors name the line where there is one,
// and never quote the file's text (it may hold a password).
func applyBrokerFile(src string, opts *broker.Options, level *slog.Level) error {
	var f brokerFile
	md, err := toml.Decode(src, &f)
	if err != nil {
		return tomlError(src, err)
	}
	lines := tomlKeyLines(src)
	var errs []error
	var reported []toml.Key
	for _, k := range md.Undecoded() {
		if underAny(k, reported) {
			continue // inside an unknown table already reported
		}
		reported = append(reported, k)
		msg := "unknown key " + k.String()
		if known := knownKeys(reflect.TypeFor[brokerFile](), k[:len(k)-1]); len(known) > 0 {
			msg += " (known here: " + strings.Join(known, ", ") + ")"
		}
		errs = append(errs, lineError(lines.find(k), msg))
	}
	declared := map[string]bool{"/": true}
	for _, v := range f.VHosts {
		declared[v] = true
	}
	for _, u := range f.Users {
		vhs := make([]string, 0, len(u.Permissions))
		for vh := range u.Permissions {
			vhs = append(vhs, vh)
		}
		sort.Strings(vhs)
		for _, vh := range vhs {
			if !declared[vh] {
				errs = append(errs, lineError(lines.find(toml.Key{"users", "permissions", vh}),
					fmt.Sprintf("user %q has permissions for vhost %q, which is not in vhosts", u.Name, vh)))
			}
		}
	}
	if len(errs) > 0 {
		return errors.Join(errs...)
	}

	if f.AMQP != "" {
		opts.AMQPAddr = f.AMQP
	}
	if f.HTTP != "" {
		opts.HTTPAddr = f.HTTP
	}
	if f.Data != "" {
		opts.DataDir = f.Data
	}
	if f.MemoryHighWatermark > 0 {
		opts.MemoryHighWatermark = f.MemoryHighWatermark
	}
	opts.MaxConnections = f.MaxConnections
	if f.DenyTransientNonExclQueues {
		opts.DenyTransientNonExclQueues = true
	}
	if len(f.Users) > 0 {
		opts.Users = nil
		for _, u := range f.Users {
			bu := broker.User{Name: u.Name, Password: u.Password, PasswordHash: u.PasswordHash, Tags: u.Tags}
			if u.Permissions != nil {
				bu.Permissions = map[string]broker.Permission{}
				for vh, p := range u.Permissions {
					bu.Permissions[vh] = broker.Permission{Configure: p.Configure, Write: p.Write, Read: p.Read}
				}
			}
			opts.Users = append(opts.Users, bu)
		}
	}
	opts.VHosts = append(opts.VHosts, f.VHosts...)
	if f.LoopbackUsers != nil {
		opts.LoopbackUsers = f.LoopbackUsers
	}
	if f.TLS != nil {
		cfg, err := f.TLS.config()
		if err != nil {
			return lineError(lines.find(toml.Key{"tls"}), "[tls]: "+err.Error())
		}
		opts.TLSAddr, opts.TLSConfig = f.TLS.Listen, cfg
	}
	switch f.LogLevel {
	case "":
	case "info":
		*level = slog.LevelInfo
	case "debug":
		*level = slog.LevelDebug
	case "warning":
		*level = slog.LevelWarn
	case "error":
		*level = slog.LevelError
	default:
		return lineError(lines.find(toml.Key{"log_level"}), "log_level is not one of debug, info, warning, error")
	}
	return nil
}

func (t *fileTLS) config() (*tls.Config, error) {
	if t.Listen == "" || t.CertFile == "" || t.KeyFile == "" {
		return nil, errors.New("listen, cert_file and key_file are required")
	}
	certPEM, err := readSmallFile(t.CertFile)
	if err != nil {
		return nil, err
	}
	keyPEM, err := readSmallFile(t.KeyFile)
	if err != nil {
		return nil, err
	}
	cert, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		return nil, fmt.Errorf("cert_file and key_file: %w", err)
	}
	cfg := &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}
	if t.VerifyPeer {
		if t.CAFile == "" {
			return nil, errors.New("verify_peer needs ca_file")
		}
		pem, err := readSmallFile(t.CAFile)
		if err != nil {
			return nil, err
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("%s holds no PEM certificate", t.CAFile)
		}
		cfg.ClientAuth, cfg.ClientCAs = tls.RequireAndVerifyClientCert, pool
	}
	return cfg, nil
}

// lineError formats "line N: MSG" (just MSG when the line is unknown).
func lineError(line int, msg string) error {
	if line > 0 {
		return fmt.Errorf("line %d: %s", line, msg)
	}
	return errors.New(msg)
}

// quotedInMessage matches what a TOML parser message quotes from the
// file.
var quotedInMessage = regexp.MustCompile(`"(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*'`)

// tomlError reports a TOML syntax or type error with its line. The
// parser's message may quote the text it choked on, which may be part of
// a password: quoted text is cut out, and on a line that sets a password
// the message is left out altogether.
func tomlError(src string, err error) error {
	var pe toml.ParseError
	if !errors.As(err, &pe) {
		// Type mismatches name the key, never the value.
		return err
	}
	msg := quotedInMessage.ReplaceAllString(pe.Message, "…")
	lines := strings.Split(src, "\n")
	if l := pe.Position.Line; l >= 1 && l <= len(lines) && strings.Contains(strings.ToLower(lines[l-1]), "password") {
		msg = "TOML error (details not shown: the line sets a password)"
	}
	return lineError(pe.Position.Line, msg)
}

// readSmallFile reads a PEM file, refusing one over 1 MiB (a path such as
// /dev/zero must not hang the start-up).
func readSmallFile(path string) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, 1<<20+1))
	if err != nil {
		return nil, err
	}
	if len(b) > 1<<20 {
		return nil, fmt.Errorf("%s: larger than 1 MiB", path)
	}
	return b, nil
}

func underAny(k toml.Key, parents []toml.Key) bool {
	for _, p := range parents {
		if len(p) < len(k) && reflect.DeepEqual(p, k[:len(p)]) {
			return true
		}
	}
	return false
}

// knownKeys lists the keys the config format accepts in the table at
// path, following toml tags; map levels (vhost names) take any key.
func knownKeys(t reflect.Type, path toml.Key) []string {
	for _, name := range path {
		for t.Kind() == reflect.Pointer || t.Kind() == reflect.Slice {
			t = t.Elem()
		}
		switch t.Kind() {
		case reflect.Map:
			t = t.Elem()
			continue
		case reflect.Struct:
		default:
			return nil
		}
		found := false
		for i := range t.NumField() {
			if t.Field(i).Tag.Get("toml") == name {
				t, found = t.Field(i).Type, true
				break
			}
		}
		if !found {
			return nil
		}
	}
	for t.Kind() == reflect.Pointer || t.Kind() == reflect.Slice {
		t = t.Elem()
	}
	if t.Kind() != reflect.Struct {
		return nil
	}
	var keys []string
	for i := range t.NumField() {
		keys = append(keys, t.Field(i).Tag.Get("toml"))
	}
	return keys
}

// keyLines records the line on which each key path first appears in a
// TOML document: table headers and assignments, found line by line.
// Multi-line strings and arrays are skipped over; keys inside inline
// tables are found through their table's line.
type keyLines map[string]int

func tomlKeyLines(src string) keyLines {
	kl := keyLines{}
	var table toml.Key
	inString := "" // closing delimiter of an open multi-line string
	depth := 0     // open brackets of a multi-line array
	for i, raw := range strings.Split(src, "\n") {
		n := i + 1
		line := strings.TrimSpace(raw)
		if inString != "" {
			if strings.Contains(line, inString) {
				inString = ""
			}
			continue
		}
		if depth > 0 {
			depth += bracketDelta(line)
			continue
		}
		if line == "" || line[0] == '#' {
			continue
		}
		if strings.HasPrefix(line, "[") {
			inner := strings.TrimPrefix(line, "[[")
			if inner == line {
				inner = line[1:]
			}
			if end := strings.Index(inner, "]"); end >= 0 {
				table = splitTOMLKey(inner[:end])
				kl.record(table, n)
			}
			continue
		}
		eq := indexOutsideQuotes(line, '=')
		if eq < 0 {
			continue
		}
		key := append(append(toml.Key{}, table...), splitTOMLKey(line[:eq])...)
		kl.record(key, n)
		value := strings.TrimSpace(line[eq+1:])
		for _, q := range []string{`"""`, `'''`} {
			if strings.HasPrefix(value, q) && !strings.Contains(value[3:], q) {
				inString = q
			}
		}
		if strings.HasPrefix(value, "[") {
			depth = bracketDelta(value)
		}
	}
	return kl
}

func (kl keyLines) record(k toml.Key, line int) {
	for i := 1; i <= len(k); i++ {
		s := k[:i].String()
		if _, ok := kl[s]; !ok {
			kl[s] = line
		}
	}
}

// find returns the line of k or, failing that, of its nearest enclosing
// key; 0 if none is known.
func (kl keyLines) find(k toml.Key) int {
	for i := len(k); i > 0; i-- {
		if n, ok := kl[k[:i].String()]; ok {
			return n
		}
	}
	return 0
}

// splitTOMLKey splits a dotted key, unquoting quoted parts.
func splitTOMLKey(s string) toml.Key {
	var k toml.Key
	for {
		s = strings.TrimSpace(s)
		if s == "" {
			return k
		}
		var part string
		if s[0] == '"' || s[0] == '\'' {
			end := strings.IndexByte(s[1:], s[0])
			if end < 0 {
				return append(k, s)
			}
			part, s = s[1:end+1], s[end+2:]
		} else {
			dot := strings.IndexByte(s, '.')
			if dot < 0 {
				dot = len(s)
			}
			part, s = strings.TrimSpace(s[:dot]), s[dot:]
		}
		k = append(k, part)
		s = strings.TrimSpace(s)
		s = strings.TrimPrefix(s, ".")
	}
}

func indexOutsideQuotes(s string, c byte) int {
	var quote byte
	for i := 0; i < len(s); i++ {
		switch {
		case quote != 0:
			if s[i] == quote {
				quote = 0
			}
		case s[i] == '"' || s[i] == '\'':
			quote = s[i]
		case s[i] == c:
			return i
		}
	}
	return -1
}

// bracketDelta counts '[' minus ']' outside strings and comments.
func bracketDelta(s string) int {
	d := 0
	var quote byte
	for i := 0; i < len(s); i++ {
		switch {
		case quote != 0:
			if s[i] == quote {
				quote = 0
			}
		case s[i] == '"' || s[i] == '\'':
			quote = s[i]
		case s[i] == '#':
			return d
		case s[i] == '[':
			d++
		case s[i] == ']':
			d--
		}
	}
	return d
}

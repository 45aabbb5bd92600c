package rabbit

import (
	"errors"
	"fmt"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"time"
)

// Config holds the [oslo_messaging_rabbit] options of oslo.messaging 18.1,
// by their oslo meaning. DefaultConfig returns oslo's defaults; ParseConfig
// reads them from oslo names (values as written in an INI file). The table
// of docs/RABBIT.md says what each does here.
type Config struct {
	RPCConnPoolSize  int           // rpc_conn_pool_size: upper bound of send connections
	ConnPoolMinSize  int           // conn_pool_min_size: send connections kept open
	ConnPoolTTL      time.Duration // conn_pool_ttl: idle time before extra send connections close
	DurableQueues    bool          // amqp_durable_queues
	AutoDelete       bool          // amqp_auto_delete
	SSL              bool          // ssl
	SSLVersion       string        // ssl_version: TLSv1, TLSv1_1, TLSv1_2, SSLv23 (any), ...
	SSLKeyFile       string        // ssl_key_file
	SSLCertFile      string        // ssl_cert_file
	SSLCAFile        string        // ssl_ca_file
	SSLVerifyHost    bool          // ssl_enforce_hostname_verification (default True in 18.1)
	SSLFIPSMode      bool          // ssl_enforce_fips_mode (read, no effect, as in 18.1)
	ReconnectDelay   time.Duration // kombu_reconnect_delay, added to every reconnect wait
	ReconnectSplay   time.Duration // kombu_reconnect_splay: a random wait below it added to every reconnect wait
	Compression      string        // kombu_compression: "", "gzip" or "bz2"
	MissingConsumer  time.Duration // kombu_missing_consumer_retry_timeout
	FailoverStrategy string        // kombu_failover_strategy: round-robin or shuffle
	LoginMethod      string        // rabbit_login_method: AMQPLAIN, PLAIN, EXTERNAL
	RetryInterval    time.Duration // rabbit_retry_interval
	RetryBackoff     time.Duration // rabbit_retry_backoff
	IntervalMax      time.Duration // rabbit_interval_max
	HAQueues         bool          // rabbit_ha_queues
	QuorumQueue      bool          // rabbit_quorum_queue
	QuorumDelivery   int           // rabbit_quorum_delivery_limit
	QuorumMemLength  int           // rabbit_quorum_max_memory_length
	QuorumMemBytes   int           // rabbit_quorum_max_memory_bytes
	TransientQuorum  bool          // rabbit_transient_quorum_queue: reply and fanout queues are quorum queues
	StreamFanout     bool          // rabbit_stream_fanout: one stream queue T_fanout per topic
	TransientTTL     int           // rabbit_transient_queues_ttl, seconds (0: no x-expires / x-max-age)
	Prefetch         int           // rabbit_qos_prefetch_count
	HeartbeatTimeout int           // heartbeat_timeout_threshold, seconds (0 = off)
	HeartbeatRate    int           // heartbeat_rate
	DirectMandatory  bool          // direct_mandatory_flag
	CancelOnFailover bool          // enable_cancel_on_failover
	UseQueueManager  bool          // use_queue_manager: reply_<host>:<proc>:<n>, T_fanout_<host>:<proc>:<n>
	Hostname         string        // hostname: the queue manager's host name (os.Hostname())
	Processname      string        // processname: the queue manager's process name (base name of os.Args[0])

	// ConnectTimeout bounds one connection attempt to one host: TCP
	// connect, TLS and AMQP handshakes, opening the channels, and the
	// close handshake. Not an oslo option: oslo.messaging leaves kombu's
	// connect_timeout at its default, 5 s, which py-amqp applies to the TCP
	// connect and to each read of the AMQP handshake. Set it as
	// connect_timeout (seconds, fractions allowed).
	ConnectTimeout time.Duration
}

// DefaultConfig returns the defaults of oslo.messaging 18.1.0.
func DefaultConfig() Config {
	host, _ := os.Hostname()
	return Config{
		SSLVerifyHost:    true,
		Hostname:         host,
		Processname:      filepath.Base(os.Args[0]),
		RPCConnPoolSize:  30,
		ConnPoolMinSize:  2,
		ConnPoolTTL:      1200 * time.Second,
		ReconnectDelay:   time.Second,
		MissingConsumer:  60 * time.Second,
		FailoverStrategy: "round-robin",
		LoginMethod:      "AMQPLAIN",
		RetryInterval:    time.Second,
		RetryBackoff:     2 * time.Second,
		IntervalMax:      30 * time.Second,
		TransientTTL:     1800,
		HeartbeatTimeout: 60,
		HeartbeatRate:    3,
		DirectMandatory:  true,
		ConnectTimeout:   5 * time.Second,
	}
}

// Validate reports the values and option combinations oslo.messaging 18.1
// refuses (oslo.config's bounds and choices, and the RuntimeErrors its
// driver raises when it starts), with 18.1's words.
func (c Config) Validate() error {
	var errs []error
	if c.RPCConnPoolSize < 1 {
		errs = append(errs, errors.New("rpc_conn_pool_size must be >= 1"))
	} else if c.RPCConnPoolSize < c.ConnPoolMinSize {
		errs = append(errs, fmt.Errorf("rpc_conn_pool_size: %d must be greater than or equal to conn_pool_min_size: %d", c.RPCConnPoolSize, c.ConnPoolMinSize))
	}
	if c.TransientTTL < 0 {
		errs = append(errs, errors.New("rabbit_transient_queues_ttl must be >= 0"))
	}
	if c.ReconnectDelay < 0 || c.ReconnectDelay > maxReconnectDelay {
		errs = append(errs, errors.New("kombu_reconnect_delay must be between 0 and 4.5"))
	}
	if c.ReconnectSplay < 0 {
		errs = append(errs, errors.New("kombu_reconnect_splay must be >= 0"))
	}
	if c.RetryInterval < time.Second {
		errs = append(errs, errors.New("rabbit_retry_interval must be >= 1"))
	}
	if c.RetryBackoff < 0 {
		errs = append(errs, errors.New("rabbit_retry_backoff must be >= 0"))
	}
	if c.IntervalMax < time.Second {
		errs = append(errs, errors.New("rabbit_interval_max must be >= 1"))
	}
	if c.HAQueues && (c.QuorumQueue || c.TransientQuorum) {
		errs = append(errs, errors.New("rabbit_quorum_queue and rabbit_ha_queues both enabled, queue type is quorum or HA (mirrored) not both"))
	}
	if c.StreamFanout && c.Prefetch <= 0 {
		errs = append(errs, errors.New("rabbit_stream_fanout need rabbit_qos_prefetch_count to be set to a value greater than 0"))
	}
	if c.StreamFanout && !c.TransientQuorum {
		errs = append(errs, errors.New("rabbit_stream_fanout need rabbit_transient_quorum_queue to be set to true"))
	}
	if c.UseQueueManager && (c.Hostname == "" || c.Processname == "") {
		errs = append(errs, errors.New("use_queue_manager needs a hostname and a processname"))
	}
	switch c.FailoverStrategy {
	case "round-robin", "shuffle":
	default:
		errs = append(errs, fmt.Errorf("kombu_failover_strategy %q: want round-robin or shuffle", c.FailoverStrategy))
	}
	switch c.LoginMethod {
	case "AMQPLAIN", "PLAIN", "EXTERNAL":
	case "RABBIT-CR-DEMO":
		errs = append(errs, errors.New("rabbit_login_method RABBIT-CR-DEMO is not supported"))
	default:
		errs = append(errs, fmt.Errorf("rabbit_login_method %q: want PLAIN, AMQPLAIN or EXTERNAL", c.LoginMethod))
	}
	switch c.Compression {
	case "", "gzip":
	case "bz2":
		errs = append(errs, errors.New("kombu_compression bz2 is not supported for sending (bz2 bodies are still decoded on receipt)"))
	default:
		errs = append(errs, fmt.Errorf("kombu_compression %q: want gzip or bz2", c.Compression))
	}
	if c.HeartbeatTimeout < 0 || c.HeartbeatRate < 1 {
		errs = append(errs, errors.New("heartbeat_timeout_threshold must be >= 0 and heartbeat_rate >= 1"))
	}
	if c.ConnectTimeout <= 0 {
		errs = append(errs, errors.New("connect_timeout must be > 0"))
	}
	return errors.Join(errs...)
}

// maxReconnectDelay is oslo's bound of kombu_reconnect_delay:
// ACK_REQUEUE_EVERY_SECONDS_MAX (5 s) * 0.9.
const maxReconnectDelay = 4500 * time.Millisecond

// optionSetters maps every option name of [oslo_messaging_rabbit] in
// oslo.messaging 18.1 (and its one deprecated alias) to the code that
// stores its value.
var optionSetters = map[string]func(c *Config, v string) error{
	"rpc_conn_pool_size":                   intOpt(func(c *Config) *int { return &c.RPCConnPoolSize }),
	"conn_pool_min_size":                   intOpt(func(c *Config) *int { return &c.ConnPoolMinSize }),
	"conn_pool_ttl":                        secOpt(func(c *Config) *time.Duration { return &c.ConnPoolTTL }),
	"amqp_durable_queues":                  boolOpt(func(c *Config) *bool { return &c.DurableQueues }),
	"amqp_auto_delete":                     boolOpt(func(c *Config) *bool { return &c.AutoDelete }),
	"ssl":                                  boolOpt(func(c *Config) *bool { return &c.SSL }),
	"ssl_version":                          strOpt(func(c *Config) *string { return &c.SSLVersion }),
	"ssl_key_file":                         strOpt(func(c *Config) *string { return &c.SSLKeyFile }),
	"ssl_cert_file":                        strOpt(func(c *Config) *string { return &c.SSLCertFile }),
	"ssl_ca_file":                          strOpt(func(c *Config) *string { return &c.SSLCAFile }),
	"ssl_enforce_hostname_verification":    boolOpt(func(c *Config) *bool { return &c.SSLVerifyHost }),
	"ssl_enforce_fips_mode":                boolOpt(func(c *Config) *bool { return &c.SSLFIPSMode }),
	"kombu_reconnect_delay":                floatSecOpt(func(c *Config) *time.Duration { return &c.ReconnectDelay }),
	"kombu_reconnect_splay":                floatSecOpt(func(c *Config) *time.Duration { return &c.ReconnectSplay }),
	"kombu_compression":                    strOpt(func(c *Config) *string { return &c.Compression }),
	"kombu_missing_consumer_retry_timeout": secOpt(func(c *Config) *time.Duration { return &c.MissingConsumer }),
	"kombu_reconnect_timeout":              secOpt(func(c *Config) *time.Duration { return &c.MissingConsumer }),
	"kombu_failover_strategy":              strOpt(func(c *Config) *string { return &c.FailoverStrategy }),
	"rabbit_login_method":                  strOpt(func(c *Config) *string { return &c.LoginMethod }),
	"rabbit_retry_interval":                secOpt(func(c *Config) *time.Duration { return &c.RetryInterval }),
	"rabbit_retry_backoff":                 secOpt(func(c *Config) *time.Duration { return &c.RetryBackoff }),
	"rabbit_interval_max":                  secOpt(func(c *Config) *time.Duration { return &c.IntervalMax }),
	"rabbit_ha_queues":                     boolOpt(func(c *Config) *bool { return &c.HAQueues }),
	"rabbit_quorum_queue":                  boolOpt(func(c *Config) *bool { return &c.QuorumQueue }),
	"rabbit_transient_quorum_queue":        boolOpt(func(c *Config) *bool { return &c.TransientQuorum }),
	"rabbit_quorum_delivery_limit":         intOpt(func(c *Config) *int { return &c.QuorumDelivery }),
	"rabbit_quorum_max_memory_length":      intOpt(func(c *Config) *int { return &c.QuorumMemLength }),
	"rabbit_quorum_max_memory_bytes":       intOpt(func(c *Config) *int { return &c.QuorumMemBytes }),
	"rabbit_transient_queues_ttl":          intOpt(func(c *Config) *int { return &c.TransientTTL }),
	"rabbit_qos_prefetch_count":            intOpt(func(c *Config) *int { return &c.Prefetch }),
	"heartbeat_timeout_threshold":          intOpt(func(c *Config) *int { return &c.HeartbeatTimeout }),
	"heartbeat_rate":                       intOpt(func(c *Config) *int { return &c.HeartbeatRate }),
	"direct_mandatory_flag":                boolOpt(func(c *Config) *bool { return &c.DirectMandatory }),
	"enable_cancel_on_failover":            boolOpt(func(c *Config) *bool { return &c.CancelOnFailover }),
	"use_queue_manager":                    boolOpt(func(c *Config) *bool { return &c.UseQueueManager }),
	"hostname":                             strOpt(func(c *Config) *string { return &c.Hostname }),
	"processname":                          strOpt(func(c *Config) *string { return &c.Processname }),
	"rabbit_stream_fanout":                 boolOpt(func(c *Config) *bool { return &c.StreamFanout }),
	"connect_timeout":                      floatSecOpt(func(c *Config) *time.Duration { return &c.ConnectTimeout }),
}

// RemovedOptions maps the [oslo_messaging_rabbit] names of
// oslo.messaging 14 that 18.1 no longer has to what replaces them ("" when
// nothing does). oslo.config ignores a name it does not know in a file, so
// 18.1 ignores these silently there (a kolla file that still says
// rabbit_use_ssl = true connects without TLS); oslogo ignores them too and
// logs a warning naming the replacement. In the URL query 18.1 fails with
// NoSuchOptError, and so does oslogo.
var RemovedOptions = map[string]string{
	"rabbit_use_ssl":                  "ssl",
	"kombu_ssl_version":               "ssl_version",
	"kombu_ssl_keyfile":               "ssl_key_file",
	"kombu_ssl_certfile":              "ssl_cert_file",
	"kombu_ssl_ca_certs":              "ssl_ca_file",
	"heartbeat_in_pthread":            "",
	"rabbit_quroum_max_memory_length": "rabbit_quorum_max_memory_length",
	"rabbit_quroum_max_memory_bytes":  "rabbit_quorum_max_memory_bytes",
}

// removedWhy says why a removed option has no replacement.
var removedWhy = map[string]string{
	"heartbeat_in_pthread": "18.1 always runs the heartbeat in a native thread; oslogo's heartbeats are amqp091-go's",
}

// OptionNames lists every option name ParseConfig accepts, sorted.
func OptionNames() []string {
	names := make([]string, 0, len(optionSetters))
	for n := range optionSetters {
		names = append(names, n)
	}
	sort.Strings(names)
	return names
}

// ParseConfig applies oslo-named options, as read from a file, over
// DefaultConfig. A name 18.1 removed (RemovedOptions) is ignored; any other
// unknown name is an error.
func ParseConfig(opts map[string]string) (Config, error) {
	c := DefaultConfig()
	if _, err := c.apply(opts, false); err != nil {
		return c, err
	}
	return c, c.Validate()
}

// apply stores opts over c. inURL says the options come from the transport
// URL's query, where a removed name is an error as in 18.1; from a file it
// is skipped and returned in warnings. An unknown name is an error either
// way.
func (c *Config) apply(opts map[string]string, inURL bool) (warnings []string, err error) {
	keys := make([]string, 0, len(opts))
	for k := range opts {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		set, ok := optionSetters[k]
		if !ok {
			repl, removed := RemovedOptions[k]
			if !removed {
				return warnings, fmt.Errorf("rabbit: no such option %q in group [oslo_messaging_rabbit]", k)
			}
			msg := removedMessage(k, repl)
			if inURL {
				return warnings, fmt.Errorf("rabbit: no such option %q in group [oslo_messaging_rabbit] of the transport URL: %s", k, msg)
			}
			warnings = append(warnings, fmt.Sprintf("[oslo_messaging_rabbit] %s is ignored: %s", k, msg))
			continue
		}
		if err := set(c, opts[k]); err != nil {
			return warnings, fmt.Errorf("rabbit: option %s: %w", k, err)
		}
	}
	return warnings, nil
}

func removedMessage(name, repl string) string {
	if repl == "" {
		return "oslo.messaging 18.1 removed it (" + removedWhy[name] + ")"
	}
	return "oslo.messaging 18.1 removed it, use " + repl
}

// ignoredWarnings lists the options set to a value that oslogo accepts and
// cannot act on, each with the reason, for a warning when a driver opens.
func (c Config) ignoredWarnings() []string {
	def := DefaultConfig()
	var w []string
	if c.ConnPoolTTL != def.ConnPoolTTL {
		w = append(w, "conn_pool_ttl has no effect: the send pool never grows past conn_pool_min_size connections, so none idles out")
	}
	if c.SSLFIPSMode {
		w = append(w, "ssl_enforce_fips_mode has no effect (as in oslo.messaging 18.1: the OpenSSL FIPS_mode_set API is gone; Go selects FIPS mode with GODEBUG=fips140=on)")
	}
	if c.HeartbeatRate != def.HeartbeatRate {
		w = append(w, "heartbeat_rate has no effect: amqp091-go sends a heartbeat every heartbeat_timeout_threshold/2 and drops a connection after 3 silent intervals")
	}
	if !c.DirectMandatory {
		w = append(w, "direct_mandatory_flag = False is deprecated for removal in oslo.messaging 18.1; replies are published without mandatory as asked")
	}
	return w
}

func intOpt(f func(*Config) *int) func(*Config, string) error {
	return func(c *Config, v string) error {
		n, err := strconv.Atoi(strings.TrimSpace(v))
		if err != nil {
			return fmt.Errorf("%q is not an integer", v)
		}
		*f(c) = n
		return nil
	}
}

func secOpt(f func(*Config) *time.Duration) func(*Config, string) error {
	return func(c *Config, v string) error {
		n, err := strconv.Atoi(strings.TrimSpace(v))
		if err != nil {
			return fmt.Errorf("%q is not an integer", v)
		}
		*f(c) = time.Duration(n) * time.Second
		return nil
	}
}

func floatSecOpt(f func(*Config) *time.Duration) func(*Config, string) error {
	return func(c *Config, v string) error {
		x, err := strconv.ParseFloat(strings.TrimSpace(v), 64)
		if err != nil {
			return fmt.Errorf("%q is not a number", v)
		}
		*f(c) = time.Duration(x * float64(time.Second))
		return nil
	}
}

func strOpt(f func(*Config) *string) func(*Config, string) error {
	return func(c *Config, v string) error { *f(c) = strings.TrimSpace(v); return nil }
}

// boolOpt parses booleans the way oslo.config does.
func boolOpt(f func(*Config) *bool) func(*Config, string) error {
	return func(c *Config, v string) error {
		switch strings.ToLower(strings.TrimSpace(v)) {
		case "true", "1", "on", "yes":
			*f(c) = true
		case "false", "0", "off", "no":
			*f(c) = false
		default:
			return fmt.Errorf("%q is not a boolean", v)
		}
		return nil
	}
}

// Host is one broker of a transport URL.
type Host struct {
	Username string
	Password string
	Addr     string // host:port, IPv6 in brackets
}

// TransportURL is a parsed rabbit:// transport URL.
type TransportURL struct {
	Hosts       []Host
	VirtualHost string            // "/" when the URL has none
	Query       map[string]string // option overrides
}

// ParseURL parses an oslo transport URL
// (driver://[user[:pass]@]host[:port][,...]/[vhost][?query]) from its raw
// text, which keeps per-host credentials exact.
func ParseURL(raw string) (*TransportURL, error) {
	scheme, rest, ok := strings.Cut(raw, "://")
	if !ok {
		return nil, fmt.Errorf("rabbit: invalid transport URL: missing \"://\"")
	}
	name, _, _ := strings.Cut(scheme, "+")
	if name != "rabbit" && name != "kombu" {
		return nil, fmt.Errorf("rabbit: invalid transport URL scheme %q", scheme)
	}
	var query string
	rest, query, _ = strings.Cut(rest, "?")
	rest, _, _ = strings.Cut(rest, "#")
	netloc, path, hasPath := strings.Cut(rest, "/")
	tu := &TransportURL{VirtualHost: "/", Query: map[string]string{}}
	if hasPath && path != "" {
		vh, err := url.PathUnescape(path)
		if err != nil {
			return nil, fmt.Errorf("rabbit: invalid virtual host: %w", err)
		}
		tu.VirtualHost = vh
	}
	if netloc != "" {
		for _, part := range strings.Split(netloc, ",") {
			h, err := splitHost(part, true)
			if err != nil {
				return nil, err
			}
			tu.Hosts = append(tu.Hosts, h)
		}
	}
	if len(tu.Hosts) == 0 {
		tu.Hosts = []Host{{Addr: "localhost:5672"}}
	}
	for i := range tu.Hosts {
		if tu.Hosts[i].Username == "" && tu.Hosts[i].Password == "" {
			tu.Hosts[i].Username, tu.Hosts[i].Password = "guest", "guest"
		}
	}
	if query != "" {
		q, err := url.ParseQuery(query)
		if err != nil {
			return nil, fmt.Errorf("rabbit: invalid transport URL query: %w", err)
		}
		for k, v := range q {
			tu.Query[k] = v[len(v)-1]
		}
	}
	return tu, nil
}

// splitHost parses "[user[:pass]@]host[:port]"; escaped says whether the
// credentials are still percent-encoded.
func splitHost(part string, escaped bool) (Host, error) {
	var h Host
	hostport := part
	if i := strings.LastIndex(part, "@"); i >= 0 {
		userinfo := part[:i]
		hostport = part[i+1:]
		user, pass, _ := strings.Cut(userinfo, ":")
		h.Username, h.Password = user, pass
		if escaped {
			var err error
			if h.Username, err = url.PathUnescape(user); err != nil {
				return h, fmt.Errorf("rabbit: invalid user name in transport URL")
			}
			if h.Password, err = url.PathUnescape(pass); err != nil {
				return h, fmt.Errorf("rabbit: invalid password in transport URL")
			}
		}
	}
	if hostport == "" {
		hostport = "localhost"
	}
	host, port := hostport, "5672"
	if strings.HasPrefix(hostport, "[") {
		end := strings.Index(hostport, "]")
		if end < 0 {
			return h, fmt.Errorf("rabbit: invalid IPv6 host in transport URL")
		}
		host = hostport[1:end]
		p, ok := strings.CutPrefix(hostport[end+1:], ":")
		if !ok && end+1 < len(hostport) {
			return h, fmt.Errorf("rabbit: invalid IPv6 host in transport URL")
		}
		if p != "" {
			port = p
		}
	} else if hh, p, ok := strings.Cut(hostport, ":"); ok {
		host = hh
		if p != "" {
			port = p
		}
	}
	// A bracket anywhere else makes an address no dialer reads (Python's
	// urlsplit refuses it too: "Invalid IPv6 URL").
	if strings.ContainsAny(host, "[]") {
		return h, fmt.Errorf("rabbit: invalid host in transport URL")
	}
	if n, err := strconv.Atoi(port); err != nil || n < 1 || n > 65535 {
		return h, fmt.Errorf("rabbit: invalid port %q in transport URL", port)
	}
	if host == "" {
		host = "localhost"
	}
	h.Addr = net.JoinHostPort(host, port)
	return h, nil
}

// fromURL converts a url.URL. Go's parser folds "u1:p1@h1,u2:p2@h2" into
// one (decoded) userinfo, so per-host credentials are recovered by
// splitting the decoded authority on ',' and each part on its last '@'.
func fromURL(u *url.URL) (*TransportURL, error) {
	tu, err := ParseURL(u.Scheme + "://" + u.Host + u.EscapedPath() + queryPart(u))
	if err != nil {
		return nil, err
	}
	if u.User == nil {
		return tu, nil
	}
	user := u.User.Username()
	pass, _ := u.User.Password()
	authority := user + ":" + pass + "@" + u.Host
	if u.Host == "" {
		authority = user + ":" + pass + "@"
	}
	tu.Hosts = tu.Hosts[:0]
	for _, part := range strings.Split(authority, ",") {
		h, err := splitHost(part, false)
		if err != nil {
			return nil, err
		}
		if h.Username == "" && h.Password == "" {
			h.Username, h.Password = "guest", "guest"
		}
		tu.Hosts = append(tu.Hosts, h)
	}
	return tu, nil
}

func queryPart(u *url.URL) string {
	if u.RawQuery == "" {
		return ""
	}
	return "?" + u.RawQuery
}

package rabbit

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/oslogo/oslogo/driver"
)

// dialer opens AMQP connections to the hosts of one transport URL, with
// oslo's failover: hosts shuffled once, then walked round-robin (or a
// random host each time with kombu_failover_strategy=shuffle).
type dialer struct {
	cfg   Config
	hosts []Host
	vhost string
	tls   *tls.Config
	log   *slog.Logger

	mu   sync.Mutex
	next int
}

func newDialer(cfg Config, tu *TransportURL, log *slog.Logger) (*dialer, error) {
	d := &dialer{cfg: cfg, hosts: append([]Host(nil), tu.Hosts...), vhost: tu.VirtualHost, log: log}
	if len(d.hosts) > 1 {
		rand.Shuffle(len(d.hosts), func(i, j int) { d.hosts[i], d.hosts[j] = d.hosts[j], d.hosts[i] })
	}
	if cfg.SSL {
		t, err := tlsConfig(cfg)
		if err != nil {
			return nil, err
		}
		d.tls = t
	}
	return d, nil
}

// tlsConfig builds the client TLS settings of the ssl_* options. As in
// py-amqp, the chain is always verified (system roots, or ssl_ca_file),
// and the host name only with ssl_enforce_hostname_verification and a CA
// file.
func tlsConfig(cfg Config) (*tls.Config, error) {
	t := &tls.Config{MinVersion: tls.VersionTLS10}
	switch cfg.SSLVersion {
	case "", "SSLv23", "TLS", "PROTOCOL_TLS", "PROTOCOL_SSLv23":
	case "TLSv1", "PROTOCOL_TLSv1":
		t.MinVersion, t.MaxVersion = tls.VersionTLS10, tls.VersionTLS10
	case "TLSv1_1", "PROTOCOL_TLSv1_1":
		t.MinVersion, t.MaxVersion = tls.VersionTLS11, tls.VersionTLS11
	case "TLSv1_2", "PROTOCOL_TLSv1_2":
		t.MinVersion, t.MaxVersion = tls.VersionTLS12, tls.VersionTLS12
	case "TLSv1_3", "PROTOCOL_TLSv1_3":
		t.MinVersion, t.MaxVersion = tls.VersionTLS13, tls.VersionTLS13
	default:
		return nil, fmt.Errorf("rabbit: ssl_version %q is not supported", cfg.SSLVersion)
	}
	if cfg.SSLCertFile != "" || cfg.SSLKeyFile != "" {
		key := cfg.SSLKeyFile
		if key == "" {
			key = cfg.SSLCertFile // a PEM file may hold both
		}
		cert, err := tls.LoadX509KeyPair(cfg.SSLCertFile, key)
		if err != nil {
			return nil, fmt.Errorf("rabbit: ssl_cert_file/ssl_key_file: %w", err)
		}
		t.Certificates = []tls.Certificate{cert}
	}
	var roots *x509.CertPool
	if cfg.SSLCAFile != "" {
		pem, err := os.ReadFile(cfg.SSLCAFile)
		if err != nil {
			return nil, fmt.Errorf("rabbit: ssl_ca_file: %w", err)
		}
		roots = x509.NewCertPool()
		if !roots.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("rabbit: ssl_ca_file %s holds no PEM certificate", cfg.SSLCAFile)
		}
		t.RootCAs = roots
	}
	if cfg.SSLVerifyHost && cfg.SSLCAFile != "" {
		return t, nil // standard verification, host name included
	}
	// Verify the chain but not the name, as py-amqp's default context does.
	t.InsecureSkipVerify = true
	t.VerifyConnection = func(cs tls.ConnectionState) error {
		if len(cs.PeerCertificates) == 0 {
			return errors.New("rabbit: broker sent no certificate")
		}
		opts := x509.VerifyOptions{Roots: roots, Intermediates: x509.NewCertPool()}
		for _, c := range cs.PeerCertificates[1:] {
			opts.Intermediates.AddCert(c)
		}
		_, err := cs.PeerCertificates[0].Verify(opts)
		return err
	}
	return t, nil
}

// pick returns the host for the next connection attempt.
func (d *dialer) pick() Host {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.cfg.FailoverStrategy == "shuffle" && len(d.hosts) > 1 {
		return d.hosts[rand.IntN(len(d.hosts))]
	}
	return d.hosts[d.next%len(d.hosts)]
}

// failed moves round-robin failover past a host that just failed.
func (d *dialer) failed(h Host) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.hosts[d.next%len(d.hosts)] == h {
		d.next = (d.next + 1) % len(d.hosts)
	}
}

// dial opens a connection for purpose (see dialSession).
func (d *dialer) dial(ctx context.Context, purpose string) (*amqp.Connection, error) {
	conn, _, err := d.dialSession(ctx, purpose, nil)
	return conn, err
}

// dialSession opens a connection, trying each host of the URL once in
// failover order with no wait in between (kombu's failover within one
// cycle), and runs setup (if any) on it. Each attempt, setup included,
// ends after connect_timeout, at ctx's deadline or when ctx is cancelled.
// It returns the connection's socket too, the publish gate of a send
// connection.
func (d *dialer) dialSession(ctx context.Context, purpose string, setup func(*amqp.Connection) error) (*amqp.Connection, *coalescingConn, error) {
	var errs dialErrors
	for range len(d.hosts) {
		h := d.pick()
		conn, sock, err := d.dialHost(ctx, h, purpose, setup)
		if err == nil {
			return conn, sock, nil
		}
		errs = append(errs, err)
		if ctx.Err() != nil {
			break
		}
	}
	// Every host failed: callers (and the CLI's exit status) tell this
	// apart from a broker that answered and refused one message.
	if len(errs) == 1 {
		return nil, nil, fmt.Errorf("%w: %w", driver.ErrUnreachable, errs[0])
	}
	return nil, nil, fmt.Errorf("%w: %w", driver.ErrUnreachable, errs)
}

// dialErrors are the failures of one pass over the hosts.
type dialErrors []error

func (e dialErrors) Error() string {
	msgs := make([]string, len(e))
	for i, err := range e {
		msgs[i] = err.Error()
	}
	return strings.Join(msgs, "; ")
}

func (e dialErrors) Unwrap() []error { return e }

// dialHost opens one connection to h. The TCP connect, the TLS and AMQP
// handshakes and setup share one deadline, connect_timeout from now (or
// ctx's, if sooner): a host that accepts and never answers costs that
// long, then failover moves on. Cancelling ctx closes the socket, which
// ends any step in progress.
func (d *dialer) dialHost(ctx context.Context, h Host, purpose string, setup func(*amqp.Connection) error) (*amqp.Connection, *coalescingConn, error) {
	deadline := time.Now().Add(d.cfg.ConnectTimeout)
	if dl, ok := ctx.Deadline(); ok && dl.Before(deadline) {
		deadline = dl
	}
	hctx, cancel := context.WithDeadline(ctx, deadline)
	defer cancel()
	cfg := amqp.Config{
		Vhost:      d.vhost,
		ChannelMax: 16,
		Heartbeat:  time.Duration(d.cfg.HeartbeatTimeout) * time.Second,
		Locale:     "en_US",
		Properties: amqp.Table{
			"product":         "oslogo",
			"connection_name": fmt.Sprintf("%s:%d:%s:%s", filepath.Base(os.Args[0]), os.Getpid(), purpose, newHexID()),
			"capabilities": amqp.Table{
				"authentication_failure_close": true,
				"connection.blocked":           true,
				"consumer_cancel_notify":       true,
			},
		},
		TLSClientConfig: d.tls,
	}
	switch d.cfg.LoginMethod {
	case "PLAIN":
		cfg.SASL = []amqp.Authentication{&amqp.PlainAuth{Username: h.Username, Password: h.Password}}
	case "EXTERNAL":
		cfg.SASL = []amqp.Authentication{&amqp.ExternalAuth{}}
	default:
		cfg.SASL = []amqp.Authentication{&amqp.AMQPlainAuth{Username: h.Username, Password: h.Password}}
	}
	var sock *coalescingConn
	stopWatch := func() bool { return true }
	cfg.Dial = func(network, addr string) (net.Conn, error) {
		dd := net.Dialer{KeepAlive: 30 * time.Second}
		c, err := dd.DialContext(hctx, network, addr)
		if err != nil {
			return nil, err
		}
		// As amqp091-go's own Dial does: the handshakes run under the
		// deadline, which its openComplete clears.
		if err := c.SetDeadline(deadline); err != nil {
			_ = c.Close()
			return nil, err
		}
		sock = newCoalescingConn(c)
		// Setup runs after the deadline is cleared, and a cancelled ctx
		// (Close, a stopped consumer) must end the attempt at once:
		// closing the socket ends whatever step is waiting.
		stopWatch = context.AfterFunc(hctx, func() { _ = sock.Close() })
		return sock, nil
	}
	scheme := "amqp"
	if d.tls != nil {
		scheme = "amqps"
		if d.cfg.SSLVerifyHost {
			t := d.tls.Clone()
			t.ServerName, _, _ = net.SplitHostPort(h.Addr)
			cfg.TLSClientConfig = t
		}
	}
	conn, err := amqp.DialConfig(scheme+"://"+h.Addr+"/", cfg)
	if err == nil && setup != nil {
		if err = setup(conn); err != nil {
			_ = conn.Close() // its socket is closed below, so this is quick
		}
	}
	if !stopWatch() && err == nil {
		err = errors.New("interrupted") // the watch fired just as setup ended
		_ = conn.Close()
	}
	if err != nil {
		if sock != nil {
			_ = sock.Close() // a failed handshake leaves it open
		}
		d.failed(h)
		switch {
		case ctx.Err() != nil:
			err = fmt.Errorf("rabbit: connect to %s: %w", h.Addr, ctx.Err())
		case !time.Now().Before(deadline):
			err = fmt.Errorf("rabbit: connect to %s: no answer within connect_timeout (%s): %w", h.Addr, d.cfg.ConnectTimeout, err)
		default:
			err = fmt.Errorf("rabbit: connect to %s: %w", h.Addr, err)
		}
		d.log.Warn("connect failed", "host", h.Addr, "purpose", purpose, "err", err)
		return nil, nil, err
	}
	d.log.Debug("connected", "host", h.Addr, "purpose", purpose)
	return conn, sock, nil
}

// backoff is the wait before reconnect attempt n (1-based), as kombu's
// autoretry and 18.1's on_error compute it: interval_start +
// (n-1)*interval_step, capped at interval_max, plus kombu_reconnect_delay,
// plus a random wait below kombu_reconnect_splay.
func (c Config) backoff(n int) time.Duration {
	if n < 1 {
		n = 1
	}
	w := c.RetryInterval + time.Duration(n-1)*c.RetryBackoff
	if w > c.IntervalMax {
		w = c.IntervalMax
	}
	w += c.ReconnectDelay
	if c.ReconnectSplay > 0 {
		w += rand.N(c.ReconnectSplay)
	}
	return w
}

// sleepCtx waits for d, ctx or stop; it reports whether the full wait
// elapsed.
func sleepCtx(ctx context.Context, stop <-chan struct{}, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	case <-stop:
		return false
	}
}

// topicQueueArgs are the arguments of topic, server and notification
// queues: HA or quorum, no TTL.
func (c Config) topicQueueArgs() amqp.Table { return c.queueArgs(0, c.QuorumQueue) }

// transientQueueArgs are the arguments of reply queues and (without
// rabbit_stream_fanout) fanout queues: x-expires (+ HA), quorum with
// rabbit_transient_quorum_queue.
func (c Config) transientQueueArgs() amqp.Table {
	return c.queueArgs(c.TransientTTL, c.TransientQuorum)
}

// fanoutQueueArgs are the arguments of fanout queues: with
// rabbit_stream_fanout only x-queue-type stream and x-max-age "<ttl>s" (a
// string), as 18.1 replaces every other argument; else transientQueueArgs.
func (c Config) fanoutQueueArgs() amqp.Table {
	if !c.StreamFanout {
		return c.transientQueueArgs()
	}
	args := amqp.Table{"x-queue-type": "stream"}
	if c.TransientTTL > 0 {
		args["x-max-age"] = strconv.Itoa(c.TransientTTL) + "s"
	}
	return args
}

// transientDurable is the durability of reply queues and of the fanout
// exchange: durable with rabbit_transient_quorum_queue (quorum queues
// must be).
func (c Config) transientDurable() bool { return c.TransientQuorum }

// fanoutQueueDurable is the durability of fanout queues (18.1's
// is_durable).
func (c Config) fanoutQueueDurable() bool { return c.TransientQuorum || c.StreamFanout }

// deleteFanoutOnClose reports whether a server deletes its fanout queue
// when it stops: not a shared stream, and not the stable names of the
// queue manager, which expire by x-expires instead (18.1's close).
func (c Config) deleteFanoutOnClose() bool { return !c.StreamFanout && !c.UseQueueManager }

// queueArgs is oslo's _get_queue_arguments.
func (c Config) queueArgs(ttl int, quorum bool) amqp.Table {
	args := amqp.Table{}
	if c.HAQueues {
		args["x-ha-policy"] = "all"
	}
	if quorum {
		args["x-queue-type"] = "quorum"
		if c.QuorumDelivery > 0 {
			args["x-delivery-limit"] = int32(c.QuorumDelivery)
		}
		if c.QuorumMemLength > 0 {
			args["x-max-in-memory-length"] = int32(c.QuorumMemLength)
		}
		if c.QuorumMemBytes > 0 {
			args["x-max-in-memory-bytes"] = int32(c.QuorumMemBytes)
		}
	}
	if ttl > 0 {
		args["x-expires"] = int32(ttl * 1000)
	}
	if len(args) == 0 {
		return nil
	}
	return args
}

// durable is oslo's Connection.durable: quorum queues are always durable.
func (c Config) durable() bool { return c.DurableQueues || c.QuorumQueue }

// consumerArgs are the basic.consume arguments.
func (c Config) consumerArgs() amqp.Table {
	if c.CancelOnFailover {
		return amqp.Table{"x-cancel-on-ha-failover": true}
	}
	return nil
}

// permanent reports a channel error that retrying will not fix (access
// refused, not found, precondition failed, ...).
func permanent(err error) bool {
	var ae *amqp.Error
	if errors.As(err, &ae) {
		switch ae.Code {
		case amqp.AccessRefused, amqp.NotFound, amqp.PreconditionFailed, amqp.ResourceLocked, amqp.NotAllowed, amqp.NotImplemented, amqp.SyntaxError, amqp.CommandInvalid:
			return true
		}
	}
	return false
}

package broker

import (
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"regexp"
	"time"
)

// Options configure a Server. The zero value is not valid; start from
// DefaultOptions.
type Options struct {
	// AMQPAddr is the plain TCP listen address; ":0" picks a free port and
	// "" disables the listener (InProcessConn still works).
	AMQPAddr string
	// TLSAddr is the AMQPS listen address; it needs TLSConfig.
	TLSAddr string
	// HTTPAddr is the management HTTP API's listen address (RabbitMQ's
	// 15672); "" disables it.
	HTTPAddr string
	// TLSConfig configures the TLS listener.
	TLSConfig *tls.Config
	// DataDir holds durable definitions and persistent messages; "" keeps
	// everything in memory only.
	DataDir string
	// Users are the accounts that may connect. A user may open only the
	// vhosts its Permissions name, as in RabbitMQ.
	Users []User
	// LoopbackUsers may only connect from a loopback address (RabbitMQ's
	// loopback_users; "guest" by default). An empty list lets guest log in
	// from other hosts.
	LoopbackUsers []string
	// VHosts are created at start; "/" is always present.
	VHosts []string
	// Logger receives the broker's logs; nil discards them.
	Logger *slog.Logger
	// Heartbeat is the interval the server proposes in connection.tune.
	Heartbeat time.Duration
	// FrameMax is the largest frame the server accepts and proposes.
	FrameMax uint32
	// ChannelMax is the number of channels per connection (RabbitMQ's 2047).
	ChannelMax uint16
	// MaxMessageSize bounds a message body (RabbitMQ's 128 MiB default).
	MaxMessageSize int
	// MaxConnections bounds open connections; 0 means no limit. A client
	// over the limit is refused at connection.open with connection.close
	// 530 NOT_ALLOWED, as RabbitMQ refuses over its node connection limit.
	MaxConnections int
	// MemoryHighWatermark is the number of bytes of counted memory (every
	// message held ready or unacknowledged with its properties and a fixed
	// overhead, paged-out entries' index, transactions, bodies being
	// received; see mem.go) above which publishing connections are blocked
	// (connection.blocked); 0 disables the alarm.
	MemoryHighWatermark int64
	// QueueMemoryLimit is the memory a queue's ready messages may take
	// before the queue pages further messages to disk; 0 means 4 MiB,
	// negative disables paging.
	QueueMemoryLimit int64
	// PagingRatio is the share of MemoryHighWatermark above which every
	// queue with waiting messages pages; 0 means 0.5 (RabbitMQ's
	// vm_memory_high_watermark_paging_ratio).
	PagingRatio float64
	// HandshakeTimeout bounds the time from accept to connection.open
	// (RabbitMQ's handshake_timeout, 10 s by default); a client still
	// in the handshake then has its socket closed.
	HandshakeTimeout time.Duration
	// WriteTimeout is how long the broker may be unable to write anything
	// to a client's socket (its buffers full: the client is not reading)
	// before it closes the connection, as nats-server's write deadline.
	// Meanwhile, once a connection's unwritten output passes 4 MiB, the
	// broker stops reading from that client.
	WriteTimeout time.Duration
	// SyncInterval delays fsync so more writes share it; 0 syncs as soon
	// as the previous sync ends (group commit).
	SyncInterval time.Duration
	// DenyTransientNonExclQueues refuses queue.declare of a queue that is
	// neither durable nor exclusive with RabbitMQ 4.3's connection error
	// 541 (its deprecated feature transient_nonexcl_queues, denied there
	// by default). Off by default: such queues keep working, as in
	// RabbitMQ up to 4.2 and in oslo.messaging's classic-queue defaults.
	DenyTransientNonExclQueues bool

	// segmentLimit overrides the size at which the message log rotates
	// (tests use small segments).
	segmentLimit int64
	// ProductName is the server's "product" property. It defaults to
	// "RabbitMQ" because clients (amqp091-go's tests, kombu's qos) switch on
	// it to use the RabbitMQ semantics this broker implements.
	ProductName string
	// ProductVersion is the "version" server property.
	ProductVersion string
}

// User is one account. Exactly one of Password and PasswordHash is set;
// PasswordHash uses RabbitMQ's rabbit_password_hashing_sha256 format
// (base64 of a 4-byte salt followed by SHA-256(salt+password)).
type User struct {
	Name         string
	Password     string
	PasswordHash string
	// Tags are informational (e.g. "administrator").
	Tags []string
	// Permissions per vhost. A vhost not listed may not be opened; each
	// listed vhost must be "/" or in Options.VHosts.
	Permissions map[string]Permission
}

// Permission holds RabbitMQ-style resource regexes for one vhost.
type Permission struct {
	Configure, Write, Read string
}

// DefaultOptions returns the settings of a stand-alone broker on
// 127.0.0.1:5672 with the guest account.
func DefaultOptions() Options {
	return Options{
		AMQPAddr:            "127.0.0.1:5672",
		Users:               []User{defaultGuest()},
		LoopbackUsers:       []string{"guest"},
		VHosts:              []string{"/"},
		Heartbeat:           60 * time.Second,
		FrameMax:            131072,
		ChannelMax:          2047,
		MaxMessageSize:      128 << 20,
		MemoryHighWatermark: 1 << 30,
		HandshakeTimeout:    10 * time.Second,
		WriteTimeout:        30 * time.Second,
		ProductName:         "RabbitMQ",
		ProductVersion:      "3.10.8",
	}
}

// Validate checks the options and fills in defaults for zero fields.
func (o *Options) Validate() error {
	d := DefaultOptions()
	if o.FrameMax == 0 {
		o.FrameMax = d.FrameMax
	}
	if o.FrameMax < 4096 {
		return fmt.Errorf("broker: FrameMax %d below the protocol minimum 4096", o.FrameMax)
	}
	if o.ChannelMax == 0 {
		o.ChannelMax = d.ChannelMax
	}
	if o.MaxMessageSize <= 0 {
		o.MaxMessageSize = d.MaxMessageSize
	}
	if o.HandshakeTimeout <= 0 {
		o.HandshakeTimeout = d.HandshakeTimeout
	}
	if o.WriteTimeout <= 0 {
		o.WriteTimeout = d.WriteTimeout
	}
	if o.Heartbeat < 0 || o.Heartbeat > 65535*time.Second {
		return fmt.Errorf("broker: Heartbeat %v out of range", o.Heartbeat)
	}
	if o.ProductName == "" {
		o.ProductName = d.ProductName
	}
	if o.ProductVersion == "" {
		o.ProductVersion = d.ProductVersion
	}
	if o.QueueMemoryLimit == 0 {
		o.QueueMemoryLimit = 4 << 20
	}
	if o.PagingRatio == 0 {
		o.PagingRatio = 0.5
	}
	if o.PagingRatio < 0 || o.PagingRatio > 1 {
		return fmt.Errorf("broker: PagingRatio %v outside (0, 1]", o.PagingRatio)
	}
	if o.MaxConnections < 0 || o.MemoryHighWatermark < 0 || o.SyncInterval < 0 {
		return errors.New("broker: negative limit")
	}
	for _, a := range []string{o.AMQPAddr, o.TLSAddr, o.HTTPAddr} {
		if a == "" {
			continue
		}
		if _, _, err := net.SplitHostPort(a); err != nil {
			return fmt.Errorf("broker: listen address %q: %w", a, err)
		}
	}
	if o.TLSAddr != "" && o.TLSConfig == nil {
		return errors.New("broker: TLSAddr needs TLSConfig")
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	seen := map[string]bool{}
	for _, u := range o.Users {
		if u.Name == "" {
			return errors.New("broker: user with empty name")
		}
		if seen[u.Name] {
			return fmt.Errorf("broker: user %q listed twice", u.Name)
		}
		seen[u.Name] = true
		if (u.Password == "") == (u.PasswordHash == "") {
			return fmt.Errorf("broker: user %q needs exactly one of Password and PasswordHash", u.Name)
		}
		if u.PasswordHash != "" {
			if _, err := decodeHash(u.PasswordHash); err != nil {
				return fmt.Errorf("broker: user %q: %w", u.Name, err)
			}
		}
		for vh, p := range u.Permissions {
			for _, re := range []string{p.Configure, p.Write, p.Read} {
				// Compiled as newUser will compile it.
				if _, err := regexp.Compile(permPattern(re)); err != nil {
					return fmt.Errorf("broker: user %q vhost %q: %w", u.Name, vh, err)
				}
			}
		}
	}
	return validatePermissions(o)
}

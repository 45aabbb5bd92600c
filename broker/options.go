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
	// TLSConfig configures the TLS listener.
	TLSConfig *tls.Config
	// DataDir holds durable definitions and persistent messages; "" keeps
	// everything in memory only.
	DataDir string
	// Users are the accounts that may connect. A user with no Permissions
	// gets full permissions on every vhost.
	Users []User
	// LoopbackUsers may only connect from a loopback address (RabbitMQ's
	// loopback_users; "guest" by default).
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
	// MaxConnections bounds open connections; 0 means no limit.
	MaxConnections int
	// MemoryHighWatermark is the number of bytes of queued message bodies
	// above which publishing connections are blocked (connection.blocked);
	// 0 disables the alarm.
	MemoryHighWatermark int64
	// HandshakeTimeout bounds the time from accept to connection.open.
	HandshakeTimeout time.Duration
	// SyncInterval delays fsync so more writes share it; 0 syncs as soon
	// as the previous sync ends (group commit).
	SyncInterval time.Duration

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
	// Permissions per vhost; nil grants everything everywhere.
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
		Users:               []User{{Name: "guest", Password: "guest", Tags: []string{"administrator"}}},
		LoopbackUsers:       []string{"guest"},
		VHosts:              []string{"/"},
		Heartbeat:           60 * time.Second,
		FrameMax:            131072,
		ChannelMax:          2047,
		MaxMessageSize:      128 << 20,
		MemoryHighWatermark: 1 << 30,
		HandshakeTimeout:    10 * time.Second,
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
	if o.Heartbeat < 0 || o.Heartbeat > 65535*time.Second {
		return fmt.Errorf("broker: Heartbeat %v out of range", o.Heartbeat)
	}
	if o.ProductName == "" {
		o.ProductName = d.ProductName
	}
	if o.ProductVersion == "" {
		o.ProductVersion = d.ProductVersion
	}
	if o.MaxConnections < 0 || o.MemoryHighWatermark < 0 || o.SyncInterval < 0 {
		return errors.New("broker: negative limit")
	}
	for _, a := range []string{o.AMQPAddr, o.TLSAddr} {
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
				// Compiled as newUser will use it: anchoring adds a level
				// of nesting, which regexp limits.
				if _, err := regexp.Compile(anchor(re)); err != nil {
					return fmt.Errorf("broker: user %q vhost %q: %w", u.Name, vh, err)
				}
			}
		}
	}
	return nil
}

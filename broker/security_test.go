package broker

import (
	"bufio"
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"io"
	"log/slog"
	"math/big"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/oslogo/oslogo/broker/internal/amqp091"
	amqp "github.com/rabbitmq/amqp091-go"
)

// logBuffer collects a broker's log lines for inspection.
type logBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *logBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *logBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// captureLogs makes the broker log everything, debug included, into buf.
func captureLogs(o *Options, buf *logBuffer) {
	o.Logger = slog.New(slog.NewTextHandler(buf, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

func serverAddr(s *Server) string { return s.Addr().String() }

// dialErr dials and closes at once, returning only the error.
func dialErr(url string) error {
	c, err := amqp.Dial(url)
	if err == nil {
		_ = c.Close()
	}
	return err
}

func wantCode(t *testing.T, what string, err error, code int) {
	t.Helper()
	var ae *amqp.Error
	if !errors.As(err, &ae) || ae.Code != code {
		t.Fatalf("%s: got %v, want AMQP error %d", what, err, code)
	}
}

// TestWrongCredentialsRefused: a wrong password or an unknown user gets
// connection.close 403 ACCESS_REFUSED (amqp091-go advertises
// authentication_failure_close), is counted in Stats, and is logged with
// the client's address and user name but not the password.
func TestWrongCredentialsRefused(t *testing.T) {
	var logs logBuffer
	const badPassword = "wrong-Kp29-pass"
	s, _ := startBroker(t, func(o *Options) { captureLogs(o, &logs) })
	addr := serverAddr(s)
	wantCode(t, "wrong password", dialErr("amqp://guest:"+badPassword+"@"+addr+"/"), amqp.AccessRefused)
	wantCode(t, "unknown user", dialErr("amqp://mallory:"+badPassword+"@"+addr+"/"), amqp.AccessRefused)
	if n := s.Stats().LoginFailures; n != 2 {
		t.Fatalf("LoginFailures = %d, want 2", n)
	}
	if err := dialErr("amqp://guest:guest@" + addr + "/"); err != nil {
		t.Fatalf("right password refused: %v", err)
	}
	if n := s.Stats().LoginFailures; n != 2 {
		t.Fatalf("a good login counted: LoginFailures = %d", n)
	}
	out := logs.String()
	for _, want := range []string{"login refused", "user=guest", "user=mallory", "remote=127.0.0.1:"} {
		if !strings.Contains(out, want) {
			t.Errorf("log lacks %q:\n%s", want, out)
		}
	}
	if strings.Contains(out, badPassword) {
		t.Errorf("log holds the password:\n%s", out)
	}
}

// TestVhostAccess: an unknown vhost and a vhost the user has no
// permissions on are refused at connection.open with 530 NOT_ALLOWED; a
// user listed without permissions can open no vhost, as in RabbitMQ.
func TestVhostAccess(t *testing.T) {
	s, _ := startBroker(t, func(o *Options) {
		o.VHosts = append(o.VHosts, "nova")
		o.Users = append(o.Users,
			User{Name: "nobody", Password: "pw"},
			User{Name: "nova", Password: "pw", Permissions: map[string]Permission{"nova": {Configure: ".*", Write: ".*", Read: ".*"}}})
	})
	addr := serverAddr(s)
	wantCode(t, "unknown vhost", dialErr("amqp://guest:guest@"+addr+"/missing"), amqp.NotAllowed)
	wantCode(t, "user without permissions", dialErr("amqp://nobody:pw@"+addr+"/"), amqp.NotAllowed)
	wantCode(t, "vhost not granted", dialErr("amqp://nova:pw@"+addr+"/"), amqp.NotAllowed)
	wantCode(t, "guest on nova", dialErr("amqp://guest:guest@"+addr+"/nova"), amqp.NotAllowed)
	if err := dialErr("amqp://nova:pw@" + addr + "/nova"); err != nil {
		t.Fatalf("granted vhost refused: %v", err)
	}
	if n := s.Stats().LoginFailures; n != 3 {
		t.Fatalf("LoginFailures = %d, want 3 (the unknown vhost is not a login failure)", n)
	}
}

func TestPermissionsForUndeclaredVhost(t *testing.T) {
	o := DefaultOptions()
	o.Users = append(o.Users, User{Name: "u", Password: "pw", Permissions: map[string]Permission{"nvoa": {Configure: ".*"}}})
	if _, err := New(o); err == nil || !strings.Contains(err.Error(), `"nvoa"`) {
		t.Fatalf("permissions for an undeclared vhost: %v", err)
	}
	o.VHosts = append(o.VHosts, "nvoa")
	if _, err := New(o); err != nil {
		t.Fatal(err)
	}
}

// TestPermissionsEnforced runs each operation RabbitMQ guards with a
// permission as a user allowed only names starting "alice." (plus
// publishing through the default exchange, checked as "amq.default"):
// allowed on alice.* names, 403 ACCESS_REFUSED closing only the channel on
// the others. The resources refused to alice are made by guest.
func TestPermissionsEnforced(t *testing.T) {
	_, url := startBroker(t, func(o *Options) {
		o.Users = append(o.Users, User{Name: "alice", Password: "pw", Permissions: map[string]Permission{
			"/": {Configure: `alice\..*`, Write: `alice\..*|amq\.default`, Read: `alice\..*`}}})
	})
	admin := openCh(t, dial(t, url))
	if err := admin.ExchangeDeclare("bob.x", "direct", false, false, false, false, nil); err != nil {
		t.Fatal(err)
	}
	if _, err := admin.QueueDeclare("bob.q", false, false, false, false, nil); err != nil {
		t.Fatal(err)
	}
	alice := dial(t, "amqp://alice:pw@"+strings.TrimPrefix(url, "amqp://guest:guest@"))
	ch := openCh(t, alice)
	if err := ch.ExchangeDeclare("alice.x", "direct", false, false, false, false, nil); err != nil {
		t.Fatal(err)
	}
	if err := ch.ExchangeDeclare("alice.x2", "fanout", false, false, false, false, nil); err != nil {
		t.Fatal(err)
	}
	if _, err := ch.QueueDeclare("alice.q", false, false, false, false, nil); err != nil {
		t.Fatal(err)
	}
	allowed := []struct {
		what string
		op   func(*amqp.Channel) error
	}{
		{"queue.bind", func(ch *amqp.Channel) error { return ch.QueueBind("alice.q", "k", "alice.x", false, nil) }},
		{"exchange.bind", func(ch *amqp.Channel) error { return ch.ExchangeBind("alice.x2", "k", "alice.x", false, nil) }},
		{"basic.publish", func(ch *amqp.Channel) error { return publishOrChannelError(ch, "alice.x", "k") }},
		{"basic.publish via the default exchange", func(ch *amqp.Channel) error { return publishOrChannelError(ch, "", "alice.q") }},
		{"basic.get", func(ch *amqp.Channel) error { _, _, err := ch.Get("alice.q", true); return err }},
		{"basic.consume", func(ch *amqp.Channel) error {
			_, err := ch.Consume("alice.q", "", true, false, false, false, nil)
			return err
		}},
		{"queue.purge", func(ch *amqp.Channel) error { _, err := ch.QueuePurge("alice.q", false); return err }},
		{"queue.unbind", func(ch *amqp.Channel) error { return ch.QueueUnbind("alice.q", "k", "alice.x", nil) }},
		{"queue.declare with a dead-letter exchange", func(ch *amqp.Channel) error {
			_, err := ch.QueueDeclare("alice.dlq", false, true, false, false, amqp.Table{"x-dead-letter-exchange": "alice.x"})
			return err
		}},
		{"queue.delete", func(ch *amqp.Channel) error { _, err := ch.QueueDelete("alice.q", false, false, false); return err }},
		{"exchange.delete", func(ch *amqp.Channel) error { return ch.ExchangeDelete("alice.x2", false, false) }},
	}
	for _, a := range allowed {
		ch := openCh(t, alice)
		if err := a.op(ch); err != nil {
			t.Errorf("%s on alice.* refused: %v", a.what, err)
		}
		_ = ch.Close()
	}
	refused := []struct {
		what string
		op   func(*amqp.Channel) error
	}{
		{"exchange.declare", func(ch *amqp.Channel) error {
			return ch.ExchangeDeclare("bob.x2", "direct", false, false, false, false, nil)
		}},
		{"exchange.declare with a foreign alternate exchange", func(ch *amqp.Channel) error {
			return ch.ExchangeDeclare("alice.ae", "direct", false, false, false, false, amqp.Table{"alternate-exchange": "bob.x"})
		}},
		{"exchange.delete", func(ch *amqp.Channel) error { return ch.ExchangeDelete("bob.x", false, false) }},
		{"exchange.delete of a missing exchange", func(ch *amqp.Channel) error { return ch.ExchangeDelete("bob.none", false, false) }},
		{"queue.declare", func(ch *amqp.Channel) error {
			_, err := ch.QueueDeclare("bob.q2", false, false, false, false, nil)
			return err
		}},
		{"queue.declare with a foreign dead-letter exchange", func(ch *amqp.Channel) error {
			_, err := ch.QueueDeclare("alice.dlq2", false, true, false, false, amqp.Table{"x-dead-letter-exchange": "bob.x"})
			return err
		}},
		{"queue.delete", func(ch *amqp.Channel) error { _, err := ch.QueueDelete("bob.q", false, false, false); return err }},
		{"queue.delete of a missing queue", func(ch *amqp.Channel) error { _, err := ch.QueueDelete("bob.none", false, false, false); return err }},
		{"queue.purge", func(ch *amqp.Channel) error { _, err := ch.QueuePurge("bob.q", false); return err }},
		{"queue.bind to a foreign exchange", func(ch *amqp.Channel) error { return ch.QueueBind("alice.bindq", "k", "bob.x", false, nil) }},
		{"queue.bind of a foreign queue", func(ch *amqp.Channel) error { return ch.QueueBind("bob.q", "k", "alice.x", false, nil) }},
		{"exchange.bind to a foreign destination", func(ch *amqp.Channel) error { return ch.ExchangeBind("bob.x", "k", "alice.x", false, nil) }},
		{"exchange.bind from a foreign source", func(ch *amqp.Channel) error { return ch.ExchangeBind("alice.x", "k", "bob.x", false, nil) }},
		{"basic.publish", func(ch *amqp.Channel) error { return publishOrChannelError(ch, "bob.x", "k") }},
		{"basic.get", func(ch *amqp.Channel) error { _, _, err := ch.Get("bob.q", true); return err }},
		{"basic.consume", func(ch *amqp.Channel) error {
			_, err := ch.Consume("bob.q", "", true, false, false, false, nil)
			return err
		}},
	}
	// A queue of alice's own on this connection for the binds above.
	if _, err := openCh(t, alice).QueueDeclare("alice.bindq", false, false, false, false, nil); err != nil {
		t.Fatal(err)
	}
	for _, r := range refused {
		ch := openCh(t, alice)
		err := r.op(ch)
		var ae *amqp.Error
		if !errors.As(err, &ae) || ae.Code != amqp.AccessRefused || !strings.Contains(ae.Reason, "refused for user 'alice'") {
			t.Errorf("%s on a bob.* name: got %v, want 403 ACCESS_REFUSED", r.what, err)
		}
		if alice.IsClosed() {
			t.Fatalf("%s: the 403 closed the connection, not just the channel", r.what)
		}
	}
	// guest's resources are untouched.
	if q, err := admin.QueueDeclarePassive("bob.q", false, false, false, false, nil); err != nil || q.Name != "bob.q" {
		t.Fatalf("bob.q: %v", err)
	}
}

// publishOrChannelError publishes in confirm mode and waits for the ack or
// the channel's closing error.
func publishOrChannelError(ch *amqp.Channel, exchange, key string) error {
	if err := ch.Confirm(false); err != nil {
		return err
	}
	closed := ch.NotifyClose(make(chan *amqp.Error, 1))
	confirms := ch.NotifyPublish(make(chan amqp.Confirmation, 1))
	if err := ch.PublishWithContext(context.Background(), exchange, key, false, false, amqp.Publishing{Body: []byte("m")}); err != nil {
		return err
	}
	timer := time.NewTimer(5 * time.Second)
	defer timer.Stop()
	select {
	case c := <-confirms:
		if c.Ack {
			return nil
		}
		// amqp091-go nacks what was pending when a channel error closes
		// the channel; the close and its reason arrive as well.
		select {
		case e := <-closed:
			if e != nil {
				return e
			}
		case <-timer.C:
		}
		return errors.New("nacked")
	case e := <-closed:
		if e == nil {
			return errors.New("channel closed without an error")
		}
		return e
	case <-timer.C:
		return errors.New("no confirm and no channel error within 5 s")
	}
}

// nonLoopbackIP returns an IPv4 address of this machine that is not a
// loopback address, or nil.
func nonLoopbackIP() net.IP {
	addrs, err := net.InterfaceAddrs()
	if err != nil {
		return nil
	}
	for _, a := range addrs {
		if n, ok := a.(*net.IPNet); ok && !n.IP.IsLoopback() && n.IP.To4() != nil && !n.IP.IsLinkLocalUnicast() {
			return n.IP
		}
	}
	return nil
}

// TestGuestRefusedFromAnotherAddress listens on one of the machine's
// non-loopback addresses: guest connecting to it is refused with 403 by
// default and accepted once LoopbackUsers is empty. TestGuestOnlyFromLoopback
// covers the same rule through a fake peer address.
func TestGuestRefusedFromAnotherAddress(t *testing.T) {
	ip := nonLoopbackIP()
	if ip == nil {
		t.Skip("this machine has no non-loopback IPv4 address; TestGuestOnlyFromLoopback covers the rule")
	}
	listen := net.JoinHostPort(ip.String(), "0")
	s, _ := startBroker(t, func(o *Options) { o.AMQPAddr = listen })
	wantCode(t, "guest from "+ip.String(), dialErr("amqp://guest:guest@"+serverAddr(s)+"/"), amqp.AccessRefused)
	if n := s.Stats().LoginFailures; n != 1 {
		t.Fatalf("LoginFailures = %d, want 1", n)
	}
	open, _ := startBroker(t, func(o *Options) {
		o.AMQPAddr = listen
		o.LoopbackUsers = nil
	})
	if err := dialErr("amqp://guest:guest@" + serverAddr(open) + "/"); err != nil {
		t.Fatalf("guest refused with LoopbackUsers empty: %v", err)
	}
}

// testPKI is a CA made for one test, with certificates it signs.
type testPKI struct {
	t    *testing.T
	ca   *x509.Certificate
	key  *ecdsa.PrivateKey
	pool *x509.CertPool
}

func newTestPKI(t *testing.T, name string) *testPKI {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: name},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	ca, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AddCert(ca)
	return &testPKI{t: t, ca: ca, key: key, pool: pool}
}

// issue signs a certificate for a server (with IP SAN 127.0.0.1) or a
// client.
func (p *testPKI) issue(name string, server bool) tls.Certificate {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		p.t.Fatal(err)
	}
	serial, _ := rand.Int(rand.Reader, big.NewInt(1<<62))
	tmpl := &x509.Certificate{SerialNumber: serial, Subject: pkix.Name{CommonName: name},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}
	if server {
		tmpl.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}
		tmpl.IPAddresses = []net.IP{net.ParseIP("127.0.0.1")}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, p.ca, &key.PublicKey, p.key)
	if err != nil {
		p.t.Fatal(err)
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}
}

// tlsBroker starts a broker whose TLS listener requires client
// certificates signed by pki's CA.
func tlsBroker(t *testing.T, pki *testPKI, mod func(*Options)) *Server {
	s, _ := startBroker(t, func(o *Options) {
		o.AMQPAddr = ""
		o.TLSAddr = "127.0.0.1:0"
		o.TLSConfig = &tls.Config{Certificates: []tls.Certificate{pki.issue("broker", true)},
			ClientAuth: tls.RequireAndVerifyClientCert, ClientCAs: pki.pool, MinVersion: tls.VersionTLS12}
		if mod != nil {
			mod(o)
		}
	})
	return s
}

// tlsHandshakeErr runs a TLS handshake against addr and sends the AMQP
// header; it returns the error that ended it, nil if the broker answered
// with connection.start.
func tlsHandshakeErr(addr string, cfg *tls.Config) error {
	c, err := tls.DialWithDialer(&net.Dialer{Timeout: 5 * time.Second}, "tcp", addr, cfg)
	if err != nil {
		return err
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := c.Write([]byte("AMQP\x00\x00\x09\x01")); err != nil {
		return err
	}
	var b [1]byte
	if _, err := io.ReadFull(c, b[:]); err != nil {
		return err
	}
	if b[0] != 1 {
		return errors.New("no method frame")
	}
	return nil
}

// TestTLSClientCertificates: with a CA generated here, a client presenting
// a certificate the CA signed connects over AMQPS; one without a
// certificate, or with one from another CA, is refused during the TLS
// handshake (before any AMQP byte), and the client verifies the broker's
// certificate against the same CA.
func TestTLSClientCertificates(t *testing.T) {
	pki := newTestPKI(t, "oslogo test CA")
	s := tlsBroker(t, pki, nil)
	addr := s.TLSAddr().String()
	good := &tls.Config{RootCAs: pki.pool, Certificates: []tls.Certificate{pki.issue("nova-compute", false)}}
	if err := tlsHandshakeErr(addr, good); err != nil {
		t.Fatalf("client with a certificate from the CA: %v", err)
	}
	c, err := amqp.DialTLS("amqps://guest:guest@"+addr+"/", good)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := openCh(t, c).QueueDeclare("tls.q", false, true, false, false, nil); err != nil {
		t.Fatal(err)
	}

	noCert := &tls.Config{RootCAs: pki.pool}
	err = tlsHandshakeErr(addr, noCert)
	if err == nil || !strings.Contains(err.Error(), "certificate required") {
		t.Fatalf("client without a certificate: got %v, want the TLS alert 'certificate required'", err)
	}
	if _, err := amqp.DialTLS("amqps://guest:guest@"+addr+"/", noCert); err == nil {
		t.Fatal("amqp091-go without a client certificate connected")
	}
	other := newTestPKI(t, "another CA")
	foreign := &tls.Config{RootCAs: pki.pool, Certificates: []tls.Certificate{other.issue("intruder", false)}}
	if err := tlsHandshakeErr(addr, foreign); err == nil || !strings.Contains(err.Error(), "tls:") {
		t.Fatalf("client certificate from another CA: got %v, want a TLS alert", err)
	}
	// The broker's certificate does not verify against another CA.
	if err := tlsHandshakeErr(addr, &tls.Config{RootCAs: other.pool, Certificates: good.Certificates}); err == nil {
		t.Fatal("client accepted a broker certificate from a CA it does not trust")
	}
}

// TestNoSecretsInLogs runs a password and a payload through successful
// and failing paths (login, publish and consume, a refused declare, a
// wrong password, a publish to a missing exchange, a TLS client without a
// certificate) with the broker logging at debug level, and checks that
// neither the logs nor the errors clients receive contain them.
func TestNoSecretsInLogs(t *testing.T) {
	const (
		password    = "pw-Zx81-secret"
		badPassword = "pw-Zx81-wrong"
		payload     = "payload-Qm47-body"
	)
	var logs logBuffer
	pki := newTestPKI(t, "oslogo test CA")
	s := tlsBroker(t, pki, func(o *Options) {
		o.AMQPAddr = "127.0.0.1:0"
		captureLogs(o, &logs)
		o.Users = append(o.Users, User{Name: "nova", Password: password, Permissions: map[string]Permission{
			"/": {Configure: `nova\..*`, Write: `nova\..*|amq\.default`, Read: `nova\..*`}}})
	})
	base := "@" + serverAddr(s) + "/"
	var clientErrs []string
	note := func(err error) {
		if err != nil {
			clientErrs = append(clientErrs, err.Error())
		}
	}

	c := dial(t, "amqp://nova:"+password+base)
	ch := openCh(t, c)
	if _, err := ch.QueueDeclare("nova.q", false, false, true, false, nil); err != nil {
		t.Fatal(err)
	}
	if err := publishOrChannelError(ch, "", "nova.q"); err != nil {
		t.Fatal(err)
	}
	if err := ch.PublishWithContext(context.Background(), "", "nova.q", false, false, amqp.Publishing{Body: []byte(payload), Headers: amqp.Table{"h": payload}}); err != nil {
		t.Fatal(err)
	}
	msgs, err := ch.Consume("nova.q", "", true, false, false, false, nil)
	if err != nil {
		t.Fatal(err)
	}
	recv(t, msgs)
	if m := recv(t, msgs); string(m.Body) != payload {
		t.Fatalf("got %q", m.Body)
	}

	// A refused declare, and a publish to a missing exchange: channel errors.
	_, err = openCh(t, c).QueueDeclare("other.q", false, false, false, false, nil)
	wantCode(t, "declare outside the permissions", err, amqp.AccessRefused)
	note(err)
	err = publishBodyChannelError(openCh(t, c), "nova.missing", payload)
	wantCode(t, "publish to a missing exchange", err, amqp.NotFound)
	note(err)
	err = dialErr("amqp://nova:" + badPassword + base)
	wantCode(t, "wrong password", err, amqp.AccessRefused)
	note(err)
	// TLS without a client certificate.
	_, err = amqp.DialTLS("amqps://nova:"+password+"@"+s.TLSAddr().String()+"/", &tls.Config{RootCAs: pki.pool})
	if err == nil {
		t.Fatal("TLS client without a certificate connected")
	}
	note(err)
	_ = c.Close()

	// Shut down so that every connection's last log line is written.
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := s.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}
	out := logs.String()
	for _, want := range []string{"login refused", "channel error", "user=nova", "tls: "} {
		if !strings.Contains(out, want) {
			t.Errorf("log lacks %q, so the failure paths did not run:\n%s", want, out)
		}
	}
	for _, secret := range []string{password, badPassword, payload} {
		if strings.Contains(out, secret) {
			t.Errorf("log holds %q:\n%s", secret, out)
		}
		for _, e := range clientErrs {
			if strings.Contains(e, secret) {
				t.Errorf("client error holds %q: %s", secret, e)
			}
		}
	}
}

// publishBodyChannelError is publishOrChannelError with a given body.
func publishBodyChannelError(ch *amqp.Channel, exchange, body string) error {
	closed := ch.NotifyClose(make(chan *amqp.Error, 1))
	if err := ch.PublishWithContext(context.Background(), exchange, "k", false, false, amqp.Publishing{Body: []byte(body)}); err != nil {
		return err
	}
	timer := time.NewTimer(5 * time.Second)
	defer timer.Stop()
	select {
	case e := <-closed:
		if e == nil {
			return errors.New("channel closed without an error")
		}
		return e
	case <-timer.C:
		return errors.New("no channel error within 5 s")
	}
}

// TestRefusedLoginWithoutCapability: by hand, the two ways a wrong
// password ends. A client advertising authentication_failure_close reads
// connection.close 403; one that does not sees the socket close without
// a frame, as the AMQP 0-9-1 specification asks (RabbitMQ does the same).
func TestRefusedLoginWithoutCapability(t *testing.T) {
	s, _ := startBroker(t, nil)
	login := func(props amqp091.Table) (*amqp091.FrameReader, net.Conn) {
		nc, err := net.Dial("tcp", s.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = nc.Close() })
		_ = nc.SetDeadline(time.Now().Add(10 * time.Second))
		r := &rawConn{t: t, nc: nc, fr: amqp091.NewFrameReader(bufio.NewReader(nc), 1<<20)}
		r.write(amqp091.ProtocolHeader)
		r.expect(&amqp091.ConnectionStart{})
		r.send(0, &amqp091.ConnectionStartOk{ClientProperties: props, Mechanism: "PLAIN", Response: "\x00guest\x00wrong", Locale: "en_US"})
		return r.fr, nc
	}
	fr, nc := login(amqp091.Table{"capabilities": amqp091.Table{"authentication_failure_close": true}})
	f, err := fr.ReadFrame()
	if err != nil {
		t.Fatalf("with the capability: %v, want connection.close", err)
	}
	cid, mid, args, _ := amqp091.ParseMethodFrame(f.Payload)
	var d amqp091.Decoder
	m, err := d.Decode(cid, mid, args)
	cl, ok := m.(*amqp091.ConnectionClose)
	if err != nil || !ok || cl.ReplyCode != amqp091.AccessRefused {
		t.Fatalf("with the capability: got %v %v, want connection.close 403", m, err)
	}
	_, _ = nc.Write(amqp091.AppendMethodFrame(nil, 0, &amqp091.ConnectionCloseOk{}))

	fr, _ = login(amqp091.Table{})
	if f, err := fr.ReadFrame(); err == nil {
		t.Fatalf("without the capability: got a frame of type %d, want the socket closed", f.Type)
	} else if !errors.Is(err, io.EOF) && !errors.Is(err, io.ErrUnexpectedEOF) && !strings.Contains(err.Error(), "reset") {
		t.Fatalf("without the capability: %v, want the socket closed", err)
	}
	if n := s.Stats().LoginFailures; n != 2 {
		t.Fatalf("LoginFailures = %d, want 2", n)
	}
}

// TestGuestFromAnotherHostWhenAllowed: with LoopbackUsers empty, guest
// logs in from a (faked) remote address; with the default it is refused.
func TestGuestFromAnotherHostWhenAllowed(t *testing.T) {
	for _, tc := range []struct {
		loopback []string
		refused  bool
	}{{DefaultOptions().LoopbackUsers, true}, {nil, false}} {
		s, _ := startBroker(t, func(o *Options) {
			o.AMQPAddr = ""
			o.LoopbackUsers = tc.loopback
		})
		client, server := net.Pipe()
		s.mu.Lock()
		s.serveLocked(remoteConn{server})
		s.mu.Unlock()
		c, err := amqp.Open(client, amqp.Config{SASL: []amqp.Authentication{&amqp.PlainAuth{Username: "guest", Password: "guest"}}, Vhost: "/"})
		if tc.refused {
			wantCode(t, "guest from 192.0.2.1 by default", err, amqp.AccessRefused)
			continue
		}
		if err != nil {
			t.Fatalf("guest from 192.0.2.1 with LoopbackUsers empty: %v", err)
		}
		_ = c.Close()
	}
}

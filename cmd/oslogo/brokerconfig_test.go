package main

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"log/slog"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/oslogo/oslogo/broker"

	amqp "github.com/rabbitmq/amqp091-go"
)

func writeConfig(t *testing.T, text string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "broker.toml")
	if err := os.WriteFile(path, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// TestBrokerConfigRejectsTypos: an unknown key or table, anywhere in the
// file, and permissions for a vhost the file does not declare stop the
// broker from starting, with an error naming the file and the line.
func TestBrokerConfigRejectsTypos(t *testing.T) {
	cases := []struct {
		name, text string
		line       int
		want       string
	}{
		{"users table misspelt", `vhosts = ["nova"]
[[user]]
name = "nova"
password = "pw"
`, 2, `unknown key user`},
		{"vhosts misspelt", `amqp = "127.0.0.1:0"
vhost = ["nova"]
`, 2, `unknown key vhost`},
		{"key inside a user", `[[users]]
name = "nova"
pasword = "pw"
`, 3, `unknown key users.pasword (known here: name, password, password_hash, tags, permissions)`},
		{"key inside a permissions table", `[[users]]
name = "nova"
password = "pw"
[users.permissions."/"]
configure = ".*"
wirte = ".*"
`, 6, `unknown key users.permissions."/".wirte`},
		{"key inside an inline table", `[[users]]
name = "nova"
password = "pw"
permissions = { "/" = { configure = ".*", raed = ".*" } }
`, 4, `unknown key users.permissions."/".raed`},
		{"second user", `[[users]]
name = "a"
password = "pw"

[[users]]
name = "b"
password = "pw"
tag = ["x"]
`, 8, `unknown key users.tag`},
		{"after a multi-line array", `vhosts = [
  "nova",
  "cinder",
]
max_conections = 10
`, 5, `unknown key max_conections`},
		{"permissions for an undeclared vhost", `vhosts = ["nova"]
[[users]]
name = "nova"
password = "pw"
[users.permissions."nvoa"]
configure = ".*"
`, 5, `user "nova" has permissions for vhost "nvoa", which is not in vhosts`},
		{"log level", `log_level = "verbose"
`, 1, `log_level is not one of`},
		{"unknown tls key", `[tls]
listen = "127.0.0.1:0"
verify = true
`, 3, `unknown key tls.verify`},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			opts := broker.DefaultOptions()
			level := slog.LevelInfo
			err := applyBrokerFile(c.text, &opts, &level)
			if err == nil {
				t.Fatal("accepted")
			}
			want := "line " + strconv.Itoa(c.line) + ": " + c.want
			if !strings.Contains(err.Error(), want) {
				t.Fatalf("got  %v\nwant %s", err, want)
			}
		})
	}
}

// TestBrokerConfigSyntaxErrorHidesPassword: a syntax error names the line,
// but not the text of a line that sets a password.
func TestBrokerConfigSyntaxErrorHidesPassword(t *testing.T) {
	opts := broker.DefaultOptions()
	level := slog.LevelInfo
	err := applyBrokerFile(`[[users]]
name = "nova"
password = hunter2-Zq
`, &opts, &level)
	if err == nil || !strings.Contains(err.Error(), "line 3:") || strings.Contains(err.Error(), "hunter2") {
		t.Fatalf("got %v, want line 3 without the password", err)
	}
	// Elsewhere the message stays, without the text it quotes.
	err = applyBrokerFile("amqp = \"127.0.0.1:5672\"\nmax_connections = 1O0\n", &opts, &level)
	if err == nil || !strings.Contains(err.Error(), "line 2:") || strings.Contains(err.Error(), "1O0") {
		t.Fatalf("syntax error: %v", err)
	}
}

// TestBrokerConfigLoads: a file using every key gives the options it says,
// including a TLS listener requiring client certificates.
func TestBrokerConfigLoads(t *testing.T) {
	dir := t.TempDir()
	pki := writeTestCerts(t, dir)
	certFile, keyFile, caFile := pki.certFile, pki.keyFile, pki.caFile
	path := writeConfig(t, `amqp = "127.0.0.1:0"
data = "/tmp/x"
memory_high_watermark = 1000
max_connections = 7
deny_transient_nonexcl_queues = true
log_level = "debug"
vhosts = ["nova"]
loopback_users = []   # guest may connect from other hosts
[[users]]
name = "nova"
password_hash = "`+broker.HashPassword("pw")+`"
tags = ["administrator"]
[users.permissions."nova"]
configure = "^nova\\..*"
write = ".*"
read = ".*"
[tls]
listen = "127.0.0.1:0"
cert_file = "`+certFile+`"
key_file = "`+keyFile+`"
ca_file = "`+caFile+`"
verify_peer = true
`)
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	opts := broker.DefaultOptions()
	level := slog.LevelInfo
	if err := applyBrokerFile(string(data), &opts, &level); err != nil {
		t.Fatal(err)
	}
	if level != slog.LevelDebug || opts.AMQPAddr != "127.0.0.1:0" || opts.DataDir != "/tmp/x" || opts.MemoryHighWatermark != 1000 || opts.MaxConnections != 7 || !opts.DenyTransientNonExclQueues {
		t.Fatalf("options %+v level %v", opts, level)
	}
	if len(opts.LoopbackUsers) != 0 || len(opts.Users) != 1 || opts.Users[0].Permissions["nova"].Configure != `^nova\..*` {
		t.Fatalf("users %+v loopback %v", opts.Users, opts.LoopbackUsers)
	}
	if opts.TLSAddr != "127.0.0.1:0" || opts.TLSConfig == nil || opts.TLSConfig.ClientAuth != tls.RequireAndVerifyClientCert || opts.TLSConfig.ClientCAs == nil {
		t.Fatalf("tls %q %+v", opts.TLSAddr, opts.TLSConfig)
	}
	if _, err := broker.New(opts); err != nil {
		t.Fatal(err)
	}
}

// testCerts are PEM files of a CA and a broker certificate it signs, and
// a client certificate from the same CA, generated for one test.
type testCerts struct {
	certFile, keyFile, caFile string
	client                    tls.Certificate
	pool                      *x509.CertPool
}

func writeTestCerts(t *testing.T, dir string) testCerts {
	t.Helper()
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	caTmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "test CA"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	ca, err := x509.ParseCertificate(caDER)
	if err != nil {
		t.Fatal(err)
	}
	issue := func(serial int64, server bool) ([]byte, *ecdsa.PrivateKey) {
		key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			t.Fatal(err)
		}
		tmpl := &x509.Certificate{SerialNumber: big.NewInt(serial), Subject: pkix.Name{CommonName: "client"},
			NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
			ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}
		if server {
			tmpl.Subject.CommonName = "broker"
			tmpl.IPAddresses = []net.IP{net.ParseIP("127.0.0.1")}
			tmpl.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}
		}
		der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, &key.PublicKey, caKey)
		if err != nil {
			t.Fatal(err)
		}
		return der, key
	}
	der, key := issue(2, true)
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	write := func(name, typ string, b []byte) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: b}), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	clientDER, clientKey := issue(3, false)
	pool := x509.NewCertPool()
	pool.AddCert(ca)
	return testCerts{
		certFile: write("cert.pem", "CERTIFICATE", der), keyFile: write("key.pem", "PRIVATE KEY", keyDER),
		caFile: write("ca.pem", "CERTIFICATE", caDER),
		client: tls.Certificate{Certificate: [][]byte{clientDER}, PrivateKey: clientKey}, pool: pool,
	}
}

// TestBrokerCommandTLS: `oslogo broker` with a [tls] table listens for
// AMQPS, admits a client whose certificate the CA signed and refuses one
// without a certificate during the TLS handshake.
func TestBrokerCommandTLS(t *testing.T) {
	dir := t.TempDir()
	pki := writeTestCerts(t, dir)
	path := writeConfig(t, `[tls]
listen = "127.0.0.1:0"
cert_file = "`+pki.certFile+`"
key_file = "`+pki.keyFile+`"
ca_file = "`+pki.caFile+`"
verify_peer = true
`)
	out := background(t, "broker", "--amqp", "127.0.0.1:0", "--config-file", path)
	waitOutput(t, out, "amqps://")
	addr := regexp.MustCompile(`amqps://(\S+)`).FindStringSubmatch(out.String())[1]
	c, err := amqp.DialTLS("amqps://guest:guest@"+addr+"/", &tls.Config{RootCAs: pki.pool, Certificates: []tls.Certificate{pki.client}})
	if err != nil {
		t.Fatalf("client with a certificate: %v", err)
	}
	_ = c.Close()
	if c, err := amqp.DialTLS("amqps://guest:guest@"+addr+"/", &tls.Config{RootCAs: pki.pool}); err == nil {
		_ = c.Close()
		t.Fatal("client without a certificate connected")
	}
}

// TestBrokerCommandRejectsTypo: `oslogo broker` exits 2 with the file and
// line of a misspelt table instead of starting with other users.
func TestBrokerCommandRejectsTypo(t *testing.T) {
	path := writeConfig(t, `vhosts = ["nova"]
[[user]]
name = "nova"
password = "pw"
`)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	var out, errb syncBuffer
	code := runMain(ctx, &cmdEnv{stdout: &out, stderr: &errb}, []string{"broker", "--amqp", "127.0.0.1:0", "--config-file", path})
	if code != exitUsage || !strings.Contains(errb.String(), "config file "+path+": line 2: unknown key user") {
		t.Fatalf("exit %d, stderr %q, stdout %q", code, errb.String(), out.String())
	}
}

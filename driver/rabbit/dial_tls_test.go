package rabbit

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/oslogo/oslogo/broker"
	"github.com/oslogo/oslogo/driver"
)

// TestTLSDialDeadline: with ssl on, a host that accepts TCP and never
// answers the TLS handshake fails after connect_timeout (a cast with
// retry 0 gets ErrDeliveryFailure saying so), and a TLS broker behind it
// in the URL is used: the handshake deadline is cleared once connected.
func TestTLSDialDeadline(t *testing.T) {
	silent := newSilentHost(t)
	certPEM, cert := selfSignedLoopback(t)
	caFile := filepath.Join(t.TempDir(), "ca.pem")
	if err := os.WriteFile(caFile, certPEM, 0o600); err != nil {
		t.Fatal(err)
	}
	opts := broker.DefaultOptions()
	opts.AMQPAddr = ""
	opts.TLSAddr = "127.0.0.1:0"
	opts.TLSConfig = &tls.Config{Certificates: []tls.Certificate{cert}}
	b, err := broker.New(opts)
	if err != nil {
		t.Fatal(err)
	}
	if err := b.Start(); err != nil {
		t.Fatal(err)
	}
	stop := func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_ = b.Shutdown(ctx)
	}
	t.Cleanup(stop)
	cfg := map[string]string{"ssl": "true", "ssl_ca_file": caFile, "connect_timeout": "1"}

	only := openHosts(t, cfg, silent.addr())
	// Without a handshake deadline the cast hangs; free it eventually so the
	// test fails instead.
	watchdog := time.AfterFunc(30*time.Second, silent.close)
	defer watchdog.Stop()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	err = only.Cast(ctx, driver.Target{Exchange: "oslogo_x", Topic: "t"}, &driver.Request{Method: "m"}, driver.SendOptions{Retry: 0})
	if !errors.Is(err, driver.ErrDeliveryFailure) || !strings.Contains(err.Error(), "connect_timeout") || ctx.Err() != nil {
		t.Errorf("cast to a silent TLS host: %v (context %v), want ErrDeliveryFailure naming connect_timeout", err, ctx.Err())
	}
	closeWithin(t, only, 10*time.Second, silent.close)

	both := openHosts(t, cfg, silent.addr(), b.TLSAddr().String())
	defer closeWithin(t, both, 10*time.Second, silent.close)
	if err := both.Cast(ctx, driver.Target{Exchange: "oslogo_x", Topic: "t"}, &driver.Request{Method: "m"}, driver.SendOptions{Retry: 0}); err != nil {
		t.Fatalf("cast failing over to the TLS broker: %v", err)
	}
	// Past connect_timeout, the connection still works: no deadline left.
	time.Sleep(1500 * time.Millisecond) // crosses the handshake deadline
	if err := both.Cast(ctx, driver.Target{Exchange: "oslogo_x", Topic: "t"}, &driver.Request{Method: "m"}, driver.SendOptions{Retry: 0}); err != nil {
		t.Fatalf("cast after connect_timeout passed: %v", err)
	}
}

// selfSignedLoopback returns a certificate for 127.0.0.1, in PEM and
// ready for a TLS listener.
func selfSignedLoopback(t *testing.T) ([]byte, tls.Certificate) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "127.0.0.1"},
		IPAddresses: []net.IP{net.ParseIP("127.0.0.1")}, NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}
}

package etcdtest

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"

	"go.etcd.io/etcd/client/pkg/v3/transport"
)

// testPKI makes a CA, a server certificate for 127.0.0.1 and a client
// certificate, writes the server's files under dir, and returns the server's
// TLS info (client certificates required) and a client configuration.
func testPKI(t testing.TB, dir string) (transport.TLSInfo, *tls.Config) {
	t.Helper()
	now := time.Now()
	caKey := newKey(t)
	caTmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "etcdtest CA"},
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.Add(24 * time.Hour),
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		t.Fatalf("etcdtest: CA: %v", err)
	}
	ca, _ := x509.ParseCertificate(caDER)
	issue := func(serial int64, cn string, usage x509.ExtKeyUsage, ips []net.IP) (*ecdsa.PrivateKey, []byte) {
		key := newKey(t)
		der, err := x509.CreateCertificate(rand.Reader, &x509.Certificate{
			SerialNumber: big.NewInt(serial),
			Subject:      pkix.Name{CommonName: cn},
			NotBefore:    now.Add(-time.Hour),
			NotAfter:     now.Add(24 * time.Hour),
			KeyUsage:     x509.KeyUsageDigitalSignature,
			ExtKeyUsage:  []x509.ExtKeyUsage{usage},
			IPAddresses:  ips,
		}, ca, &key.PublicKey, caKey)
		if err != nil {
			t.Fatalf("etcdtest: certificate %s: %v", cn, err)
		}
		return key, der
	}
	srvKey, srvDER := issue(2, "etcdtest server", x509.ExtKeyUsageServerAuth, []net.IP{net.IPv4(127, 0, 0, 1)})
	cliKey, cliDER := issue(3, "etcdtest client", x509.ExtKeyUsageClientAuth, nil)

	info := transport.TLSInfo{
		CertFile:       writePEM(t, filepath.Join(dir, "server.crt"), "CERTIFICATE", srvDER),
		KeyFile:        writePEM(t, filepath.Join(dir, "server.key"), "PRIVATE KEY", marshalKey(t, srvKey)),
		TrustedCAFile:  writePEM(t, filepath.Join(dir, "ca.crt"), "CERTIFICATE", caDER),
		ClientCertAuth: true,
	}
	pool := x509.NewCertPool()
	pool.AddCert(ca)
	client := &tls.Config{
		RootCAs:      pool,
		Certificates: []tls.Certificate{{Certificate: [][]byte{cliDER}, PrivateKey: cliKey}},
		MinVersion:   tls.VersionTLS12,
	}
	return info, client
}

func newKey(t testing.TB) *ecdsa.PrivateKey {
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatalf("etcdtest: key: %v", err)
	}
	return k
}

func marshalKey(t testing.TB, k *ecdsa.PrivateKey) []byte {
	der, err := x509.MarshalPKCS8PrivateKey(k)
	if err != nil {
		t.Fatalf("etcdtest: key: %v", err)
	}
	return der
}

func writePEM(t testing.TB, path, typ string, der []byte) string {
	if err := os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}), 0o600); err != nil {
		t.Fatalf("etcdtest: write %s: %v", path, err)
	}
	return path
}

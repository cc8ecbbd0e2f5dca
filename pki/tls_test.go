package pki

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"io"
	"net"
	"strings"
	"testing"
	"time"

	pb "github.com/hsmgate/hsmgate/proto/hsmgate/v1"
)

// TestTLSServerWithIssuedCert serves TLS on loopback with an issued
// certificate and checks that openssl s_client and Go's TLS client accept it
// with only our root as trust anchor.
func TestTLSServerWithIssuedCert(t *testing.T) {
	e := newEnv(t, realClock)
	ctx := context.Background()
	root := e.root(t, "root", KeyECDSAP384)
	e.intermediate(t, "inter", KeyECDSAP256, "root", &pb.NameConstraints{PermittedDnsDomains: []string{"example.com"}})
	e.role(t, webRole("web"))
	resp, err := e.svc.Issue(ctx, &pb.IssueRequest{Role: "web", CommonName: "svc.example.com"})
	if err != nil {
		t.Fatal(err)
	}
	key, err := x509.ParsePKCS8PrivateKey(resp.PrivateKey)
	if err != nil {
		t.Fatalf("parse private key: %v", err)
	}
	cert := tls.Certificate{Certificate: append([][]byte{resp.Certificate}, resp.Chain[0]), PrivateKey: key}
	ln, err := tls.Listen("tcp", "127.0.0.1:0", &tls.Config{Certificates: []tls.Certificate{cert}})
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func(c net.Conn) {
				defer c.Close()
				c.SetDeadline(time.Now().Add(10 * time.Second))
				if err := c.(*tls.Conn).Handshake(); err != nil {
					return
				}
				io.WriteString(c, "hello\n")
			}(c)
		}
	}()
	rootPEM := writeFile(t, t.TempDir(), "root.pem", pemCerts(root.Certificate))
	out, err := openssl(t, "s_client", "-connect", ln.Addr().String(), "-servername", "svc.example.com",
		"-verify_hostname", "svc.example.com", "-CAfile", rootPEM, "-verify_return_error", "-brief")
	if err != nil || !strings.Contains(out, "Verification: OK") {
		t.Fatalf("openssl s_client: %v\n%s", err, out)
	}
	pool := x509.NewCertPool()
	pool.AddCert(parseCert(t, root.Certificate))
	c, err := tls.Dial("tcp", ln.Addr().String(), &tls.Config{RootCAs: pool, ServerName: "svc.example.com"})
	if err != nil {
		t.Fatalf("Go TLS client: %v", err)
	}
	line, _ := io.ReadAll(c)
	c.Close()
	if string(line) != "hello\n" {
		t.Errorf("read %q, want hello", line)
	}
	// A name the client expects but the certificate lacks is refused.
	if c, err := tls.Dial("tcp", ln.Addr().String(), &tls.Config{RootCAs: pool, ServerName: "other.example.com"}); err == nil {
		c.Close()
		t.Errorf("Go TLS client accepted the certificate for other.example.com")
	}
}

package client

import (
	"context"
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

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/peer"
)

type certHealth struct {
	healthpb.UnimplementedHealthServer
	cn chan string
}

func (h *certHealth) Check(ctx context.Context, _ *healthpb.HealthCheckRequest) (*healthpb.HealthCheckResponse, error) {
	p, _ := peer.FromContext(ctx)
	ti, _ := p.AuthInfo.(credentials.TLSInfo)
	if cs := ti.State.PeerCertificates; len(cs) > 0 {
		h.cn <- cs[0].Subject.CommonName
	}
	return &healthpb.HealthCheckResponse{Status: healthpb.HealthCheckResponse_SERVING}, nil
}

// TestMTLS: the client certificate of Options (files or a tls.Certificate)
// reaches a server that requires one; without it the call fails.
func TestMTLS(t *testing.T) {
	now := time.Now()
	caKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	caTmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "mtls CA"}, IsCA: true,
		BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign, NotBefore: now.Add(-time.Hour), NotAfter: now.Add(time.Hour)}
	caDER, _ := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	ca, _ := x509.ParseCertificate(caDER)
	leaf := func(serial int64, cn string, eku x509.ExtKeyUsage, ips []net.IP) (tls.Certificate, []byte, []byte) {
		k, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		der, err := x509.CreateCertificate(rand.Reader, &x509.Certificate{SerialNumber: big.NewInt(serial), Subject: pkix.Name{CommonName: cn},
			NotBefore: now.Add(-time.Hour), NotAfter: now.Add(time.Hour), ExtKeyUsage: []x509.ExtKeyUsage{eku},
			KeyUsage: x509.KeyUsageDigitalSignature, IPAddresses: ips}, ca, &k.PublicKey, caKey)
		if err != nil {
			t.Fatal(err)
		}
		kd, _ := x509.MarshalPKCS8PrivateKey(k)
		return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: k},
			pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: kd})
	}
	srvCert, _, _ := leaf(2, "server", x509.ExtKeyUsageServerAuth, []net.IP{net.IPv4(127, 0, 0, 1)})
	cliCert, cliPEM, cliKeyPEM := leaf(3, "svc-payments", x509.ExtKeyUsageClientAuth, nil)
	pool := x509.NewCertPool()
	pool.AddCert(ca)

	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := grpc.NewServer(grpc.Creds(credentials.NewTLS(&tls.Config{Certificates: []tls.Certificate{srvCert},
		ClientCAs: pool, ClientAuth: tls.RequireAndVerifyClientCert})))
	h := &certHealth{cn: make(chan string, 4)}
	healthpb.RegisterHealthServer(srv, h)
	go srv.Serve(ln)
	defer srv.Stop()

	dir := t.TempDir()
	certFile, keyFile := filepath.Join(dir, "c.pem"), filepath.Join(dir, "k.pem")
	os.WriteFile(certFile, cliPEM, 0o644)
	os.WriteFile(keyFile, cliKeyPEM, 0o600)
	base := Options{Addr: ln.Addr().String(), RootCAs: pool, Retry: RetryPolicy{MaxAttempts: 1}}
	for _, tc := range []struct {
		name   string
		set    func(*Options)
		wantOK bool
	}{
		{"files", func(o *Options) { o.ClientCert, o.ClientKey = certFile, keyFile }, true},
		{"tls.Certificate", func(o *Options) { o.Certificate = &cliCert }, true},
		{"none", func(*Options) {}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			o := base
			tc.set(&o)
			c, err := New(context.Background(), o)
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			defer cancel()
			_, err = healthpb.NewHealthClient(c.Conn()).Check(ctx, &healthpb.HealthCheckRequest{})
			if tc.wantOK {
				if err != nil {
					t.Fatalf("got %v, want nil", err)
				}
				if cn := <-h.cn; cn != "svc-payments" {
					t.Errorf("server saw client certificate %q, want svc-payments", cn)
				}
			} else if err == nil {
				t.Error("got nil, want an error without a client certificate")
			}
		})
	}
}

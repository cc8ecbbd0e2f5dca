package pki

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"encoding/pem"
	"errors"
	"slices"
	"testing"

	pb "github.com/hsmgate/hsmgate/proto/hsmgate/v1"
)

var (
	oidBasicConstraints = asn1.ObjectIdentifier{2, 5, 29, 19}
	oidExtKeyUsage      = asn1.ObjectIdentifier{2, 5, 29, 37}
	oidAllowedExt       = asn1.ObjectIdentifier{1, 3, 6, 1, 4, 1, 55555, 1}
	oidOtherExt         = asn1.ObjectIdentifier{1, 3, 6, 1, 4, 1, 55555, 2}
)

func makeCSR(t testing.TB, tmpl *x509.CertificateRequest) []byte {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	der, err := x509.CreateCertificateRequest(rand.Reader, tmpl, k)
	if err != nil {
		t.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: der})
}

// TestSignIgnoresCSRExtensions: a CSR asking for CA:TRUE, an extra EKU and an
// unlisted extension gets none of them; an allow-listed extension is copied.
func TestSignIgnoresCSRExtensions(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	e.root(t, "root", KeyECDSAP256)
	role := webRole("web")
	role.ClientFlag = false
	role.AllowedCsrExtensions = []string{oidAllowedExt.String()}
	e.role(t, role)
	bc, _ := asn1.Marshal(struct {
		IsCA       bool `asn1:"optional"`
		MaxPathLen int  `asn1:"optional,default:-1"`
	}{IsCA: true, MaxPathLen: 5})
	eku, _ := asn1.Marshal([]asn1.ObjectIdentifier{{1, 3, 6, 1, 5, 5, 7, 3, 3}, {1, 3, 6, 1, 5, 5, 7, 3, 2}}) // codeSigning, clientAuth
	val, _ := asn1.Marshal("hello")
	csr := makeCSR(t, &x509.CertificateRequest{
		Subject:  pkix.Name{CommonName: "a.example.com"},
		DNSNames: []string{"a.example.com"},
		ExtraExtensions: []pkix.Extension{
			{Id: oidBasicConstraints, Critical: true, Value: bc},
			{Id: oidExtKeyUsage, Value: eku},
			{Id: oidAllowedExt, Value: val},
			{Id: oidOtherExt, Value: val},
		},
	})
	resp, err := e.svc.Sign(ctx, &pb.SignRequest{Role: "web", Csr: csr})
	if err != nil {
		t.Fatalf("Sign: %v", err)
	}
	c := parseCert(t, resp.Certificate)
	if c.IsCA || !c.BasicConstraintsValid {
		t.Errorf("IsCA = %v, BasicConstraintsValid = %v; want false, true", c.IsCA, c.BasicConstraintsValid)
	}
	if got, want := c.ExtKeyUsage, []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}; !slices.Equal(got, want) {
		t.Errorf("ExtKeyUsage = %v, want %v (the role's only)", got, want)
	}
	var allowed, other int
	for _, x := range c.Extensions {
		switch {
		case x.Id.Equal(oidAllowedExt):
			allowed++
		case x.Id.Equal(oidOtherExt):
			other++
		}
	}
	if allowed != 1 || other != 0 {
		t.Errorf("allow-listed extension copied %d times (want 1), other %d times (want 0)", allowed, other)
	}
	if c.KeyUsage != x509.KeyUsageDigitalSignature {
		t.Errorf("KeyUsage = %v, want digitalSignature only for an ECDSA key", c.KeyUsage)
	}
}

func TestSignChecksCSR(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	e.root(t, "root", KeyECDSAP256)
	e.role(t, webRole("web"))
	rsaKey, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	rsaCSR, _ := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{Subject: pkix.Name{CommonName: "a.example.com"}}, rsaKey)
	good := makeCSR(t, &x509.CertificateRequest{Subject: pkix.Name{CommonName: "a.example.com"}})
	tampered := slices.Clone(good)
	blk, _ := pem.Decode(tampered)
	blk.Bytes[len(blk.Bytes)-3] ^= 0xff
	tampered = pem.EncodeToMemory(blk)
	for _, tc := range []struct {
		name string
		req  *pb.SignRequest
		want error
	}{
		{"garbage", &pb.SignRequest{Role: "web", Csr: []byte("garbage")}, ErrInvalid},
		{"bad signature", &pb.SignRequest{Role: "web", Csr: tampered}, ErrInvalid},
		{"key type not allowed", &pb.SignRequest{Role: "web", Csr: rsaCSR}, ErrNotAllowed},
		{"name from CSR not allowed", &pb.SignRequest{Role: "web", Csr: makeCSR(t, &x509.CertificateRequest{Subject: pkix.Name{CommonName: "a.example.org"}})}, ErrNotAllowed},
		{"name from request not allowed", &pb.SignRequest{Role: "web", Csr: good, DnsNames: []string{"evil.com"}}, ErrNotAllowed},
		{"email SAN", &pb.SignRequest{Role: "web", Csr: makeCSR(t, &x509.CertificateRequest{EmailAddresses: []string{"a@example.com"}})}, ErrNotAllowed},
		{"unknown role", &pb.SignRequest{Role: "nope", Csr: good}, ErrRoleNotFound},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := e.svc.Sign(ctx, tc.req)
			if !errors.Is(err, tc.want) {
				t.Errorf("Sign: error %v, want %v", err, tc.want)
			}
		})
	}
	resp, err := e.svc.Sign(ctx, &pb.SignRequest{Role: "web", Csr: good, DnsNames: []string{"b.example.com"}})
	if err != nil {
		t.Fatal(err)
	}
	if got := parseCert(t, resp.Certificate).DNSNames; !slices.Equal(got, []string{"b.example.com"}) {
		t.Errorf("DNSNames = %v, want the request's [b.example.com] (CN from the request is empty)", got)
	}
}

package pki

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"math/big"
	"strings"
	"testing"
	"time"

	zx509 "github.com/zmap/zcrypto/x509"
	"github.com/zmap/zlint/v3/lint"

	pb "github.com/hsmgate/hsmgate/proto/hsmgate/v1"
)

// keyWithScalar is the ECDSA key whose private scalar is d.
func keyWithScalar(t testing.TB, c elliptic.Curve, d *big.Int) *ecdsa.PrivateKey {
	t.Helper()
	b := make([]byte, (c.Params().BitSize+7)/8)
	k, err := ecdsa.ParseRawPrivateKey(c, d.FillBytes(b))
	if err != nil {
		t.Fatalf("key with d = %s: %v", d, err)
	}
	return k
}

// certForKey is a self-signed certificate of k, parsed by zcrypto.
func certForKey(t testing.TB, k *ecdsa.PrivateKey) *zx509.Certificate {
	t.Helper()
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "k"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour)}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &k.PublicKey, k)
	if err != nil {
		t.Fatal(err)
	}
	c, err := zx509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// TestSmallKeyCheckAgreesWithZlint: the one-lookup check gives zlint's own
// e_ecdsa_small_private_key verdict (and its details) on keys at and around
// the bound, their negations and random keys, on P-256 and P-384.
func TestSmallKeyCheckAgreesWithZlint(t *testing.T) {
	zl := lint.GlobalRegistry().ByName(smallKeyLintName)
	if zl == nil {
		t.Fatal("zlint has no " + smallKeyLintName)
	}
	for _, c := range []elliptic.Curve{elliptic.P256(), elliptic.P384()} {
		n := c.Params().N
		var ds []*big.Int
		for _, d := range []int64{1, 2, 3, 255, 4097, 65535, 65536, 65537, 1 << 20} {
			ds = append(ds, big.NewInt(d), new(big.Int).Sub(n, big.NewInt(d)))
		}
		for range 4 {
			k, err := ecdsa.GenerateKey(c, rand.Reader)
			if err != nil {
				t.Fatal(err)
			}
			ds = append(ds, new(big.Int).SetBytes(mustRawScalar(t, k)))
		}
		for _, d := range ds {
			cert := certForKey(t, keyWithScalar(t, c, d))
			ref := zl.Lint().(lint.CertificateLintInterface)
			if !ref.CheckApplies(cert) || !(smallKeyCheck{}).CheckApplies(cert) {
				t.Fatalf("%s d=%s: the lint does not apply", c.Params().Name, d)
			}
			want, got := ref.Execute(cert), (smallKeyCheck{}).Execute(cert)
			if want.Status != got.Status || want.Details != got.Details {
				t.Errorf("%s d=%s: got %v %q, zlint says %v %q", c.Params().Name, d, got.Status, got.Details, want.Status, want.Details)
			}
		}
	}
}

func mustRawScalar(t testing.TB, k *ecdsa.PrivateKey) []byte {
	t.Helper()
	b, err := k.Bytes()
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// TestSignRefusesTinyPrivateKey: a CSR whose key anyone can recover (d = 2)
// is refused by the Community lints of the default profile, with the lint's
// name, and nothing is issued.
func TestSignRefusesTinyPrivateKey(t *testing.T) {
	e := newEnv(t)
	e.root(t, "root", KeyECDSAP256)
	e.role(t, webRole("web"))
	k := keyWithScalar(t, elliptic.P256(), big.NewInt(2))
	der, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{Subject: pkix.Name{CommonName: "a.example.com"}}, k)
	if err != nil {
		t.Fatal(err)
	}
	csr := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: der})
	_, err = e.svc.Sign(context.Background(), &pb.SignRequest{Role: "web", Csr: csr})
	if !errors.Is(err, ErrLint) || !strings.Contains(err.Error(), smallKeyLintName) {
		t.Fatalf("got %v, want %s refused by %s", err, "d = 2", smallKeyLintName)
	}
}

// BenchmarkSmallKeyCheck: the per-certificate cost of the check, against
// zlint's lint on the same certificate (a random P-256 key).
func BenchmarkSmallKeyCheck(b *testing.B) {
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		b.Fatal(err)
	}
	cert := certForKey(b, k)
	smallKeyTableFor(elliptic.P256())
	b.Run("table", func(b *testing.B) {
		for b.Loop() {
			if (smallKeyCheck{}).Execute(cert).Status != lint.Pass {
				b.Fatal("refused")
			}
		}
	})
	b.Run("zlint", func(b *testing.B) {
		zl := lint.GlobalRegistry().ByName(smallKeyLintName).Lint().(lint.CertificateLintInterface)
		for b.Loop() {
			if zl.Execute(cert).Status != lint.Pass {
				b.Fatal("refused")
			}
		}
	})
}

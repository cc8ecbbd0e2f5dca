package pki

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"io"
	"math/big"
	"slices"
	"sort"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	zx509 "github.com/zmap/zcrypto/x509"
	"github.com/zmap/zlint/v3"
	"github.com/zmap/zlint/v3/lint"

	"github.com/hsmgate/hsmgate/hsm"
	pb "github.com/hsmgate/hsmgate/proto/hsmgate/v1"
)

// corruptKeys hands out signers whose signatures are flipped while corrupt is set.
type corruptKeys struct {
	hsm.Keys
	corrupt *atomic.Bool
}

func (k corruptKeys) SigningKey(ctx context.Context, label string) (crypto.Signer, error) {
	s, err := k.Keys.SigningKey(ctx, label)
	if err != nil {
		return nil, err
	}
	return corruptSigner{s, k.corrupt}, nil
}

type corruptSigner struct {
	crypto.Signer
	corrupt *atomic.Bool
}

func (c corruptSigner) Sign(r io.Reader, digest []byte, opts crypto.SignerOpts) ([]byte, error) {
	sig, err := c.Signer.Sign(r, digest, opts)
	if err == nil && c.corrupt.Load() {
		sig[len(sig)/2] ^= 0x01
	}
	return sig, err
}

// TestIssuerSignatureChecked: the HSM's signature over each certificate is
// checked with the issuer's public key; a bad one refuses issuance and
// records nothing. For every issuer key type.
func TestIssuerSignatureChecked(t *testing.T) {
	for _, kt := range []string{KeyECDSAP256, KeyECDSAP384, KeyEd25519, KeyRSA3072} {
		t.Run(kt, func(t *testing.T) {
			var corrupt atomic.Bool
			e := newEnv(t, func(c *Config) { c.Keys = corruptKeys{c.Keys, &corrupt} })
			e.root(t, "root", kt)
			e.role(t, webRole("web"))
			ctx := context.Background()
			csr := makeCSR(t, &x509.CertificateRequest{Subject: pkix.Name{CommonName: "a.example.com"}})
			good, err := e.svc.Sign(ctx, &pb.SignRequest{Role: "web", Csr: csr})
			if err != nil {
				t.Fatalf("Sign: %v", err)
			}
			cert, err := x509.ParseCertificate(good.Certificate)
			if err != nil {
				t.Fatalf("parse: %v", err)
			}
			root, err := x509.ParseCertificate(good.Chain[0])
			if err != nil {
				t.Fatalf("parse root: %v", err)
			}
			if err := cert.CheckSignatureFrom(root); err != nil {
				t.Fatalf("issued certificate: got %v, want a valid signature from the root", err)
			}
			corrupt.Store(true)
			_, err = e.svc.Sign(ctx, &pb.SignRequest{Role: "web", Csr: csr})
			if err == nil || !strings.Contains(err.Error(), "is invalid") {
				t.Fatalf("Sign with a bad HSM signature: got %v, want an invalid-signature error", err)
			}
			list, err := e.svc.ListCertificates(ctx, &pb.ListCertificatesRequest{})
			if err != nil {
				t.Fatalf("ListCertificates: %v", err)
			}
			n := 0
			for _, c := range list.GetCertificates() {
				if c.GetRole() == "web" { // not the delegated OCSP responder of an Ed25519 root
					n++
				}
			}
			if n != 1 {
				t.Fatalf("records of role web: got %d, want 1 (the bad certificate is not recorded)", n)
			}
		})
	}
}

// TestLintMatchesZlint: lintDER reports exactly the error and fatal
// findings of zlint.LintCertificateEx with the same registry.
func TestLintMatchesZlint(t *testing.T) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(5),
		Subject:      pkix.Name{CommonName: strings.Repeat("a", 70) + ".example.com"},
		DNSNames:     []string{"a.example.com"},
		NotBefore:    time.Unix(1700000000, 0),
		NotAfter:     time.Unix(1700000000, 0).Add(24 * time.Hour),
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		t.Fatal(err)
	}
	for _, lo := range []lintOptions{{sources: []string{"RFC5280"}}, {sources: []string{"RFC5280", "CABF_BR"}, exclude: []string{"e_sub_cert_aia_missing"}}} {
		t.Run(strings.Join(lo.sources, "+"), func(t *testing.T) {
			reg, err := lint.GlobalRegistry().Filter(lint.FilterOptions{IncludeSources: sourceList(t, lo.sources), ExcludeNames: lo.exclude})
			if err != nil {
				t.Fatal(err)
			}
			c, err := zx509.ParseCertificate(der)
			if err != nil {
				t.Fatal(err)
			}
			var want []string
			for name, r := range zlint.LintCertificateEx(c, reg).Results {
				if r.Status == lint.Error || r.Status == lint.Fatal {
					want = append(want, name)
				}
			}
			if len(want) == 0 {
				t.Fatal("zlint found no error: the fixture is wrong")
			}
			sort.Strings(want)
			err = lintDER(der, lo)
			if !errors.Is(err, ErrLint) {
				t.Fatalf("lintDER: got %v, want ErrLint", err)
			}
			for _, n := range reg.Names() {
				if named, wanted := strings.Contains(err.Error(), n+" ") || strings.HasSuffix(err.Error(), n) || strings.Contains(err.Error(), n+","), slices.Contains(want, n); named != wanted {
					t.Errorf("lintDER names %s: got %v, want %v (zlint: %v; lintDER: %v)", n, named, wanted, want, err)
				}
			}
		})
	}
}

func sourceList(t *testing.T, names []string) lint.SourceList {
	var out lint.SourceList
	for _, n := range names {
		var s lint.LintSource
		s.FromString(n)
		if s == lint.UnknownLintSource {
			t.Fatalf("unknown source %q", n)
		}
		out = append(out, s)
	}
	return out
}

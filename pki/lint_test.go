package pki

import (
	"context"
	"crypto/x509"
	"crypto/x509/pkix"
	"sync"
	"testing"

	zx509 "github.com/zmap/zcrypto/x509"
	"github.com/zmap/zlint/v3/lint"
	"github.com/zmap/zlint/v3/util"

	pb "github.com/hsmgate/hsmgate/proto/hsmgate/v1"
)

// signatureProbe is a signature lint (signatureLints) registered for the
// tests: it records the certificates it is shown and passes them.
var signatureProbe struct {
	mu   sync.Mutex
	seen []*zx509.Certificate
}

const signatureProbeName = "e_hsmgate_test_signature_probe"

type signatureProbeLint struct{}

func (signatureProbeLint) CheckApplies(*zx509.Certificate) bool { return true }

func (signatureProbeLint) Execute(c *zx509.Certificate) *lint.LintResult {
	signatureProbe.mu.Lock()
	defer signatureProbe.mu.Unlock()
	signatureProbe.seen = append(signatureProbe.seen, c)
	return &lint.LintResult{Status: lint.Pass}
}

func init() {
	// Registered before any registry is filtered (init runs before the
	// tests), with a source of its own so that only a role naming it
	// ("RFC6962", which no certificate of these tests has lints of) selects it.
	lint.RegisterCertificateLint(&lint.CertificateLint{
		LintMetadata: lint.LintMetadata{
			Name: signatureProbeName, Description: "test probe", Citation: "hsmgate tests",
			Source: lint.RFC6962, EffectiveDate: util.ZeroDate,
		},
		Lint: func() lint.LintInterface { return signatureProbeLint{} },
	})
	signatureLints[signatureProbeName] = true
}

// TestSignatureLints: a lint of the signature value sees the issuer's real
// signature (not a placeholder), once per issuer key, and the
// TBSCertificate lints never see it.
func TestSignatureLints(t *testing.T) {
	e := newEnv(t)
	e.root(t, "root", KeyECDSAP256)
	role := webRole("probe")
	role.LintSources = []string{"RFC5280", "RFC6962"}
	e.role(t, role)
	signatureProbe.mu.Lock()
	signatureProbe.seen = nil
	signatureProbe.mu.Unlock()
	var certs []*x509.Certificate
	for range 3 {
		r, err := e.svc.Issue(context.Background(), &pb.IssueRequest{Role: "probe", CommonName: "a.example.com"})
		if err != nil {
			t.Fatalf("Issue: %v", err)
		}
		certs = append(certs, parseCert(t, r.Certificate))
	}
	signatureProbe.mu.Lock()
	seen := signatureProbe.seen
	signatureProbe.mu.Unlock()
	if len(seen) != 1 {
		t.Fatalf("signature lint ran %d times for 3 certificates of one issuer, want 1", len(seen))
	}
	iss, err := e.svc.loadIssuer(context.Background(), "root")
	if err != nil {
		t.Fatal(err)
	}
	if err := iss.cert.CheckSignature(x509.ECDSAWithSHA256, seen[0].RawTBSCertificate, seen[0].Signature); err != nil {
		t.Errorf("the signature lint saw a signature that is not the issuer's: %v", err)
	}
	if got, want := seen[0].Raw, certs[0].Raw; string(got) != string(want) {
		t.Errorf("the signature lint saw another certificate than the first one issued")
	}
}

// TestSignatureLintFailureIsRemembered: an issuer whose key fails a
// signature lint issues nothing, and the verdict holds for its later
// requests without running the lint again.
func TestSignatureLintFailureIsRemembered(t *testing.T) {
	e := newEnv(t)
	e.root(t, "root", KeyECDSAP256)
	e.role(t, webRole("web"))
	iss, err := e.svc.loadIssuer(context.Background(), "root")
	if err != nil {
		t.Fatal(err)
	}
	// The verdict a failing lint leaves behind.
	iss.sigLinted.Store("e_cert_issued_by_compromised_emudhra_ca", ErrLint)
	csr := makeCSR(t, &x509.CertificateRequest{Subject: pkix.Name{CommonName: "a.example.com"}})
	_, err = e.svc.Sign(context.Background(), &pb.SignRequest{Role: "web", Csr: csr})
	if err == nil {
		t.Fatal("Sign under an issuer that failed a signature lint: got a certificate, want ErrLint")
	}
	list, err := e.svc.cfg.Store.List(context.Background(), prefixCerts)
	if err != nil {
		t.Fatal(err)
	}
	if len(list) != 0 {
		t.Errorf("got %d certificate records, want 0", len(list))
	}
}

// TestMozillaSignatureEncodingLint: the certificate that is linted carries a
// signature of the issuer key's size, so a lint reading its length judges
// the real one. The old linting copy, signed with a throwaway P-256 key,
// made a P-384 issuer fail e_mp_ecdsa_signature_encoding_correct.
func TestMozillaSignatureEncodingLint(t *testing.T) {
	for _, kt := range []string{KeyECDSAP256, KeyECDSAP384} {
		t.Run(kt, func(t *testing.T) {
			e := newEnv(t)
			e.root(t, "root", kt)
			role := webRole("moz")
			role.LintSources = []string{"RFC5280", "Mozilla"}
			e.role(t, role)
			csr := makeCSR(t, &x509.CertificateRequest{Subject: pkix.Name{CommonName: "a.example.com"}})
			if _, err := e.svc.Sign(context.Background(), &pb.SignRequest{Role: "moz", Csr: csr}); err != nil {
				t.Fatalf("Sign under a %s issuer with the Mozilla lints: got %v, want a certificate", kt, err)
			}
		})
	}
}

func TestPlaceholderSignature(t *testing.T) {
	e := newEnv(t)
	for _, kt := range []string{KeyECDSAP256, KeyECDSAP384, KeyEd25519, KeyRSA3072} {
		t.Run(kt, func(t *testing.T) {
			e.root(t, kt, kt)
			e.role(t, &pb.Role{Name: kt, Issuer: kt, AllowAnyName: true, ServerFlag: true, Ttl: webRole("x").Ttl})
			r, err := e.svc.Issue(context.Background(), &pb.IssueRequest{Role: kt, CommonName: "a.example.com"})
			if err != nil {
				t.Fatalf("Issue: %v", err)
			}
			c := parseCert(t, r.Certificate)
			iss, err := e.svc.loadIssuer(context.Background(), kt)
			if err != nil {
				t.Fatal(err)
			}
			real, place := len(c.Signature), len(iss.lintSig)
			// ECDSA signatures vary by a few bytes (leading zeros); the
			// placeholder has the largest size of the curve but two bytes.
			if d := place - real; d < -2 || d > 6 {
				t.Errorf("placeholder signature of %d bytes for a real one of %d", place, real)
			}
		})
	}
}

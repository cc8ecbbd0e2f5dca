package pki

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"math/big"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"

	"github.com/hsmgate/hsmgate/hsm"
	"github.com/hsmgate/hsmgate/hsm/hsmtest"
	"github.com/hsmgate/hsmgate/internal/errs"
	pb "github.com/hsmgate/hsmgate/proto/hsmgate/v1"
)

func (e *env) createIntermediate(name, parent string, maxPathLen int32, nc *pb.NameConstraints) (*pb.Issuer, error) {
	r, err := e.svc.CreateIntermediateIssuer(context.Background(), &pb.CreateIntermediateIssuerRequest{
		Name: name, KeyType: KeyECDSAP256, Parent: parent, MakeDefault: true, MaxPathLen: maxPathLen, NameConstraints: nc,
		Subject: &pb.Subject{CommonName: name + " CA"},
	})
	if err != nil {
		return nil, err
	}
	return r.Issuer, nil
}

func wantParentConstraint(t *testing.T, what string, err error) {
	t.Helper()
	if !errors.Is(err, ErrParentConstraint) || errs.Code(err) != codes.FailedPrecondition {
		t.Fatalf("%s: got %v (code %v), want ErrParentConstraint (FailedPrecondition)", what, err, errs.Code(err))
	}
}

// TestPathLenEnforced: a 3-level chain (root, intermediate with pathlen:1,
// intermediate with pathlen:0) issues leaves that openssl verifies; a CA
// under the pathlen:0 intermediate is refused (before, it was made, and
// its chains failed openssl verify: "path length constraint exceeded").
func TestPathLenEnforced(t *testing.T) {
	e := newEnv(t, realClock)
	ctx := context.Background()
	root := e.root(t, "root", KeyECDSAP256)
	i1, err := e.createIntermediate("i1", "root", 1, nil)
	if err != nil {
		t.Fatalf("intermediate with pathlen:1 under the root: %v", err)
	}
	i2, err := e.createIntermediate("i2", "i1", 0, nil)
	if err != nil {
		t.Fatalf("intermediate with pathlen:0 under i1: %v", err)
	}
	e.role(t, webRole("web"))
	leaf, err := e.svc.Issue(ctx, &pb.IssueRequest{Role: "web", CommonName: "a.example.com"})
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	out, err := openssl(t, "verify", "-CAfile", writeFile(t, dir, "root.pem", pemCerts(root.Certificate)),
		"-untrusted", writeFile(t, dir, "chain.pem", pemCerts(i2.Certificate, i1.Certificate)),
		writeFile(t, dir, "leaf.pem", pemCerts(leaf.Certificate)))
	if err != nil || !strings.Contains(out, "leaf.pem: OK") {
		t.Fatalf("openssl verify of root > i1 > i2 > leaf: %v\n%s", err, out)
	}
	t.Run("CA under pathlen:0", func(t *testing.T) {
		_, err := e.createIntermediate("i3", "i2", 0, nil)
		wantParentConstraint(t, "intermediate under a pathlen:0 intermediate", err)
		if _, err := e.svc.GetIssuer(ctx, &pb.GetIssuerRequest{Name: "i3"}); !errors.Is(err, ErrIssuerNotFound) {
			t.Errorf("GetIssuer(i3) after the refusal: got %v, want ErrIssuerNotFound", err)
		}
	})
	t.Run("two levels under pathlen:1", func(t *testing.T) {
		// i1 (pathlen:1) > i2b > i3b: i3b would be the second CA below i1.
		if _, err := e.createIntermediate("i2b", "i1", -1, nil); err != nil {
			t.Fatalf("unlimited intermediate under i1: %v", err)
		}
		_, err := e.createIntermediate("i3b", "i2b", -1, nil)
		wantParentConstraint(t, "second CA level under pathlen:1", err)
	})
	t.Run("cross-sign under pathlen:0", func(t *testing.T) {
		e.root(t, "other", KeyECDSAP256)
		_, err := e.svc.CrossSignIssuer(ctx, &pb.CrossSignIssuerRequest{Name: "other", Signer: "i2"})
		wantParentConstraint(t, "cross-signature by a pathlen:0 intermediate", err)
	})
}

// TestPathLenLoweredByDefault: under a root with pathlen:1, an intermediate
// asked without a limit gets pathlen:0; one asking for more is refused.
func TestPathLenLoweredByDefault(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	if _, err := e.svc.CreateRootIssuer(ctx, &pb.CreateRootIssuerRequest{
		Name: "root", KeyType: KeyECDSAP256, MaxPathLen: 1, Subject: &pb.Subject{CommonName: "Root"},
	}); err != nil {
		t.Fatal(err)
	}
	im, err := e.createIntermediate("im", "root", -1, nil)
	if err != nil {
		t.Fatal(err)
	}
	if c := parseCert(t, im.Certificate); c.MaxPathLen != 0 || !c.MaxPathLenZero {
		t.Errorf("unlimited intermediate under pathlen:1 root: got MaxPathLen %d (zero %v), want 0", c.MaxPathLen, c.MaxPathLenZero)
	}
	_, err = e.createIntermediate("big", "root", 3, nil)
	wantParentConstraint(t, "pathlen:3 under a pathlen:1 root", err)
	_, err = e.createIntermediate("below", "im", -1, nil)
	wantParentConstraint(t, "CA under the lowered intermediate", err)
}

// TestNameConstraintsNarrowDown: a CA's permitted subtrees must lie within
// its parent's and outside what the parent excludes.
func TestNameConstraintsNarrowDown(t *testing.T) {
	e := newEnv(t)
	e.root(t, "root", KeyECDSAP256)
	if _, err := e.createIntermediate("nc", "root", 1, &pb.NameConstraints{
		PermittedDnsDomains: []string{"example.com"}, ExcludedDnsDomains: []string{"bad.example.com"},
		PermittedIpRanges: []string{"10.0.0.0/8"},
	}); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		name string
		nc   *pb.NameConstraints
		ok   bool
	}{
		{"narrower", &pb.NameConstraints{PermittedDnsDomains: []string{"sub.example.com"}, PermittedIpRanges: []string{"10.1.0.0/16"}}, true},
		{"none (inherits)", nil, true},
		{"other domain", &pb.NameConstraints{PermittedDnsDomains: []string{"example.org"}}, false},
		{"suffix trick", &pb.NameConstraints{PermittedDnsDomains: []string{"badexample.com"}}, false},
		{"excluded subtree", &pb.NameConstraints{PermittedDnsDomains: []string{"x.bad.example.com"}}, false},
		{"wider IP range", &pb.NameConstraints{PermittedIpRanges: []string{"0.0.0.0/0"}}, false},
		{"other IP range", &pb.NameConstraints{PermittedIpRanges: []string{"192.168.0.0/16"}}, false},
	} {
		t.Run(c.name, func(t *testing.T) {
			name := strings.NewReplacer(" ", "-", "(", "", ")", "").Replace(strings.ToLower(c.name))
			_, err := e.createIntermediate(name, "nc", 0, c.nc)
			if c.ok && err != nil {
				t.Fatalf("got %v, want nil", err)
			}
			if !c.ok {
				wantParentConstraint(t, "constraints outside the parent's", err)
			}
		})
	}
}

// TestImportChecksChainPathLen: a certificate for a pending intermediate,
// signed by an outside CA whose own certificate has pathlen:0, is refused.
func TestImportChecksChainPathLen(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	resp, err := e.svc.CreateIntermediateIssuer(ctx, &pb.CreateIntermediateIssuerRequest{
		Name: "ext", KeyType: KeyECDSAP256, Subject: &pb.Subject{CommonName: "External CA"},
	})
	if err != nil {
		t.Fatal(err)
	}
	csr, err := x509.ParseCertificateRequest(resp.Csr)
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	ca := func(serial int64, name string, pathLen int, pub any, parent *x509.Certificate, key *ecdsa.PrivateKey) *x509.Certificate {
		tmpl := &x509.Certificate{
			SerialNumber: big.NewInt(serial), Subject: pkix.Name{CommonName: name}, NotBefore: now.Add(-time.Hour),
			NotAfter: now.Add(time.Hour * 24), IsCA: true, BasicConstraintsValid: true,
			KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageCRLSign, MaxPathLen: pathLen, MaxPathLenZero: pathLen == 0,
		}
		if parent == nil {
			parent = tmpl
		}
		der, err := x509.CreateCertificate(rand.Reader, tmpl, parent, pub, key)
		if err != nil {
			t.Fatal(err)
		}
		return parseCert(t, der)
	}
	rk, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	mk, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	root := ca(1, "Outside Root", -1, rk.Public(), nil, rk)
	mid := ca(2, "Outside Mid", 0, mk.Public(), root, rk)
	ours := ca(3, csr.Subject.CommonName, 0, csr.PublicKey, mid, mk)
	_, err = e.svc.ImportIssuerCertificate(ctx, &pb.ImportIssuerCertificateRequest{Name: "ext", Certificate: pemCerts(ours.Raw, mid.Raw, root.Raw)})
	wantParentConstraint(t, "import under a pathlen:0 CA", err)
}

// TestIssueAfterOutsideLogout: the token is logged out from another context
// of the process; the next issuance logs in again and works (or answers
// Unavailable), and never answers NotFound for the issuer's key.
func TestIssueAfterOutsideLogout(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	e.root(t, "root", KeyECDSAP256)
	e.role(t, webRole("web"))
	if _, err := e.svc.Issue(ctx, &pb.IssueRequest{Role: "web", CommonName: "a.example.com"}); err != nil {
		t.Fatal(err)
	}
	hsmtest.Logout(t, e.keys.(*hsm.Module).TokenLabel())
	for i := range 3 {
		_, err := e.svc.Issue(ctx, &pb.IssueRequest{Role: "web", CommonName: "a.example.com"})
		if err != nil && errs.Code(err) != codes.Unavailable {
			t.Fatalf("Issue %d after C_Logout: got %v (code %v), want success or Unavailable", i, err, errs.Code(err))
		}
	}
}

func TestDomainInside(t *testing.T) {
	for _, c := range []struct {
		sub, super string
		want       bool
	}{
		{"example.com", "example.com", true},
		{"a.example.com", "example.com", true},
		{".example.com", "example.com", true},
		{"badexample.com", "example.com", false},
		{"example.com", ".example.com", false},
		{"a.example.com", ".example.com", true},
		{".example.com", ".example.com", true},
		{"EXAMPLE.com", "example.COM", true},
		{"example.org", "example.com", false},
	} {
		if got := domainInside(c.sub, c.super); got != c.want {
			t.Errorf("domainInside(%q, %q): got %v, want %v", c.sub, c.super, got, c.want)
		}
	}
}

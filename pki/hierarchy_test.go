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
	"sync"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/hsmgate/hsmgate/internal/auth"
	pb "github.com/hsmgate/hsmgate/proto/hsmgate/v1"
)

// TestExternalRootImport: an intermediate's CSR is signed by a root outside
// hsmgate, imported, and then issues certificates that chain to that root.
func TestExternalRootImport(t *testing.T) {
	e := newEnv(t, realClock)
	ctx := context.Background()
	resp, err := e.svc.CreateIntermediateIssuer(ctx, &pb.CreateIntermediateIssuerRequest{
		Name: "ext", KeyType: KeyECDSAP256, Subject: &pb.Subject{CommonName: "External-rooted CA"},
	})
	if err != nil {
		t.Fatal(err)
	}
	if resp.Issuer.State != pb.IssuerState_ISSUER_STATE_PENDING || len(resp.Csr) == 0 {
		t.Fatalf("state %v, CSR %d bytes; want pending with a CSR", resp.Issuer.State, len(resp.Csr))
	}
	if _, err := e.svc.Issue(ctx, &pb.IssueRequest{Role: "x"}); err == nil {
		t.Fatal("Issue before any role succeeded")
	}
	csr, err := x509.ParseCertificateRequest(resp.Csr)
	if err != nil || csr.CheckSignature() != nil {
		t.Fatalf("CSR: %v", err)
	}
	// The external root.
	rk, _ := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	now := time.Now()
	rootTmpl := &x509.Certificate{
		SerialNumber: big.NewInt(7), Subject: pkix.Name{CommonName: "Offline Root"}, NotBefore: now.Add(-time.Hour),
		NotAfter: now.Add(10 * 365 * 24 * time.Hour), IsCA: true, BasicConstraintsValid: true,
		KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
	}
	rootDER, _ := x509.CreateCertificate(rand.Reader, rootTmpl, rootTmpl, rk.Public(), rk)
	rootCert := parseCert(t, rootDER)
	imTmpl := &x509.Certificate{
		SerialNumber: big.NewInt(8), Subject: csr.Subject, NotBefore: now.Add(-time.Hour), NotAfter: now.Add(365 * 24 * time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageCRLSign | x509.KeyUsageDigitalSignature,
		MaxPathLenZero: true,
	}
	imDER, _ := x509.CreateCertificate(rand.Reader, imTmpl, rootCert, csr.PublicKey, rk)
	// A certificate for another key is refused.
	other, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	otherDER, _ := x509.CreateCertificate(rand.Reader, imTmpl, rootCert, other.Public(), rk)
	if _, err := e.svc.ImportIssuerCertificate(ctx, &pb.ImportIssuerCertificateRequest{Name: "ext", Certificate: otherDER}); !errors.Is(err, ErrInvalid) {
		t.Errorf("import of a certificate for another key: %v, want ErrInvalid", err)
	}
	imp, err := e.svc.ImportIssuerCertificate(ctx, &pb.ImportIssuerCertificateRequest{Name: "ext", Certificate: pemCerts(imDER, rootDER), MakeDefault: true})
	if err != nil {
		t.Fatalf("import: %v", err)
	}
	if imp.Issuer.State != pb.IssuerState_ISSUER_STATE_ACTIVE || !imp.Issuer.IsDefault || len(imp.Issuer.Chain) != 1 {
		t.Fatalf("imported issuer: state %v default %v chain %d", imp.Issuer.State, imp.Issuer.IsDefault, len(imp.Issuer.Chain))
	}
	e.role(t, webRole("web"))
	is, err := e.svc.Issue(ctx, &pb.IssueRequest{Role: "web", CommonName: "x.example.com"})
	if err != nil {
		t.Fatal(err)
	}
	roots := x509.NewCertPool()
	roots.AddCert(rootCert)
	ims := x509.NewCertPool()
	ims.AddCert(parseCert(t, is.Chain[0]))
	if _, err := parseCert(t, is.Certificate).Verify(x509.VerifyOptions{Roots: roots, Intermediates: ims}); err != nil {
		t.Errorf("leaf does not verify to the external root: %v", err)
	}
	dir := t.TempDir()
	out, err := openssl(t, "verify", "-CAfile", writeFile(t, dir, "root.pem", pemCerts(rootDER)),
		"-untrusted", writeFile(t, dir, "im.pem", pemCerts(is.Chain[0])), writeFile(t, dir, "leaf.pem", pemCerts(is.Certificate)))
	if err != nil {
		t.Errorf("openssl verify: %v\n%s", err, out)
	}
}

// TestCrossSign: a leaf of root A verifies with only root B trusted, through
// B's cross-signature of A.
func TestCrossSign(t *testing.T) {
	e := newEnv(t, realClock)
	ctx := context.Background()
	e.root(t, "a", KeyECDSAP256)
	b := e.root(t, "b", KeyECDSAP384)
	e.role(t, webRole("web"))
	cs, err := e.svc.CrossSignIssuer(ctx, &pb.CrossSignIssuerRequest{Name: "a", Signer: "b"})
	if err != nil {
		t.Fatalf("CrossSignIssuer: %v", err)
	}
	if len(cs.Issuer.CrossSigned) != 1 {
		t.Fatalf("cross_signed has %d certificates, want 1", len(cs.Issuer.CrossSigned))
	}
	leaf, err := e.svc.Issue(ctx, &pb.IssueRequest{Role: "web", CommonName: "x.example.com"})
	if err != nil {
		t.Fatal(err)
	}
	roots := x509.NewCertPool()
	roots.AddCert(parseCert(t, b.Certificate))
	ims := x509.NewCertPool()
	ims.AddCert(parseCert(t, cs.Certificate))
	if _, err := parseCert(t, leaf.Certificate).Verify(x509.VerifyOptions{Roots: roots, Intermediates: ims}); err != nil {
		t.Errorf("leaf of A does not verify through B's cross-signature: %v", err)
	}
	dir := t.TempDir()
	out, err := openssl(t, "verify", "-CAfile", writeFile(t, dir, "b.pem", pemCerts(b.Certificate)),
		"-untrusted", writeFile(t, dir, "x.pem", pemCerts(cs.Certificate)), writeFile(t, dir, "leaf.pem", pemCerts(leaf.Certificate)))
	if err != nil {
		t.Errorf("openssl verify via cross-signature: %v\n%s", err, out)
	}
}

// TestNameConstraintsRefuseOutsideNames: an intermediate constrained to
// example.com signs nothing outside it, even for a role that allows it.
func TestNameConstraintsRefuseOutsideNames(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	e.root(t, "root", KeyECDSAP256)
	im := e.intermediate(t, "im", KeyECDSAP256, "root", &pb.NameConstraints{PermittedDnsDomains: []string{"example.com"}, ExcludedDnsDomains: []string{"secret.example.com"}})
	if c := parseCert(t, im.Certificate); len(c.PermittedDNSDomains) != 1 || !c.PermittedDNSDomainsCritical {
		t.Fatalf("intermediate constraints: %v critical %v", c.PermittedDNSDomains, c.PermittedDNSDomainsCritical)
	}
	e.role(t, &pb.Role{Name: "any", AllowAnyName: true, ClientFlag: true})
	for _, tc := range []struct {
		name string
		ok   bool
	}{{"a.example.com", true}, {"a.example.org", false}, {"x.secret.example.com", false}} {
		_, err := e.svc.Issue(ctx, &pb.IssueRequest{Role: "any", DnsNames: []string{tc.name}})
		if (err == nil) != tc.ok {
			t.Errorf("Issue(%s): err %v, want ok=%v", tc.name, err, tc.ok)
		}
	}
}

// TestRotation: a new default issuer takes over; the retired one issues
// nothing but still answers CRL requests, and can be deleted once its last
// certificate has expired.
func TestRotation(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	e.root(t, "root", KeyECDSAP256)
	e.intermediate(t, "im1", KeyECDSAP256, "root", nil)
	e.role(t, webRole("web"))
	pinned := webRole("pinned")
	pinned.Issuer = "im1"
	e.role(t, pinned)
	old, err := e.svc.Issue(ctx, &pb.IssueRequest{Role: "web", CommonName: "a.example.com"})
	if err != nil || old.Issuer != "im1" {
		t.Fatalf("Issue: %v (issuer %q, want im1)", err, old.GetIssuer())
	}
	e.intermediate(t, "im2", KeyECDSAP256, "root", nil) // made default
	if _, err := e.svc.UpdateIssuer(ctx, &pb.UpdateIssuerRequest{Name: "im1", Retired: proto.Bool(true)}); err != nil {
		t.Fatal(err)
	}
	if _, err := e.svc.UpdateIssuer(ctx, &pb.UpdateIssuerRequest{Name: "im2", Retired: proto.Bool(true)}); !errors.Is(err, ErrInUse) {
		t.Errorf("retiring the default issuer: %v, want ErrInUse", err)
	}
	now, err := e.svc.Issue(ctx, &pb.IssueRequest{Role: "web", CommonName: "a.example.com"})
	if err != nil || now.Issuer != "im2" {
		t.Fatalf("Issue after rotation: %v (issuer %q, want im2)", err, now.GetIssuer())
	}
	if _, err := e.svc.Issue(ctx, &pb.IssueRequest{Role: "pinned", CommonName: "a.example.com"}); !errors.Is(err, ErrIssuerNotActive) {
		t.Errorf("Issue from a retired issuer: %v, want ErrIssuerNotActive", err)
	}
	if _, err := e.svc.Revoke(ctx, &pb.RevokeRequest{Serial: old.Serial}); err != nil {
		t.Fatalf("Revoke of a retired issuer's certificate: %v", err)
	}
	if _, err := e.svc.CRL(ctx, "im1", false); err != nil {
		t.Errorf("CRL of the retired issuer: %v", err)
	}
	if _, err := e.svc.DeleteIssuer(ctx, &pb.DeleteIssuerRequest{Name: "im1"}); !errors.Is(err, ErrInUse) {
		t.Errorf("DeleteIssuer with unexpired certificates: %v, want ErrInUse", err)
	}
	e.clock.Advance(25 * time.Hour)
	if _, err := e.svc.DeleteIssuer(ctx, &pb.DeleteIssuerRequest{Name: "im1", DestroyKey: true}); err != nil {
		t.Errorf("DeleteIssuer after its certificates expired: %v", err)
	}
	list, err := e.svc.ListIssuers(ctx, &pb.ListIssuersRequest{})
	if err != nil || list.DefaultIssuer != "im2" || len(list.Issuers) != 2 {
		t.Errorf("ListIssuers: %v default %q, %d issuers; want im2, 2", err, list.GetDefaultIssuer(), len(list.GetIssuers()))
	}
}

// TestConcurrentIssuance: thousands of concurrent issuances give distinct
// serials, each recorded with its certificate.
func TestConcurrentIssuance(t *testing.T) {
	const n, workers = 2000, 16
	e := newEnv(t)
	ctx := context.Background()
	e.root(t, "root", KeyECDSAP256)
	e.role(t, webRole("web"))
	csr := makeCSR(t, &x509.CertificateRequest{Subject: pkix.Name{CommonName: "a.example.com"}})
	var mu sync.Mutex
	got := map[string][]byte{}
	var wg sync.WaitGroup
	errc := make(chan error, workers)
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := w; i < n; i += workers {
				var serial string
				var der []byte
				if i%2 == 0 {
					r, err := e.svc.Sign(ctx, &pb.SignRequest{Role: "web", Csr: csr})
					if err != nil {
						errc <- err
						return
					}
					serial, der = r.Serial, r.Certificate
				} else {
					r, err := e.svc.Issue(ctx, &pb.IssueRequest{Role: "web", CommonName: "b.example.com"})
					if err != nil {
						errc <- err
						return
					}
					serial, der = r.Serial, r.Certificate
				}
				mu.Lock()
				if _, dup := got[serial]; dup {
					mu.Unlock()
					errc <- errors.New("repeated serial " + serial)
					return
				}
				got[serial] = der
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	close(errc)
	for err := range errc {
		t.Fatal(err)
	}
	if len(got) != n {
		t.Fatalf("%d distinct serials, want %d", len(got), n)
	}
	var pages, total int
	token := ""
	for {
		l, err := e.svc.ListCertificates(ctx, &pb.ListCertificatesRequest{PageSize: 500, PageToken: token})
		if err != nil {
			t.Fatal(err)
		}
		total += len(l.Certificates)
		pages++
		if token = l.NextPageToken; token == "" {
			break
		}
	}
	if total != n {
		t.Errorf("ListCertificates found %d records in %d pages, want %d", total, pages, n)
	}
	for serial, der := range got {
		rec, err := e.svc.GetCertificate(ctx, &pb.GetCertificateRequest{Serial: serial})
		if err != nil {
			t.Fatalf("GetCertificate(%s): %v", serial, err)
		}
		if string(rec.Certificate.Certificate) != string(der) {
			t.Fatalf("record of %s holds another certificate", serial)
		}
		if c := parseCert(t, der); c.SerialNumber.BitLen() < 65 || c.SerialNumber.BitLen() > 128 || serialHex(c.SerialNumber) != serial {
			t.Fatalf("serial %s: %d bits", serial, c.SerialNumber.BitLen())
		}
	}
}

// TestAuthTableCoversEveryMethod walks the service descriptor.
func TestAuthTableCoversEveryMethod(t *testing.T) {
	table := AuthTable()
	for _, m := range pb.PKIService_ServiceDesc.Methods {
		full := "/" + pb.PKIService_ServiceDesc.ServiceName + "/" + m.MethodName
		rule, ok := table[full]
		if !ok {
			t.Errorf("%s has no rule", full)
			continue
		}
		if rule.Capability == "" || rule.Public {
			t.Errorf("%s: rule %+v needs a capability and must not be public", full, rule)
		}
	}
	if got, want := len(table), len(pb.PKIService_ServiceDesc.Methods); got != want {
		t.Errorf("table has %d rules, service %d methods", got, want)
	}
	for _, tc := range []struct {
		method string
		msg    proto.Message
		cap    auth.Capability
		res    string
	}{
		{"Issue", &pb.IssueRequest{Role: "web"}, auth.CapIssue, "pki/roles/web"},
		{"Sign", &pb.SignRequest{Role: "web"}, auth.CapIssue, "pki/roles/web"},
		{"Revoke", &pb.RevokeRequest{Serial: "0A:BC"}, auth.CapRevoke, "pki/certs/abc"},
		{"CreateRootIssuer", &pb.CreateRootIssuerRequest{Name: "root"}, auth.CapCreate, "pki/issuers/root"},
		{"UpdateRole", &pb.UpdateRoleRequest{Role: &pb.Role{Name: "web"}}, auth.CapUpdate, "pki/roles/web"},
		{"GetIssuer", &pb.GetIssuerRequest{}, auth.CapRead, "pki/issuers/default"},
	} {
		rule := table["/hsmgate.v1.PKIService/"+tc.method]
		res, err := rule.Resource(tc.msg)
		if err != nil || res != tc.res || rule.Capability != tc.cap {
			t.Errorf("%s: %s %q (%v), want %s %q", tc.method, rule.Capability, res, err, tc.cap, tc.res)
		}
	}
	if _, err := table["/hsmgate.v1.PKIService/Issue"].Resource(&pb.IssueRequest{Role: "../x"}); err == nil || !strings.Contains(err.Error(), "name") {
		t.Errorf("a bad role name gave no error: %v", err)
	}
}

// TestRevokeIntermediate: revoking an intermediate (recorded under its
// parent) puts it on the root's CRL; openssl -crl_check_all then refuses
// its leaves.
func TestRevokeIntermediate(t *testing.T) {
	e := newEnv(t, realClock)
	ctx := context.Background()
	root := e.root(t, "root", KeyECDSAP256)
	im := e.intermediate(t, "im", KeyECDSAP256, "root", nil)
	e.role(t, webRole("web"))
	leaf, err := e.svc.Issue(ctx, &pb.IssueRequest{Role: "web", CommonName: "a.example.com"})
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	crls := func() string {
		var b []byte
		for _, n := range []string{"root", "im"} {
			der, err := e.svc.CRL(ctx, n, false)
			if err != nil {
				t.Fatal(err)
			}
			b = append(b, pemCRL(der)...)
		}
		return writeFile(t, dir, "crls.pem", b)
	}
	args := func() []string {
		return []string{"verify", "-crl_check_all", "-CAfile", writeFile(t, dir, "root.pem", pemCerts(root.Certificate)),
			"-untrusted", writeFile(t, dir, "im.pem", pemCerts(im.Certificate)), "-CRLfile", crls(), writeFile(t, dir, "leaf.pem", pemCerts(leaf.Certificate))}
	}
	if out, err := openssl(t, args()...); err != nil {
		t.Fatalf("openssl verify -crl_check_all before revocation: %v\n%s", err, out)
	}
	if _, err := e.svc.Revoke(ctx, &pb.RevokeRequest{Serial: im.Serial, Reason: 2}); err != nil {
		t.Fatalf("Revoke(intermediate): %v", err)
	}
	if out, err := openssl(t, args()...); err == nil || !strings.Contains(out, "certificate revoked") {
		t.Fatalf("openssl verify -crl_check_all after revoking the intermediate: err %v, want refusal\n%s", err, out)
	}
}

func pemCRL(der []byte) []byte { return pem.EncodeToMemory(&pem.Block{Type: "X509 CRL", Bytes: der}) }

package pki

import (
	"context"
	"crypto/x509"
	"errors"
	"slices"
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/hsmgate/hsmgate/internal/errs"
	pb "github.com/hsmgate/hsmgate/proto/hsmgate/v1"
	"google.golang.org/grpc/codes"
)

func TestIssueChainVerifiesWithOpenSSL(t *testing.T) {
	for _, kt := range []string{KeyECDSAP256, KeyECDSAP384, KeyEd25519, KeyRSA3072} {
		t.Run(kt, func(t *testing.T) {
			e := newEnv(t, realClock)
			ctx := context.Background()
			root := e.root(t, "root", kt)
			inter := e.intermediate(t, "inter", kt, "root", nil)
			e.role(t, webRole("web"))
			resp, err := e.svc.Issue(ctx, &pb.IssueRequest{Role: "web", CommonName: "api.example.com", DnsNames: []string{"www.example.com"}})
			if err != nil {
				t.Fatalf("Issue: %v", err)
			}
			leaf := parseCert(t, resp.Certificate)
			if got, want := leaf.DNSNames, []string{"api.example.com", "www.example.com"}; !slices.Equal(got, want) {
				t.Errorf("DNSNames = %v, want %v", got, want)
			}
			if len(resp.Chain) != 2 {
				t.Fatalf("chain has %d certificates, want 2", len(resp.Chain))
			}
			dir := t.TempDir()
			rootPEM := writeFile(t, dir, "root.pem", pemCerts(root.Certificate))
			interPEM := writeFile(t, dir, "inter.pem", pemCerts(inter.Certificate))
			leafPEM := writeFile(t, dir, "leaf.pem", pemCerts(resp.Certificate))
			out, err := openssl(t, "verify", "-CAfile", rootPEM, "-untrusted", interPEM, leafPEM)
			if err != nil || !strings.Contains(out, "leaf.pem: OK") {
				t.Fatalf("openssl verify: %v\n%s", err, out)
			}
			roots := x509.NewCertPool()
			roots.AddCert(parseCert(t, root.Certificate))
			ims := x509.NewCertPool()
			ims.AddCert(parseCert(t, inter.Certificate))
			if _, err := leaf.Verify(x509.VerifyOptions{Roots: roots, Intermediates: ims, DNSName: "www.example.com"}); err != nil {
				t.Errorf("Go verify: %v", err)
			}
		})
	}
}

func TestLintErrorRefusesIssuance(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	e.root(t, "root", KeyECDSAP256)
	e.role(t, webRole("web"))
	// A valid DNS name of 70 characters as CN: RFC 5280's ub-common-name is 64.
	long := strings.Repeat("a", 58) + ".example.com"
	_, err := e.svc.Issue(ctx, &pb.IssueRequest{Role: "web", CommonName: long})
	if !errors.Is(err, ErrLint) || !strings.Contains(err.Error(), "e_subject_common_name_max_length") {
		t.Fatalf("Issue(long CN) error = %v, want ErrLint naming e_subject_common_name_max_length", err)
	}
	if got := errs.Code(err); got != codes.InvalidArgument {
		t.Errorf("code = %v, want InvalidArgument", got)
	}
	list, err := e.svc.ListCertificates(ctx, &pb.ListCertificatesRequest{})
	if err != nil {
		t.Fatal(err)
	}
	// Only... nothing issued by the root itself is recorded (roots are self-signed).
	if len(list.Certificates) != 0 {
		t.Errorf("%d certificates recorded after a refused issuance, want 0", len(list.Certificates))
	}
	// The same name in a SAN only (no CN) is fine.
	if _, err := e.svc.Issue(ctx, &pb.IssueRequest{Role: "web", DnsNames: []string{long}}); err != nil {
		t.Errorf("Issue(long SAN, no CN): %v", err)
	}
}

func TestTTLCappedAtIssuerExpiry(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	r, err := e.svc.CreateRootIssuer(ctx, &pb.CreateRootIssuerRequest{
		Name: "short", KeyType: KeyECDSAP256, Subject: &pb.Subject{CommonName: "Short Root"}, Ttl: durationpb.New(2 * time.Hour),
	})
	if err != nil {
		t.Fatal(err)
	}
	role := webRole("web")
	role.Ttl, role.MaxTtl = durationpb.New(24*time.Hour), durationpb.New(48*time.Hour)
	e.role(t, role)
	resp, err := e.svc.Issue(ctx, &pb.IssueRequest{Role: "web", CommonName: "a.example.com"})
	if err != nil {
		t.Fatal(err)
	}
	if got, want := parseCert(t, resp.Certificate).NotAfter, r.Issuer.NotAfter.AsTime(); !got.Equal(want) {
		t.Errorf("NotAfter = %v, want the issuer's %v", got, want)
	}
	if got, want := parseCert(t, resp.Certificate).NotBefore, e.clock.Now().Add(-DefaultBackdate); !got.Equal(want) {
		t.Errorf("NotBefore = %v, want now - 30s backdate = %v", got, want)
	}
	_, err = e.svc.Issue(ctx, &pb.IssueRequest{Role: "web", CommonName: "a.example.com", Ttl: durationpb.New(72 * time.Hour)})
	if !errors.Is(err, ErrNotAllowed) {
		t.Errorf("Issue(ttl > max_ttl) error = %v, want ErrNotAllowed", err)
	}
	e.clock.Advance(3 * time.Hour)
	_, err = e.svc.Issue(ctx, &pb.IssueRequest{Role: "web", CommonName: "a.example.com"})
	if !errors.Is(err, ErrIssuerNotActive) {
		t.Errorf("Issue after the issuer expired: error = %v, want ErrIssuerNotActive", err)
	}
}

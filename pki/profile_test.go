package pki

import (
	"context"
	"errors"
	"net"
	"slices"
	"strings"
	"testing"

	pb "github.com/hsmgate/hsmgate/proto/hsmgate/v1"
)

// TestLintProfiles: the internal profile issues the names an internal CA
// exists for (cluster-local names, private IPs, Ed25519 leaves) under every
// issuer key type, and every certificate involved shows no error under the
// internal lint set; the public profile still refuses them.
func TestLintProfiles(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	internal := lintOptions{sources: internalLintSources}

	for _, kt := range []string{KeyECDSAP256, KeyECDSAP384, KeyRSA3072, KeyEd25519} {
		t.Run(kt, func(t *testing.T) {
			root := e.root(t, "root-"+kt, kt)
			inter := e.intermediate(t, "inter-"+kt, kt, root.Name, nil)
			for _, iss := range []*pb.Issuer{root, inter} {
				if err := lintDER(iss.Certificate, internal); err != nil {
					t.Errorf("issuer %s under the internal lint set: %v", iss.Name, err)
				}
			}

			svc := &pb.Role{
				Name: "svc-" + kt, Issuer: inter.Name, AllowedDomains: []string{"svc.cluster.local"}, AllowSubdomains: true,
				ServerFlag: true, AllowedKeyTypes: []string{KeyECDSAP256, KeyEd25519},
			}
			if got := e.role(t, svc).LintProfile; got != ProfileInternal {
				t.Errorf("role lint_profile %q, want %q by default", got, ProfileInternal)
			}
			ips := &pb.Role{Name: "ip-" + kt, Issuer: inter.Name, AllowIpSans: true, AllowAnyName: true, ServerFlag: true}
			e.role(t, ips)
			pub := &pb.Role{
				Name: "pub-" + kt, Issuer: inter.Name, AllowedDomains: []string{"example.test", "svc.cluster.local"},
				AllowSubdomains: true, ServerFlag: true, LintProfile: ProfilePublic, AllowedKeyTypes: []string{KeyECDSAP256, KeyEd25519},
			}
			e.role(t, pub)

			for _, c := range []struct {
				name string
				req  *pb.IssueRequest
			}{
				{"cluster-local", &pb.IssueRequest{Role: svc.Name, CommonName: "web.default.svc.cluster.local"}},
				{"cluster-local ed25519 leaf", &pb.IssueRequest{Role: svc.Name, CommonName: "web.default.svc.cluster.local", KeyType: KeyEd25519}},
				{"private ip", &pb.IssueRequest{Role: ips.Name, IpAddresses: []string{"10.0.0.5"}}},
			} {
				t.Run(c.name, func(t *testing.T) {
					r, err := e.svc.Issue(ctx, c.req)
					if err != nil {
						t.Fatalf("Issue: %v", err)
					}
					leaf := parseCert(t, r.Certificate)
					if err := lintDER(r.Certificate, internal); err != nil {
						t.Errorf("leaf under the internal lint set: %v", err)
					}
					if len(leaf.PolicyIdentifiers) != 0 || len(leaf.Policies) != 0 {
						t.Errorf("internal leaf has policies %v, want none (its issuers have none)", leaf.Policies)
					}
					if c.req.CommonName != "" && !slices.Contains(leaf.DNSNames, c.req.CommonName) {
						t.Errorf("DNS SANs %v, want %s", leaf.DNSNames, c.req.CommonName)
					}
					if len(c.req.IpAddresses) > 0 && (len(leaf.IPAddresses) != 1 || !leaf.IPAddresses[0].Equal(net.ParseIP(c.req.IpAddresses[0]))) {
						t.Errorf("IP SANs %v, want %v", leaf.IPAddresses, c.req.IpAddresses)
					}
				})
			}

			// The public profile adds the CA/B Forum lints: no .test or
			// cluster.local names, no Ed25519 (under any issuer key type).
			for _, req := range []*pb.IssueRequest{
				{Role: pub.Name, CommonName: "www.example.test"},
				{Role: pub.Name, CommonName: "web.default.svc.cluster.local"},
			} {
				if _, err := e.svc.Issue(ctx, req); !errors.Is(err, ErrLint) {
					t.Errorf("public profile, %s: err %v, want ErrLint", req.CommonName, err)
				}
			}
		})
	}
}

func TestLintProfileValidated(t *testing.T) {
	e := newEnv(t)
	r := webRole("bad")
	r.LintProfile = "private"
	if _, err := e.svc.CreateRole(context.Background(), &pb.CreateRoleRequest{Role: r}); !errors.Is(err, ErrInvalid) {
		t.Errorf("lint_profile %q: err %v, want ErrInvalid", r.LintProfile, err)
	}
}

// TestIssuerPolicies: issuers carry the policy OIDs they are created with
// (none by default, as internal-profile leaves), so a public-profile
// hierarchy can be consistent: its leaves' DV policy is one the intermediate
// and the root assert; the chain verifies with openssl. A bad OID creates
// nothing.
func TestIssuerPolicies(t *testing.T) {
	e := newEnv(t, realClock)
	ctx := context.Background()
	const dv = "2.23.140.1.2.1"
	root, err := e.svc.CreateRootIssuer(ctx, &pb.CreateRootIssuerRequest{
		Name: "root", KeyType: KeyECDSAP256, Subject: &pb.Subject{CommonName: "Public Root"}, PolicyIdentifiers: []string{"2.5.29.32.0"},
	})
	if err != nil {
		t.Fatal(err)
	}
	inter, err := e.svc.CreateIntermediateIssuer(ctx, &pb.CreateIntermediateIssuerRequest{
		Name: "inter", KeyType: KeyECDSAP256, Parent: "root", MakeDefault: true,
		Subject: &pb.Subject{CommonName: "Public Intermediate"}, PolicyIdentifiers: []string{dv},
	})
	if err != nil {
		t.Fatal(err)
	}
	plain := e.intermediate(t, "plain", KeyECDSAP256, "root", nil)
	if got := parseCert(t, plain.Certificate).Policies; len(got) != 0 {
		t.Errorf("issuer created without policies carries %v, want none", got)
	}
	want := func(der []byte, oid string) {
		t.Helper()
		c := parseCert(t, der)
		for _, p := range c.Policies {
			if p.String() == oid {
				return
			}
		}
		t.Errorf("%s: policies %v, want %s", c.Subject.CommonName, c.Policies, oid)
	}
	want(root.Issuer.Certificate, "2.5.29.32.0")
	want(inter.Issuer.Certificate, dv)
	r := webRole("pub")
	r.Issuer, r.LintProfile = "inter", ProfilePublic
	e.role(t, r)
	leaf, err := e.svc.Issue(ctx, &pb.IssueRequest{Role: "pub", CommonName: "www.example.com"})
	if err != nil {
		t.Fatal(err)
	}
	want(leaf.Certificate, dv)
	dir := t.TempDir()
	out, err := openssl(t, "verify", "-policy_check", "-policy", dv, "-explicit_policy",
		"-CAfile", writeFile(t, dir, "root.pem", pemCerts(root.Issuer.Certificate)),
		"-untrusted", writeFile(t, dir, "inter.pem", pemCerts(inter.Issuer.Certificate)),
		writeFile(t, dir, "leaf.pem", pemCerts(leaf.Certificate)))
	if err != nil || !strings.Contains(out, "leaf.pem: OK") {
		t.Errorf("openssl verify -explicit_policy %s: %v\n%s", dv, err, out)
	}
	if _, err := e.svc.CreateRootIssuer(ctx, &pb.CreateRootIssuerRequest{Name: "bad", Subject: &pb.Subject{CommonName: "Bad"}, PolicyIdentifiers: []string{"not.an.oid"}}); !errors.Is(err, ErrInvalid) {
		t.Errorf("bad policy OID: err %v, want ErrInvalid", err)
	}
	if _, err := e.svc.GetIssuer(ctx, &pb.GetIssuerRequest{Name: "bad"}); !errors.Is(err, ErrIssuerNotFound) {
		t.Errorf("a refused root left a record: %v", err)
	}
}

package pki

import (
	"context"
	"errors"
	"net"
	"slices"
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

package pki

import (
	"context"
	"crypto/x509"
	"errors"
	"testing"

	pb "github.com/hsmgate/hsmgate/proto/hsmgate/v1"
)

// TestLeafKeyTypes issues every leaf key type under a server role of the
// public profile (CA/B BR lints) and a client role of the internal profile.
func TestLeafKeyTypes(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	e.root(t, "root", KeyECDSAP256)
	all := []string{KeyECDSAP256, KeyECDSAP384, KeyRSA2048, KeyRSA3072, KeyEd25519}
	server := webRole("server")
	server.ClientFlag, server.AllowedKeyTypes, server.LintProfile = false, all, ProfilePublic
	e.role(t, server)
	client := webRole("client")
	client.ServerFlag, client.AllowedKeyTypes = false, all
	e.role(t, client)
	for _, kt := range all {
		for _, role := range []string{"server", "client"} {
			t.Run(role+"/"+kt, func(t *testing.T) {
				r, err := e.svc.Issue(ctx, &pb.IssueRequest{Role: role, CommonName: "a.example.com", KeyType: kt})
				if role == "server" && kt == KeyEd25519 {
					// The Baseline Requirements do not allow Ed25519 subscriber keys.
					if !errors.Is(err, ErrLint) {
						t.Errorf("Ed25519 key under BR lints: %v, want ErrLint", err)
					}
					return
				}
				if err != nil {
					t.Fatalf("Issue: %v", err)
				}
				c := parseCert(t, r.Certificate)
				got, _ := keyTypeOf(c.PublicKey)
				if got != kt {
					t.Errorf("key type %s, want %s", got, kt)
				}
				wantKU := x509.KeyUsageDigitalSignature
				if isRSA(kt) && role == "server" {
					wantKU |= x509.KeyUsageKeyEncipherment
				}
				if c.KeyUsage != wantKU {
					t.Errorf("key usage %v, want %v", c.KeyUsage, wantKU)
				}
			})
		}
	}
}

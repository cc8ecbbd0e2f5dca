package acme

import (
	"context"
	"crypto/x509"
	"encoding/base64"
	"encoding/pem"
	"net/http"
	"strings"
	"testing"

	"github.com/hsmgate/hsmgate/pki"
	pb "github.com/hsmgate/hsmgate/proto/hsmgate/v1"
)

// TestAlternateChains: when the issuing CA is cross-signed by another of our
// CAs, the download names the other chain in a Link rel="alternate" header
// (RFC 8555 7.4.2), and that chain (leaf, cross certificate, other root)
// verifies to the other root alone.
func TestAlternateChains(t *testing.T) {
	e := newEnv(t, envOpts{})
	ctx := context.Background()
	other, err := e.pki.CreateRootIssuer(ctx, &pb.CreateRootIssuerRequest{
		Name: "other", KeyType: pki.KeyECDSAP256, Subject: &pb.Subject{CommonName: "ACME Test Other Root"},
	})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := e.pki.CrossSignIssuer(ctx, &pb.CrossSignIssuerRequest{Name: "root", Signer: "other"}); err != nil {
		t.Fatalf("CrossSignIssuer: %v", err)
	}
	c := e.raw(t, newECKey(t))
	c.register(t, map[string]any{})
	orderURL, o := c.readyOrder(t, "alt.example.com")
	csr := csrFor(t, "alt.example.com", "alt.example.com")
	if r := c.post(o["finalize"].(string), map[string]any{"csr": base64.RawURLEncoding.EncodeToString(csr)}, jwsOpts{}); r.status != http.StatusOK {
		t.Fatalf("finalize: %d %s", r.status, r.body)
	}
	certURL := c.waitStatus(t, orderURL, "valid")["certificate"].(string)

	def := c.post(certURL, nil, jwsOpts{})
	if def.status != http.StatusOK {
		t.Fatalf("download: %d %s", def.status, def.body)
	}
	links := strings.Join(def.header.Values("Link"), ",")
	if !strings.Contains(links, "<"+certURL+`/1>;rel="alternate"`) {
		t.Fatalf("download Link %q: want the alternate chain %s/1", links, certURL)
	}
	alt := c.post(certURL+"/1", nil, jwsOpts{})
	if alt.status != http.StatusOK || alt.header.Get("Content-Type") != "application/pem-certificate-chain" {
		t.Fatalf("alternate: %d %q %s", alt.status, alt.header.Get("Content-Type"), alt.body)
	}
	if !strings.Contains(strings.Join(alt.header.Values("Link"), ","), "<"+certURL+`>;rel="alternate"`) {
		t.Errorf("alternate's Link %q: want the default chain", alt.header.Values("Link"))
	}
	var certs []*x509.Certificate
	for rest := alt.body; ; {
		var b *pem.Block
		if b, rest = pem.Decode(rest); b == nil {
			break
		}
		c, err := x509.ParseCertificate(b.Bytes)
		if err != nil {
			t.Fatal(err)
		}
		certs = append(certs, c)
	}
	if len(certs) != 3 {
		t.Fatalf("alternate chain has %d certificates, want leaf, cross certificate, other root", len(certs))
	}
	roots, inter := x509.NewCertPool(), x509.NewCertPool()
	otherCert, _ := x509.ParseCertificate(other.Issuer.Certificate)
	roots.AddCert(otherCert)
	inter.AddCert(certs[1])
	if _, err := certs[0].Verify(x509.VerifyOptions{Roots: roots, Intermediates: inter, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny}}); err != nil {
		t.Errorf("alternate chain does not verify to the other root: %v", err)
	}
	if r := c.post(certURL+"/2", nil, jwsOpts{}); r.status != http.StatusNotFound {
		t.Errorf("a chain that does not exist: %d, want 404", r.status)
	}
}

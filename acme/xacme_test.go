package acme

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"errors"
	"testing"
	"time"

	"golang.org/x/crypto/acme"
	"golang.org/x/crypto/ocsp"

	pb "github.com/hsmgate/hsmgate/proto/hsmgate/v1"
)

func (e *env) acmeClient(t testing.TB, key crypto.Signer) *acme.Client {
	return &acme.Client{Key: key, DirectoryURL: e.dirURL, HTTPClient: e.client()}
}

// orderCert completes an order for names through http-01 and returns the chain.
func (e *env) orderCert(t testing.TB, c *acme.Client, names ...string) [][]byte {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	o, err := c.AuthorizeOrder(ctx, acme.DomainIDs(names...))
	if err != nil {
		t.Fatalf("AuthorizeOrder: %v", err)
	}
	for _, u := range o.AuthzURLs {
		az, err := c.GetAuthorization(ctx, u)
		if err != nil {
			t.Fatalf("GetAuthorization: %v", err)
		}
		var ch *acme.Challenge
		for _, x := range az.Challenges {
			if x.Type == "http-01" {
				ch = x
			}
		}
		if ch == nil {
			t.Fatalf("no http-01 challenge in %+v", az.Challenges)
		}
		ka, err := c.HTTP01ChallengeResponse(ch.Token)
		if err != nil {
			t.Fatal(err)
		}
		e.chall.set(ch.Token, ka)
		if _, err := c.Accept(ctx, ch); err != nil {
			t.Fatalf("Accept: %v", err)
		}
		if _, err := c.WaitAuthorization(ctx, u); err != nil {
			t.Fatalf("WaitAuthorization: %v", err)
		}
	}
	if _, err := c.WaitOrder(ctx, o.URI); err != nil {
		t.Fatalf("WaitOrder: %v", err)
	}
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	csr, _ := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{
		Subject: pkix.Name{CommonName: names[0]}, DNSNames: names,
	}, key)
	chain, _, err := c.CreateOrderCert(ctx, o.FinalizeURL, csr, true)
	if err != nil {
		t.Fatalf("CreateOrderCert: %v", err)
	}
	return chain
}

// TestXCryptoACME: golang.org/x/crypto/acme (cert-manager's client)
// registers with EAB, completes an order through http-01, rolls its key
// over, revokes, and deactivates its account.
func TestXCryptoACME(t *testing.T) {
	e := newEnv(t, envOpts{eab: true})
	ctx := context.Background()
	kid, hk, err := e.srv.CreateEAB(ctx, "main", nil)
	if err != nil {
		t.Fatalf("CreateEAB: %v", err)
	}
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	c := e.acmeClient(t, key)

	t.Run("register without EAB refused", func(t *testing.T) {
		k2, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		_, err := e.acmeClient(t, k2).Register(ctx, &acme.Account{}, acme.AcceptTOS)
		wantProblem(t, err, "externalAccountRequired")
	})
	hkey, _ := base64.RawURLEncoding.DecodeString(hk)
	acct, err := c.Register(ctx, &acme.Account{
		Contact: []string{"mailto:ops@example.com"}, ExternalAccountBinding: &acme.ExternalAccountBinding{KID: kid, Key: hkey},
	}, acme.AcceptTOS)
	if err != nil {
		t.Fatalf("Register: %v", err)
	}
	if acct.Status != acme.StatusValid {
		t.Fatalf("account status: got %q, want valid", acct.Status)
	}

	t.Run("reused EAB refused", func(t *testing.T) {
		k2, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		_, err := e.acmeClient(t, k2).Register(ctx, &acme.Account{
			ExternalAccountBinding: &acme.ExternalAccountBinding{KID: kid, Key: hkey},
		}, acme.AcceptTOS)
		wantProblem(t, err, "unauthorized")
	})

	chain := e.orderCert(t, c, "www.example.com", "example.com")
	leaf, err := x509.ParseCertificate(chain[0])
	if err != nil {
		t.Fatal(err)
	}
	if got := leaf.DNSNames; len(got) != 2 || got[0] != "www.example.com" {
		t.Errorf("DNS names: got %v, want [www.example.com example.com]", got)
	}
	issuer, err := x509.ParseCertificate(chain[1])
	if err != nil {
		t.Fatal(err)
	}
	if err := leaf.CheckSignatureFrom(issuer); err != nil {
		t.Errorf("leaf not signed by the chain's issuer: %v", err)
	}
	rec, err := e.pki.GetCertificate(ctx, &pb.GetCertificateRequest{Serial: leaf.SerialNumber.Text(16)})
	if err != nil || rec.Certificate.Role != "web" {
		t.Fatalf("pki record of the ACME certificate: %v, %v", rec, err)
	}

	t.Run("key rollover", func(t *testing.T) {
		nk, _ := rsa.GenerateKey(rand.Reader, 2048)
		if err := c.AccountKeyRollover(ctx, nk); err != nil {
			t.Fatalf("AccountKeyRollover: %v", err)
		}
		// The old key no longer finds the account; the new one does.
		if _, err := e.acmeClient(t, key).GetReg(ctx, ""); err == nil {
			t.Errorf("old key still finds the account")
		}
		if _, err := c.GetReg(ctx, ""); err != nil {
			t.Errorf("GetReg with the new key: %v", err)
		}
		e.orderCert(t, c, "api.example.com")
	})

	t.Run("revoke then OCSP", func(t *testing.T) {
		if err := c.RevokeCert(ctx, nil, chain[0], acme.CRLReasonKeyCompromise); err != nil {
			t.Fatalf("RevokeCert: %v", err)
		}
		// (x/crypto/acme turns alreadyRevoked into success; raw_test checks the problem.)
		req, _ := ocsp.CreateRequest(leaf, issuer, nil)
		der, err := e.pki.OCSPResponse(ctx, mustOCSP(t, req), nil)
		if err != nil {
			t.Fatal(err)
		}
		resp, err := ocsp.ParseResponse(der, issuer)
		if err != nil {
			t.Fatal(err)
		}
		if resp.Status != ocsp.Revoked {
			t.Errorf("OCSP status: got %d, want revoked (%d)", resp.Status, ocsp.Revoked)
		}
	})

	t.Run("deactivate", func(t *testing.T) {
		if err := c.DeactivateReg(ctx); err != nil {
			t.Fatalf("DeactivateReg: %v", err)
		}
		_, err := c.AuthorizeOrder(ctx, acme.DomainIDs("x.example.com"))
		wantProblem(t, err, "unauthorized")
	})
}

func mustOCSP(t testing.TB, der []byte) *ocsp.Request {
	r, err := ocsp.ParseRequest(der)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

// wantProblem checks that err is an ACME problem of type typ (without namespace).
func wantProblem(t testing.TB, err error, typ string) {
	t.Helper()
	var ae *acme.Error
	if !errors.As(err, &ae) {
		t.Fatalf("got error %v, want problem %s", err, typ)
	}
	if ae.ProblemType != ProblemNS+typ {
		t.Fatalf("got problem %s (%s), want %s", ae.ProblemType, ae.Detail, ProblemNS+typ)
	}
}

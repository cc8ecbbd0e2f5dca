package pki

import (
	"bytes"
	"context"
	"crypto"
	"crypto/x509"
	"encoding/asn1"
	"encoding/base64"
	"encoding/pem"
	"errors"
	"io"
	"math/big"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
	"time"

	"golang.org/x/crypto/ocsp"

	pb "github.com/hsmgate/hsmgate/proto/hsmgate/v1"
)

func httpGet(t testing.TB, url string) []byte {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET %s: %s: %s", url, resp.Status, b)
	}
	return b
}

// opensslOCSPTime reads a "Name: Dec  5 06:01:02 2026 GMT" line of openssl ocsp's output.
func opensslOCSPTime(t testing.TB, out, name string) time.Time {
	t.Helper()
	for _, line := range strings.Split(out, "\n") {
		if v, ok := strings.CutPrefix(strings.TrimSpace(line), name+": "); ok {
			tm, err := time.Parse("Jan _2 15:04:05 2006 MST", strings.TrimSpace(v))
			if err != nil {
				t.Fatalf("openssl ocsp %s %q: %v", name, v, err)
			}
			return tm
		}
	}
	t.Fatalf("openssl ocsp output has no %q line:\n%s", name, out)
	return time.Time{}
}

// TestOCSPResponderRenewed: the delegated responder certificate is renewed
// by Maintain once a third of its life is left, with the same HSM key, and
// responses keep verifying.
func TestOCSPResponderRenewed(t *testing.T) {
	e := newEnv(t, func(c *Config) { c.DelegatedOCSP = true })
	ctx := context.Background()
	e.root(t, "root", KeyECDSAP256)
	e.role(t, webRole("web"))
	resp, err := e.svc.Issue(ctx, &pb.IssueRequest{Role: "web", CommonName: "a.example.com"})
	if err != nil {
		t.Fatal(err)
	}
	before, _, err := e.svc.getIssuerRecord(ctx, "root")
	if err != nil {
		t.Fatal(err)
	}
	old := parseCert(t, before.OcspCertificate)
	e.clock.Advance(3 * 24 * time.Hour)
	if err := e.svc.Maintain(ctx); err != nil {
		t.Fatal(err)
	}
	if mid, _, _ := e.svc.getIssuerRecord(ctx, "root"); !bytes.Equal(mid.OcspCertificate, before.OcspCertificate) {
		t.Fatalf("responder renewed with more than a third of its life left")
	}
	e.clock.Advance(2 * 24 * time.Hour)
	if err := e.svc.Maintain(ctx); err != nil {
		t.Fatal(err)
	}
	after, _, err := e.svc.getIssuerRecord(ctx, "root")
	if err != nil {
		t.Fatal(err)
	}
	renewed := parseCert(t, after.OcspCertificate)
	if !renewed.NotAfter.After(old.NotAfter) {
		t.Fatalf("responder NotAfter %s, want after %s", renewed.NotAfter, old.NotAfter)
	}
	if after.OcspKeyLabel != before.OcspKeyLabel || !renewed.PublicKey.(interface{ Equal(crypto.PublicKey) bool }).Equal(old.PublicKey) {
		t.Errorf("renewal changed the responder key (label %q -> %q)", before.OcspKeyLabel, after.OcspKeyLabel)
	}
	leaf := parseCert(t, resp.Certificate)
	reqDER, err := ocsp.CreateRequest(leaf, parseCert(t, after.Certificate), nil)
	if err != nil {
		t.Fatal(err)
	}
	req, err := parseOCSPRequest(reqDER)
	if err != nil {
		t.Fatal(err)
	}
	der, err := e.svc.OCSPResponse(ctx, req, nil)
	if err != nil {
		t.Fatal(err)
	}
	r, err := ocsp.ParseResponseForCert(der, leaf, parseCert(t, after.Certificate))
	if err != nil {
		t.Fatalf("response after renewal: %v", err)
	}
	if r.Certificate == nil || !bytes.Equal(r.Certificate.Raw, renewed.Raw) || r.Status != ocsp.Good {
		t.Errorf("response signed by %v, status %d; want the renewed responder, good", r.Certificate != nil, r.Status)
	}
}

// TestOCSPAndCRLWithOpenSSL checks, with openssl against our HTTP handler on
// loopback, that OCSP says good and then revoked after Revoke, that the CRL
// parses and that verify -crl_check refuses the revoked certificate. Per
// issuer key type: Ed25519 issuers answer OCSP through a delegated responder.
func TestOCSPAndCRLWithOpenSSL(t *testing.T) {
	for _, tc := range []struct {
		kt        string
		delegated bool
	}{{KeyECDSAP256, false}, {KeyECDSAP256, true}, {KeyRSA3072, false}, {KeyEd25519, false}} {
		kt := tc.kt
		name := kt
		if tc.delegated {
			name += "/delegated"
		}
		t.Run(name, func(t *testing.T) {
			e := newEnv(t, realClock, func(c *Config) { c.DelegatedOCSP = tc.delegated })
			ctx := context.Background()
			root := e.root(t, "root", KeyECDSAP384)
			inter := e.intermediate(t, "inter", kt, "root", nil)
			e.role(t, webRole("web"))
			resp, err := e.svc.Issue(ctx, &pb.IssueRequest{Role: "web", CommonName: "a.example.com"})
			if err != nil {
				t.Fatal(err)
			}
			leaf := parseCert(t, resp.Certificate)
			if wantDelegated := tc.delegated || kt == KeyEd25519; (len(inter.OcspCertificate) > 0) != wantDelegated {
				t.Errorf("delegated OCSP certificate present %v, want %v", len(inter.OcspCertificate) > 0, wantDelegated)
			}
			if got, want := leaf.OCSPServer, []string{e.srv.URL + "/pki/ocsp"}; len(got) != 1 || got[0] != want[0] {
				t.Errorf("OCSPServer = %v, want %v", got, want)
			}
			if got := leaf.CRLDistributionPoints; len(got) != 1 || got[0] != e.srv.URL+"/pki/issuer/inter/crl" {
				t.Errorf("CRLDistributionPoints = %v", got)
			}
			// The AIA CA issuers URL serves the issuer certificate.
			if got := httpGet(t, leaf.IssuingCertificateURL[0]); !bytes.Equal(got, inter.Certificate) {
				t.Errorf("AIA CA issuers URL did not return the issuer's DER")
			}
			dir := t.TempDir()
			rootPEM := writeFile(t, dir, "root.pem", pemCerts(root.Certificate))
			interPEM := writeFile(t, dir, "inter.pem", pemCerts(inter.Certificate))
			chainPEM := writeFile(t, dir, "chain.pem", pemCerts(inter.Certificate, root.Certificate))
			leafPEM := writeFile(t, dir, "leaf.pem", pemCerts(resp.Certificate))
			if len(inter.OcspCertificate) > 0 {
				oc := parseCert(t, inter.OcspCertificate)
				if life := oc.NotAfter.Sub(oc.NotBefore); life > 8*24*time.Hour {
					t.Errorf("delegated OCSP certificate lives %s, want days", life)
				}
				if len(oc.CRLDistributionPoints) > 0 || len(oc.OCSPServer) > 0 {
					t.Errorf("delegated OCSP certificate has CDP %v / OCSP %v, want none (it is ocsp-nocheck)", oc.CRLDistributionPoints, oc.OCSPServer)
				}
			}
			ocspCheck := func(want string) string {
				t.Helper()
				// openssl sends a nonce and checks the response echoes it.
				out, err := openssl(t, "ocsp", "-issuer", interPEM, "-cert", leafPEM, "-url", e.srv.URL+"/pki/ocsp",
					"-CAfile", chainPEM)
				if err != nil || !strings.Contains(out, "leaf.pem: "+want) || !strings.Contains(out, "Response verify OK") ||
					strings.Contains(out, "nonce") {
					t.Fatalf("openssl ocsp: want %q, a verified response and its nonce echoed; err %v\n%s", want, err, out)
				}
				return out
			}
			ocspCheck("good")
			crlCheck := func(wantRevoked bool) {
				t.Helper()
				der := httpGet(t, e.srv.URL+"/pki/issuer/inter/crl")
				crlPEM := writeFile(t, dir, "crl.pem", pem.EncodeToMemory(&pem.Block{Type: "X509 CRL", Bytes: der}))
				if out, err := openssl(t, "crl", "-in", crlPEM, "-noout", "-text"); err != nil || !strings.Contains(out, "Certificate Revocation List") {
					t.Fatalf("openssl crl: %v\n%s", err, out)
				}
				out, err := openssl(t, "verify", "-crl_check", "-CAfile", rootPEM, "-untrusted", interPEM, "-CRLfile", crlPEM, leafPEM)
				if wantRevoked {
					if err == nil || !strings.Contains(out, "certificate revoked") {
						t.Fatalf("openssl verify -crl_check of a revoked certificate: err %v, want refusal\n%s", err, out)
					}
				} else if err != nil || !strings.Contains(out, "leaf.pem: OK") {
					t.Fatalf("openssl verify -crl_check: %v\n%s", err, out)
				}
			}
			crlCheck(false)
			if _, err := e.svc.Revoke(ctx, &pb.RevokeRequest{Serial: resp.Serial, Reason: 1}); err != nil {
				t.Fatalf("Revoke: %v", err)
			}
			out := ocspCheck("revoked")
			this, revoked := opensslOCSPTime(t, out, "This Update"), opensslOCSPTime(t, out, "Revocation Time")
			if this.Before(revoked) {
				t.Errorf("openssl ocsp: This Update %s before Revocation Time %s", this, revoked)
			}
			crlCheck(true)

			// GET form (RFC 6960 A.1: the URL-encoding of the base64) answers
			// the same, read with Go. Unencoded, a base64 holding "//" would
			// be cut by ServeMux's redirect (see TestOCSPGETSlashes).
			reqDER, err := ocsp.CreateRequest(leaf, parseCert(t, inter.Certificate), &ocsp.RequestOptions{Hash: crypto.SHA256})
			if err != nil {
				t.Fatal(err)
			}
			body := httpGet(t, e.srv.URL+"/pki/ocsp/"+url.PathEscape(base64.StdEncoding.EncodeToString(reqDER)))
			r, err := ocsp.ParseResponseForCert(body, leaf, parseCert(t, inter.Certificate))
			if err != nil {
				t.Fatalf("parse OCSP GET response: %v", err)
			}
			if r.Status != ocsp.Revoked || r.RevocationReason != ocsp.KeyCompromise {
				t.Errorf("OCSP GET status %d reason %d, want revoked, keyCompromise", r.Status, r.RevocationReason)
			}
			if r.ThisUpdate.Before(r.RevokedAt) {
				t.Errorf("OCSP thisUpdate %s before the revocation %s", r.ThisUpdate, r.RevokedAt)
			}
		})
	}
}

// TestOCSPGETSlashes: an OCSP GET whose base64 holds "//" (one request in
// about forty) is answered whether the client URL-encodes it, as RFC 6960
// A.1 says, or not (many OCSP clients do not): Handler reads the path as
// sent, before a ServeMux's cleaning would cut a slash ("malformed").
func TestOCSPGETSlashes(t *testing.T) {
	e := newEnv(t, realClock)
	root := e.root(t, "root", KeyECDSAP256)
	rootCert := parseCert(t, root.Certificate)
	var b64 string
	for n := int64(1); ; n++ {
		reqDER, err := ocsp.CreateRequest(&x509.Certificate{SerialNumber: big.NewInt(n)}, rootCert, nil)
		if err != nil {
			t.Fatal(err)
		}
		if b64 = base64.StdEncoding.EncodeToString(reqDER); strings.Contains(b64, "//") {
			break
		}
		if n > 100000 {
			t.Fatal("no request with // in its base64")
		}
	}
	body := httpGet(t, e.srv.URL+"/pki/ocsp/"+url.PathEscape(b64))
	if r, err := ocsp.ParseResponse(body, rootCert); err != nil || r.Status != ocsp.Unknown {
		t.Fatalf("GET of %s, URL-encoded: %v, %v; want an Unknown status", b64, r, err)
	}
	// Not encoded, straight to Handler (the server mounts it for
	// OCSPGETPrefix ahead of its mux: internal/server's HandleHTTPPrefix).
	w := httptest.NewRecorder()
	e.svc.Handler().ServeHTTP(w, httptest.NewRequest(http.MethodGet, "/pki/ocsp/"+b64, nil))
	if r, err := ocsp.ParseResponse(w.Body.Bytes(), rootCert); w.Code != http.StatusOK || err != nil || r.Status != ocsp.Unknown {
		t.Fatalf("GET of %s, not encoded: %d %v, %v; want an Unknown status", b64, w.Code, r, err)
	}
}

func TestOCSPUnknownAndUnauthorized(t *testing.T) {
	e := newEnv(t, realClock)
	root := e.root(t, "root", KeyECDSAP256)
	rootCert := parseCert(t, root.Certificate)
	fake := &x509.Certificate{SerialNumber: big.NewInt(12345)}
	reqDER, err := ocsp.CreateRequest(fake, rootCert, nil)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := http.Post(e.srv.URL+"/pki/ocsp", "application/ocsp-request", bytes.NewReader(reqDER))
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	r, err := ocsp.ParseResponse(body, rootCert)
	if err != nil || r.Status != ocsp.Unknown {
		t.Errorf("unknown serial: status %v err %v, want Unknown", r, err)
	}
	// A request naming an issuer we do not have.
	other := e.root(t, "other", KeyECDSAP256)
	otherCert := parseCert(t, other.Certificate)
	otherCert.RawSubject = []byte("not ours")
	reqDER, _ = ocsp.CreateRequest(fake, otherCert, nil)
	resp, err = http.Post(e.srv.URL+"/pki/ocsp", "application/ocsp-request", bytes.NewReader(reqDER))
	if err != nil {
		t.Fatal(err)
	}
	body, _ = io.ReadAll(resp.Body)
	resp.Body.Close()
	if !bytes.Equal(body, ocsp.UnauthorizedErrorResponse) {
		t.Errorf("foreign issuer: got %x, want unauthorized", body)
	}
	// Garbage.
	resp, err = http.Post(e.srv.URL+"/pki/ocsp", "application/ocsp-request", strings.NewReader("garbage"))
	if err != nil {
		t.Fatal(err)
	}
	body, _ = io.ReadAll(resp.Body)
	resp.Body.Close()
	if !bytes.Equal(body, ocsp.MalformedRequestErrorResponse) {
		t.Errorf("garbage: got %x, want malformed", body)
	}
}

// TestCRLRefreshAndDelta drives CRL regeneration with a fake clock.
func TestCRLRefreshAndDelta(t *testing.T) {
	e := newEnv(t, func(c *Config) {
		c.CRLValidity, c.DeltaCRLValidity, c.DeltaCRLOnRevoke = 24*time.Hour, time.Hour, true
	})
	ctx := context.Background()
	root := e.root(t, "root", KeyECDSAP256)
	rootCert := parseCert(t, root.Certificate)
	e.role(t, webRole("web"))
	if err := e.svc.Maintain(ctx); err != nil {
		t.Fatal(err)
	}
	crl := func(delta bool) *x509.RevocationList {
		t.Helper()
		der, err := e.svc.CRL(ctx, "root", delta)
		if err != nil {
			t.Fatal(err)
		}
		l, err := x509.ParseRevocationList(der)
		if err != nil {
			t.Fatal(err)
		}
		if err := l.CheckSignatureFrom(rootCert); err != nil {
			t.Fatalf("CRL signature: %v", err)
		}
		if !l.NextUpdate.After(e.clock.Now()) {
			t.Fatalf("CRL nextUpdate %v is not after now %v", l.NextUpdate, e.clock.Now())
		}
		return l
	}
	full0 := crl(false)
	e.clock.Advance(11 * time.Hour)
	if err := e.svc.Maintain(ctx); err != nil {
		t.Fatal(err)
	}
	if got := crl(false).Number; got.Cmp(full0.Number) != 0 {
		t.Errorf("full CRL rebuilt before half its validity: number %v, was %v", got, full0.Number)
	}
	resp, err := e.svc.Issue(ctx, &pb.IssueRequest{Role: "web", CommonName: "a.example.com"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := e.svc.Revoke(ctx, &pb.RevokeRequest{Serial: resp.Serial}); err != nil {
		t.Fatal(err)
	}
	full, delta := crl(false), crl(true)
	serial := parseCert(t, resp.Certificate).SerialNumber
	has := func(l *x509.RevocationList) bool {
		for _, r := range l.RevokedCertificateEntries {
			if r.SerialNumber.Cmp(serial) == 0 {
				return true
			}
		}
		return false
	}
	if has(full) || !has(delta) {
		t.Errorf("after a revocation with DeltaCRLOnRevoke: in full %v (want false), in delta %v (want true)", has(full), has(delta))
	}
	if delta.Number.Cmp(full.Number) <= 0 {
		t.Errorf("delta number %v not above full number %v", delta.Number, full.Number)
	}
	var ind bool
	for _, x := range delta.Extensions {
		if x.Id.Equal(oidDeltaCRLIndicator) && x.Critical {
			ind = true
		}
	}
	if !ind {
		t.Errorf("delta CRL lacks a critical delta CRL indicator")
	}
	e.clock.Advance(2 * time.Hour) // past half the full CRL's validity, and past the delta's nextUpdate
	if err := e.svc.Maintain(ctx); err != nil {
		t.Fatal(err)
	}
	if full2 := crl(false); !has(full2) || full2.Number.Cmp(full.Number) <= 0 {
		t.Errorf("after refresh: full CRL has revoked serial %v (want true), number %v (was %v)", has(full2), full2.Number, full.Number)
	}
	crl(true)
	// Tidy after expiry drops the record and the CRL entry.
	e.clock.Advance(25*24*time.Hour + 72*time.Hour)
	tr, err := e.svc.Tidy(ctx, &pb.TidyRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if tr.CertificatesRemoved != 1 || tr.RevokedRemoved != 1 {
		t.Errorf("Tidy removed %d certificates, %d revoked; want 1, 1", tr.CertificatesRemoved, tr.RevokedRemoved)
	}
	if has(crl(false)) {
		t.Errorf("tidied certificate still on the CRL")
	}
	if _, err := e.svc.GetCertificate(ctx, &pb.GetCertificateRequest{Serial: resp.Serial}); !errors.Is(err, ErrCertNotFound) {
		t.Errorf("GetCertificate after Tidy: %v, want ErrCertNotFound", err)
	}
}

// TestDeltaAppliesToEveryLiveBase: a relying party that holds an older,
// still valid full CRL brings it up to date with the newest delta CRL
// (openssl -use_deltas): deltas name the oldest live full CRL as their base
// and list every revocation since, not only those since the newest full CRL.
func TestDeltaAppliesToEveryLiveBase(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	root := e.root(t, "root", KeyECDSAP256)
	e.role(t, webRole("web"))
	issue := func() *pb.IssueResponse {
		r, err := e.svc.Issue(ctx, &pb.IssueRequest{Role: "web", CommonName: "a.example.com"})
		if err != nil {
			t.Fatal(err)
		}
		return r
	}
	a, b := issue(), issue()
	revoke := func(r *pb.IssueResponse) {
		if _, err := e.svc.Revoke(ctx, &pb.RevokeRequest{Serial: r.Serial, Reason: 1}); err != nil {
			t.Fatal(err)
		}
	}
	crl := func(delta bool) []byte {
		der, err := e.svc.CRL(ctx, "root", delta)
		if err != nil {
			t.Fatal(err)
		}
		return der
	}
	revoke(a)
	full1 := crl(false)
	e.clock.Advance(time.Hour) // past the delta margin: b's revocation is after full1
	revoke(b)
	full2, delta2 := crl(false), crl(true)
	n1 := mustParseCRL(t, full1).Number
	if n2 := mustParseCRL(t, full2).Number; n2.Cmp(n1) <= 0 {
		t.Fatalf("full CRL numbers %v then %v", n1, n2)
	}
	d := mustParseCRL(t, delta2)
	for _, ext := range d.Extensions {
		if ext.Id.Equal(oidDeltaCRLIndicator) {
			var base *big.Int
			if _, err := asn1.Unmarshal(ext.Value, &base); err != nil {
				t.Fatal(err)
			}
			if base.Cmp(n1) != 0 {
				t.Errorf("delta base %v, want %v (the oldest full CRL still valid)", base, n1)
			}
		}
	}
	dir := t.TempDir()
	rootPEM := writeFile(t, dir, "root.pem", pemCerts(root.Certificate))
	full1PEM := writeFile(t, dir, "full1.pem", pem.EncodeToMemory(&pem.Block{Type: "X509 CRL", Bytes: full1}))
	deltaPEM := writeFile(t, dir, "delta.pem", pem.EncodeToMemory(&pem.Block{Type: "X509 CRL", Bytes: delta2}))
	leafB := writeFile(t, dir, "b.pem", pemCerts(b.Certificate))
	out, err := openssl(t, "verify", "-crl_check", "-use_deltas", "-CAfile", rootPEM, "-CRLfile", full1PEM, "-CRLfile", deltaPEM, leafB)
	if err == nil || !strings.Contains(out, "certificate revoked") {
		t.Fatalf("openssl verify with the older full CRL and the new delta: err %v, want b revoked\n%s", err, out)
	}
}

func mustParseCRL(t testing.TB, der []byte) *x509.RevocationList {
	t.Helper()
	l, err := x509.ParseRevocationList(der)
	if err != nil {
		t.Fatal(err)
	}
	return l
}

package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"encoding/pem"
	"io"
	"log/slog"
	"math/big"
	"net/http"
	"os"
	"strings"
	"testing"
	"time"

	"golang.org/x/crypto/ocsp"

	"github.com/hsmgate/hsmgate/client"
	"github.com/hsmgate/hsmgate/hsm/hsmtest"
	"github.com/hsmgate/hsmgate/internal/auth"
	"github.com/hsmgate/hsmgate/internal/config"
	hsmgatev1 "github.com/hsmgate/hsmgate/proto/hsmgate/v1"
)

// TestSetupPKI runs the PKI builder on a real server (TLS, no auth
// interceptor): a root made over gRPC is served on /pki/ca over HTTPS, and
// issued certificates point at pki.base_url, or the HTTP listener without it.
func TestSetupPKI(t *testing.T) {
	for _, base := range []string{"", "http://ca.example.internal"} {
		t.Run("base_url="+base, func(t *testing.T) { testSetupPKI(t, base) })
	}
}

// testSetupPKI: with pki.base_url empty, certificates name the HTTP
// listener; with it set, they name it.
func testSetupPKI(t *testing.T, base string) {
	_, files, srv, st := builderServer(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	cfg := config.Default()
	cfg.PKI.BaseURL = base
	cfg.PKI.CRLValidity = 48 * time.Hour // not the engine's 24h default: the pki section reaches the engine
	d := &deps{Server: srv, Store: st, HSM: hsmtest.Module(t), Log: slog.Default(), Rules: auth.Table{}, Config: cfg}
	d.Jobs = testJobs(t, d) // jobs_wire_test.go
	got, err := pkiBaseURL(d)
	if err != nil || (base != "" && got != base) {
		t.Fatalf("pkiBaseURL: got %q, %v; want pki.base_url %q", got, err, base)
	}
	if err := setupPKI(ctx, d, got); err != nil {
		t.Fatalf("setupPKI: %v", err)
	}
	defer d.close()
	if _, ok := d.Rules["/hsmgate.v1.PKIService/Issue"]; !ok {
		t.Errorf("PKI rules not added")
	}
	if err := srv.Listen(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ctx) }()
	defer func() { cancel(); <-done }()

	cc, err := client.Dial(client.Options{Addr: srv.GRPCAddr(), CACert: files.CACert})
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()
	c := hsmgatev1.NewPKIServiceClient(cc)
	if _, err := c.CreateRootIssuer(ctx, &hsmgatev1.CreateRootIssuerRequest{Name: "root", Subject: &hsmgatev1.Subject{CommonName: "Wired Root"}}); err != nil {
		t.Fatalf("CreateRootIssuer over gRPC: %v", err)
	}
	if _, err := c.CreateRole(ctx, &hsmgatev1.CreateRoleRequest{Role: &hsmgatev1.Role{Name: "web", AllowedDomains: []string{"example.com"}, AllowSubdomains: true, ServerFlag: true}}); err != nil {
		t.Fatal(err)
	}
	is, err := c.Issue(ctx, &hsmgatev1.IssueRequest{Role: "web", CommonName: "a.example.com"})
	if err != nil {
		t.Fatal(err)
	}
	leaf, _ := x509.ParseCertificate(is.GetCertificate())
	want := "https://" + srv.HTTPAddr() + "/pki/ocsp"
	if base != "" {
		want = base + "/pki/ocsp"
	}
	if len(leaf.OCSPServer) != 1 || leaf.OCSPServer[0] != want {
		t.Errorf("OCSP URL %v, want %s", leaf.OCSPServer, want)
	}
	if _, err := c.GetRole(ctx, &hsmgatev1.GetRoleRequest{Name: "nope"}); err == nil || !strings.Contains(err.Error(), "NotFound") {
		t.Errorf("GetRole(unknown): %v, want NotFound", err)
	}
	caPEM, _ := os.ReadFile(files.CACert)
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(caPEM)
	hc := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}, Timeout: 10 * time.Second}
	resp, err := hc.Get("https://" + srv.HTTPAddr() + "/pki/ca")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	rootBlock, _ := pem.Decode(body)
	if resp.StatusCode != 200 || rootBlock == nil || rootBlock.Type != "CERTIFICATE" {
		t.Fatalf("GET /pki/ca: %s %q", resp.Status, body)
	}
	resp, err = hc.Get("https://" + srv.HTTPAddr() + "/pki/issuer/root/crl")
	if err != nil {
		t.Fatal(err)
	}
	body, _ = io.ReadAll(resp.Body)
	resp.Body.Close()
	crl, err := x509.ParseRevocationList(body)
	if err != nil {
		t.Fatalf("GET /pki/issuer/root/crl: %s: %v", resp.Status, err)
	}
	if got, want := crl.NextUpdate.Sub(crl.ThisUpdate), cfg.PKI.CRLValidity; got != want {
		t.Errorf("CRL validity: got %s, want pki.crl_validity %s", got, want)
	}
	// An OCSP GET whose base64 holds "//", not URL-encoded (as many OCSP
	// clients send it), is answered from the path as sent: the server's mux
	// would redirect it to a cleaned path with a slash cut out.
	root, err := x509.ParseCertificate(rootBlock.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	b64 := ocspBase64WithSlashes(t, root)
	hc.CheckRedirect = func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }
	resp, err = hc.Get("https://" + srv.HTTPAddr() + "/pki/ocsp/" + b64)
	if err != nil {
		t.Fatal(err)
	}
	body, _ = io.ReadAll(resp.Body)
	resp.Body.Close()
	if r, err := ocsp.ParseResponse(body, root); resp.StatusCode != http.StatusOK || err != nil || r.Status != ocsp.Unknown {
		t.Errorf("OCSP GET /pki/ocsp/%s: %s, %v; want an Unknown status", b64, resp.Status, err)
	}
}

// ocspBase64WithSlashes is the base64 of an OCSP request to issuer, for a
// serial chosen so that it holds "//" (one in about forty does).
func ocspBase64WithSlashes(t *testing.T, issuer *x509.Certificate) string {
	t.Helper()
	for n := int64(1); n < 100000; n++ {
		der, err := ocsp.CreateRequest(&x509.Certificate{SerialNumber: big.NewInt(n)}, issuer, nil)
		if err != nil {
			t.Fatal(err)
		}
		if b := base64.StdEncoding.EncodeToString(der); strings.Contains(b, "//") {
			return b
		}
	}
	t.Fatal("no OCSP request with // in its base64")
	return ""
}

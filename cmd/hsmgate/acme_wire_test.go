package main

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	xacme "golang.org/x/crypto/acme"

	"github.com/hsmgate/hsmgate/acme"
	"github.com/hsmgate/hsmgate/client"
	"github.com/hsmgate/hsmgate/hsm/hsmtest"
	"github.com/hsmgate/hsmgate/internal/audit"
	"github.com/hsmgate/hsmgate/internal/auth"
	"github.com/hsmgate/hsmgate/internal/config"
	"github.com/hsmgate/hsmgate/internal/server"
	"github.com/hsmgate/hsmgate/pki"
	hsmgatev1 "github.com/hsmgate/hsmgate/proto/hsmgate/v1"
)

// TestACMETablesMerge: the ACME rules merge with every other table and the
// interceptor accepts them.
func TestACMETablesMerge(t *testing.T) {
	merged, err := auth.Merge(server.SystemRules(), auth.AuthTable(), pki.AuthTable(), acme.AuthTable())
	if err != nil {
		t.Fatalf("Merge: %v", err)
	}
	if _, err := auth.NewInterceptor(auth.Options{Table: merged, Authenticator: &auth.Authenticator{}, Policies: &auth.Policies{}}); err != nil {
		t.Errorf("NewInterceptor: %v", err)
	}
}

// TestSetupACME runs the PKI and ACME builders on a real server: `hsmgate acme directory
// write` and `hsmgate acme eab create` over gRPC, then an ACME client
// registers with that EAB at /acme/<name>/directory on the HTTPS listener.
func TestSetupACME(t *testing.T) {
	dir, files, srv, st := builderServer(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	m := hsmtest.Module(t)
	kek, _, err := m.EnsureKEK(ctx, "kek")
	if err != nil {
		t.Fatal(err)
	}
	al, err := audit.Open(audit.Config{Path: filepath.Join(dir, "audit.log")}, make([]byte, 32))
	if err != nil {
		t.Fatal(err)
	}
	defer al.Close()
	d := &deps{Config: config.Default(), Server: srv, Store: st, HSM: m, KEK: kek, Log: slog.Default(), Rules: auth.Table{}}
	d.Jobs = testJobs(t, d) // jobs_wire_test.go
	base, err := pkiBaseURL(d)
	if err != nil {
		t.Fatal(err)
	}
	if err := setupPKI(ctx, d, base); err != nil {
		t.Fatalf("setupPKI: %v", err)
	}
	if err := setupACME(ctx, d, base, al); err != nil {
		t.Fatalf("setupACME: %v", err)
	}
	defer d.close()
	if _, ok := d.Rules["/hsmgate.v1.ACMEService/CreateEABKey"]; !ok {
		t.Errorf("ACME rules not added")
	}
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ctx) }()
	defer func() { cancel(); <-done }()

	cc, err := client.Dial(client.Options{Addr: srv.GRPCAddr(), CACert: files.CACert})
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()
	p := hsmgatev1.NewPKIServiceClient(cc)
	if _, err := p.CreateRootIssuer(ctx, &hsmgatev1.CreateRootIssuerRequest{Name: "root", Subject: &hsmgatev1.Subject{CommonName: "Wired Root"}}); err != nil {
		t.Fatalf("CreateRootIssuer: %v", err)
	}
	if _, err := p.CreateRole(ctx, &hsmgatev1.CreateRoleRequest{Role: &hsmgatev1.Role{Name: "web", AllowedDomains: []string{"example.com"}, AllowSubdomains: true, ServerFlag: true}}); err != nil {
		t.Fatal(err)
	}
	cli := []string{"--addr", srv.GRPCAddr(), "--cacert", files.CACert}
	out, _, err := execRoot(t, append([]string{"acme", "directory", "write", "web", "--role", "web", "--eab-required", "--allowed-challenge", "http-01"}, cli...)...)
	if err != nil {
		t.Fatalf("acme directory write: %v", err)
	}
	if !strings.Contains(out, "/acme/web/directory") {
		t.Errorf("directory write output lacks the URL: %s", out)
	}
	if _, _, err := execRoot(t, append([]string{"acme", "directory", "write", "bad", "--role", "nope"}, cli...)...); err == nil {
		t.Errorf("directory with an unknown role: no error")
	}
	out, _, err = execRoot(t, append([]string{"acme", "eab", "create", "web"}, cli...)...)
	if err != nil {
		t.Fatalf("acme eab create: %v", err)
	}
	var kid, hk string
	for _, l := range strings.Split(out, "\n") {
		if v, ok := strings.CutPrefix(l, "key_id:"); ok {
			kid = strings.TrimSpace(v)
		}
		if v, ok := strings.CutPrefix(l, "hmac_key:"); ok {
			hk = strings.TrimSpace(v)
		}
	}
	hkey, err := base64.RawURLEncoding.DecodeString(hk)
	if kid == "" || err != nil || len(hkey) != 32 {
		t.Fatalf("eab create output %q", out)
	}
	caPEM, _ := os.ReadFile(files.CACert)
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(caPEM)
	hc := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}, Timeout: 30 * time.Second}
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	c := &xacme.Client{Key: key, HTTPClient: hc, DirectoryURL: "https://" + srv.HTTPAddr() + "/acme/web/directory"}
	dirObj, err := c.Discover(ctx)
	if err != nil {
		t.Fatalf("Discover: %v", err)
	}
	if !dirObj.ExternalAccountRequired {
		t.Errorf("meta.externalAccountRequired: got false, want true")
	}
	if _, err := c.Register(ctx, &xacme.Account{ExternalAccountBinding: &xacme.ExternalAccountBinding{KID: kid, Key: hkey}}, xacme.AcceptTOS); err != nil {
		t.Fatalf("Register with the CLI's EAB: %v", err)
	}
	if b, _ := os.ReadFile(filepath.Join(dir, "audit.log")); !strings.Contains(string(b), `"ACME POST /acme/web/new-account"`) {
		t.Errorf("no audit line for new-account")
	}
	// Once its audit log cannot be written, ACME refuses (fail closed).
	if err := al.Close(); err != nil {
		t.Fatal(err)
	}
	c2 := &xacme.Client{Key: key, HTTPClient: hc, DirectoryURL: c.DirectoryURL}
	sctx, scancel := context.WithTimeout(ctx, 3*time.Second) // x/crypto/acme retries a 503 until its context ends
	defer scancel()
	if _, err := c2.GetReg(sctx, ""); err == nil {
		t.Errorf("ACME answered with its audit log closed")
	}
}

package pki

import (
	"bytes"
	"context"
	"crypto/x509"
	"encoding/pem"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/hsmgate/hsmgate/hsm"
	"github.com/hsmgate/hsmgate/hsm/hsmtest"
	"github.com/hsmgate/hsmgate/internal/clock/clocktest"
	"github.com/hsmgate/hsmgate/keystore/bbolt"
	pb "github.com/hsmgate/hsmgate/proto/hsmgate/v1"
)

type env struct {
	svc   *Service
	srv   *httptest.Server
	clock *clocktest.Fake
	keys  hsm.Keys
}

type envOpt func(*Config)

// newEnv gives a Service over a fresh SoftHSM token and bbolt store, with its
// HTTP handler on a loopback httptest server that is also its BaseURL.
func newEnv(t testing.TB, opts ...envOpt) *env {
	t.Helper()
	m := hsmtest.Module(t)
	st, err := bbolt.Open(filepath.Join(t.TempDir(), "store.db"), bbolt.Options{NoSync: true})
	if err != nil {
		t.Fatalf("open store: %v", err)
	}
	t.Cleanup(func() { st.Close() })
	mux := http.NewServeMux()
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)
	clock := clocktest.New(time.Now().UTC().Truncate(time.Second))
	cfg := Config{Store: st, Keys: m, BaseURL: srv.URL, Now: clock.Now}
	for _, o := range opts {
		o(&cfg)
	}
	svc, err := New(cfg)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	svc.RegisterHTTP(mux)
	return &env{svc: svc, srv: srv, clock: clock, keys: cfg.Keys}
}

func realClock(c *Config) { c.Now = time.Now }

func (e *env) root(t testing.TB, name, kt string) *pb.Issuer {
	t.Helper()
	r, err := e.svc.CreateRootIssuer(context.Background(), &pb.CreateRootIssuerRequest{
		Name: name, KeyType: kt, Subject: &pb.Subject{CommonName: name + " Root CA", Organization: []string{"hsmgate test"}},
	})
	if err != nil {
		t.Fatalf("CreateRootIssuer(%s, %s): %v", name, kt, err)
	}
	return r.Issuer
}

func (e *env) intermediate(t testing.TB, name, kt, parent string, nc *pb.NameConstraints) *pb.Issuer {
	t.Helper()
	r, err := e.svc.CreateIntermediateIssuer(context.Background(), &pb.CreateIntermediateIssuerRequest{
		Name: name, KeyType: kt, Parent: parent, MakeDefault: true, NameConstraints: nc,
		Subject: &pb.Subject{CommonName: name + " Intermediate CA", Organization: []string{"hsmgate test"}},
	})
	if err != nil {
		t.Fatalf("CreateIntermediateIssuer(%s): %v", name, err)
	}
	return r.Issuer
}

func (e *env) role(t testing.TB, r *pb.Role) *pb.Role {
	t.Helper()
	out, err := e.svc.CreateRole(context.Background(), &pb.CreateRoleRequest{Role: r})
	if err != nil {
		t.Fatalf("CreateRole(%s): %v", r.Name, err)
	}
	return out.Role
}

func webRole(name string) *pb.Role {
	return &pb.Role{
		Name: name, AllowedDomains: []string{"example.com"}, AllowSubdomains: true, AllowBareDomains: true,
		ServerFlag: true, ClientFlag: true, Ttl: durationpb.New(24 * time.Hour),
	}
}

func parseCert(t testing.TB, der []byte) *x509.Certificate {
	t.Helper()
	c, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatalf("parse certificate: %v", err)
	}
	return c
}

func pemCerts(ders ...[]byte) []byte {
	var b bytes.Buffer
	for _, d := range ders {
		pem.Encode(&b, &pem.Block{Type: "CERTIFICATE", Bytes: d})
	}
	return b.Bytes()
}

func writeFile(t testing.TB, dir, name string, data []byte) string {
	t.Helper()
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, data, 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// opensslPath returns /usr/bin/openssl, or fails (in CI) or skips the test.
func opensslPath(t testing.TB) string {
	t.Helper()
	p, err := exec.LookPath("openssl")
	if err != nil {
		if os.Getenv("CI") != "" {
			t.Fatalf("openssl not found: %v", err)
		}
		t.Skip("openssl not found")
	}
	return p
}

func openssl(t testing.TB, args ...string) (string, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, opensslPath(t), args...)
	cmd.Stdin = bytes.NewReader(nil)
	out, err := cmd.CombinedOutput()
	return string(out), err
}

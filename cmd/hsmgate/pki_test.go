package main

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/protobuf/encoding/protojson"

	"github.com/hsmgate/hsmgate/hsm"
	"github.com/hsmgate/hsmgate/hsm/hsmtest"
	"github.com/hsmgate/hsmgate/internal/errs"
	"github.com/hsmgate/hsmgate/keystore/bbolt"
	"github.com/hsmgate/hsmgate/pki"
	hsmgatev1 "github.com/hsmgate/hsmgate/proto/hsmgate/v1"
)

// pkiTestServer serves PKIService over TLS on loopback, with domain errors
// mapped as the real server maps them; it returns the address and the CA file.
func pkiTestServer(t *testing.T) (addr, caFile string) {
	t.Helper()
	return pkiTestServerOn(t, hsmtest.Module(t))
}

// pkiTestServerOn is pkiTestServer over a given token.
func pkiTestServerOn(t *testing.T, m *hsm.Module) (addr, caFile string) {
	t.Helper()
	st, err := bbolt.Open(filepath.Join(t.TempDir(), "store.db"), bbolt.Options{NoSync: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	web := httptest.NewServer(nil)
	t.Cleanup(web.Close)
	svc, err := pki.New(pki.Config{Store: st, Keys: m, BaseURL: web.URL})
	if err != nil {
		t.Fatal(err)
	}
	web.Config.Handler = svc.Handler()

	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "test server"}, NotBefore: time.Now().Add(-time.Hour),
		NotAfter: time.Now().Add(time.Hour), IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)}, IsCA: true, BasicConstraintsValid: true,
		KeyUsage: x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		t.Fatal(err)
	}
	caFile = filepath.Join(t.TempDir(), "ca.pem")
	os.WriteFile(caFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o644)
	creds := credentials.NewTLS(&tls.Config{Certificates: []tls.Certificate{{Certificate: [][]byte{der}, PrivateKey: key}}})
	gs := grpc.NewServer(grpc.Creds(creds), grpc.UnaryInterceptor(func(ctx context.Context, req any, _ *grpc.UnaryServerInfo, h grpc.UnaryHandler) (any, error) {
		resp, err := h(ctx, req)
		return resp, errs.ToGRPC(err)
	}))
	hsmgatev1.RegisterPKIServiceServer(gs, svc)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go gs.Serve(ln)
	t.Cleanup(gs.Stop)
	return ln.Addr().String(), caFile
}

func runPKI(t *testing.T, addr, ca string, args ...string) (string, error) {
	t.Helper()
	cmd := newPKICmd()
	var out, errb bytes.Buffer
	cmd.SetOut(&out)
	cmd.SetErr(&errb)
	cmd.SetArgs(args)
	t.Setenv("HSMGATE_ADDR", addr)
	t.Setenv("HSMGATE_CACERT", ca)
	t.Setenv("HSMGATE_TOKEN", "")
	err := cmd.ExecuteContext(context.Background())
	return out.String() + errb.String(), err
}

func TestPKICLI(t *testing.T) {
	addr, ca := pkiTestServer(t)
	dir := t.TempDir()
	mustRun := func(args ...string) string {
		t.Helper()
		out, err := runPKI(t, addr, ca, args...)
		if err != nil {
			t.Fatalf("hsmgate pki %s: %v\n%s", strings.Join(args, " "), err, out)
		}
		return out
	}
	mustRun("issuer", "create-root", "root", "--cn", "CLI Root", "--key-type", "ecdsa-p256", "--cert-out", filepath.Join(dir, "root.pem"))
	mustRun("issuer", "create-intermediate", "im", "--cn", "CLI Intermediate", "--parent", "root", "--default")
	csrOut := filepath.Join(dir, "ext.csr")
	mustRun("issuer", "create-intermediate", "ext", "--cn", "External-rooted", "--csr-out", csrOut)
	if b, _ := os.ReadFile(csrOut); !bytes.Contains(b, []byte("BEGIN CERTIFICATE REQUEST")) {
		t.Errorf("create-intermediate without --parent wrote no CSR")
	}
	if out := mustRun("issuer", "list"); !strings.Contains(out, "im (default)") || !strings.Contains(out, "ext\tpending") {
		t.Errorf("issuer list:\n%s", out)
	}
	mustRun("role", "write", "web", "--allowed-domain", "example.com", "--allow-subdomains")
	mustRun("role", "write", "web", "--max-ttl", "2160h")
	out := mustRun("role", "read", "web")
	var role hsmgatev1.Role
	if err := protojson.Unmarshal([]byte(out), &role); err != nil {
		t.Fatalf("role read: %v\n%s", err, out)
	}
	if role.GetMaxTtl().AsDuration() != 2160*time.Hour || !role.GetAllowSubdomains() || !role.GetRequireCn() {
		t.Errorf("role read after a partial write:\n%s", out)
	}
	if out := mustRun("role", "list"); strings.TrimSpace(out) != "web" {
		t.Errorf("role list = %q", out)
	}
	tlsDir := filepath.Join(dir, "tls")
	out = mustRun("issue", "web", "--cn", "api.example.com", "--san", "www.example.com", "--out-dir", tlsDir)
	serial := strings.Fields(strings.SplitN(out, "\n", 2)[0])[1]
	for _, f := range []string{"cert.pem", "key.pem", "chain.pem", "fullchain.pem", "ca.pem"} {
		if _, err := os.Stat(filepath.Join(tlsDir, f)); err != nil {
			t.Errorf("issue did not write %s: %v", f, err)
		}
	}
	if fi, _ := os.Stat(filepath.Join(tlsDir, "key.pem")); fi == nil || fi.Mode().Perm() != 0o600 {
		t.Errorf("key.pem mode %v, want 0600", fi.Mode().Perm())
	}
	if _, err := runPKI(t, addr, ca, "issue", "web", "--cn", "api.example.org", "--out-dir", tlsDir); err == nil {
		t.Errorf("issue for a name outside the role succeeded")
	}
	// sign a CSR made with openssl-free Go.
	k, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	csrDER, _ := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{Subject: pkix.Name{CommonName: "b.example.com"}}, k)
	csrFile := filepath.Join(dir, "req.pem")
	os.WriteFile(csrFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: csrDER}), 0o644)
	out = mustRun("sign", "web", "--csr", csrFile)
	if strings.Count(out, "BEGIN CERTIFICATE") != 3 {
		t.Errorf("sign printed %d certificates, want 3 (leaf, intermediate, root)", strings.Count(out, "BEGIN CERTIFICATE"))
	}
	if out := mustRun("revoke", serial, "--reason", "keyCompromise"); !strings.Contains(out, "revoked at") {
		t.Errorf("revoke: %s", out)
	}
	if out := mustRun("cert", "list", "--revoked"); !strings.Contains(out, serial) || !strings.Contains(out, "\trevoked\t") {
		t.Errorf("cert list --revoked lacks %s as revoked:\n%s", serial, out)
	}
}

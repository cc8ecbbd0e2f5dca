package acme

import (
	"bytes"
	"context"
	"crypto/x509"
	"encoding/pem"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/crypto/ocsp"
)

// tool returns the path of a command, failing in CI and skipping elsewhere when it is missing.
func tool(t *testing.T, name string) string {
	t.Helper()
	p, err := exec.LookPath(name)
	if err != nil {
		if os.Getenv("CI") != "" {
			t.Fatalf("%s not found: %v", name, err)
		}
		t.Skipf("%s not found", name)
	}
	return p
}

// freePort returns a loopback TCP port that was free a moment ago (certbot
// standalone needs a port number, not a listener).
func freePort(t *testing.T) int {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// TestCertbot: Debian's certbot in standalone http-01 mode, with and
// without EAB, gets a certificate that `openssl verify` accepts against our
// root; `certbot revoke` makes our OCSP answer revoked.
func TestCertbot(t *testing.T) {
	certbot := tool(t, "certbot")
	openssl := tool(t, "openssl")
	for _, eab := range []bool{false, true} {
		name := "no EAB"
		if eab {
			name = "EAB"
		}
		t.Run(name, func(t *testing.T) {
			port := freePort(t)
			e := newEnv(t, envOpts{eab: eab, httpPort: port})
			dir := t.TempDir()
			bundle := filepath.Join(dir, "server-ca.pem")
			os.WriteFile(bundle, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: e.https.Certificate().Raw}), 0o600)
			root := filepath.Join(dir, "root.pem")
			rootPEM := e.get(t, "/pki/ca")
			os.WriteFile(root, rootPEM, 0o600)
			run := func(args ...string) string {
				t.Helper()
				ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
				defer cancel()
				base := []string{"--non-interactive", "--config-dir", filepath.Join(dir, "cfg"), "--work-dir", filepath.Join(dir, "work"),
					"--logs-dir", filepath.Join(dir, "logs"), "--server", e.dirURL}
				cmd := exec.CommandContext(ctx, certbot, append(args, base...)...)
				cmd.Env = append(os.Environ(), "REQUESTS_CA_BUNDLE="+bundle)
				out, err := cmd.CombinedOutput()
				if err != nil {
					log, _ := os.ReadFile(filepath.Join(dir, "logs", "letsencrypt.log"))
					t.Fatalf("certbot %s: %v\n%s\n--- log tail:\n%s", args[0], err, out, tail(log, 4000))
				}
				return string(out)
			}
			args := []string{"certonly", "--standalone", "--agree-tos", "-m", "ops@example.com",
				"--http-01-port", strconv.Itoa(port), "--http-01-address", "127.0.0.1", "--key-type", "ecdsa",
				"-d", "www.example.com", "-d", "example.com", "--cert-name", "web"}
			if eab {
				kid, hk, err := e.srv.CreateEAB(context.Background(), "main", nil)
				if err != nil {
					t.Fatal(err)
				}
				args = append(args, "--eab-kid", kid, "--eab-hmac-key", hk)
			}
			run(args...)
			live := filepath.Join(dir, "cfg", "live", "web")
			out, err := exec.Command(openssl, "verify", "-CAfile", root, filepath.Join(live, "cert.pem")).CombinedOutput()
			if err != nil || !strings.Contains(string(out), ": OK") {
				t.Fatalf("openssl verify: %v: %s", err, out)
			}
			certPEM, _ := os.ReadFile(filepath.Join(live, "cert.pem"))
			leaf := parsePEMCert(t, certPEM)
			if got := leaf.DNSNames; len(got) != 2 {
				t.Errorf("DNS names: got %v, want www.example.com and example.com", got)
			}
			issuer := parsePEMCert(t, rootPEM)
			if st := e.ocspStatus(t, leaf, issuer); st != ocsp.Good {
				t.Errorf("OCSP before revoke: got %d, want good", st)
			}
			run("revoke", "--cert-path", filepath.Join(live, "cert.pem"), "--no-delete-after-revoke", "--reason", "keycompromise")
			if st := e.ocspStatus(t, leaf, issuer); st != ocsp.Revoked {
				t.Errorf("OCSP after certbot revoke: got %d, want revoked (%d)", st, ocsp.Revoked)
			}
		})
	}
}

func tail(b []byte, n int) []byte {
	if len(b) > n {
		return b[len(b)-n:]
	}
	return b
}

func parsePEMCert(t testing.TB, b []byte) *x509.Certificate {
	t.Helper()
	blk, _ := pem.Decode(b)
	if blk == nil {
		t.Fatal("no PEM certificate")
	}
	c, err := x509.ParseCertificate(blk.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// get fetches a path of the env's HTTPS listener.
func (e *env) get(t testing.TB, path string) []byte {
	t.Helper()
	resp, err := e.client().Get(e.https.URL + path)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != 200 {
		t.Fatalf("GET %s: %s", path, resp.Status)
	}
	return b
}

// ocspStatus asks the OCSP responder over HTTP (POST /pki/ocsp).
func (e *env) ocspStatus(t testing.TB, leaf, issuer *x509.Certificate) int {
	t.Helper()
	req, err := ocsp.CreateRequest(leaf, issuer, nil)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := e.client().Post(leaf.OCSPServer[0], "application/ocsp-request", bytes.NewReader(req))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	der, _ := io.ReadAll(resp.Body)
	r, err := ocsp.ParseResponse(der, issuer)
	if err != nil {
		t.Fatalf("OCSP response: %v", err)
	}
	return r.Status
}

package main

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/hsmgate/hsmgate/client"
	hsmgatev1 "github.com/hsmgate/hsmgate/proto/hsmgate/v1"
)

// promtoolPath finds promtool on PATH or in $(go env GOPATH)/bin (where
// `go install github.com/prometheus/prometheus/cmd/promtool@v0.316.0` puts
// it). Missing: the test fails under CI=true, else skips.
func promtoolPath(t *testing.T) string {
	t.Helper()
	if p, err := exec.LookPath("promtool"); err == nil {
		return p
	}
	if out, err := exec.Command("go", "env", "GOPATH").Output(); err == nil {
		p := filepath.Join(strings.TrimSpace(string(out)), "bin", "promtool")
		if _, err := os.Stat(p); err == nil {
			return p
		}
	}
	if os.Getenv("CI") == "true" {
		t.Fatal("promtool not found (go install github.com/prometheus/prometheus/cmd/promtool@v0.316.0)")
	}
	t.Skip("promtool not found")
	return ""
}

// TestMetricsScrape starts `hsmgate dev` (every engine loaded), makes some
// traffic on each engine, scrapes /metrics and runs `promtool check metrics`
// on it; the scrape has the families of the HSM, PKI, SSH and transit, and
// names no transit key (per-key labels are off by default).
func TestMetricsScrape(t *testing.T) {
	requireSoftHSM(t)
	promtool := promtoolPath(t)
	dev := startDev(t, filepath.Join(t.TempDir(), "state"))
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	conn, err := client.Dial(client.Options{
		Addr: dev.exports["HSMGATE_ADDR"], CACert: dev.exports["HSMGATE_CACERT"], Token: dev.exports["HSMGATE_TOKEN"],
	})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	must := func(what string, err error) {
		t.Helper()
		if err != nil {
			t.Fatalf("%s: %v", what, err)
		}
	}

	// Transit: an encryption key and a signing key with secret-looking names.
	tr := hsmgatev1.NewTransitServiceClient(conn)
	_, err = tr.CreateKey(ctx, &hsmgatev1.CreateKeyRequest{Name: "payroll-secret-key", Type: hsmgatev1.TransitKeyType_TRANSIT_KEY_TYPE_AES256_GCM})
	must("create aes key", err)
	_, err = tr.CreateKey(ctx, &hsmgatev1.CreateKeyRequest{Name: "release-signing-key", Type: hsmgatev1.TransitKeyType_TRANSIT_KEY_TYPE_ED25519})
	must("create ed25519 key", err)
	_, err = tr.Encrypt(ctx, &hsmgatev1.EncryptRequest{Name: "payroll-secret-key", Items: []*hsmgatev1.EncryptItem{{Plaintext: []byte("x")}, {Plaintext: []byte("y")}}})
	must("encrypt", err)
	_, err = tr.SignData(ctx, &hsmgatev1.SignDataRequest{Name: "release-signing-key", Items: []*hsmgatev1.SignItem{{Input: []byte("x")}}})
	must("sign", err)

	// PKI: a root, a role, one issued and one refused certificate.
	pk := hsmgatev1.NewPKIServiceClient(conn)
	_, err = pk.CreateRootIssuer(ctx, &hsmgatev1.CreateRootIssuerRequest{Name: "root", KeyType: "ecdsa-p256", Subject: &hsmgatev1.Subject{CommonName: "Metrics Root"}})
	must("create root", err)
	_, err = pk.CreateRole(ctx, &hsmgatev1.CreateRoleRequest{Role: &hsmgatev1.Role{
		Name: "web", AllowedDomains: []string{"example.com"}, AllowSubdomains: true, ServerFlag: true, Ttl: durationpb.New(time.Hour),
	}})
	must("create role", err)
	_, err = pk.Issue(ctx, &hsmgatev1.IssueRequest{Role: "web", CommonName: "a.example.com"})
	must("issue", err)
	if _, err := pk.Issue(ctx, &hsmgatev1.IssueRequest{Role: "web", CommonName: "evil.org"}); err == nil {
		t.Fatal("issue evil.org: got no error")
	}

	// SSH: a user CA, a role, one signed and one refused certificate.
	sc := hsmgatev1.NewSSHCAServiceClient(conn)
	_, err = sc.CreateSSHCA(ctx, &hsmgatev1.CreateSSHCARequest{Name: "users", CertType: hsmgatev1.SSHCertType_SSH_CERT_TYPE_USER, KeyType: hsmgatev1.SSHKeyType_SSH_KEY_TYPE_ED25519})
	must("create ssh ca", err)
	_, err = sc.CreateSSHRole(ctx, &hsmgatev1.CreateSSHRoleRequest{Role: &hsmgatev1.SSHRole{
		Name: "eng", Ca: "users", CertType: hsmgatev1.SSHCertType_SSH_CERT_TYPE_USER, AllowedPrincipals: []string{"alice"},
	}})
	must("create ssh role", err)
	pub, _, _ := ed25519.GenerateKey(rand.Reader)
	spub, err := ssh.NewPublicKey(pub)
	must("ssh key", err)
	key := strings.TrimSpace(string(ssh.MarshalAuthorizedKey(spub)))
	_, err = sc.SignUserKey(ctx, &hsmgatev1.SignUserKeyRequest{Role: "eng", Items: []*hsmgatev1.SSHSignItem{
		{PublicKey: key, Principals: []string{"alice"}}, {PublicKey: key, Principals: []string{"root"}},
	}})
	must("ssh sign", err)

	text := scrape(t, dev)
	t.Run("promtool check metrics", func(t *testing.T) {
		cmd := exec.Command(promtool, "check", "metrics")
		cmd.Stdin = strings.NewReader(text)
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("promtool check metrics: %v\n%s", err, out)
		}
	})
	t.Run("families present", func(t *testing.T) {
		for _, want := range []string{
			`hsmgate_build_info{goversion="go`,
			`hsmgate_dependency_up{dependency="hsm"} 1`,
			`hsmgate_dependency_up{dependency="store"} 1`,
			`hsmgate_hsm_sessions{state="idle"}`,
			`hsmgate_hsm_logged_in 1`,
			`hsmgate_hsm_call_duration_seconds_bucket{function="C_Sign"`,
			`hsmgate_transit_items_total{op="encrypt",type="aes256-gcm"} 2`,
			`hsmgate_transit_items_total{op="sign",type="ed25519"} 1`,
			`hsmgate_pki_issued_total{role="web"} 1`,
			`hsmgate_pki_refused_total{reason="not_allowed",role="web"} 1`,
			`hsmgate_pki_ca_expiry_seconds{issuer="root"}`,
			`hsmgate_ssh_signed_total{role="eng",type="user"} 1`,
			`hsmgate_ssh_refused_total{reason="not_allowed",role="eng",type="user"} 1`,
			`hsmgate_ssh_krl_age_seconds`,
			`hsmgate_audit_writable`,
			`hsmgate_leader{replica="`, // internal/leader: 1 once this replica leads
			`hsmgate_leader_live_replicas`,
		} {
			if !strings.Contains(text, want) {
				t.Errorf("scrape has no %s", want)
			}
		}
	})
	t.Run("no key names, no impossible operations", func(t *testing.T) {
		for _, bad := range []string{"payroll-secret-key", "release-signing-key", `op="encrypt",type="ed25519"`, `op="sign",type="aes256-gcm"`} {
			if strings.Contains(text, bad) {
				t.Errorf("scrape contains %s", bad)
			}
		}
	})
}

// scrape GETs /metrics from the dev server's HTTPS listener.
func scrape(t *testing.T, dev *devProcess) string {
	t.Helper()
	// /metrics is served only on its own plain-HTTP listener (listen.metrics).
	c := &http.Client{Timeout: time.Minute}
	resp, err := c.Get("http://" + dev.exports[EnvMetricsAddr] + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var b bytes.Buffer
	if _, err := io.Copy(&b, resp.Body); err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET /metrics: got %s, want 200\n%s", resp.Status, b.String())
	}
	return b.String()
}

package main

import (
	"context"
	"crypto/x509"
	"io"
	"net/http"
	"os"
	"regexp"
	"sort"
	"strings"
	"testing"
	"time"

	zx509 "github.com/zmap/zcrypto/x509"
	"github.com/zmap/zlint/v3"
	"github.com/zmap/zlint/v3/lint"
	"google.golang.org/protobuf/types/known/durationpb"
	"gopkg.in/yaml.v3"

	hsmgatev1 "github.com/hsmgate/hsmgate/proto/hsmgate/v1"
)

// kubeConfigMap is the Kubernetes manifests' server config.
const kubeConfigMap = "../../deploy/kubernetes/configmap.yaml"

// kubeServerConfig returns the hsmgate.yaml of deploy/kubernetes/configmap.yaml
// as a map, and its pki.base_url.
func kubeServerConfig(t *testing.T) (map[string]any, string) {
	t.Helper()
	b, err := os.ReadFile(kubeConfigMap)
	if err != nil {
		t.Fatal(err)
	}
	var cm struct {
		Data map[string]string `yaml:"data"`
	}
	if err := yaml.Unmarshal(b, &cm); err != nil {
		t.Fatalf("%s: %v", kubeConfigMap, err)
	}
	var c map[string]any
	if err := yaml.Unmarshal([]byte(cm.Data["hsmgate.yaml"]), &c); err != nil {
		t.Fatalf("%s: data hsmgate.yaml: %v", kubeConfigMap, err)
	}
	pki, _ := c["pki"].(map[string]any)
	base, _ := pki["base_url"].(string)
	if base == "" {
		t.Fatalf("%s: no pki.base_url", kubeConfigMap)
	}
	return c, base
}

// kubeReplicaConfig is the Kubernetes config with what names the pod's
// mounts and the cluster's services replaced by this machine's (listen
// addresses, TLS files, PKCS#11 module and PIN, etcd endpoints without
// client TLS, audit files, replica id); every other setting (pki, auth,
// limits, timeouts, log) is kept as deployed.
func kubeReplicaConfig(t *testing.T, f replicaFiles) string {
	t.Helper()
	c, _ := kubeServerConfig(t)
	sub := func(k string) map[string]any {
		m, ok := c[k].(map[string]any)
		if !ok {
			t.Fatalf("%s: no %s section", kubeConfigMap, k)
		}
		return m
	}
	c["listen"] = map[string]any{"grpc": "127.0.0.1:0", "http": "127.0.0.1:0", "pki": "127.0.0.1:0"}
	tls := sub("tls")
	tls["cert"], tls["key"], tls["client_ca"] = f.Cert, f.Key, f.CACert
	hsm := sub("hsm")
	hsm["library"], hsm["token_label"], hsm["pin_file"] = f.Library, f.TokenLabel, f.PINFile
	delete(hsm, "pin_env")
	etcd := sub("store")["etcd"].(map[string]any)
	etcd["endpoints"] = f.Endpoints
	delete(etcd, "tls")
	audit := sub("audit")
	audit["path"], audit["hmac_key_file"], audit["stdout"] = f.AuditLog, f.AuditKey, false
	delete(audit, "hmac_key_env")
	sub("log")["format"] = "text" // the harness reads the serving line
	c["shutdown"] = map[string]any{"drain": "0s", "timeout": "2s"}
	c["replica"] = map[string]any{"id": f.ID, "election_ttl": f.ElectionTTL.String()}
	b, err := yaml.Marshal(c)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// TestKubernetesConfigCertificate: a replica run with the settings of
// deploy/kubernetes/configmap.yaml (on etcd, like the Deployment) issues
// certificates whose AIA (CA issuers, OCSP) and CRL distribution point
// URLs start with the configured pki.base_url, never the pod's own address
// or localhost; and zlint's whole registry (every source, no lint left out)
// finds no error in them. Each of those URLs, sent to the replica's
// plain-HTTP listen.pki (what the Service's port "pki" forwards to), answers.
func TestKubernetesConfigCertificate(t *testing.T) {
	if testing.Short() {
		t.Skip("starts etcd and an hsmgate server: not with -short")
	}
	_, base := kubeServerConfig(t)
	rs := startReplicas(t, replicaOpts{n: 1, members: 1, requestTimeout: 2 * time.Second,
		config: func(f replicaFiles) string { return kubeReplicaConfig(t, f) }})
	r := rs.Replicas[0]
	m := regexp.MustCompile(`msg=serving .* pki=(\S+)`).FindStringSubmatch(r.logs.String())
	if m == nil || m[1] == "" {
		t.Fatalf("replica serves no listen.pki:\n%s", r.logs)
	}
	pkiAddr := m[1]
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	if _, err := r.PKI.CreateRootIssuer(ctx, &hsmgatev1.CreateRootIssuerRequest{
		Name: "root", KeyType: "ecdsa-p256", Subject: &hsmgatev1.Subject{CommonName: "Kubernetes Example Root"},
		Ttl: durationpb.New(10 * 365 * 24 * time.Hour), MakeDefault: true,
	}); err != nil {
		t.Fatalf("CreateRootIssuer: %v", err)
	}
	// Both roles name a certificate policy: the CA/Browser Forum lints of
	// the whole registry want one in every subscriber certificate
	// (e_sub_cert_certificate_policies_missing otherwise), which is the
	// role's choice, not the deployment's.
	for _, role := range []*hsmgatev1.Role{
		// The default (internal) lint profile, as most roles are.
		{Name: "internal", AllowedDomains: []string{"example.com"}, AllowSubdomains: true,
			Ttl: durationpb.New(24 * time.Hour), MaxTtl: durationpb.New(24 * time.Hour), ServerFlag: true,
			PolicyIdentifiers: []string{"2.23.140.1.2.1"}},
		// The public profile (CA/Browser Forum lints at issuance too).
		{Name: "public", AllowedDomains: []string{"example.com"}, AllowSubdomains: true,
			Ttl: durationpb.New(24 * time.Hour), MaxTtl: durationpb.New(24 * time.Hour), ServerFlag: true,
			LintProfile: "public", PolicyIdentifiers: []string{"2.23.140.1.2.1"}},
	} {
		t.Run(role.GetName(), func(t *testing.T) {
			if _, err := r.PKI.CreateRole(ctx, &hsmgatev1.CreateRoleRequest{Role: role}); err != nil {
				t.Fatalf("CreateRole: %v", err)
			}
			resp, err := r.PKI.Issue(ctx, &hsmgatev1.IssueRequest{Role: role.GetName(), CommonName: "payments.example.com"})
			if err != nil {
				t.Fatalf("Issue: %v", err)
			}
			cert, err := x509.ParseCertificate(resp.GetCertificate())
			if err != nil {
				t.Fatal(err)
			}
			urls := map[string][]string{"AIA CA issuers": cert.IssuingCertificateURL, "AIA OCSP": cert.OCSPServer, "CRL distribution points": cert.CRLDistributionPoints}
			for what, us := range urls {
				if len(us) == 0 {
					t.Errorf("%s: none, want URLs under %s", what, base)
				}
				for _, u := range us {
					if !strings.HasPrefix(u, base+"/") {
						t.Errorf("%s: got %s, want a URL under pki.base_url %s", what, u, base)
					}
					if strings.Contains(u, "localhost") || strings.Contains(u, "127.0.0.1") || strings.Contains(u, r.Addr) {
						t.Errorf("%s: got %s, which names this replica or localhost", what, u)
					}
					if what == "AIA OCSP" {
						continue // a responder URL: requests go under it
					}
					// What the Service forwards there: the replica's plain-HTTP listener.
					resp, err := http.Get("http://" + pkiAddr + strings.TrimPrefix(u, base))
					if err != nil {
						t.Fatalf("%s %s on listen.pki: %v", what, u, err)
					}
					body, _ := io.ReadAll(resp.Body)
					resp.Body.Close()
					if resp.StatusCode != http.StatusOK || len(body) == 0 {
						t.Errorf("%s %s on listen.pki: got %s (%d bytes), want 200 with the object", what, u, resp.Status, len(body))
					}
				}
			}
			zc, err := zx509.ParseCertificate(resp.GetCertificate())
			if err != nil {
				t.Fatal(err)
			}
			var bad []string
			for name, res := range zlint.LintCertificateEx(zc, lint.GlobalRegistry()).Results {
				if res.Status == lint.Error || res.Status == lint.Fatal {
					bad = append(bad, name+": "+res.Details)
				}
			}
			sort.Strings(bad)
			if len(bad) != 0 {
				t.Errorf("zlint (whole registry, %d lints) found %d errors:\n  %s", len(lint.GlobalRegistry().Names()), len(bad), strings.Join(bad, "\n  "))
			}
		})
	}
}

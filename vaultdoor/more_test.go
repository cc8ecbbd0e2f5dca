package vaultdoor_test

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"errors"
	"net/http"
	"strings"
	"testing"
	"time"

	vault "github.com/hashicorp/vault/api"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/hsmgate/hsmgate/internal/auth"
	"github.com/hsmgate/hsmgate/internal/devtls"
	pb "github.com/hsmgate/hsmgate/proto/hsmgate/v1"
)

// TestKubernetesAndCertLogin: cert-manager's Kubernetes login request, and
// the cert method over mTLS, answer Vault's auth block with a working token.
func TestKubernetesAndCertLogin(t *testing.T) {
	e := newEnv(t)
	e.policy("cert-manager", map[string][]string{"transit/random": {"read"}})
	t.Run("kubernetes", func(t *testing.T) {
		c := e.vaultClient("")
		r := c.NewRequest("POST", "/v1/auth/kubernetes/login")
		_ = r.SetJSONBody(map[string]string{"role": "cert-manager", "jwt": "test.service-account.jwt"})
		resp, err := c.RawRequest(r)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var s vault.Secret
		if err := resp.DecodeJSON(&s); err != nil {
			t.Fatal(err)
		}
		tok, _ := s.TokenID()
		if code, body := e.do("POST", "/v1/transit/random/8", tok, nil); code != 200 {
			t.Errorf("the login's token: got %d %s, want 200", code, body)
		}
		r = c.NewRequest("POST", "/v1/auth/kubernetes/login")
		_ = r.SetJSONBody(map[string]string{"role": "cert-manager", "jwt": "forged"})
		var re *vault.ResponseError
		if _, err := c.RawRequest(r); !errors.As(err, &re) || re.StatusCode != 403 {
			t.Errorf("forged JWT: got %v, want 403", err)
		}
	})
	t.Run("cert over mTLS", func(t *testing.T) {
		ca, caKey, err := devtls.Load(e.caFile, e.caKeyFile)
		if err != nil {
			t.Fatal(err)
		}
		cert, key, err := devtls.Issue(ca, caKey, devtls.Template{CommonName: "billing"}, time.Now())
		if err != nil {
			t.Fatal(err)
		}
		client := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{
			RootCAs: e.caPool, Certificates: []tls.Certificate{{Certificate: [][]byte{cert.Raw}, PrivateKey: key, Leaf: cert}},
		}}}
		resp, err := client.Post(e.url+"/v1/auth/cert/login", "application/json", strings.NewReader(`{"name":""}`))
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var out struct {
			Auth struct {
				ClientToken string `json:"client_token"`
			}
		}
		if err := json.NewDecoder(resp.Body).Decode(&out); err != nil || resp.StatusCode != 200 || !strings.HasPrefix(out.Auth.ClientToken, "hgs.") {
			t.Fatalf("cert login: %d %v %+v", resp.StatusCode, err, out)
		}
		if code, _ := e.do("POST", "/v1/auth/cert/login", "", nil); code != 403 {
			t.Errorf("cert login without a certificate: got %d, want 403", code)
		}
	})
}

// TestRateLimited: the RPC's rate limit applies on the door (429).
func TestRateLimited(t *testing.T) {
	e := newEnv(t, func(c *auth.Config) {
		c.RateLimits.Resources = []auth.ResourceLimit{{Match: "transit/random", Limit: auth.Limit{Rate: 0.0001, Burst: 1}}}
	})
	if code, body := e.do("POST", "/v1/transit/random/8", e.root, nil); code != 200 {
		t.Fatalf("first: %d %s", code, body)
	}
	code, body := e.do("POST", "/v1/transit/random/8", e.root, nil)
	if code != http.StatusTooManyRequests {
		t.Fatalf("second: got %d %s, want 429", code, body)
	}
	vaultErrors(t, body)
}

// TestHealthUnavailable: sys/health answers 503 (Vault's sealed code, or the
// sealedcode asked for) when the store does not answer.
func TestHealthUnavailable(t *testing.T) {
	e := newEnv(t)
	if code, _ := e.do("GET", "/v1/sys/health?standbyok=true&perfstandbyok=true", "", nil); code != 200 {
		t.Fatalf("healthy: got %d, want 200", code)
	}
	if code, _ := e.do("GET", "/v1/sys/health?standbyok=maybe", "", nil); code != 400 {
		t.Errorf("bad standbyok: got %d, want 400", code)
	}
	_ = e.store.Close()
	code, body := e.do("GET", "/v1/sys/health", "", nil)
	var h map[string]any
	_ = json.Unmarshal(body, &h)
	if code != http.StatusServiceUnavailable || h["sealed"] != true {
		t.Errorf("store closed: got %d %s, want 503 sealed", code, body)
	}
	if code, _ := e.do("GET", "/v1/sys/health?sealedcode=299", "", nil); code != 299 {
		t.Errorf("sealedcode=299: got %d", code)
	}
}

// TestPKIReadsAndRevoke: the public PKI reads and revoke by serial.
func TestPKIReadsAndRevoke(t *testing.T) {
	e := newEnv(t)
	if _, err := e.pki.CreateRole(e.rootCtx, &pb.CreateRoleRequest{Role: &pb.Role{
		Name: "web", AllowedDomains: []string{"example.com"}, AllowSubdomains: true, ServerFlag: true, MaxTtl: durationpb.New(2400 * time.Hour),
	}}); err != nil {
		t.Fatal(err)
	}
	issuer, err := e.pki.GetIssuer(e.rootCtx, &pb.GetIssuerRequest{Name: "default"})
	if err != nil {
		t.Fatal(err)
	}
	der := issuer.GetIssuer().GetCertificate()
	for _, tc := range []struct {
		path  string
		check func([]byte) bool
	}{
		{"/v1/pki/ca", func(b []byte) bool { return string(b) == string(der) }},
		{"/v1/pki/ca/pem", func(b []byte) bool { blk, _ := pem.Decode(b); return blk != nil && string(blk.Bytes) == string(der) }},
		{"/v1/pki/ca_chain", func(b []byte) bool { return strings.Count(string(b), "BEGIN CERTIFICATE") == 2 }},
		{"/v1/pki/cert/ca_chain", func(b []byte) bool { return strings.Contains(string(b), `"certificate":"-----BEGIN CERTIFICATE`) }},
		{"/v1/pki/cert/ca", func(b []byte) bool { return strings.Contains(string(b), `"certificate":"-----BEGIN CERTIFICATE`) }},
		{"/v1/pki/crl", func(b []byte) bool { _, err := x509.ParseRevocationList(b); return err == nil }},
		{"/v1/pki/crl/pem", func(b []byte) bool { blk, _ := pem.Decode(b); return blk != nil && blk.Type == "X509 CRL" }},
	} {
		code, body := e.do("GET", tc.path, "", nil)
		if code != 200 || !tc.check(body) {
			t.Errorf("GET %s: %d %.120q", tc.path, code, body)
		}
	}
	code, body := e.do("POST", "/v1/pki/issue/web", e.root, map[string]any{"common_name": "x.example.com", "format": "der", "private_key_format": "pkcs8"})
	if code != 200 {
		t.Fatalf("issue: %d %s", code, body)
	}
	var r struct{ Data map[string]any }
	_ = json.Unmarshal(body, &r)
	serial := r.Data["serial_number"].(string)
	code, body = e.do("GET", "/v1/pki/cert/"+strings.ReplaceAll(serial, ":", "-"), "", nil)
	if code != 200 || !strings.Contains(string(body), `"revocation_time":0`) {
		t.Fatalf("cert/<serial>: %d %s", code, body)
	}
	if code, body := e.do("POST", "/v1/pki/revoke", e.root, map[string]any{"serial_number": serial}); code != 200 || !strings.Contains(string(body), `"state":"revoked"`) {
		t.Fatalf("revoke: %d %s", code, body)
	}
	if code, body := e.do("GET", "/v1/pki/cert/"+serial, "", nil); code != 200 || strings.Contains(string(body), `"revocation_time":0`) {
		t.Errorf("cert after revoke: %d %s", code, body)
	}
	_ = context.Background
}

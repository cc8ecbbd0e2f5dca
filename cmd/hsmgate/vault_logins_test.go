package main

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"encoding/json"
	"encoding/pem"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	jose "github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"
	vault "github.com/hashicorp/vault/api"
)

func TestVaultDoorAppRoleLogin(t *testing.T) {
	requireSoftHSM(t)
	dev := startDev(t, filepath.Join(t.TempDir(), "state"))
	env := dev.env()
	mustRun := func(args ...string) string {
		out, errOut, code := run(t, env, args...)
		if code != 0 {
			t.Fatalf("%v: %s", args, errOut)
		}
		return out
	}
	pol := filepath.Join(t.TempDir(), "p.yaml")
	os.WriteFile(pol, []byte("rules:\n  - resource: transit/random\n    capabilities: [read]\n"), 0o600)
	mustRun("policy", "write", "rnd", pol)
	out := mustRun("auth", "approle", "write", "cm", "--policy", "rnd", "--token-ttl", "20m")
	roleID := regexp.MustCompile(`role_id ([0-9a-f-]{36})`).FindStringSubmatch(out)[1]
	secret := strings.TrimSpace(mustRun("auth", "approle", "secret-id", "create", "cm", "--secret-only"))
	cfg := vault.DefaultConfig()
	cfg.Address = dev.exports["VAULT_ADDR"]
	cfg.ConfigureTLS(&vault.TLSConfig{CACert: dev.exports["VAULT_CACERT"]})
	c, _ := vault.NewClient(cfg)
	c.ClearToken()
	s, err := c.Logical().Write("auth/approle/login", map[string]any{"role_id": roleID, "secret_id": secret})
	if err != nil {
		t.Fatal(err)
	}
	tok, _ := s.TokenID()
	t.Logf("policies %v ttl %d", s.Auth.Policies, s.Auth.LeaseDuration)
	c.SetToken(tok)
	r, err := c.Logical().Write("transit/random/8", nil)
	if err != nil || r.Data["random_bytes"] == nil {
		t.Fatalf("random: %v %v", r, err)
	}
	if _, err := c.Logical().Write("auth/approle/login", map[string]any{"role_id": roleID, "secret_id": "x"}); err == nil {
		t.Fatal("bad secret accepted")
	}
	audit, _ := os.ReadFile(filepath.Join(dev.exports["HSMGATE_CACERT"], "..", "..", "audit.log"))
	if !strings.Contains(string(audit), "vault auth/approle/login") || strings.Contains(string(audit), tok) {
		t.Errorf("audit: login line missing or token present")
	}
}

// TestVaultDoorKubernetesLogin: cert-manager's Kubernetes auth through the
// door, with vault/api, against a dev server configured by the CLI with a
// test key set: a service-account JWT signed by it logs in and its token
// works; a JWT of another service account, or signed by another key, does not.
func TestVaultDoorKubernetesLogin(t *testing.T) {
	requireSoftHSM(t)
	dir := t.TempDir()
	dev := startDev(t, filepath.Join(dir, "state"))
	env := dev.env()
	mustRun := func(args ...string) string {
		t.Helper()
		out, errOut, code := run(t, env, args...)
		if code != 0 {
			t.Fatalf("%v: %s", args, errOut)
		}
		return out
	}
	const issuer = "https://kubernetes.default.svc.cluster.local"
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	other, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	jwks, err := json.Marshal(jose.JSONWebKeySet{Keys: []jose.JSONWebKey{{Key: key.Public(), KeyID: "k1", Algorithm: "ES256", Use: "sig"}}})
	if err != nil {
		t.Fatal(err)
	}
	jwksFile := filepath.Join(dir, "jwks.json")
	if err := os.WriteFile(jwksFile, jwks, 0o600); err != nil {
		t.Fatal(err)
	}
	pol := filepath.Join(dir, "p.yaml")
	os.WriteFile(pol, []byte("rules:\n  - resource: transit/random\n    capabilities: [read]\n"), 0o600)
	mustRun("policy", "write", "rnd", pol)
	mustRun("auth", "kubernetes", "config", "--issuer", issuer, "--jwks-file", jwksFile, "--audience", "hsmgate")
	mustRun("auth", "kubernetes", "role", "write", "cert-manager", "--sa-name", "cert-manager", "--sa-namespace", "cert-manager", "--policy", "rnd")

	saJWT := func(signer *ecdsa.PrivateKey, ns, name string) string {
		t.Helper()
		sig, err := jose.NewSigner(jose.SigningKey{Algorithm: jose.ES256, Key: signer}, (&jose.SignerOptions{}).WithType("JWT").WithHeader("kid", "k1"))
		if err != nil {
			t.Fatal(err)
		}
		now := time.Now()
		claims := map[string]any{
			"iss": issuer, "sub": "system:serviceaccount:" + ns + ":" + name, "aud": []string{"hsmgate"},
			"iat": now.Unix(), "nbf": now.Unix(), "exp": now.Add(10 * time.Minute).Unix(),
			"kubernetes.io": map[string]any{"namespace": ns, "serviceaccount": map[string]string{"name": name, "uid": "4b8e2c57-1b1a-4e0f-9c55-0c6c1f7f7a11"}},
		}
		tok, err := jwt.Signed(sig).Claims(claims).Serialize()
		if err != nil {
			t.Fatal(err)
		}
		return tok
	}
	cfg := vault.DefaultConfig()
	cfg.Address = dev.exports["VAULT_ADDR"]
	if err := cfg.ConfigureTLS(&vault.TLSConfig{CACert: dev.exports["VAULT_CACERT"]}); err != nil {
		t.Fatal(err)
	}
	c, err := vault.NewClient(cfg)
	if err != nil {
		t.Fatal(err)
	}
	c.ClearToken()
	s, err := c.Logical().Write("auth/kubernetes/login", map[string]any{"role": "cert-manager", "jwt": saJWT(key, "cert-manager", "cert-manager")})
	if err != nil {
		t.Fatalf("kubernetes login: %v", err)
	}
	tok, err := s.TokenID()
	if err != nil || tok == "" {
		t.Fatalf("login gave no token: %v", err)
	}
	if len(s.Auth.Policies) != 1 || s.Auth.Policies[0] != "rnd" || s.Auth.LeaseDuration <= 0 {
		t.Errorf("login auth: policies %v, lease %d; want [rnd] and a lease", s.Auth.Policies, s.Auth.LeaseDuration)
	}
	c.SetToken(tok)
	if r, err := c.Logical().Write("transit/random/8", nil); err != nil || r.Data["random_bytes"] == nil {
		t.Fatalf("the login's token: %v %v", r, err)
	}
	if _, err := c.Logical().Write("transit/keys/x", nil); err == nil {
		t.Errorf("the login's token created a key beyond its policy")
	}
	c.ClearToken()
	for name, jwt := range map[string]string{
		"another service account": saJWT(key, "default", "default"),
		"another signing key":     saJWT(other, "cert-manager", "cert-manager"),
	} {
		if _, err := c.Logical().Write("auth/kubernetes/login", map[string]any{"role": "cert-manager", "jwt": jwt}); err == nil {
			t.Errorf("%s: login accepted", name)
		}
	}

	t.Run("TokenReview against the API server", func(t *testing.T) {
		// An API server that knows the tokens it issued; the dev server has
		// no reviewer token of its own, so each login JWT reviews itself.
		var live sync.Map // token -> service account username
		api := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			var in struct {
				Kind string `json:"kind"`
				Spec struct {
					Token     string   `json:"token"`
					Audiences []string `json:"audiences"`
				} `json:"spec"`
			}
			if r.URL.Path != "/apis/authentication.k8s.io/v1/tokenreviews" || json.NewDecoder(r.Body).Decode(&in) != nil || in.Kind != "TokenReview" {
				http.Error(w, "bad request", http.StatusBadRequest)
				return
			}
			if r.Header.Get("Authorization") != "Bearer "+in.Spec.Token {
				http.Error(w, "Unauthorized", http.StatusUnauthorized)
				return
			}
			status := map[string]any{"authenticated": false}
			if u, ok := live.Load(in.Spec.Token); ok {
				status = map[string]any{"authenticated": true, "audiences": in.Spec.Audiences, "user": map[string]any{"username": u}}
			}
			w.WriteHeader(http.StatusCreated)
			json.NewEncoder(w).Encode(map[string]any{"apiVersion": "authentication.k8s.io/v1", "kind": "TokenReview", "status": status})
		}))
		defer api.Close()
		caFile := filepath.Join(dir, "apiserver-ca.pem")
		os.WriteFile(caFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: api.Certificate().Raw}), 0o600)
		mustRun("auth", "kubernetes", "config", "--issuer", issuer, "--jwks-file", jwksFile, "--audience", "hsmgate",
			"--token-review-url", api.URL, "--token-review-ca-file", caFile)
		if got := mustRun("auth", "kubernetes", "config"); !strings.Contains(got, api.URL) {
			t.Errorf("kubernetes config (read): got %q, want the token review URL", got)
		}
		jwt := saJWT(key, "cert-manager", "cert-manager")
		if _, err := c.Logical().Write("auth/kubernetes/login", map[string]any{"role": "cert-manager", "jwt": jwt}); err == nil {
			t.Errorf("a signed JWT the API server does not know (pod deleted): login accepted")
		}
		live.Store(jwt, "system:serviceaccount:cert-manager:cert-manager")
		if s, err := c.Logical().Write("auth/kubernetes/login", map[string]any{"role": "cert-manager", "jwt": jwt}); err != nil || s.Auth == nil || s.Auth.ClientToken == "" {
			t.Errorf("a signed JWT the API server authenticates: %v", err)
		}
	})
}

package auth

import (
	"context"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	jose "github.com/go-jose/go-jose/v4"
	"google.golang.org/grpc/codes"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/hsmgate/hsmgate/internal/errs"
	hsmgatev1 "github.com/hsmgate/hsmgate/proto/hsmgate/v1"
)

const testIssuer = "https://kubernetes.default.svc.cluster.local"

// saKey is a service-account token signing key of a test cluster.
type saKey struct {
	kid  string
	priv *rsa.PrivateKey
}

func newSAKey(t *testing.T, kid string) *saKey {
	t.Helper()
	k, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	return &saKey{kid: kid, priv: k}
}

// jwks returns the public key set of keys.
func jwks(t *testing.T, keys ...*saKey) string {
	t.Helper()
	var set jose.JSONWebKeySet
	for _, k := range keys {
		set.Keys = append(set.Keys, jose.JSONWebKey{Key: &k.priv.PublicKey, KeyID: k.kid, Algorithm: "RS256", Use: "sig"})
	}
	b, err := json.Marshal(set)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// saClaimsFor are the claims of a projected service-account token, as the
// API server makes them.
func saClaimsFor(ns, name string, aud []string, now time.Time) map[string]any {
	return map[string]any{
		"iss": testIssuer,
		"sub": "system:serviceaccount:" + ns + ":" + name,
		"aud": aud,
		"exp": now.Add(time.Hour).Unix(),
		"iat": now.Unix(),
		"nbf": now.Unix(),
		"kubernetes.io": map[string]any{
			"namespace":      ns,
			"serviceaccount": map[string]any{"name": name, "uid": "6a1e0f6e-0000-4000-8000-000000000001"},
			"pod":            map[string]any{"name": name + "-7d4b9c", "uid": "pod-uid"},
		},
	}
}

// sign makes a compact JWS of claims with k.
func (k *saKey) sign(t *testing.T, claims map[string]any) string {
	t.Helper()
	s, err := jose.NewSigner(jose.SigningKey{Algorithm: jose.RS256, Key: jose.JSONWebKey{Key: k.priv, KeyID: k.kid}}, (&jose.SignerOptions{}).WithType("JWT"))
	if err != nil {
		t.Fatal(err)
	}
	payload, _ := json.Marshal(claims)
	jws, err := s.Sign(payload)
	if err != nil {
		t.Fatal(err)
	}
	out, err := jws.CompactSerialize()
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func TestKubernetesLogin(t *testing.T) {
	env := newMethodsEnv(t, CertAuthConfig{})
	ctx := context.Background()
	key := newSAKey(t, "k1")
	rogue := newSAKey(t, "k1") // same key id, another key: a forged signature
	k := env.m.Kubernetes
	if _, err := k.Login(ctx, "cert-manager", key.sign(t, saClaimsFor("cert-manager", "cert-manager", []string{"hsmgate"}, time.Now()))); errs.Code(err) != codes.Unauthenticated {
		t.Fatalf("login before configuration: got %v, want Unauthenticated", err)
	}
	if _, err := k.WriteConfig(ctx, &hsmgatev1.KubernetesAuthConfig{Issuer: testIssuer, Jwks: jwks(t, key), Audiences: []string{"hsmgate"}}); err != nil {
		t.Fatalf("WriteConfig: %v", err)
	}
	for _, r := range []*hsmgatev1.KubernetesRole{
		{Name: "cert-manager", BoundServiceAccountNames: []string{"cert-manager"}, BoundServiceAccountNamespaces: []string{"cert-manager"},
			Policies: []string{"health-read"}, TokenTtl: durationpb.New(20 * time.Minute)},
		{Name: "any-ns", BoundServiceAccountNames: []string{"builder"}, BoundServiceAccountNamespaces: []string{"*"}, Policies: []string{"payments"}},
		{Name: "own-aud", BoundServiceAccountNames: []string{"*"}, BoundServiceAccountNamespaces: []string{"team-*"}, Audience: "vault", Policies: []string{"payments"}},
	} {
		if _, err := k.WriteRole(ctx, r); err != nil {
			t.Fatalf("WriteRole(%s): %v", r.GetName(), err)
		}
	}
	now := time.Now()
	good := saClaimsFor("cert-manager", "cert-manager", []string{"hsmgate"}, now)

	t.Run("good", func(t *testing.T) {
		l, err := k.Login(ctx, "cert-manager", key.sign(t, good))
		if err != nil {
			t.Fatalf("Login: %v", err)
		}
		env.checkLoginToken(t, l, "system:serviceaccount:cert-manager:cert-manager", "kubernetes", []string{"health-read"})
		if l.TTL != 20*time.Minute || l.Metadata["service_account_namespace"] != "cert-manager" || l.Metadata[MetaRole] != "cert-manager" {
			t.Errorf("got TTL %v metadata %v, want 20m and the service account", l.TTL, l.Metadata)
		}
	})
	t.Run("wildcard namespace", func(t *testing.T) {
		l, err := k.Login(ctx, "any-ns", key.sign(t, saClaimsFor("ci", "builder", []string{"other", "hsmgate"}, now)))
		if err != nil {
			t.Fatalf("Login: %v", err)
		}
		env.checkLoginToken(t, l, "system:serviceaccount:ci:builder", "kubernetes", []string{"payments"})
	})
	t.Run("role audience", func(t *testing.T) {
		if _, err := k.Login(ctx, "own-aud", key.sign(t, saClaimsFor("team-a", "x", []string{"vault"}, now))); err != nil {
			t.Errorf("Login: %v", err)
		}
	})

	with := func(edit func(c map[string]any)) map[string]any {
		c := saClaimsFor("cert-manager", "cert-manager", []string{"hsmgate"}, now)
		edit(c)
		return c
	}
	noneAlg := func() string {
		// {"alg":"none"} header, good claims, empty signature.
		b, _ := json.Marshal(good)
		return "eyJhbGciOiJub25lIiwidHlwIjoiSldUIn0." + base64.RawURLEncoding.EncodeToString(b) + "."
	}
	hs256 := func() string {
		// Algorithm confusion: HMAC keyed with the public key's bytes.
		pub, _ := x509.MarshalPKIXPublicKey(&key.priv.PublicKey)
		s, err := jose.NewSigner(jose.SigningKey{Algorithm: jose.HS256, Key: pub}, (&jose.SignerOptions{}).WithType("JWT").WithHeader("kid", key.kid))
		if err != nil {
			t.Fatal(err)
		}
		b, _ := json.Marshal(good)
		jws, err := s.Sign(b)
		if err != nil {
			t.Fatal(err)
		}
		out, _ := jws.CompactSerialize()
		return out
	}
	cases := []struct {
		name, role, jwt string
		want            codes.Code
	}{
		{"wrong signature", "cert-manager", rogue.sign(t, good), codes.Unauthenticated},
		{"alg none", "cert-manager", noneAlg(), codes.Unauthenticated},
		{"HS256 keyed with the public key", "cert-manager", hs256(), codes.Unauthenticated},
		{"tampered payload", "cert-manager", tamper(key.sign(t, good), with(func(c map[string]any) { c["sub"] = "system:serviceaccount:kube-system:admin" })), codes.Unauthenticated},
		{"wrong audience", "cert-manager", key.sign(t, with(func(c map[string]any) { c["aud"] = []string{"https://kubernetes.default.svc"} })), codes.Unauthenticated},
		{"config audience on a role with its own", "own-aud", key.sign(t, saClaimsFor("team-a", "x", []string{"hsmgate"}, now)), codes.Unauthenticated},
		{"wrong issuer", "cert-manager", key.sign(t, with(func(c map[string]any) { c["iss"] = "https://evil.example" })), codes.Unauthenticated},
		{"expired", "cert-manager", key.sign(t, with(func(c map[string]any) { c["exp"] = now.Add(-time.Minute).Unix() })), codes.Unauthenticated},
		{"no expiry", "cert-manager", key.sign(t, with(func(c map[string]any) { delete(c, "exp") })), codes.Unauthenticated},
		{"not yet valid", "cert-manager", key.sign(t, with(func(c map[string]any) { c["nbf"] = now.Add(time.Hour).Unix() })), codes.Unauthenticated},
		{"wrong namespace", "cert-manager", key.sign(t, saClaimsFor("default", "cert-manager", []string{"hsmgate"}, now)), codes.PermissionDenied},
		{"wrong service account", "cert-manager", key.sign(t, saClaimsFor("cert-manager", "default", []string{"hsmgate"}, now)), codes.PermissionDenied},
		{"subject and kubernetes.io disagree", "cert-manager", key.sign(t, with(func(c map[string]any) {
			c["kubernetes.io"].(map[string]any)["namespace"] = "default"
		})), codes.Unauthenticated},
		{"not a service account", "any-ns", key.sign(t, with(func(c map[string]any) { c["sub"] = "builder"; delete(c, "kubernetes.io") })), codes.Unauthenticated},
		{"unknown role", "nope", key.sign(t, good), codes.Unauthenticated},
		{"bad role name", "../x", key.sign(t, good), codes.Unauthenticated},
		{"not a jwt", "cert-manager", "hello", codes.Unauthenticated},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			before := snapshot(t, env.store)
			l, err := k.Login(ctx, c.role, c.jwt)
			if got := errs.Code(err); got != c.want || l != nil {
				t.Fatalf("got %v (%v), want %v", got, err, c.want)
			}
			if !sameSnapshot(before, snapshot(t, env.store)) {
				t.Errorf("a refused login changed the store")
			}
		})
	}
}

// tamper replaces the payload of a signed JWT, keeping its header and signature.
func tamper(jwt string, claims map[string]any) string {
	b, _ := json.Marshal(claims)
	first := 0
	for first < len(jwt) && jwt[first] != '.' {
		first++
	}
	last := len(jwt) - 1
	for last > 0 && jwt[last] != '.' {
		last--
	}
	return jwt[:first+1] + base64.RawURLEncoding.EncodeToString(b) + jwt[last:]
}

// TestKubernetesJWKSURL: the issuer's keys fetched over TLS from a URL (the
// cluster's /openid/v1/jwks), refetched when the cluster rotates its key.
func TestKubernetesJWKSURL(t *testing.T) {
	env := newMethodsEnv(t, CertAuthConfig{})
	ctx := context.Background()
	k1, k2 := newSAKey(t, "k1"), newSAKey(t, "k2")
	var served atomic.Pointer[string]
	set := jwks(t, k1)
	served.Store(&set)
	var fetches atomic.Int32
	ts := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fetches.Add(1)
		w.Header().Set("Content-Type", "application/json")
		w.Write([]byte(*served.Load()))
	}))
	t.Cleanup(ts.Close)
	caPEM := string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: ts.Certificate().Raw}))
	k := env.m.Kubernetes
	if _, err := k.WriteConfig(ctx, &hsmgatev1.KubernetesAuthConfig{Issuer: testIssuer, JwksUrl: ts.URL + "/openid/v1/jwks", JwksCaPem: caPEM, Audiences: []string{"hsmgate"}}); err != nil {
		t.Fatalf("WriteConfig: %v", err)
	}
	if _, err := k.WriteRole(ctx, &hsmgatev1.KubernetesRole{Name: "web", BoundServiceAccountNames: []string{"web"}, BoundServiceAccountNamespaces: []string{"prod"}, Policies: []string{"health-read"}}); err != nil {
		t.Fatal(err)
	}
	claims := saClaimsFor("prod", "web", []string{"hsmgate"}, time.Now())
	for i := range 2 {
		if _, err := k.Login(ctx, "web", k1.sign(t, claims)); err != nil {
			t.Fatalf("login %d with k1: %v", i+1, err)
		}
	}
	if n := fetches.Load(); n != 1 {
		t.Errorf("JWKS fetches after two logins: got %d, want 1 (cached)", n)
	}
	rotated := jwks(t, k2)
	served.Store(&rotated)
	l, err := k.Login(ctx, "web", k2.sign(t, claims))
	if err != nil {
		t.Fatalf("login with the rotated key: %v", err)
	}
	env.checkLoginToken(t, l, "system:serviceaccount:prod:web", "kubernetes", []string{"health-read"})
	if _, err := k.Login(ctx, "web", k1.sign(t, claims)); !errors.Is(err, ErrUnauthenticated) {
		t.Errorf("login with the retired key: got %v, want ErrUnauthenticated", err)
	}
	t.Run("an unreachable key set is not described to the caller", func(t *testing.T) {
		ts.Close()
		if _, err := k.WriteConfig(ctx, &hsmgatev1.KubernetesAuthConfig{Issuer: testIssuer, JwksUrl: ts.URL + "/keys", JwksCaPem: caPEM, Audiences: []string{"hsmgate"}}); err != nil {
			t.Fatal(err)
		}
		_, err := k.Login(ctx, "web", k2.sign(t, claims))
		if !errors.Is(err, ErrUnauthenticated) || strings.Contains(err.Error(), "127.0.0.1") || strings.Contains(err.Error(), "/keys") {
			t.Errorf("got %v, want ErrUnauthenticated without the URL", err)
		}
	})
}

func TestKubernetesConfigValidation(t *testing.T) {
	env := newMethodsEnv(t, CertAuthConfig{})
	ctx := context.Background()
	key := newSAKey(t, "k1")
	privSet, _ := json.Marshal(jose.JSONWebKeySet{Keys: []jose.JSONWebKey{{Key: key.priv, KeyID: "k1"}}})
	cases := []struct {
		name string
		c    *hsmgatev1.KubernetesAuthConfig
	}{
		{"nil", nil},
		{"no issuer", &hsmgatev1.KubernetesAuthConfig{Jwks: jwks(t, key), Audiences: []string{"a"}}},
		{"no keys", &hsmgatev1.KubernetesAuthConfig{Issuer: testIssuer, Audiences: []string{"a"}}},
		{"both key sources", &hsmgatev1.KubernetesAuthConfig{Issuer: testIssuer, Jwks: jwks(t, key), JwksUrl: "https://x/keys", Audiences: []string{"a"}}},
		{"private key in the set", &hsmgatev1.KubernetesAuthConfig{Issuer: testIssuer, Jwks: string(privSet), Audiences: []string{"a"}}},
		{"empty set", &hsmgatev1.KubernetesAuthConfig{Issuer: testIssuer, Jwks: `{"keys":[]}`, Audiences: []string{"a"}}},
		{"plain http url", &hsmgatev1.KubernetesAuthConfig{Issuer: testIssuer, JwksUrl: "http://x/keys", Audiences: []string{"a"}}},
		{"no audience", &hsmgatev1.KubernetesAuthConfig{Issuer: testIssuer, Jwks: jwks(t, key)}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			if _, err := env.m.Kubernetes.WriteConfig(ctx, c.c); !errors.Is(err, ErrInvalid) {
				t.Errorf("got %v, want ErrInvalid", err)
			}
		})
	}
	for _, r := range []*hsmgatev1.KubernetesRole{
		{Name: "r", BoundServiceAccountNamespaces: []string{"*"}},
		{Name: "r", BoundServiceAccountNames: []string{"*"}},
		{Name: "R", BoundServiceAccountNames: []string{"*"}, BoundServiceAccountNamespaces: []string{"*"}},
	} {
		if _, err := env.m.Kubernetes.WriteRole(ctx, r); !errors.Is(err, ErrInvalid) {
			t.Errorf("WriteRole(%v): got %v, want ErrInvalid", r, err)
		}
	}
}

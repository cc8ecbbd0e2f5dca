package auth

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	jose "github.com/go-jose/go-jose/v4"
	"google.golang.org/grpc/metadata"
)

type jwtIssuer struct {
	key  *ecdsa.PrivateKey
	kid  string
	jwks []byte
}

func newJWTIssuer(t *testing.T, kid string) *jwtIssuer {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	set := jose.JSONWebKeySet{Keys: []jose.JSONWebKey{{Key: &key.PublicKey, KeyID: kid, Algorithm: "ES256", Use: "sig"}}}
	b, err := json.Marshal(set)
	if err != nil {
		t.Fatal(err)
	}
	return &jwtIssuer{key: key, kid: kid, jwks: b}
}

func (j *jwtIssuer) sign(t *testing.T, claims map[string]any) string {
	t.Helper()
	s, err := jose.NewSigner(jose.SigningKey{Algorithm: jose.ES256, Key: jose.JSONWebKey{Key: j.key, KeyID: j.kid}}, (&jose.SignerOptions{}).WithType("JWT"))
	if err != nil {
		t.Fatal(err)
	}
	payload, _ := json.Marshal(claims)
	obj, err := s.Sign(payload)
	if err != nil {
		t.Fatal(err)
	}
	raw, err := obj.CompactSerialize()
	if err != nil {
		t.Fatal(err)
	}
	return raw
}

func TestJWT(t *testing.T) {
	iss := newJWTIssuer(t, "k1")
	rogue := newJWTIssuer(t, "k1") // same kid, other key
	const issuer, audience = "https://idp.example", "hsmgate"
	now := time.Now()
	claims := func(mod func(map[string]any)) map[string]any {
		c := map[string]any{
			"iss": issuer, "aud": audience, "sub": "u-123",
			"exp": now.Add(time.Hour).Unix(), "iat": now.Add(-time.Minute).Unix(),
			"preferred_username": "alice", "email": "alice@example.org",
			"groups": []string{"eng", "ops"},
		}
		if mod != nil {
			mod(c)
		}
		return c
	}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		w.Write(iss.jwks)
	}))
	t.Cleanup(srv.Close)
	jwksFile := filepath.Join(t.TempDir(), "jwks.json")
	if err := os.WriteFile(jwksFile, iss.jwks, 0o600); err != nil {
		t.Fatal(err)
	}
	base := OIDCConfig{
		Issuer: issuer, Audience: audience,
		GroupPolicies:   map[string][]string{"eng": {"transit-eng"}, "ops": {"ssh-ops", "transit-eng"}},
		DefaultPolicies: []string{"default"},
	}
	sources := map[string]func(OIDCConfig) OIDCConfig{
		"file": func(c OIDCConfig) OIDCConfig { c.JWKSFile = jwksFile; return c },
		"url":  func(c OIDCConfig) OIDCConfig { c.JWKSURL = srv.URL; return c },
	}
	for srcName, src := range sources {
		t.Run(srcName, func(t *testing.T) {
			v, err := NewJWTVerifier(context.Background(), src(base), nil)
			if err != nil {
				t.Fatal(err)
			}
			t.Run("valid", func(t *testing.T) {
				id, err := v.Authenticate(context.Background(), iss.sign(t, claims(nil)))
				if err != nil {
					t.Fatalf("got %v, want success", err)
				}
				if id.Name != "alice" || id.Kind != KindJWT {
					t.Errorf("got %s/%s, want alice/jwt", id.Name, id.Kind)
				}
				want := []string{"default", "transit-eng", "ssh-ops"}
				if len(id.Policies) != len(want) {
					t.Fatalf("got policies %v, want %v", id.Policies, want)
				}
				for i := range want {
					if id.Policies[i] != want[i] {
						t.Errorf("got policies %v, want %v", id.Policies, want)
					}
				}
			})
			bad := []struct {
				name string
				raw  func() string
			}{
				{"wrong audience", func() string { return iss.sign(t, claims(func(c map[string]any) { c["aud"] = "other" })) }},
				{"wrong issuer", func() string {
					return iss.sign(t, claims(func(c map[string]any) { c["iss"] = "https://evil.example" }))
				}},
				{"wrong signature", func() string { return rogue.sign(t, claims(nil)) }},
				{"expired", func() string {
					return iss.sign(t, claims(func(c map[string]any) { c["exp"] = now.Add(-time.Minute).Unix() }))
				}},
				{"garbage", func() string { return "a.b.c" }},
				{"HS256 (algorithm not allowed)", func() string {
					sig, err := jose.NewSigner(jose.SigningKey{Algorithm: jose.HS256, Key: []byte("0123456789abcdef0123456789abcdef")}, nil)
					if err != nil {
						t.Fatal(err)
					}
					payload, _ := json.Marshal(claims(nil))
					obj, _ := sig.Sign(payload)
					raw, _ := obj.CompactSerialize()
					return raw
				}},
				{"unsigned (alg none)", func() string {
					parts := strings.Split(iss.sign(t, claims(nil)), ".")
					return base64.RawURLEncoding.EncodeToString([]byte(`{"alg":"none","typ":"JWT"}`)) + "." + parts[1] + "."
				}},
			}
			for _, b := range bad {
				t.Run(b.name, func(t *testing.T) {
					if _, err := v.Authenticate(context.Background(), b.raw()); !errors.Is(err, ErrUnauthenticated) {
						t.Errorf("got %v, want ErrUnauthenticated", err)
					}
				})
			}
		})
	}
	t.Run("configured username claim", func(t *testing.T) {
		c := base
		c.JWKSFile, c.UsernameClaim = jwksFile, "email"
		v, err := NewJWTVerifier(context.Background(), c, nil)
		if err != nil {
			t.Fatal(err)
		}
		id, err := v.Authenticate(context.Background(), iss.sign(t, claims(nil)))
		if err != nil || id.Name != "alice@example.org" {
			t.Errorf("got %v, %v, want alice@example.org", id, err)
		}
		_, err = v.Authenticate(context.Background(), iss.sign(t, claims(func(c map[string]any) { delete(c, "email") })))
		if !errors.Is(err, ErrUnauthenticated) {
			t.Errorf("without the claim: got %v, want ErrUnauthenticated", err)
		}
	})
	t.Run("private key in jwks file refused", func(t *testing.T) {
		b, _ := json.Marshal(jose.JSONWebKeySet{Keys: []jose.JSONWebKey{{Key: iss.key, KeyID: "k1", Algorithm: "ES256"}}})
		p := filepath.Join(t.TempDir(), "priv.json")
		os.WriteFile(p, b, 0o600)
		c := base
		c.JWKSFile = p
		if _, err := NewJWTVerifier(context.Background(), c, nil); err == nil {
			t.Errorf("got nil error, want refusal")
		}
	})
}

// TestAuthenticatorRoutesJWT: a bearer value that is not an hgs. token goes
// to the JWT verifier when one is configured.
func TestAuthenticatorRoutesJWT(t *testing.T) {
	iss := newJWTIssuer(t, "k1")
	p := filepath.Join(t.TempDir(), "jwks.json")
	os.WriteFile(p, iss.jwks, 0o600)
	v, err := NewJWTVerifier(context.Background(), OIDCConfig{Issuer: "https://idp", Audience: "hsmgate", JWKSFile: p}, nil)
	if err != nil {
		t.Fatal(err)
	}
	a, _ := newAuth(t, Config{})
	a.Authenticator.JWT = v
	raw := iss.sign(t, map[string]any{"iss": "https://idp", "aud": "hsmgate", "sub": "s", "email": "bob@example.org", "exp": time.Now().Add(time.Hour).Unix()})
	ctx := metadata.NewIncomingContext(context.Background(), metadata.Pairs("authorization", "Bearer "+raw))
	id, err := a.Authenticator.FromGRPC(ctx)
	if err != nil || id.Kind != KindJWT || id.Name != "bob@example.org" {
		t.Fatalf("got %+v, %v, want jwt identity bob@example.org", id, err)
	}
	ctx = metadata.NewIncomingContext(context.Background(), metadata.Pairs("authorization", "Bearer "+raw, "authorization", "Bearer x"))
	if _, err := a.Authenticator.FromGRPC(ctx); !errors.Is(err, ErrUnauthenticated) {
		t.Errorf("two authorization values: got %v, want ErrUnauthenticated", err)
	}
}

package auth

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"errors"
	"io"
	"math/big"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc/codes"

	"github.com/hsmgate/hsmgate/internal/errs"
	hsmgatev1 "github.com/hsmgate/hsmgate/proto/hsmgate/v1"
)

// fakeAPIServer implements POST /apis/authentication.k8s.io/v1/tokenreviews
// as kube-apiserver does: the caller's bearer token must be the reviewer's
// (else 401); the reviewed token is looked up among the tokens it issued; a
// token is authenticated for the requested audiences it carries (its own
// default audience when none is requested), and status.audiences is that
// intersection; the answer is 201 Created. mode bends it for the attacks.
type fakeAPIServer struct {
	srv      *httptest.Server
	caPEM    string
	reviewer string
	mode     atomic.Value // string: "", "500", "slow", "garbage", "huge", "not-a-review", "redirect"
	reviews  atomic.Int32
	stop     chan struct{} // closed at cleanup: slow handlers return

	mu     sync.Mutex
	tokens map[string]issuedToken // token -> what it is
}

type issuedToken struct {
	username  string
	audiences []string
}

const apiServerAudience = "https://kubernetes.default.svc.cluster.local"

func newFakeAPIServer(t *testing.T, reviewer string) *fakeAPIServer {
	t.Helper()
	f := &fakeAPIServer{reviewer: reviewer, tokens: map[string]issuedToken{}, stop: make(chan struct{})}
	f.mode.Store("")
	f.srv = httptest.NewTLSServer(http.HandlerFunc(f.serve))
	t.Cleanup(f.srv.Close)
	t.Cleanup(func() { close(f.stop) }) // runs first
	f.caPEM = string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: f.srv.Certificate().Raw}))
	return f
}

// issue makes a token of a service account valid for audiences (its bytes
// look like a JWT; only the API server knows whether it is one of its own).
func (f *fakeAPIServer) issue(ns, name string, audiences ...string) string {
	if len(audiences) == 0 {
		audiences = []string{apiServerAudience}
	}
	tok := "eyJhbGciOiJSUzI1NiJ9." + base64.RawURLEncoding.EncodeToString([]byte(ns+"/"+name+"/"+strings.Join(audiences, "+"))) + ".c2ln"
	f.mu.Lock()
	f.tokens[tok] = issuedToken{username: "system:serviceaccount:" + ns + ":" + name, audiences: audiences}
	f.mu.Unlock()
	return tok
}

func (f *fakeAPIServer) revoke(tok string) {
	f.mu.Lock()
	delete(f.tokens, tok)
	f.mu.Unlock()
}

func (f *fakeAPIServer) serve(w http.ResponseWriter, r *http.Request) {
	f.reviews.Add(1)
	switch f.mode.Load().(string) {
	case "500":
		http.Error(w, "etcdserver: request timed out", http.StatusInternalServerError)
		return
	case "slow":
		io.Copy(io.Discard, r.Body) // then the server notices the client leave
		select {                    // answers nothing until the client gives up
		case <-r.Context().Done():
		case <-f.stop:
		}
		return
	case "garbage":
		w.WriteHeader(http.StatusCreated)
		io.WriteString(w, "<html>not json")
		return
	case "huge":
		w.WriteHeader(http.StatusCreated)
		io.WriteString(w, `{"kind":"TokenReview","apiVersion":"authentication.k8s.io/v1","status":{"authenticated":true,"user":{"username":"system:serviceaccount:prod:web","extra":{"x":["`)
		chunk := strings.Repeat("A", 64<<10)
		for range 64 { // 4 MiB
			if _, err := io.WriteString(w, chunk); err != nil {
				return
			}
		}
		io.WriteString(w, `"]}}}}`)
		return
	case "unauthenticated-with-user":
		w.WriteHeader(http.StatusCreated)
		io.WriteString(w, `{"kind":"TokenReview","apiVersion":"authentication.k8s.io/v1","status":{"authenticated":false,"user":{"username":"system:serviceaccount:prod:web"},"audiences":["`+apiServerAudience+`"]}}`)
		return
	case "not-a-review":
		w.WriteHeader(http.StatusCreated)
		io.WriteString(w, `{"kind":"Status","apiVersion":"v1","status":{"authenticated":true,"user":{"username":"system:serviceaccount:prod:web"}}}`)
		return
	case "redirect":
		http.Redirect(w, r, "https://elsewhere.example/steal", http.StatusTemporaryRedirect)
		return
	}
	if r.Method != http.MethodPost || r.URL.Path != "/apis/authentication.k8s.io/v1/tokenreviews" {
		http.NotFound(w, r)
		return
	}
	if r.Header.Get("Authorization") != "Bearer "+f.reviewer {
		w.WriteHeader(http.StatusUnauthorized)
		io.WriteString(w, `{"kind":"Status","apiVersion":"v1","status":"Failure","message":"Unauthorized","reason":"Unauthorized","code":401}`)
		return
	}
	var in struct {
		APIVersion string `json:"apiVersion"`
		Kind       string `json:"kind"`
		Spec       struct {
			Token     string   `json:"token"`
			Audiences []string `json:"audiences"`
		} `json:"spec"`
	}
	if err := json.NewDecoder(r.Body).Decode(&in); err != nil || in.Kind != "TokenReview" || in.APIVersion != "authentication.k8s.io/v1" {
		http.Error(w, "bad request", http.StatusBadRequest)
		return
	}
	f.mu.Lock()
	it, ok := f.tokens[in.Spec.Token]
	f.mu.Unlock()
	want := in.Spec.Audiences
	if len(want) == 0 {
		want = []string{apiServerAudience}
	}
	var aud []string
	for _, a := range it.audiences {
		if slices.Contains(want, a) {
			aud = append(aud, a)
		}
	}
	out := map[string]any{"apiVersion": "authentication.k8s.io/v1", "kind": "TokenReview", "spec": in.Spec}
	if !ok || len(aud) == 0 {
		out["status"] = map[string]any{"authenticated": false, "error": "[invalid bearer token, token lookup failed]"}
	} else {
		ns := strings.Split(it.username, ":")[2]
		out["status"] = map[string]any{"authenticated": true, "audiences": aud, "user": map[string]any{
			"username": it.username, "uid": "sa-uid-1", "groups": []string{"system:serviceaccounts", "system:serviceaccounts:" + ns},
			"extra": map[string][]string{"authentication.kubernetes.io/pod-name": {"web-7d4b9c"}},
		}}
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(http.StatusCreated)
	json.NewEncoder(w).Encode(out)
}

// TestKubernetesTokenReview: with token_review_url alone, the API server's
// TokenReview decides; then the role's bindings and audiences apply as with
// a key set. Attacks: a token the API server does not authenticate (forged,
// revoked), another namespace's account, an API server answering 401, 5xx,
// garbage, a huge body, a redirect, or nothing: no token, a clear error,
// nothing stored.
func TestKubernetesTokenReview(t *testing.T) {
	env := newMethodsEnv(t, CertAuthConfig{})
	ctx := context.Background()
	const reviewer = "reviewer-sa-token"
	api := newFakeAPIServer(t, reviewer)
	tokenFile := filepath.Join(t.TempDir(), "token")
	if err := os.WriteFile(tokenFile, []byte(reviewer+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	k, err := NewKubernetesAuth(ctx, KubernetesConfig{
		ReviewerJWT:   KubernetesReviewerConfig{TokenReviewerJWTFile: tokenFile}.Source(),
		ReviewTimeout: 300 * time.Millisecond,
	}, env.store, env.a.Tokens)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := k.WriteConfig(ctx, &hsmgatev1.KubernetesAuthConfig{TokenReviewUrl: api.srv.URL, TokenReviewCaPem: api.caPEM}); err != nil {
		t.Fatalf("WriteConfig (token review alone): %v", err)
	}
	for _, r := range []*hsmgatev1.KubernetesRole{
		{Name: "web", BoundServiceAccountNames: []string{"web"}, BoundServiceAccountNamespaces: []string{"prod"}, Policies: []string{"health-read"}},
		{Name: "vault-aud", BoundServiceAccountNames: []string{"web"}, BoundServiceAccountNamespaces: []string{"prod"}, Audience: "vault", Policies: []string{"payments"}},
	} {
		if _, err := k.WriteRole(ctx, r); err != nil {
			t.Fatal(err)
		}
	}
	good := api.issue("prod", "web")

	t.Run("authenticated service account logs in", func(t *testing.T) {
		l, err := k.Login(ctx, "web", good)
		if err != nil {
			t.Fatalf("Login: %v", err)
		}
		env.checkLoginToken(t, l, "system:serviceaccount:prod:web", "kubernetes", []string{"health-read"})
		if l.Metadata["service_account_namespace"] != "prod" || l.Metadata["pod_name"] != "web-7d4b9c" {
			t.Errorf("metadata: got %v, want the reviewed account and pod", l.Metadata)
		}
	})
	t.Run("role audience asked of the API server", func(t *testing.T) {
		if _, err := k.Login(ctx, "vault-aud", api.issue("prod", "web", "vault")); err != nil {
			t.Errorf("token for vault on a role wanting vault: %v", err)
		}
		if _, err := k.Login(ctx, "vault-aud", good); errs.Code(err) != codes.Unauthenticated {
			t.Errorf("token for the API server on a role wanting vault: got %v, want Unauthenticated", err)
		}
	})
	t.Run("reviewer token re-read from its file", func(t *testing.T) {
		os.WriteFile(tokenFile, []byte("rotated-but-wrong"), 0o600)
		defer os.WriteFile(tokenFile, []byte(reviewer), 0o600)
		if _, err := k.Login(ctx, "web", good); !errors.Is(err, ErrTokenReviewUnavailable) {
			t.Errorf("got %v, want ErrTokenReviewUnavailable (401 for the reviewer token)", err)
		}
	})

	revoked := api.issue("prod", "web", apiServerAudience, "x")
	api.revoke(revoked)
	attacks := []struct {
		name, role, jwt, mode string
		want                  codes.Code
		unavailable           bool
	}{
		{name: "unauthenticated review (forged token)", role: "web", jwt: "eyJhbGciOiJub25lIn0.eyJzdWIiOiJ4In0.", want: codes.Unauthenticated},
		{name: "authenticated false, even with a user", role: "web", jwt: good, mode: "unauthenticated-with-user", want: codes.Unauthenticated},
		{name: "revoked token (pod deleted)", role: "web", jwt: revoked, want: codes.Unauthenticated},
		{name: "another namespace's service account", role: "web", jwt: api.issue("dev", "web"), want: codes.PermissionDenied},
		{name: "another service account", role: "web", jwt: api.issue("prod", "admin"), want: codes.PermissionDenied},
		{name: "API server 5xx", role: "web", jwt: good, mode: "500", want: codes.Unavailable, unavailable: true},
		{name: "API server never answers", role: "web", jwt: good, mode: "slow", want: codes.Unavailable, unavailable: true},
		{name: "API server answers garbage", role: "web", jwt: good, mode: "garbage", want: codes.Unavailable, unavailable: true},
		{name: "API server answers a huge body", role: "web", jwt: good, mode: "huge", want: codes.Unavailable, unavailable: true},
		{name: "API server answers another kind", role: "web", jwt: good, mode: "not-a-review", want: codes.Unavailable, unavailable: true},
		{name: "API server redirects (the bearer token must not follow)", role: "web", jwt: good, mode: "redirect", want: codes.Unavailable, unavailable: true},
	}
	for _, c := range attacks {
		t.Run(c.name, func(t *testing.T) {
			api.mode.Store(c.mode)
			defer api.mode.Store("")
			before := snapshot(t, env.store)
			l, err := k.Login(ctx, c.role, c.jwt)
			if got := errs.Code(err); got != c.want || l != nil {
				t.Fatalf("got %v (%v), want %v and no token", got, err, c.want)
			}
			if c.unavailable && !errors.Is(err, ErrTokenReviewUnavailable) {
				t.Errorf("got %v, want ErrTokenReviewUnavailable", err)
			}
			if msg := errs.GRPCStatus(err).Message(); strings.Contains(msg, "127.0.0.1") || strings.Contains(msg, reviewer) {
				t.Errorf("the caller's message %q names the API server or the reviewer token", msg)
			}
			if !sameSnapshot(before, snapshot(t, env.store)) {
				t.Errorf("a refused login changed the store")
			}
		})
	}

	t.Run("wrong CA: TLS refused", func(t *testing.T) {
		// httptest servers share one certificate: another CA is made here.
		ck, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "other CA"}, NotBefore: time.Now().Add(-time.Hour),
			NotAfter: time.Now().Add(time.Hour), IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign}
		der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &ck.PublicKey, ck)
		if err != nil {
			t.Fatal(err)
		}
		otherCA := string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}))
		if _, err := k.WriteConfig(ctx, &hsmgatev1.KubernetesAuthConfig{TokenReviewUrl: api.srv.URL, TokenReviewCaPem: otherCA}); err != nil {
			t.Fatal(err)
		}
		n := api.reviews.Load()
		if _, err := k.Login(ctx, "web", good); !errors.Is(err, ErrTokenReviewUnavailable) {
			t.Errorf("got %v, want ErrTokenReviewUnavailable", err)
		}
		if api.reviews.Load() != n {
			t.Errorf("the request reached a server whose certificate the CA does not vouch for")
		}
	})

	t.Run("with a key set both must agree", func(t *testing.T) {
		key := newSAKey(t, "k1")
		if _, err := k.WriteConfig(ctx, &hsmgatev1.KubernetesAuthConfig{Issuer: testIssuer, Jwks: jwks(t, key), Audiences: []string{"hsmgate"},
			TokenReviewUrl: api.srv.URL, TokenReviewCaPem: api.caPEM}); err != nil {
			t.Fatal(err)
		}
		jwt := key.sign(t, saClaimsFor("prod", "web", []string{"hsmgate"}, time.Now()))
		if _, err := k.Login(ctx, "web", jwt); errs.Code(err) != codes.Unauthenticated {
			t.Errorf("a signed JWT the API server does not know (deleted): got %v, want Unauthenticated", err)
		}
		api.mu.Lock()
		api.tokens[jwt] = issuedToken{username: "system:serviceaccount:prod:web", audiences: []string{"hsmgate"}}
		api.mu.Unlock()
		if _, err := k.Login(ctx, "web", jwt); err != nil {
			t.Errorf("a signed JWT the API server authenticates: %v", err)
		}
		// The API server names another account than the signed JWT does.
		api.mu.Lock()
		api.tokens[jwt] = issuedToken{username: "system:serviceaccount:prod:other", audiences: []string{"hsmgate"}}
		api.mu.Unlock()
		if _, err := k.Login(ctx, "web", jwt); errs.Code(err) != codes.Unauthenticated {
			t.Errorf("review and JWT disagree: got %v, want Unauthenticated", err)
		}
	})
}

func TestKubernetesTokenReviewConfig(t *testing.T) {
	env := newMethodsEnv(t, CertAuthConfig{})
	ctx := context.Background()
	for name, c := range map[string]*hsmgatev1.KubernetesAuthConfig{
		"plain http":          {TokenReviewUrl: "http://10.0.0.1"},
		"user in url":         {TokenReviewUrl: "https://u:p@10.0.0.1"},
		"query":               {TokenReviewUrl: "https://10.0.0.1/?x=1"},
		"ca without url":      {Issuer: testIssuer, JwksUrl: "https://x/keys", Audiences: []string{"a"}, TokenReviewCaPem: "x"},
		"bad ca":              {TokenReviewUrl: "https://10.0.0.1", TokenReviewCaPem: "not pem"},
		"jwks without issuer": {TokenReviewUrl: "https://10.0.0.1", JwksUrl: "https://x/keys", Audiences: []string{"a"}},
	} {
		t.Run(name, func(t *testing.T) {
			if _, err := env.m.Kubernetes.WriteConfig(ctx, c); !errors.Is(err, ErrInvalid) {
				t.Errorf("got %v, want ErrInvalid", err)
			}
		})
	}
	if err := (KubernetesReviewerConfig{TokenReviewerJWTFile: "a", TokenReviewerJWTEnv: "B"}).Validate(); err == nil {
		t.Error("reviewer token from a file and an env: got nil, want an error")
	}
	t.Setenv("HSMGATE_TEST_REVIEWER", "")
	if _, err := (KubernetesReviewerConfig{TokenReviewerJWTEnv: "HSMGATE_TEST_REVIEWER"}).Source()(); err == nil {
		t.Error("empty reviewer env: got nil, want an error")
	}
}

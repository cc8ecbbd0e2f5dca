package acme

import (
	"bytes"
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/hmac"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"io"
	"maps"
	"net/http"
	"strings"
	"testing"
	"time"

	jose "github.com/go-jose/go-jose/v4"
)

// rawClient speaks ACME by hand, so that tests can send what no well-behaved client sends.
type rawClient struct {
	t    testing.TB
	e    *env
	key  crypto.Signer
	alg  string
	kid  string
	http *http.Client
}

func (e *env) raw(t testing.TB, key crypto.Signer) *rawClient {
	alg := "ES256"
	switch k := key.(type) {
	case *rsa.PrivateKey:
		alg = "RS256"
	case ed25519.PrivateKey:
		alg = "EdDSA"
	case *ecdsa.PrivateKey:
		if k.Curve == elliptic.P384() {
			alg = "ES384"
		}
	}
	return &rawClient{t: t, e: e, key: key, alg: alg, http: e.client()}
}

func (c *rawClient) url(p string) string { return c.e.https.URL + "/acme/main/" + p }

func (c *rawClient) nonce() string {
	c.t.Helper()
	resp, err := c.http.Head(c.url("new-nonce"))
	if err != nil {
		c.t.Fatal(err)
	}
	resp.Body.Close()
	n := resp.Header.Get("Replay-Nonce")
	if n == "" {
		c.t.Fatal("no Replay-Nonce")
	}
	return n
}

func signWith(t testing.TB, key crypto.Signer, alg string, in []byte) []byte {
	switch k := key.(type) {
	case *ecdsa.PrivateKey:
		h, n := crypto.SHA256, 32
		if alg == "ES384" {
			h, n = crypto.SHA384, 48
		}
		d := h.New()
		d.Write(in)
		r, s, err := ecdsa.Sign(rand.Reader, k, d.Sum(nil))
		if err != nil {
			t.Fatal(err)
		}
		out := make([]byte, 2*n)
		r.FillBytes(out[:n])
		s.FillBytes(out[n:])
		return out
	case *rsa.PrivateKey:
		d := sha256.Sum256(in)
		sig, err := rsa.SignPKCS1v15(rand.Reader, k, crypto.SHA256, d[:])
		if err != nil {
			t.Fatal(err)
		}
		return sig
	case ed25519.PrivateKey:
		return ed25519.Sign(k, in)
	}
	t.Fatalf("key %T", key)
	return nil
}

// jws is what jws builds; mutate edits the header before signing.
type jwsOpts struct {
	nonce   string
	url     string
	useJWK  bool
	mutate  func(h map[string]any)
	corrupt bool
}

func (c *rawClient) jws(payload []byte, o jwsOpts) []byte {
	c.t.Helper()
	h := map[string]any{"alg": c.alg, "nonce": o.nonce, "url": o.url}
	if o.useJWK || c.kid == "" {
		h["jwk"] = jose.JSONWebKey{Key: c.key.Public()}
	} else {
		h["kid"] = c.kid
	}
	if o.mutate != nil {
		o.mutate(h)
	}
	hb, _ := json.Marshal(h)
	prot, pl := b64.EncodeToString(hb), b64.EncodeToString(payload)
	sig := signWith(c.t, c.key, c.alg, []byte(prot+"."+pl))
	if o.corrupt {
		sig[len(sig)/2] ^= 1
	}
	out, _ := json.Marshal(map[string]string{"protected": prot, "payload": pl, "signature": b64.EncodeToString(sig)})
	return out
}

type rawResp struct {
	status int
	header http.Header
	body   []byte
}

func (r rawResp) problem() string {
	var p Problem
	json.Unmarshal(r.body, &p)
	return strings.TrimPrefix(p.Type, ProblemNS)
}

func (c *rawClient) postBody(u string, body []byte) rawResp {
	c.t.Helper()
	resp, err := c.http.Post(u, "application/jose+json", bytes.NewReader(body))
	if err != nil {
		c.t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return rawResp{resp.StatusCode, resp.Header, b}
}

// post signs payload (nil: POST-as-GET) for path p with a fresh nonce.
func (c *rawClient) post(p string, payload any, o jwsOpts) rawResp {
	c.t.Helper()
	var pl []byte
	if payload != nil {
		pl, _ = json.Marshal(payload)
	}
	u := p
	if !strings.HasPrefix(p, "https://") {
		u = c.url(p)
	}
	if o.url == "" {
		o.url = u
	}
	if o.nonce == "" {
		o.nonce = c.nonce()
	}
	return c.postBody(u, c.jws(pl, o))
}

func (c *rawClient) register(t testing.TB, payload map[string]any) rawResp {
	t.Helper()
	r := c.post("new-account", payload, jwsOpts{useJWK: true})
	if r.status == http.StatusCreated || r.status == http.StatusOK {
		c.kid = r.header.Get("Location")
	}
	return r
}

// eabJWS binds key to an EAB kid with MAC key hk.
func eabJWS(t testing.TB, key crypto.Signer, kid string, hk []byte, url string) map[string]string {
	jwk, _ := json.Marshal(jose.JSONWebKey{Key: key.Public()})
	h, _ := json.Marshal(map[string]string{"alg": "HS256", "kid": kid, "url": url})
	prot, pl := b64.EncodeToString(h), b64.EncodeToString(jwk)
	m := hmac.New(sha256.New, hk)
	m.Write([]byte(prot + "." + pl))
	return map[string]string{"protected": prot, "payload": pl, "signature": b64.EncodeToString(m.Sum(nil))}
}

func newECKey(t testing.TB) *ecdsa.PrivateKey {
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// wantUnchanged checks that the ACME and PKI state (nonces aside) is as before.
func wantUnchanged(t testing.TB, e *env, before map[string]string) {
	t.Helper()
	if after := e.snapshot(t); !maps.Equal(before, after) {
		for k, v := range after {
			if before[k] != v {
				t.Errorf("state changed at %s", k)
			}
		}
		for k := range before {
			if _, ok := after[k]; !ok {
				t.Errorf("state removed at %s", k)
			}
		}
	}
}

// readyOrder makes an order for names and validates it through http-01.
func (c *rawClient) readyOrder(t testing.TB, names ...string) (orderURL string, o map[string]any) {
	t.Helper()
	var ids []Ident
	for _, n := range names {
		ids = append(ids, Ident{"dns", n})
	}
	r := c.post("new-order", map[string]any{"identifiers": ids}, jwsOpts{})
	if r.status != http.StatusCreated {
		t.Fatalf("new-order: %d %s", r.status, r.body)
	}
	orderURL = r.header.Get("Location")
	json.Unmarshal(r.body, &o)
	thumb, _ := keyThumbprint(c.key.Public())
	for _, a := range o["authorizations"].([]any) {
		ar := c.post(a.(string), nil, jwsOpts{})
		var az struct {
			Challenges []struct{ Type, URL, Token string }
		}
		json.Unmarshal(ar.body, &az)
		for _, ch := range az.Challenges {
			if ch.Type == HTTP01 {
				c.e.chall.set(ch.Token, ch.Token+"."+thumb)
				if cr := c.post(ch.URL, map[string]any{}, jwsOpts{}); cr.status != http.StatusOK {
					t.Fatalf("challenge: %d %s", cr.status, cr.body)
				}
			}
		}
		c.waitStatus(t, a.(string), "valid")
	}
	c.waitStatus(t, orderURL, "ready")
	return orderURL, o
}

// waitStatus polls a resource (POST-as-GET) until its status is want.
func (c *rawClient) waitStatus(t testing.TB, u, want string) map[string]any {
	t.Helper()
	deadline := time.Now().Add(time.Minute)
	for {
		r := c.post(u, nil, jwsOpts{})
		var m map[string]any
		json.Unmarshal(r.body, &m)
		if m["status"] == want {
			return m
		}
		if m["status"] == "invalid" || time.Now().After(deadline) {
			t.Fatalf("%s: status %v (%s), want %s", u, m["status"], r.body, want)
		}
		time.Sleep(20 * time.Millisecond) // polling a worker, as ACME clients do; not a synchronisation
	}
}

func csrFor(t testing.TB, cn string, names ...string) []byte {
	k := newECKey(t)
	der, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{Subject: pkix.Name{CommonName: cn}, DNSNames: names}, k)
	if err != nil {
		t.Fatal(err)
	}
	return der
}

var _ = context.Background

package acme

import (
	"bytes"
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"net/http"
	"strings"
	"testing"
)

// TestNegative: each bad request gets the right problem type and status,
// and changes no state.
func TestNegative(t *testing.T) {
	e := newEnv(t, envOpts{eab: true})
	ctx := context.Background()
	kid, hk, err := e.srv.CreateEAB(ctx, "main", nil)
	if err != nil {
		t.Fatal(err)
	}
	hkey, _ := b64.DecodeString(hk)
	c := e.raw(t, newECKey(t))
	if r := c.register(t, map[string]any{"externalAccountBinding": eabJWS(t, c.key, kid, hkey, c.url("new-account"))}); r.status != http.StatusCreated {
		t.Fatalf("register: %d %s", r.status, r.body)
	}
	orderURL, o := c.readyOrder(t, "shop.example.com")

	type tc struct {
		name       string
		do         func() rawResp
		wantType   string
		wantStatus int
	}
	cases := []tc{
		{"bad JWS signature", func() rawResp {
			return c.post("new-order", map[string]any{"identifiers": []Ident{{"dns", "a.example.com"}}}, jwsOpts{corrupt: true})
		}, "malformed", 400},
		{"reused nonce", func() rawResp {
			n := c.nonce()
			if r := c.post(orderURL, nil, jwsOpts{nonce: n}); r.status != 200 {
				t.Fatalf("first use of the nonce: %d %s", r.status, r.body)
			}
			return c.post("new-order", map[string]any{"identifiers": []Ident{{"dns", "a.example.com"}}}, jwsOpts{nonce: n})
		}, "badNonce", 400},
		{"made-up nonce", func() rawResp {
			return c.post("new-order", map[string]any{"identifiers": []Ident{{"dns", "a.example.com"}}}, jwsOpts{nonce: "AAAAAAAAAAAAAAAAAAAAAA"})
		}, "badNonce", 400},
		{"wrong url", func() rawResp {
			return c.post("new-order", map[string]any{"identifiers": []Ident{{"dns", "a.example.com"}}}, jwsOpts{url: c.url("revoke-cert")})
		}, "unauthorized", 403},
		{"unknown kid", func() rawResp {
			return c.post("new-order", map[string]any{"identifiers": []Ident{{"dns", "a.example.com"}}}, jwsOpts{
				mutate: func(h map[string]any) { h["kid"] = c.url("acct/AAAAAAAAAAAAAAAAAAAAAA") }})
		}, "accountDoesNotExist", 400},
		{"jwk where kid is required", func() rawResp {
			return c.post("new-order", map[string]any{"identifiers": []Ident{{"dns", "a.example.com"}}}, jwsOpts{useJWK: true})
		}, "malformed", 400},
		{"alg none", func() rawResp {
			return c.post("new-order", map[string]any{"identifiers": []Ident{{"dns", "a.example.com"}}}, jwsOpts{
				mutate: func(h map[string]any) { h["alg"] = "none" }})
		}, "badSignatureAlgorithm", 400},
		{"HS256 account JWS", func() rawResp {
			return c.post("new-order", map[string]any{"identifiers": []Ident{{"dns", "a.example.com"}}}, jwsOpts{
				mutate: func(h map[string]any) { h["alg"] = "HS256" }})
		}, "badSignatureAlgorithm", 400},
		{"name outside the role", func() rawResp {
			return c.post("new-order", map[string]any{"identifiers": []Ident{{"dns", "www.evil.org"}}}, jwsOpts{})
		}, "rejectedIdentifier", 400},
		{"unsupported identifier type", func() rawResp {
			return c.post("new-order", map[string]any{"identifiers": []Ident{{"email", "a@example.com"}}}, jwsOpts{})
		}, "unsupportedIdentifier", 400},
		{"CSR with an extra name", func() rawResp {
			csr := csrFor(t, "shop.example.com", "shop.example.com", "other.example.com")
			return c.post(o["finalize"].(string), map[string]any{"csr": b64.EncodeToString(csr)}, jwsOpts{})
		}, "badCSR", 400},
		{"CSR missing a name", func() rawResp {
			csr := csrFor(t, "", "other.example.com")
			return c.post(o["finalize"].(string), map[string]any{"csr": b64.EncodeToString(csr)}, jwsOpts{})
		}, "badCSR", 400},
		{"CSR with the account key", func() rawResp {
			return c.post(o["finalize"].(string), map[string]any{"csr": b64.EncodeToString(csrWithKey(t, c.key, "shop.example.com"))}, jwsOpts{})
		}, "badCSR", 400},
		{"oversized body", func() rawResp {
			big := strings.Repeat("a", 70<<10)
			return c.post("new-order", map[string]any{"identifiers": []Ident{{"dns", big}}}, jwsOpts{})
		}, "malformed", 413},
		{"wrong content type", func() rawResp {
			resp, err := c.http.Post(c.url("new-order"), "application/json", strings.NewReader("{}"))
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			return rawResp{status: resp.StatusCode, header: resp.Header, body: []byte(`{"type":"` + ProblemNS + `malformed"}`)}
		}, "malformed", 415},
		{"not a JWS", func() rawResp {
			return c.postBody(c.url("new-order"), []byte(`{"protected":"e30","payload":"","signature":"AA","header":{}}`))
		}, "malformed", 400},
		{"another account's order", func() rawResp {
			other := e.raw(t, newECKey(t))
			kid2, hk2, _ := e.srv.CreateEAB(ctx, "main", nil)
			h2, _ := b64.DecodeString(hk2)
			other.register(t, map[string]any{"externalAccountBinding": eabJWS(t, other.key, kid2, h2, other.url("new-account"))})
			return rawResp{} // registration changes state: compared after, below
		}, "", 0},
		{"wrong EAB MAC", func() rawResp {
			k2, h2, _ := e.srv.CreateEAB(ctx, "main", nil)
			hb, _ := b64.DecodeString(h2)
			hb[0] ^= 1
			n := e.raw(t, newECKey(t))
			r := n.register(t, map[string]any{"externalAccountBinding": eabJWS(t, n.key, k2, hb, n.url("new-account"))})
			return r
		}, "unauthorized", 403},
		{"EAB for another key", func() rawResp {
			k2, h2, _ := e.srv.CreateEAB(ctx, "main", nil)
			hb, _ := b64.DecodeString(h2)
			n := e.raw(t, newECKey(t))
			return n.register(t, map[string]any{"externalAccountBinding": eabJWS(t, newECKey(t), k2, hb, n.url("new-account"))})
		}, "unauthorized", 403},
		{"reused EAB", func() rawResp {
			n := e.raw(t, newECKey(t))
			return n.register(t, map[string]any{"externalAccountBinding": eabJWS(t, n.key, kid, hkey, n.url("new-account"))})
		}, "unauthorized", 403},
		{"no EAB", func() rawResp {
			return e.raw(t, newECKey(t)).register(t, map[string]any{})
		}, "externalAccountRequired", 400},
		{"RSA-1024 account key", func() rawResp {
			k, _ := rsa.GenerateKey(rand.Reader, 1024)
			return e.raw(t, k).register(t, map[string]any{})
		}, "badPublicKey", 400},
		{"onlyReturnExisting, no account", func() rawResp {
			return e.raw(t, newECKey(t)).register(t, map[string]any{"onlyReturnExisting": true})
		}, "accountDoesNotExist", 400},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if tc.name == "another account's order" {
				tc.do()
				return
			}
			// Make the EAB keys a case needs before the snapshot.
			before := e.snapshot(t)
			r := tc.do()
			if got := r.problem(); got != tc.wantType || r.status != tc.wantStatus {
				t.Fatalf("got %d %s (%s), want %d %s", r.status, got, r.body, tc.wantStatus, tc.wantType)
			}
			if ct := r.header.Get("Content-Type"); ct != "application/problem+json" && tc.wantStatus != 415 {
				t.Errorf("Content-Type: got %q, want application/problem+json", ct)
			}
			if r.header.Get("Replay-Nonce") == "" {
				t.Errorf("no Replay-Nonce on the error response")
			}
			after := e.snapshot(t)
			for k := range after {
				if _, ok := before[k]; !ok && strings.HasPrefix(k, prefixEAB) {
					delete(after, k) // the EAB key the case itself made
				}
			}
			for k, v := range after {
				if before[k] != v {
					t.Errorf("state changed at %s", k)
				}
			}
			if len(after) != len(before) {
				t.Errorf("state entries: got %d, want %d", len(after), len(before))
			}
		})
	}

	t.Run("order still finalizes", func(t *testing.T) {
		r := c.post(o["finalize"].(string), map[string]any{"csr": b64.EncodeToString(csrFor(t, "shop.example.com", "shop.example.com"))}, jwsOpts{})
		if r.status != 200 {
			t.Fatalf("finalize: %d %s", r.status, r.body)
		}
		var fo map[string]any
		json.Unmarshal(r.body, &fo)
		cr := c.post(fo["certificate"].(string), nil, jwsOpts{})
		if ct := cr.header.Get("Content-Type"); cr.status != 200 || ct != "application/pem-certificate-chain" {
			t.Fatalf("certificate: %d %q", cr.status, ct)
		}
		if n := bytes.Count(cr.body, []byte("BEGIN CERTIFICATE")); n != 2 {
			t.Errorf("chain: got %d certificates, want 2", n)
		}
		// Another account cannot download it.
		other := e.raw(t, newECKey(t))
		k2, h2, _ := e.srv.CreateEAB(ctx, "main", nil)
		hb, _ := b64.DecodeString(h2)
		other.register(t, map[string]any{"externalAccountBinding": eabJWS(t, other.key, k2, hb, other.url("new-account"))})
		if r := other.post(fo["certificate"].(string), nil, jwsOpts{}); r.status != 404 {
			t.Errorf("another account's download: got %d, want 404", r.status)
		}
		if r := other.post(orderURL, nil, jwsOpts{}); r.status != 404 {
			t.Errorf("another account's order: got %d, want 404", r.status)
		}
		// Revoke twice: alreadyRevoked the second time.
		der := pemFirst(t, cr.body)
		if r := c.post("revoke-cert", map[string]any{"certificate": b64.EncodeToString(der)}, jwsOpts{}); r.status != 200 {
			t.Fatalf("revoke: %d %s", r.status, r.body)
		}
		if r := c.post("revoke-cert", map[string]any{"certificate": b64.EncodeToString(der)}, jwsOpts{}); r.problem() != "alreadyRevoked" {
			t.Errorf("second revoke: got %d %s, want alreadyRevoked", r.status, r.body)
		}
	})

	t.Run("wrong key authorization", func(t *testing.T) {
		r := c.post("new-order", map[string]any{"identifiers": []Ident{{"dns", "bad.example.com"}}}, jwsOpts{})
		var no map[string]any
		json.Unmarshal(r.body, &no)
		az := no["authorizations"].([]any)[0].(string)
		ar := c.post(az, nil, jwsOpts{})
		var a struct {
			Challenges []struct{ Type, URL, Token string }
		}
		json.Unmarshal(ar.body, &a)
		ch := a.Challenges[0]
		e.chall.set(ch.Token, ch.Token+".not-the-thumbprint")
		c.post(ch.URL, map[string]any{}, jwsOpts{})
		deadline := 0
		for {
			m := c.post(az, nil, jwsOpts{})
			var s struct {
				Status     string
				Challenges []struct {
					Status string
					Error  *Problem
				}
			}
			json.Unmarshal(m.body, &s)
			if s.Status == "invalid" {
				if p := s.Challenges[0].Error; p == nil || p.Type != ProblemNS+"incorrectResponse" {
					t.Errorf("challenge error: got %+v, want incorrectResponse", p)
				}
				break
			}
			if deadline++; deadline > 3000 {
				t.Fatalf("authz never became invalid: %s", m.body)
			}
		}
		if r := c.post(no["finalize"].(string), map[string]any{"csr": b64.EncodeToString(csrFor(t, "", "bad.example.com"))}, jwsOpts{}); r.problem() != "orderNotReady" {
			t.Errorf("finalize of the invalid order: got %d %s, want orderNotReady", r.status, r.body)
		}
	})

	t.Run("EdDSA, ES384 and RS256 accounts", func(t *testing.T) {
		_, ek, _ := ed25519.GenerateKey(rand.Reader)
		rk, _ := rsa.GenerateKey(rand.Reader, 2048)
		pk, _ := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
		for _, k := range []crypto.Signer{ek, rk, pk} {
			n := e.raw(t, k)
			k2, h2, _ := e.srv.CreateEAB(ctx, "main", nil)
			hb, _ := b64.DecodeString(h2)
			if r := n.register(t, map[string]any{"externalAccountBinding": eabJWS(t, k, k2, hb, n.url("new-account"))}); r.status != 201 {
				t.Fatalf("%s register: %d %s", n.alg, r.status, r.body)
			}
			if r := n.post(n.kid, nil, jwsOpts{}); r.status != 200 {
				t.Fatalf("%s POST-as-GET account: %d %s", n.alg, r.status, r.body)
			}
			if r := n.register(t, map[string]any{"onlyReturnExisting": true}); r.status != 200 {
				t.Errorf("%s onlyReturnExisting: got %d, want 200", n.alg, r.status)
			}
		}
	})
}

func csrWithKey(t testing.TB, k crypto.Signer, name string) []byte {
	der, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{DNSNames: []string{name}}, k)
	if err != nil {
		t.Fatal(err)
	}
	return der
}

func pemFirst(t testing.TB, b []byte) []byte {
	blk, _ := pem.Decode(b)
	if blk == nil {
		t.Fatal("no PEM block")
	}
	return blk.Bytes
}

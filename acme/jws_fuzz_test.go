package acme

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"errors"
	"testing"
)

// FuzzParseJWS: the parser never panics, every refusal is a *Problem, and
// whatever it accepts has a known algorithm and exactly one of jwk and kid.
func FuzzParseJWS(f *testing.F) {
	k, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	c := &rawClient{t: f, key: k, alg: "ES256"}
	f.Add(c.jws([]byte(`{"identifiers":[{"type":"dns","value":"a.example.com"}]}`), jwsOpts{nonce: "n", url: "https://x/acme/d/new-order"}))
	c.kid = "https://x/acme/d/acct/AAAAAAAAAAAAAAAAAAAAAA"
	f.Add(c.jws(nil, jwsOpts{nonce: "n", url: "https://x/acme/d/order/1"}))
	f.Add([]byte(`{"protected":"eyJhbGciOiJub25lIn0","payload":"","signature":""}`))
	f.Add([]byte(`{"protected":"e30","payload":"e30","signature":"AA","header":{"alg":"none"}}`))
	f.Add([]byte(`{}`))
	f.Fuzz(func(t *testing.T, body []byte) {
		j, err := ParseJWS(body)
		if err != nil {
			var p *Problem
			if !errors.As(err, &p) {
				t.Fatalf("error %v is not a *Problem", err)
			}
			return
		}
		switch j.Header.Alg {
		case "ES256", "ES384", "RS256", "EdDSA":
		default:
			t.Fatalf("accepted alg %q", j.Header.Alg)
		}
		if (j.JWK != nil) == (j.Header.KID != "") {
			t.Fatalf("accepted jwk=%v kid=%q", j.JWK != nil, j.Header.KID)
		}
		if j.JWK != nil {
			if err := checkKeyAlg(j.JWK.Key, j.Header.Alg); err != nil {
				t.Fatalf("accepted a key that does not go with %s", j.Header.Alg)
			}
		}
		_ = j.Verify(k.Public()) // must not panic
	})
}

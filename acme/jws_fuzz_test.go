package acme

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"encoding/json"
	"errors"
	"strings"
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

// FuzzParseEAB: the EAB parser never panics and refuses with a *Problem;
// what it accepts has an HMAC alg, a kid, a url and no nonce.
func FuzzParseEAB(f *testing.F) {
	k, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	b, _ := json.Marshal(eabJWS(f, k, "AAAAAAAAAAAAAAAAAAAAAA", make([]byte, 32), "https://x/acme/d/new-account"))
	f.Add(b)
	f.Add([]byte(`{"protected":"e30","payload":"","signature":""}`))
	f.Fuzz(func(t *testing.T, raw []byte) {
		j, err := parseEAB(raw)
		if err != nil {
			var p *Problem
			if !errors.As(err, &p) {
				t.Fatalf("error %v is not a *Problem", err)
			}
			return
		}
		if j.Header.KID == "" || j.Header.URL == "" || j.Header.Nonce != "" || !strings.HasPrefix(j.Header.Alg, "HS") {
			t.Fatalf("accepted header %+v", j.Header)
		}
		_ = j.verifyMAC(make([]byte, 32))
	})
}

// FuzzParseCertID: ARI certIDs never panic the parser.
func FuzzParseCertID(f *testing.F) {
	f.Add("aYhba4dGQEHhs3uEe6CuLN4ByNQ.AIdlQyE")
	f.Add(".")
	f.Fuzz(func(t *testing.T, id string) {
		aki, serial, err := parseCertID(id)
		if err == nil && (aki == nil || serial == "") {
			t.Fatalf("accepted %q with empty parts", id)
		}
	})
}

package acme

import (
	"encoding/json"
	"net/http"
	"strings"
	"testing"
	"time"
)

// TestHeadersAndValidity: Link, Retry-After, Location and Replay-Nonce
// headers; notBefore/notAfter checked against the role.
func TestHeadersAndValidity(t *testing.T) {
	e := newEnv(t, envOpts{})
	c := e.raw(t, newECKey(t))
	r := c.register(t, map[string]any{"contact": []string{"mailto:ops@example.com"}})
	if r.status != http.StatusCreated || !strings.Contains(r.header.Get("Link"), `rel="index"`) || r.header.Get("Location") == "" {
		t.Fatalf("new-account: %d, Link %q, Location %q", r.status, r.header.Get("Link"), r.header.Get("Location"))
	}
	dresp, err := e.client().Get(e.dirURL)
	if err != nil {
		t.Fatal(err)
	}
	var dir map[string]any
	json.NewDecoder(dresp.Body).Decode(&dir)
	dresp.Body.Close()
	for _, k := range []string{"newNonce", "newAccount", "newOrder", "revokeCert", "keyChange", "renewalInfo", "meta"} {
		if dir[k] == nil {
			t.Errorf("directory lacks %s", k)
		}
	}

	r = c.newOrder("h.example.com")
	var o struct{ Authorizations []string }
	json.Unmarshal(r.body, &o)
	var a struct {
		Challenges []struct{ Type, URL, Token string }
	}
	json.Unmarshal(c.post(o.Authorizations[0], nil, jwsOpts{}).body, &a)
	var ch struct{ Type, URL, Token string }
	for _, x := range a.Challenges {
		if x.Type == HTTP01 {
			ch = x
		}
	}
	if len(a.Challenges) != 3 {
		t.Errorf("challenges offered: got %d, want http-01, dns-01 and tls-alpn-01", len(a.Challenges))
	}
	thumb, _ := keyThumbprint(c.key.Public())
	e.chall.set(ch.Token, ch.Token+"."+thumb)
	cr := c.post(ch.URL, map[string]any{}, jwsOpts{})
	if cr.status != 200 || !strings.Contains(strings.Join(cr.header.Values("Link"), ","), o.Authorizations[0]+`>;rel="up"`) || cr.header.Get("Retry-After") == "" {
		t.Errorf("challenge response: %d, Link %q, Retry-After %q", cr.status, cr.header.Values("Link"), cr.header.Get("Retry-After"))
	}

	t.Run("validity", func(t *testing.T) {
		now := time.Now().UTC()
		for _, tc := range []struct {
			name         string
			nb, na       string
			wantStatus   int
			wantNotAfter bool
		}{
			{"notAfter within max_ttl", "", now.Add(48 * time.Hour).Format(time.RFC3339), 201, true},
			{"notAfter past max_ttl", "", now.Add(100 * time.Hour).Format(time.RFC3339), 400, false},
			{"notBefore in the future", now.Add(time.Hour).Format(time.RFC3339), "", 400, false},
			{"notAfter in the past", "", now.Add(-time.Hour).Format(time.RFC3339), 400, false},
			{"bad time", "", "tomorrow", 400, false},
		} {
			t.Run(tc.name, func(t *testing.T) {
				p := map[string]any{"identifiers": []Ident{{"dns", "v.example.com"}}}
				if tc.nb != "" {
					p["notBefore"] = tc.nb
				}
				if tc.na != "" {
					p["notAfter"] = tc.na
				}
				r := c.post("new-order", p, jwsOpts{})
				if r.status != tc.wantStatus {
					t.Fatalf("got %d %s, want %d", r.status, r.body, tc.wantStatus)
				}
				if tc.wantNotAfter && !strings.Contains(string(r.body), `"notAfter"`) {
					t.Errorf("order lacks notAfter: %s", r.body)
				}
			})
		}
	})
}

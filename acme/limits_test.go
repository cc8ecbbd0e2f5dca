package acme

import (
	"encoding/json"
	"net/http"
	"testing"
	"time"
)

func (c *rawClient) newOrder(names ...string) rawResp {
	var ids []Ident
	for _, n := range names {
		ids = append(ids, Ident{"dns", n})
	}
	return c.post("new-order", map[string]any{"identifiers": ids}, jwsOpts{})
}

// TestLimits: the order cap, the order rate, the failed-validation rate and
// authorization reuse.
func TestLimits(t *testing.T) {
	t.Run("open order cap", func(t *testing.T) {
		e := newEnv(t, envOpts{modify: func(c *Config) { c.Limits.MaxOpenOrders = 2 }})
		c := e.raw(t, newECKey(t))
		c.register(t, map[string]any{})
		for i := range 2 {
			if r := c.newOrder("a.example.com"); r.status != http.StatusCreated {
				t.Fatalf("order %d: %d %s", i, r.status, r.body)
			}
		}
		before := e.snapshot(t)
		r := c.newOrder("a.example.com")
		if r.status != http.StatusTooManyRequests || r.problem() != "rateLimited" || r.header.Get("Retry-After") == "" {
			t.Errorf("third open order: got %d %s (Retry-After %q), want 429 rateLimited with Retry-After", r.status, r.body, r.header.Get("Retry-After"))
		}
		wantUnchanged(t, e, before)
		var list struct{ Orders []string }
		json.Unmarshal(c.post(c.kid+"/orders", nil, jwsOpts{}).body, &list)
		if len(list.Orders) != 2 {
			t.Errorf("account orders: got %d, want 2", len(list.Orders))
		}
	})
	t.Run("order rate per account", func(t *testing.T) {
		e := newEnv(t, envOpts{modify: func(c *Config) { c.Limits.OrdersPerHour, c.Limits.OrderBurst = 1, 1 }})
		c := e.raw(t, newECKey(t))
		c.register(t, map[string]any{})
		if r := c.newOrder("a.example.com"); r.status != http.StatusCreated {
			t.Fatalf("first order: %d %s", r.status, r.body)
		}
		if r := c.newOrder("a.example.com"); r.status != http.StatusTooManyRequests || r.problem() != "rateLimited" {
			t.Errorf("second order: got %d %s, want 429 rateLimited", r.status, r.body)
		}
	})
	t.Run("failed validations", func(t *testing.T) {
		e := newEnv(t, envOpts{modify: func(c *Config) { c.Limits.FailedValidationsPerHour, c.Limits.FailedValidationBurst = 1, 1 }})
		c := e.raw(t, newECKey(t))
		c.register(t, map[string]any{})
		chall := func(name string) (string, string) {
			var o struct{ Authorizations []string }
			json.Unmarshal(c.newOrder(name).body, &o)
			var a struct {
				Challenges []struct{ Type, URL, Token string }
			}
			json.Unmarshal(c.post(o.Authorizations[0], nil, jwsOpts{}).body, &a)
			return o.Authorizations[0], a.Challenges[0].URL
		}
		az, u := chall("f1.example.com") // nothing answers: it fails
		c.post(u, map[string]any{}, jwsOpts{})
		waitInvalid(t, c, az)
		_, u2 := chall("f2.example.com")
		if r := c.post(u2, map[string]any{}, jwsOpts{}); r.status != http.StatusTooManyRequests || r.problem() != "rateLimited" {
			t.Errorf("challenge after a failed validation: got %d %s, want 429 rateLimited", r.status, r.body)
		}
	})
	t.Run("authz reuse", func(t *testing.T) {
		e := newEnv(t, envOpts{modify: func(c *Config) { c.Limits.AuthzReuse = time.Hour }})
		c := e.raw(t, newECKey(t))
		c.register(t, map[string]any{})
		_, o1 := c.readyOrder(t, "r.example.com")
		r := c.newOrder("r.example.com")
		var o2 map[string]any
		json.Unmarshal(r.body, &o2)
		if o2["status"] != "pending" && o2["status"] != "ready" {
			t.Fatalf("second order: %s", r.body)
		}
		a1, a2 := o1["authorizations"].([]any)[0], o2["authorizations"].([]any)[0]
		if a1 != a2 {
			t.Errorf("authorization not reused: %v then %v", a1, a2)
		}
		c.waitStatus(t, r.header.Get("Location"), "ready")
		// Another account does not reuse it.
		d := e.raw(t, newECKey(t))
		d.register(t, map[string]any{})
		var o3 map[string]any
		json.Unmarshal(d.newOrder("r.example.com").body, &o3)
		if o3["authorizations"].([]any)[0] == a1 {
			t.Errorf("another account reused the authorization")
		}
	})
}

func waitInvalid(t *testing.T, c *rawClient, u string) {
	t.Helper()
	for i := 0; ; i++ {
		var m map[string]any
		json.Unmarshal(c.post(u, nil, jwsOpts{}).body, &m)
		if m["status"] == "invalid" {
			return
		}
		if i > 3000 {
			t.Fatalf("%s never became invalid", u)
		}
		time.Sleep(10 * time.Millisecond) // polling the worker as a client does
	}
}

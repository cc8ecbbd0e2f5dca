package acme

import (
	"context"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"
)

type testClock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *testClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *testClock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

// TestSweep: expired nonces, orders, authorizations and index entries go;
// live ones stay; an expired nonce is refused.
func TestSweep(t *testing.T) {
	clock := &testClock{t: time.Now()}
	e := newEnv(t, envOpts{noWorkers: true, modify: func(c *Config) { c.Now = clock.Now }})
	c := e.raw(t, newECKey(t))
	c.register(t, map[string]any{})
	if r := c.newOrder("s.example.com"); r.status != http.StatusCreated {
		t.Fatalf("new-order: %d %s", r.status, r.body)
	}
	n := c.nonce()
	count := func(prefix string) int {
		es, _ := e.store.List(context.Background(), prefix)
		return len(es)
	}
	if err := e.srv.Sweep(context.Background()); err != nil {
		t.Fatal(err)
	}
	if count(prefixOrders) != 1 || count(prefixAuthz) != 1 || count(prefixAcctOrders) != 1 {
		t.Fatalf("live state swept")
	}
	clock.Advance(11 * time.Minute)
	if r := c.post("new-order", map[string]any{"identifiers": []Ident{{"dns", "s.example.com"}}}, jwsOpts{nonce: n}); r.problem() != "badNonce" {
		t.Errorf("expired nonce: got %d %s, want badNonce", r.status, r.body)
	}
	clock.Advance(25 * time.Hour)
	if err := e.srv.Sweep(context.Background()); err != nil {
		t.Fatal(err)
	}
	if count(prefixAcctOrders) != 0 || count(prefixOrders) != 1 {
		t.Errorf("after expiry: index %d (want 0), orders %d (want 1, kept a while)", count(prefixAcctOrders), count(prefixOrders))
	}
	clock.Advance(keepExpired)
	if err := e.srv.Sweep(context.Background()); err != nil {
		t.Fatal(err)
	}
	es, _ := e.store.List(context.Background(), "acme/")
	for _, x := range es {
		if !strings.HasPrefix(x.Key, prefixDirs) && !strings.HasPrefix(x.Key, prefixAccounts) && !strings.HasPrefix(x.Key, prefixAcctKeys) {
			t.Errorf("left after the sweep: %s", x.Key)
		}
	}
}

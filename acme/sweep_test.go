package acme

import (
	"context"
	"encoding/json"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/hsmgate/hsmgate/internal/clock/clocktest"
)

// TestSweep: expired nonces, orders, authorizations and index entries go;
// live ones stay; an expired nonce is refused.
func TestSweep(t *testing.T) {
	clock := clocktest.New(time.Now())
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

// TestRequeueLostValidation: a validation queued on a replica that died
// (its queue is never served) is taken up by another replica's Sweep.
func TestRequeueLostValidation(t *testing.T) {
	clock := clocktest.New(time.Now())
	e := newEnv(t, envOpts{noWorkers: true, modify: func(c *Config) { c.Now = clock.Now }})
	c := e.raw(t, newECKey(t))
	c.register(t, map[string]any{})
	var o struct{ Authorizations []string }
	if r := c.newOrder("lost.example.com"); r.status == http.StatusCreated {
		json.Unmarshal(r.body, &o)
	}
	var a struct {
		Challenges []struct{ Type, URL, Token string }
	}
	json.Unmarshal(c.post(o.Authorizations[0], nil, jwsOpts{}).body, &a)
	thumb, _ := keyThumbprint(c.key.Public())
	e.chall.set(a.Challenges[0].Token, a.Challenges[0].Token+"."+thumb)
	c.post(a.Challenges[0].URL, map[string]any{}, jwsOpts{}) // queued on e.srv, which has no workers

	other, err := New(e.srv.cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { other.worker(ctx); close(done) }()
	defer func() { cancel(); <-done }()
	if err := other.Sweep(ctx); err != nil { // not stale yet: nothing happens
		t.Fatal(err)
	}
	if len(other.jobs) != 0 {
		t.Fatalf("a fresh validation was re-queued")
	}
	clock.Advance(other.staleAfter() + time.Second)
	if err := other.Sweep(ctx); err != nil {
		t.Fatal(err)
	}
	c.waitStatus(t, o.Authorizations[0], "valid")
}

package auth

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/hsmgate/hsmgate/internal/clock/clocktest"
	"github.com/hsmgate/hsmgate/keystore"
)

var rootID = &Identity{Name: "root", Kind: KindRoot}

func TestTokenLifecycle(t *testing.T) {
	a, s := newAuth(t, Config{Tokens: TokenConfig{DefaultTTL: time.Hour, MaxTTL: 3 * time.Hour}})
	clk := clocktest.New(time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC))
	a.Tokens.SetClock(clk.Now)
	ctx := context.Background()

	secret, info, err := a.Tokens.Create(ctx, rootID, TokenRequest{DisplayName: "svc", Policies: []string{"p1"}, Renewable: true})
	if err != nil {
		t.Fatalf("Create: %v", err)
	}
	t.Run("form and storage", func(t *testing.T) {
		if !strings.HasPrefix(secret, "hgs.") || len(secret) != 47 {
			t.Errorf("got token of form %q..., len %d, want hgs. and 47 bytes", secret[:4], len(secret))
		}
		if info.GetAccessor() != Accessor(secret) {
			t.Errorf("got accessor %s, want sha256 of token", info.GetAccessor())
		}
		es, err := s.List(ctx, "")
		if err != nil {
			t.Fatal(err)
		}
		for _, e := range es {
			if strings.Contains(string(e.Value), secret) || strings.Contains(e.Key, secret) {
				t.Errorf("store entry %s holds the token secret", e.Key)
			}
		}
	})
	t.Run("valid", func(t *testing.T) {
		id, err := a.Tokens.Authenticate(ctx, secret)
		if err != nil {
			t.Fatalf("got %v, want success", err)
		}
		if id.Name != "svc" || id.Kind != KindToken || len(id.Policies) != 1 || id.Policies[0] != "p1" {
			t.Errorf("got identity %+v, want svc/token/[p1]", id)
		}
	})
	t.Run("wrong or malformed", func(t *testing.T) {
		other, _ := GenerateToken(nil)
		for _, bad := range []string{other, "hgs.", secret[:46], secret + "A", "HGS." + secret[4:], ""} {
			if _, err := a.Tokens.Authenticate(ctx, bad); !errors.Is(err, ErrUnauthenticated) {
				t.Errorf("Authenticate(len %d): got %v, want ErrUnauthenticated", len(bad), err)
			}
		}
	})
	t.Run("renewed", func(t *testing.T) {
		clk.Advance(50 * time.Minute)
		got, err := a.Tokens.Renew(ctx, info.GetAccessor(), 0)
		if err != nil {
			t.Fatalf("Renew: %v", err)
		}
		if want := clk.Now().Add(time.Hour); !got.GetExpireTime().AsTime().Equal(want) {
			t.Errorf("got expiry %v, want %v", got.GetExpireTime().AsTime(), want)
		}
		clk.Advance(50 * time.Minute) // 100 min after creation: alive only thanks to renewal
		if _, err := a.Tokens.Authenticate(ctx, secret); err != nil {
			t.Errorf("after renewal: got %v, want success", err)
		}
		// A renewal cannot pass the max TTL (3h from creation).
		got, err = a.Tokens.Renew(ctx, info.GetAccessor(), 10*time.Hour)
		if err != nil {
			t.Fatal(err)
		}
		if want := info.GetCreateTime().AsTime().Add(3 * time.Hour); !got.GetExpireTime().AsTime().Equal(want) {
			t.Errorf("got expiry %v, want capped at %v", got.GetExpireTime().AsTime(), want)
		}
	})
	t.Run("expired", func(t *testing.T) {
		clk.Advance(3 * time.Hour)
		if _, err := a.Tokens.Authenticate(ctx, secret); !errors.Is(err, ErrUnauthenticated) {
			t.Errorf("got %v, want ErrUnauthenticated", err)
		}
		if _, err := a.Tokens.Renew(ctx, info.GetAccessor(), 0); !errors.Is(err, ErrNotFound) {
			t.Errorf("renew expired: got %v, want ErrNotFound", err)
		}
		n, err := a.Tokens.Tidy(ctx)
		if err != nil || n != 1 {
			t.Errorf("Tidy: got %d, %v, want 1 deleted", n, err)
		}
	})
}

func TestTokenRevoked(t *testing.T) {
	a, _ := newAuth(t, Config{})
	ctx := context.Background()
	secret, info, err := a.Tokens.Create(ctx, rootID, TokenRequest{Policies: []string{"p"}})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := a.Tokens.Authenticate(ctx, secret); err != nil { // now cached
		t.Fatalf("before revoke: got %v, want success", err)
	}
	if err := a.Tokens.Revoke(ctx, info.GetAccessor()); err != nil {
		t.Fatalf("Revoke: %v", err)
	}
	if _, err := a.Tokens.Authenticate(ctx, secret); !errors.Is(err, ErrUnauthenticated) {
		t.Errorf("after revoke: got %v, want ErrUnauthenticated", err)
	}
	if err := a.Tokens.Revoke(ctx, info.GetAccessor()); !errors.Is(err, ErrNotFound) {
		t.Errorf("second revoke: got %v, want ErrNotFound", err)
	}
}

// TestTokenRevokedElsewhere: a revocation by another replica reaches this
// one's cache through Watch.
func TestTokenRevokedElsewhere(t *testing.T) {
	a, s := newAuth(t, Config{})
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	other, err := NewTokens(ctx, s, TokenConfig{})
	if err != nil {
		t.Fatal(err)
	}
	secret, info, err := other.Create(ctx, rootID, TokenRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := a.Tokens.Authenticate(ctx, secret); err != nil {
		t.Fatal(err)
	}
	if err := other.Revoke(ctx, info.GetAccessor()); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(5 * time.Second)
	for {
		if _, err := a.Tokens.Authenticate(ctx, secret); errors.Is(err, ErrUnauthenticated) {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("revoked token still accepted after 5s")
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func TestTokenGrants(t *testing.T) {
	a, _ := newAuth(t, Config{})
	ctx := context.Background()
	user := &Identity{Name: "u", Kind: KindToken, Policies: []string{"a", "b"}}
	cases := []struct {
		name    string
		creator *Identity
		req     TokenRequest
		wantErr error
	}{
		{"subset", user, TokenRequest{Policies: []string{"a"}}, nil},
		{"policy not held", user, TokenRequest{Policies: []string{"a", "c"}}, ErrPermissionDenied},
		{"root by non-root", user, TokenRequest{Root: true}, ErrPermissionDenied},
		{"root by root", rootID, TokenRequest{Root: true}, nil},
		{"bad policy name", rootID, TokenRequest{Policies: []string{"A B"}}, ErrInvalid},
		{"not renewable", rootID, TokenRequest{}, nil},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, info, err := a.Tokens.Create(ctx, c.creator, c.req)
			if !errors.Is(err, c.wantErr) {
				t.Fatalf("got %v, want %v", err, c.wantErr)
			}
			if c.name == "not renewable" {
				if _, err := a.Tokens.Renew(ctx, info.GetAccessor(), 0); !errors.Is(err, ErrNotRenewable) {
					t.Errorf("renew: got %v, want ErrNotRenewable", err)
				}
			}
		})
	}
}

func TestEnsureRoot(t *testing.T) {
	a, _ := newAuth(t, Config{})
	ctx := context.Background()
	secret, err := GenerateToken(nil)
	if err != nil {
		t.Fatal(err)
	}
	for i := range 2 { // idempotent
		if err := a.Tokens.EnsureRoot(ctx, secret); err != nil {
			t.Fatalf("EnsureRoot #%d: %v", i+1, err)
		}
	}
	id, err := a.Tokens.Authenticate(ctx, secret)
	if err != nil {
		t.Fatal(err)
	}
	if !id.Root() {
		t.Errorf("got kind %s, want root", id.Kind)
	}
	if err := a.Tokens.EnsureRoot(ctx, "not-a-token"); !errors.Is(err, ErrInvalid) {
		t.Errorf("EnsureRoot(bad): got %v, want ErrInvalid", err)
	}
	_ = keystore.AnyRevision
}

func FuzzParseToken(f *testing.F) {
	good, _ := GenerateToken(nil)
	f.Add(good)
	f.Add("hgs.")
	f.Add("hgs." + strings.Repeat("A", 43))
	f.Add("hgs." + strings.Repeat("_", 42) + "=")
	f.Fuzz(func(t *testing.T, s string) {
		acc, err := ParseToken(s)
		if err != nil {
			if !errors.Is(err, ErrUnauthenticated) {
				t.Fatalf("got %v, want ErrUnauthenticated", err)
			}
			return
		}
		if len(s) != 47 || !strings.HasPrefix(s, "hgs.") || !validAccessor(acc) {
			t.Fatalf("accepted %q", s)
		}
	})
}

// TestTokenParents: a token made by a token is its child: it never outlives
// its parent and dies when the parent is revoked; orphans (root only) do not.
func TestTokenParents(t *testing.T) {
	a, _ := newAuth(t, Config{})
	ctx := context.Background()
	rootSecret, _ := GenerateToken(nil)
	if err := a.Tokens.EnsureRoot(ctx, rootSecret); err != nil {
		t.Fatal(err)
	}
	root, err := a.Tokens.Authenticate(ctx, rootSecret)
	if err != nil {
		t.Fatal(err)
	}
	pSecret, pInfo, err := a.Tokens.Create(ctx, root, TokenRequest{Policies: []string{"a"}, TTL: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	if pInfo.GetParent() != root.Accessor {
		t.Errorf("parent of a token made by root: got %q, want the root accessor", pInfo.GetParent())
	}
	parent, err := a.Tokens.Authenticate(ctx, pSecret)
	if err != nil {
		t.Fatal(err)
	}
	cSecret, cInfo, err := a.Tokens.Create(ctx, parent, TokenRequest{Policies: []string{"a"}, TTL: 10 * time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	if cInfo.GetParent() != parent.Accessor {
		t.Errorf("child parent: got %q, want %q", cInfo.GetParent(), parent.Accessor)
	}
	if got, limit := cInfo.GetExpireTime().AsTime(), pInfo.GetExpireTime().AsTime(); got.After(limit) {
		t.Errorf("child expires %v, after its parent %v", got, limit)
	}
	if got, limit := cInfo.GetMaxExpireTime().AsTime(), pInfo.GetMaxExpireTime().AsTime(); got.After(limit) {
		t.Errorf("child max expiry %v, after its parent's %v", got, limit)
	}
	if _, _, err := a.Tokens.Create(ctx, parent, TokenRequest{Orphan: true}); !errors.Is(err, ErrPermissionDenied) {
		t.Errorf("orphan by a non-root token: got %v, want ErrPermissionDenied", err)
	}
	oSecret, oInfo, err := a.Tokens.Create(ctx, root, TokenRequest{Orphan: true})
	if err != nil || oInfo.GetParent() != "" {
		t.Fatalf("orphan by root: got parent %q, %v", oInfo.GetParent(), err)
	}
	gSecret, _, err := a.Tokens.Create(ctx, &Identity{Name: "child", Kind: KindToken, Policies: []string{"a"}, Accessor: cInfo.GetAccessor()}, TokenRequest{Policies: []string{"a"}})
	if err != nil {
		t.Fatal(err)
	}
	if err := a.Tokens.Revoke(ctx, pInfo.GetAccessor()); err != nil {
		t.Fatal(err)
	}
	for name, s := range map[string]string{"child": cSecret, "grandchild": gSecret} {
		if _, err := a.Tokens.Authenticate(ctx, s); !errors.Is(err, ErrUnauthenticated) {
			t.Errorf("%s after its ancestor's revocation: got %v, want ErrUnauthenticated", name, err)
		}
	}
	if err := a.Tokens.Revoke(ctx, root.Accessor); err != nil {
		t.Fatal(err)
	}
	if _, err := a.Tokens.Authenticate(ctx, oSecret); err != nil {
		t.Errorf("orphan after the root's revocation: got %v, want alive", err)
	}
}

// TestTokenMemo: a cached token's identity is made once and reused with no
// allocation, and the memo never outlives what it was made from: a renewal
// (a new record) makes it again, expiry and revocation refuse at once.
func TestTokenMemo(t *testing.T) {
	a, _ := newAuth(t, Config{Tokens: TokenConfig{DefaultTTL: time.Hour, MaxTTL: 3 * time.Hour}})
	clk := clocktest.New(time.Now())
	a.Tokens.SetClock(clk.Now)
	ctx := context.Background()
	secret, info, err := a.Tokens.Create(ctx, rootID, TokenRequest{Policies: []string{"p"}, Renewable: true})
	if err != nil {
		t.Fatal(err)
	}
	first, err := a.Tokens.Authenticate(ctx, secret)
	if err != nil {
		t.Fatal(err)
	}
	second, err := a.Tokens.Authenticate(ctx, secret)
	if err != nil || second != first {
		t.Fatalf("second call: got %p, %v, want the same identity %p", second, err, first)
	}
	if n := testing.AllocsPerRun(100, func() {
		if _, err := a.Tokens.Authenticate(ctx, secret); err != nil {
			t.Fatal(err)
		}
	}); n != 0 {
		t.Errorf("a cached token costs %v allocations, want 0", n)
	}
	// The same length, one character changed: not the memo's token.
	last := "A"
	if secret[len(secret)-1] == 'A' {
		last = "E"
	}
	forged := secret[:len(secret)-1] + last
	if _, err := a.Tokens.Authenticate(ctx, forged); !errors.Is(err, ErrUnauthenticated) {
		t.Errorf("a token one character off: got %v, want ErrUnauthenticated", err)
	}

	clk.Advance(30 * time.Minute)
	if _, err := a.Tokens.Renew(ctx, info.GetAccessor(), 0); err != nil {
		t.Fatal(err)
	}
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		id, err := a.Tokens.Authenticate(ctx, secret)
		if err == nil && id != first {
			break // the cache's record is the renewed one (watch), the identity made again
		}
		if time.Now().After(deadline) {
			t.Fatalf("after renewal: got %p, %v, want a new identity", id, err)
		}
	}
	clk.Advance(2 * time.Hour) // past the renewed expiry
	if _, err := a.Tokens.Authenticate(ctx, secret); !errors.Is(err, ErrUnauthenticated) {
		t.Errorf("expired: got %v, want ErrUnauthenticated", err)
	}
	clk.Advance(-2 * time.Hour)
	if _, err := a.Tokens.Authenticate(ctx, secret); err != nil {
		t.Fatalf("back within its TTL: %v", err)
	}
	if err := a.Tokens.Revoke(ctx, info.GetAccessor()); err != nil {
		t.Fatal(err)
	}
	if _, err := a.Tokens.Authenticate(ctx, secret); !errors.Is(err, ErrUnauthenticated) {
		t.Errorf("revoked: got %v, want ErrUnauthenticated", err)
	}
}

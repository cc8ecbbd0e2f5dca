package auth_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/hsmgate/hsmgate/internal/auth"
	"github.com/hsmgate/hsmgate/keystore/etcd"
	"github.com/hsmgate/hsmgate/keystore/etcd/etcdtest"
)

// outageStores starts a one-member etcd and two stores on it: a replica's
// behind a Freezer (a silent network: frozen, it answers nothing and its
// watches deliver nothing, but nothing closes) and another replica's direct.
func outageStores(t *testing.T) (frozen, direct *etcd.Store, f *etcdtest.Freezer, compact func()) {
	t.Helper()
	ctx := context.Background()
	c := etcdtest.Start(t, 1)
	f = c.Freezable(t, 0)
	a, err := etcd.New(ctx, etcd.Config{Endpoints: []string{f.Endpoint}, Prefix: "/o/",
		RequestTimeout: 500 * time.Millisecond, AutoSyncInterval: -1})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { a.Close() })
	b, err := etcd.New(ctx, etcd.Config{Endpoints: c.Endpoints, Prefix: "/o/"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { b.Close() })
	compact = func() {
		t.Helper()
		resp, err := b.Client().Get(ctx, "/o/")
		if err != nil {
			t.Fatal(err)
		}
		if _, err := b.Client().Compact(ctx, resp.Header.Revision); err != nil {
			t.Fatal(err)
		}
	}
	return a, b, f, compact
}

// eventually polls f (the bound only ends a hung test; nothing is timed).
func eventually(t *testing.T, what string, f func() bool) {
	t.Helper()
	for deadline := time.Now().Add(30 * time.Second); !f(); time.Sleep(20 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not seen after 30 s", what)
		}
	}
}

// TestRevokedDuringOutageNeverAccepted: a replica cut off from etcd (its
// watch silent, not closed) must not go on accepting a token that another
// replica revoked meanwhile, neither while cut off (no grace period here)
// nor once etcd answers again (the revocation's event lost to a
// compaction): its token cache is rebuilt from the store before it is
// trusted again. The old cache trusted a silent watch: it accepted the
// revoked token for the whole outage.
func TestRevokedDuringOutageNeverAccepted(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	sa, sb, freezer, compact := outageStores(t)
	ta, err := auth.NewTokens(ctx, sa, auth.TokenConfig{})
	if err != nil {
		t.Fatal(err)
	}
	tb, err := auth.NewTokens(ctx, sb, auth.TokenConfig{})
	if err != nil {
		t.Fatal(err)
	}
	root := &auth.Identity{Name: "root", Kind: auth.KindRoot}
	secret, info, err := tb.Create(ctx, root, auth.TokenRequest{DisplayName: "svc", Policies: []string{"p"}})
	if err != nil {
		t.Fatal(err)
	}
	// Warm A's cache: the token's creation event reaches A's watch on its
	// own time, and a load that a change overtakes is not kept.
	for range 20 {
		if _, err := ta.Authenticate(ctx, secret); err != nil {
			t.Fatalf("before the outage: %v", err)
		}
		time.Sleep(10 * time.Millisecond)
	}

	freezer.Freeze()
	if err := tb.Revoke(ctx, info.GetAccessor()); err != nil {
		t.Fatal(err)
	}
	compact() // the revocation's event is gone from etcd's history
	eventually(t, "the revoked token refused during the outage", func() bool {
		_, err := ta.Authenticate(ctx, secret)
		return err != nil
	})
	freezer.Thaw()
	eventually(t, "the revoked token refused as unknown once etcd answers", func() bool {
		_, err := ta.Authenticate(ctx, secret)
		if err == nil {
			t.Fatal("the revoked token was accepted after the outage")
		}
		return errors.Is(err, auth.ErrUnauthenticated)
	})
	eventually(t, "the token cache rebuilt", func() bool { return ta.CacheStats().Synced })
	if _, err := ta.Authenticate(ctx, secret); !errors.Is(err, auth.ErrUnauthenticated) {
		t.Fatalf("after the rebuild: got %v, want ErrUnauthenticated", err)
	}
}

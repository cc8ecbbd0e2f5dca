package etcd_test

import (
	"context"
	"errors"
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/hsmgate/hsmgate/keystore"
	"github.com/hsmgate/hsmgate/keystore/etcd"
	"github.com/hsmgate/hsmgate/keystore/etcd/etcdtest"
	"github.com/hsmgate/hsmgate/keystore/storetest"
)

var prefixSeq atomic.Int64

// factory returns stores on the given endpoints, each under a prefix of its
// own, so subtests share one etcd but see only their own keys.
func factory(endpoints []string) storetest.Factory {
	return func(t *testing.T) keystore.Store {
		return newStore(t, etcd.Config{
			Endpoints: endpoints,
			Prefix:    fmt.Sprintf("/hsmgate-test/%d/", prefixSeq.Add(1)),
			// Generous: -race on busy machines, and fail-over in the cluster test.
			RequestTimeout: 15 * time.Second,
		})
	}
}

func newStore(t testing.TB, cfg etcd.Config) *etcd.Store {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	s, err := etcd.New(ctx, cfg)
	if err != nil {
		t.Fatalf("etcd.New: %v", err)
	}
	t.Cleanup(func() { _ = s.Close() })
	return s
}

func TestConformanceSingleNode(t *testing.T) {
	c := etcdtest.Start(t, 1)
	storetest.Run(t, factory(c.Endpoints))
}

func TestConformanceThreeNodes(t *testing.T) {
	c := etcdtest.Start(t, 3)
	t.Run("AllMembers", func(t *testing.T) { storetest.Run(t, factory(c.Endpoints)) })

	// The disrupted run's store talks only to follower f until halfway, so
	// its watch stream and every writer are on f when f is stopped: the
	// watch must resume on another member without a gap, and the writers'
	// failed calls must not lose or double an increment.
	f := c.Follower()
	var pinned *etcd.Store
	storetest.RunDisrupted(t, func(t *testing.T) keystore.Store {
		pinned = newStore(t, etcd.Config{
			Endpoints:      []string{c.Endpoints[f]},
			Prefix:         fmt.Sprintf("/hsmgate-test/%d/", prefixSeq.Add(1)),
			RequestTimeout: 15 * time.Second,
		})
		return pinned
	}, func(t *testing.T) {
		pinned.Client().SetEndpoints(c.Endpoints...)
		if lead := c.Leader(); lead == f {
			t.Logf("m%d became leader meanwhile; stopping it anyway", f)
		}
		start := time.Now()
		c.Stop(f)
		t.Logf("stopped member m%d in %s", f, time.Since(start))
		t.Logf("stopped member m%d (the one the store and its watch were using) halfway", f)
	})

	t.Run("OneMemberStopped", func(t *testing.T) { storetest.Run(t, factory(c.Endpoints)) })
}

func TestPrefixIsolation(t *testing.T) {
	c := etcdtest.Start(t, 1)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	a := newStore(t, etcd.Config{Endpoints: c.Endpoints, Prefix: "/deploy-a/"})
	b := newStore(t, etcd.Config{Endpoints: c.Endpoints, Prefix: "/deploy-b/"})
	wa, err := a.Watch(ctx, "")
	if err != nil {
		t.Fatalf("Watch: %v", err)
	}
	if _, err := b.Put(ctx, "k", []byte("b"), keystore.MustNotExist); err != nil {
		t.Fatalf("b.Put: %v", err)
	}
	if _, err := a.Get(ctx, "k"); !errors.Is(err, keystore.ErrNotFound) {
		t.Fatalf("a.Get of b's key: got %v, want ErrNotFound", err)
	}
	ra, err := a.Put(ctx, "k", []byte("a"), keystore.MustNotExist)
	if err != nil {
		t.Fatalf("a.Put: %v", err)
	}
	if es, err := a.List(ctx, ""); err != nil || len(es) != 1 || es[0].Key != "k" || string(es[0].Value) != "a" {
		t.Fatalf("a.List: got %+v %v, want one entry k=a", es, err)
	}
	// a's watch saw only a's put, with the prefix stripped.
	select {
	case ev := <-wa:
		if ev.Key != "k" || string(ev.Value) != "a" || ev.Revision != ra {
			t.Fatalf("a's watch: got {%q %q %d}, want {%q %q %d}", ev.Key, ev.Value, ev.Revision, "k", "a", ra)
		}
	case <-ctx.Done():
		t.Fatalf("a's watch: no event")
	}
	// The raw key carries the prefix.
	resp, err := a.Client().Get(ctx, "/deploy-a/k")
	if err != nil || len(resp.Kvs) != 1 {
		t.Fatalf("raw Get /deploy-a/k: %v, %d kvs", err, len(resp.Kvs))
	}
}

func TestUnavailableWhenEtcdDown(t *testing.T) {
	c := etcdtest.Start(t, 1)
	s := newStore(t, etcd.Config{Endpoints: c.Endpoints, Prefix: "/x/", RequestTimeout: 500 * time.Millisecond})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if _, err := s.Put(ctx, "k", []byte("v"), keystore.MustNotExist); err != nil {
		t.Fatalf("Put: %v", err)
	}
	w, err := s.Watch(ctx, "")
	if err != nil {
		t.Fatalf("Watch: %v", err)
	}
	c.Stop(0)
	// No deadline from the caller: RequestTimeout applies.
	if _, err := s.Get(context.Background(), "k"); !errors.Is(err, keystore.ErrUnavailable) {
		t.Fatalf("Get with etcd down: got %v, want ErrUnavailable", err)
	}
	if err := s.Ping(context.Background()); !errors.Is(err, keystore.ErrUnavailable) {
		t.Fatalf("Ping with etcd down: got %v, want ErrUnavailable", err)
	}
	if _, err := s.Put(context.Background(), "k", []byte("v"), keystore.AnyRevision); !errors.Is(err, keystore.ErrUnavailable) {
		t.Fatalf("Put with etcd down: got %v, want ErrUnavailable", err)
	}
	// A caller's cancellation is not the store's unavailability.
	cctx, ccancel := context.WithCancel(context.Background())
	ccancel()
	if _, err := s.Get(cctx, "k"); !errors.Is(err, context.Canceled) || errors.Is(err, keystore.ErrUnavailable) {
		t.Fatalf("Get with cancelled ctx: got %v, want context.Canceled only", err)
	}
	// Closing the store ends the watch.
	_ = s.Close()
	for range w {
	}
}

func TestSlowWatcherIsCutOff(t *testing.T) {
	c := etcdtest.Start(t, 1)
	s := newStore(t, etcd.Config{Endpoints: c.Endpoints, Prefix: "/slow/", WatchBuffer: 4})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	slow, err := s.Watch(ctx, "")
	if err != nil {
		t.Fatalf("Watch: %v", err)
	}
	// Nobody reads slow: 4 events fill it, the 5th cuts it off.
	for i := range 8 {
		if _, err := s.Put(ctx, fmt.Sprintf("k%d", i), []byte("v"), keystore.MustNotExist); err != nil {
			t.Fatalf("Put %d: %v", i, err)
		}
	}
	// The watch ends by itself once the 5th event finds the buffer full.
	for etcd.ActiveWatches(s) != 0 {
		if ctx.Err() != nil {
			t.Fatalf("slow watcher still running: %v", ctx.Err())
		}
		time.Sleep(10 * time.Millisecond)
	}
	n := 0
	for range slow {
		n++
	}
	if n != 4 {
		t.Fatalf("slow watcher: got %d events before close, want 4", n)
	}
}

func TestAuth(t *testing.T) {
	c := etcdtest.Start(t, 1)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	admin := newStore(t, etcd.Config{Endpoints: c.Endpoints}).Client()
	for _, step := range []func() error{
		func() error { _, err := admin.UserAdd(ctx, "root", "root-pw"); return err },
		func() error { _, err := admin.UserGrantRole(ctx, "root", "root"); return err },
		func() error { _, err := admin.RoleAdd(ctx, "hsmgate"); return err },
		func() error {
			_, err := admin.RoleGrantPermission(ctx, "hsmgate", "/hsmgate-auth/", clientv3.GetPrefixRangeEnd("/hsmgate-auth/"), clientv3.PermissionType(clientv3.PermReadWrite))
			return err
		},
		func() error { _, err := admin.UserAdd(ctx, "hsmgate", "s3cret"); return err },
		func() error { _, err := admin.UserGrantRole(ctx, "hsmgate", "hsmgate"); return err },
		func() error { _, err := admin.AuthEnable(ctx); return err },
	} {
		if err := step(); err != nil {
			t.Fatalf("auth setup: %v", err)
		}
	}
	t.Run("WrongPassword", func(t *testing.T) {
		_, err := etcd.New(ctx, etcd.Config{Endpoints: c.Endpoints, Username: "hsmgate", Password: "wrong", Prefix: "/hsmgate-auth/"})
		if err == nil || errors.Is(err, keystore.ErrUnavailable) {
			t.Fatalf("New with a wrong password: got %v, want an authentication error (not ErrUnavailable)", err)
		}
	})
	t.Run("OutsideItsPrefix", func(t *testing.T) {
		_, err := etcd.New(ctx, etcd.Config{Endpoints: c.Endpoints, Username: "hsmgate", Password: "s3cret", Prefix: "/other/"})
		if err == nil {
			t.Fatalf("New with a prefix the user may not read: got nil error")
		}
	})
	// The whole suite as a user confined to its prefix.
	var seq atomic.Int64
	storetest.Run(t, func(t *testing.T) keystore.Store {
		return newStore(t, etcd.Config{
			Endpoints: c.Endpoints, Username: "hsmgate", Password: "s3cret",
			Prefix:         fmt.Sprintf("/hsmgate-auth/%d/", seq.Add(1)),
			RequestTimeout: 15 * time.Second,
		})
	})
}

func TestMutualTLS(t *testing.T) {
	c := etcdtest.StartWith(t, 1, etcdtest.Options{TLS: true})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	t.Run("NoClientCertificate", func(t *testing.T) {
		noCert := c.ClientTLS.Clone()
		noCert.Certificates = nil
		// The handshake is refused; the client keeps retrying until the
		// deadline, so this looks like an unreachable etcd.
		short, cancel := context.WithTimeout(ctx, time.Second)
		defer cancel()
		_, err := etcd.New(short, etcd.Config{Endpoints: c.Endpoints, TLS: noCert})
		if !errors.Is(err, keystore.ErrUnavailable) {
			t.Fatalf("New without a client certificate: got %v, want ErrUnavailable", err)
		}
	})
	var seq atomic.Int64
	storetest.Run(t, func(t *testing.T) keystore.Store {
		return newStore(t, etcd.Config{
			Endpoints: c.Endpoints, TLS: c.ClientTLS,
			Prefix:         fmt.Sprintf("/hsmgate-tls/%d/", seq.Add(1)),
			RequestTimeout: 15 * time.Second,
		})
	})
}

func TestNewFailsWhenUnreachable(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 500*time.Millisecond)
	defer cancel()
	_, err := etcd.New(ctx, etcd.Config{Endpoints: []string{"http://127.0.0.1:1"}, DialTimeout: time.Second})
	if !errors.Is(err, keystore.ErrUnavailable) {
		t.Fatalf("New on a closed port: got %v, want ErrUnavailable", err)
	}
}

// TestFrozenMemberAndQuorumLossAreBounded: with one member frozen (its
// connections open, nothing answered, as under SIGSTOP) and then with the
// quorum lost, no store call waits for the caller's long deadline: each
// returns within the store's own timeout, with success or ErrUnavailable.
func TestFrozenMemberAndQuorumLossAreBounded(t *testing.T) {
	c := etcdtest.Start(t, 3)
	var proxies []*etcdtest.Freezer
	var eps []string
	for i := range c.Members {
		p := c.Freezable(t, i)
		proxies, eps = append(proxies, p), append(eps, p.Endpoint)
	}
	const timeout = time.Second
	s := newStore(t, etcd.Config{
		Endpoints: eps, Prefix: "/frozen/", RequestTimeout: timeout,
		AutoSyncInterval: -1, // the proxies are the only way in
	})
	f := c.Follower()

	// call runs op with a caller deadline far beyond the store's timeout
	// and fails the test if that deadline, not the store, ended it.
	var longest time.Duration
	call := func(what string, op func(ctx context.Context) error) error {
		t.Helper()
		ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
		defer cancel()
		start := time.Now()
		err := op(ctx)
		longest = max(longest, time.Since(start))
		if ctx.Err() != nil {
			t.Fatalf("%s waited for the caller's deadline: %v", what, err)
		}
		if err != nil && !errors.Is(err, keystore.ErrUnavailable) {
			t.Fatalf("%s: %v, want success or ErrUnavailable", what, err)
		}
		return err
	}
	put := func(ctx context.Context) error {
		_, err := s.Put(ctx, "k", []byte("v"), keystore.AnyRevision)
		return err
	}
	get := func(ctx context.Context) error {
		_, err := s.Get(ctx, "k")
		return err
	}
	if err := call("put", put); err != nil {
		t.Fatal(err)
	}

	proxies[f].Freeze()
	frozenAt := time.Now()
	var lastFail time.Time
	// Calls that reach the frozen member fail at the store's timeout; once
	// the fence's probe finds it silent (fence.go), calls go to the others
	// only, well before keepalive would drop its connection.
	failed, streak := 0, 0
	for i := 0; streak < 20; i++ {
		if i == 400 {
			t.Fatalf("no run of 20 successful calls in 400 with member m%d frozen (%d failed)", f, failed)
		}
		op, what := put, "put"
		if i%2 == 1 {
			op, what = get, "get"
		}
		if err := call(what, op); err != nil {
			failed, streak, lastFail = failed+1, 0, time.Now()
			continue
		}
		streak++
	}
	moved := lastFail.Sub(frozenAt)
	if lastFail.IsZero() {
		moved = 0
	}
	t.Logf("member m%d frozen: %d calls failed with ErrUnavailable before calls moved to the others, %s after the freeze; longest call %s (timeout %s)",
		f, failed, moved.Round(time.Millisecond), longest.Round(time.Millisecond), timeout)
	// Keepalive alone would move them only after KeepAliveTime +
	// KeepAliveTimeout (13 s by default); the fence within a probe
	// interval and a timeout or two.
	if moved >= etcd.DefaultKeepAliveTime {
		t.Errorf("calls still failed %s after member m%d froze: want them moved to the answering members before keepalive (%s) could", moved.Round(time.Millisecond), f, etcd.DefaultKeepAliveTime)
	}

	// Quorum lost: the two other members stop and m<f> answers again, but
	// alone; calls fail fast, not hang.
	longest = 0
	for i := range c.Members {
		if i != f {
			c.Stop(i)
		}
	}
	proxies[f].Thaw()
	for i := range 5 {
		if err := call(fmt.Sprintf("put %d without quorum", i), put); err == nil {
			t.Fatalf("put %d succeeded without quorum", i)
		}
	}
	t.Logf("quorum lost: longest call %s (timeout %s)", longest.Round(time.Millisecond), timeout)
}

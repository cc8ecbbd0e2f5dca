package keystore_test

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hsmgate/hsmgate/internal/clock/clocktest"
	"github.com/hsmgate/hsmgate/keystore"
	"github.com/hsmgate/hsmgate/keystore/bbolt"
)

// cutStore is a test seam over a real store: Cut makes it look out of
// reach (every call fails with ErrUnavailable, watches deliver nothing and
// stay open, as etcd's do behind a silent network), Restore brings it back
// with the events of the cut lost, and Gap closes the watches.
type cutStore struct {
	keystore.Store
	cut atomic.Bool

	mu      sync.Mutex
	watches []*cutWatch
}

type cutWatch struct {
	out  chan keystore.Event
	stop chan struct{}
	once sync.Once
}

func (s *cutStore) Cut()     { s.cut.Store(true) }
func (s *cutStore) Restore() { s.cut.Store(false) }

// Gap ends every watch.
func (s *cutStore) Gap() {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, w := range s.watches {
		w.once.Do(func() { close(w.stop) })
	}
	s.watches = nil
}

var errCut = fmt.Errorf("cut: %w", keystore.ErrUnavailable)

func (s *cutStore) Get(ctx context.Context, key string) (keystore.Entry, error) {
	if s.cut.Load() {
		return keystore.Entry{}, errCut
	}
	return s.Store.Get(ctx, key)
}

func (s *cutStore) Ping(ctx context.Context) error {
	if s.cut.Load() {
		return errCut
	}
	return s.Store.Ping(ctx)
}

func (s *cutStore) ListWatch(ctx context.Context, prefix string) ([]keystore.Entry, int64, <-chan keystore.Event, error) {
	if s.cut.Load() {
		return nil, 0, nil, errCut
	}
	es, rev, in, err := s.Store.ListWatch(ctx, prefix)
	if err != nil {
		return nil, 0, nil, err
	}
	w := &cutWatch{out: make(chan keystore.Event, 64), stop: make(chan struct{})}
	s.mu.Lock()
	s.watches = append(s.watches, w)
	s.mu.Unlock()
	go func() {
		defer close(w.out)
		for {
			select {
			case ev, ok := <-in:
				if !ok {
					return
				}
				if s.cut.Load() {
					continue // lost
				}
				select {
				case w.out <- ev:
				case <-w.stop:
					return
				}
			case <-w.stop:
				return
			}
		}
	}()
	return es, rev, w.out, nil
}

type env struct {
	t     *testing.T
	base  *bbolt.Store
	store *cutStore
	clock *clocktest.Fake // the grace period's clock
	c     *keystore.Cache[string]
	loads atomic.Int64
}

func newEnv(t *testing.T, grace time.Duration, mod func(*keystore.CacheConfig[string])) *env {
	t.Helper()
	base, err := bbolt.Open(filepath.Join(t.TempDir(), "s.db"), bbolt.Options{NoSync: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { base.Close() })
	e := &env{t: t, base: base, store: &cutStore{Store: base}, clock: clocktest.New(time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC))}
	cfg := keystore.CacheConfig[string]{
		CacheOptions: keystore.CacheOptions{Grace: grace, ProbeInterval: 10 * time.Millisecond,
			RetryInterval: 10 * time.Millisecond, Now: e.clock.Now},
		Name: "test", Store: e.store, Prefixes: []string{"a/", "b/"},
		Decode: func(_ context.Context, en keystore.Entry, _ string, _ bool) (string, error) {
			e.loads.Add(1)
			return string(en.Value), nil
		},
	}
	if mod != nil {
		mod(&cfg)
	}
	c, err := keystore.NewCache(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	e.c = c
	return e
}

func (e *env) put(key, val string) int64 {
	e.t.Helper()
	rev, err := e.base.Put(context.Background(), key, []byte(val), keystore.AnyRevision)
	if err != nil {
		e.t.Fatal(err)
	}
	return rev
}

// eventually waits (without a timed assertion: the bound only ends a hung test) until f holds.
func (e *env) eventually(what string, f func() bool) {
	e.t.Helper()
	for deadline := time.Now().Add(20 * time.Second); !f(); time.Sleep(2 * time.Millisecond) {
		if time.Now().After(deadline) {
			e.t.Fatalf("%s: not seen after 20 s", what)
		}
	}
}

// get returns key's value, whether it was served degraded, and the error.
func (e *env) get(key string) (string, bool, error) {
	ctx, note := keystore.WithDegradedNote(context.Background())
	v, err := e.c.Get(ctx, key)
	return v, note.Served() > 0, err
}

func TestCacheLoadsAndFollowsTheWatch(t *testing.T) {
	e := newEnv(t, 0, nil)
	e.put("a/k", "v1")
	if v, _, err := e.get("a/k"); err != nil || v != "v1" {
		t.Fatalf("first get: got %q, %v; want v1", v, err)
	}
	if v, _, _ := e.get("a/k"); v != "v1" || e.loads.Load() != 1 {
		t.Fatalf("second get: got %q after %d loads, want v1 from memory after 1", v, e.loads.Load())
	}
	e.put("a/k", "v2")
	e.eventually("the change", func() bool { v, _, _ := e.get("a/k"); return v == "v2" })
	if err := e.base.Delete(context.Background(), "a/k", keystore.AnyRevision); err != nil {
		t.Fatal(err)
	}
	e.eventually("the delete", func() bool { _, _, err := e.get("a/k"); return errors.Is(err, keystore.ErrNotFound) })
	if _, _, err := e.get("c/outside"); !errors.Is(err, keystore.ErrNotFound) {
		t.Fatalf("absent key: got %v, want ErrNotFound", err)
	}
}

// TestCacheGapNotTrustedUntilRebuilt: a change made while the cache's
// watch was cut (its event lost) is never hidden by the old value once the
// store answers again: until the rebuild the old value is served only
// marked degraded, and after it the new value.
func TestCacheGapNotTrustedUntilRebuilt(t *testing.T) {
	for _, gap := range []bool{false, true} {
		t.Run(fmt.Sprintf("watch closed %v", gap), func(t *testing.T) {
			e := newEnv(t, time.Hour, nil)
			e.put("a/token", "live")
			if v, deg, err := e.get("a/token"); v != "live" || deg || err != nil {
				t.Fatalf("before: got %q degraded=%v %v, want live", v, deg, err)
			}
			e.store.Cut()
			e.eventually("the cut noticed", func() bool { st := e.c.Stats(); return !st.Synced && st.Down })
			e.put("a/token", "revoked") // its event is lost
			if gap {
				e.store.Gap()
			}
			if v, deg, err := e.get("a/token"); v != "live" || !deg || err != nil {
				t.Fatalf("store cut, within grace: got %q degraded=%v %v, want live served degraded", v, deg, err)
			}
			e.store.Restore()
			e.eventually("the new value", func() bool {
				v, deg, err := e.get("a/token")
				if err != nil {
					t.Fatalf("after restore: %v", err)
				}
				if v == "live" && !deg {
					t.Fatal("after restore: the old value served as fresh")
				}
				return v == "revoked"
			})
			e.eventually("the rebuild", func() bool { return e.c.Stats().Synced })
			if v, deg, _ := e.get("a/token"); v != "revoked" || deg {
				t.Fatalf("after rebuild: got %q degraded=%v, want revoked, fresh", v, deg)
			}
		})
	}
}

// TestCacheDegradedGrace: out of reach, only cached values are served, and
// only for the grace period; grace 0 serves nothing.
func TestCacheDegradedGrace(t *testing.T) {
	t.Run("grace", func(t *testing.T) {
		e := newEnv(t, time.Minute, nil)
		e.put("a/k", "v")
		e.put("b/other", "w")
		e.get("a/k")
		e.store.Cut()
		e.eventually("the cut noticed", func() bool { return e.c.Stats().Down })
		if v, deg, err := e.get("a/k"); v != "v" || !deg || err != nil {
			t.Fatalf("within grace: got %q degraded=%v %v, want v degraded", v, deg, err)
		}
		if _, _, err := e.get("b/other"); !errors.Is(err, keystore.ErrUnavailable) {
			t.Fatalf("uncached key: got %v, want ErrUnavailable", err)
		}
		e.clock.Advance(time.Minute + time.Second)
		if _, _, err := e.get("a/k"); !errors.Is(err, keystore.ErrUnavailable) {
			t.Fatalf("after grace: got %v, want ErrUnavailable", err)
		}
		if n := e.c.Stats().Degraded; n != 1 {
			t.Fatalf("degraded count: got %d, want 1", n)
		}
		e.store.Restore()
		e.eventually("back", func() bool { v, _, err := e.get("a/k"); return err == nil && v == "v" })
	})
	t.Run("off", func(t *testing.T) {
		e := newEnv(t, 0, nil)
		e.put("a/k", "v")
		e.get("a/k")
		e.store.Cut()
		e.eventually("the cut noticed", func() bool { return e.c.Stats().Down })
		if _, _, err := e.get("a/k"); !errors.Is(err, keystore.ErrUnavailable) {
			t.Fatalf("grace 0: got %v, want ErrUnavailable", err)
		}
	})
}

// TestCacheRebuildKeepsWhatDidNotChange: a rebuild drops only what changed.
func TestCacheRebuildKeepsWhatDidNotChange(t *testing.T) {
	e := newEnv(t, 0, nil)
	e.put("a/same", "1")
	e.put("b/changed", "1")
	e.get("a/same")
	e.get("b/changed")
	e.store.Cut()
	e.eventually("the cut noticed", func() bool { return !e.c.Stats().Synced })
	e.put("b/changed", "2")
	e.store.Restore()
	e.eventually("the rebuild", func() bool { return e.c.Stats().Synced })
	loads := e.loads.Load()
	if v, _, _ := e.get("a/same"); v != "1" || e.loads.Load() != loads {
		t.Fatalf("unchanged entry: got %q after %d more loads, want 1 from memory", v, e.loads.Load()-loads)
	}
	if v, _, _ := e.get("b/changed"); v != "2" {
		t.Fatalf("changed entry: got %q, want 2", v)
	}
}

// TestCacheAbsentAndDerived: absent keys are cached as the zero value when
// asked; derived values drop with their dependencies.
func TestCacheAbsentAndDerived(t *testing.T) {
	e := newEnv(t, 0, func(c *keystore.CacheConfig[string]) {
		c.Absent = true
		c.Dependents = func(key string) []string { return []string{"\x00sum"} }
	})
	if v, _, err := e.get("a/none"); v != "" || err != nil {
		t.Fatalf("absent: got %q, %v; want the zero value", v, err)
	}
	derive := func(ctx context.Context) (string, error) {
		es, err := e.base.List(ctx, "a/")
		return fmt.Sprint(len(es)), err
	}
	if v, _ := e.c.Lookup(context.Background(), "\x00sum", derive); v != "0" {
		t.Fatalf("derived: got %q, want 0", v)
	}
	e.put("a/x", "1")
	e.eventually("the derived value dropped", func() bool {
		v, _ := e.c.Lookup(context.Background(), "\x00sum", derive)
		return v == "1"
	})
	e.eventually("the absent value dropped", func() bool { v, _, _ := e.get("a/none"); return v == "" })
}

// TestCacheConcurrentWritersConverge: under concurrent writes, gets and
// gaps, the cache ends with the store's values.
func TestCacheConcurrentWritersConverge(t *testing.T) {
	e := newEnv(t, 0, nil)
	var wg sync.WaitGroup
	for w := range 4 {
		wg.Add(2)
		go func() {
			defer wg.Done()
			for i := range 50 {
				e.put(fmt.Sprintf("a/%d", i%3), fmt.Sprint(w, i))
			}
		}()
		go func() {
			defer wg.Done()
			for i := range 200 {
				e.c.Get(context.Background(), fmt.Sprintf("a/%d", i%3))
			}
		}()
	}
	e.store.Gap()
	wg.Wait()
	for i := range 3 {
		key := fmt.Sprintf("a/%d", i)
		want, err := e.base.Get(context.Background(), key)
		if err != nil {
			t.Fatal(err)
		}
		e.eventually("convergence of "+key, func() bool { v, _, _ := e.get(key); return v == string(want.Value) })
	}
}

// BenchmarkCacheGetHit: the hot path of every cache (transit's per-request
// key lookup): a hit while in sync.
func BenchmarkCacheGetHit(b *testing.B) {
	base, err := bbolt.Open(filepath.Join(b.TempDir(), "s.db"), bbolt.Options{NoSync: true})
	if err != nil {
		b.Fatal(err)
	}
	defer base.Close()
	if _, err := base.Put(context.Background(), "a/k", []byte("v"), keystore.AnyRevision); err != nil {
		b.Fatal(err)
	}
	c, err := keystore.NewCache(keystore.CacheConfig[string]{Name: "bench", Store: base, Prefixes: []string{"a/"},
		Decode: func(_ context.Context, e keystore.Entry, _ string, _ bool) (string, error) {
			return string(e.Value), nil
		}})
	if err != nil {
		b.Fatal(err)
	}
	defer c.Close()
	ctx := context.Background()
	if _, err := c.Get(ctx, "a/k"); err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if _, err := c.Get(ctx, "a/k"); err != nil {
				b.Fatal(err)
			}
		}
	})
}

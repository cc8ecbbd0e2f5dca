package keystore

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// Cache is hsmgate's one watch-fed cache: values decoded from the entries
// under a few key prefixes, loaded on first use and invalidated by the
// store's Watch, so that several replicas agree after a change. The transit
// key cache, the SSH CA's roles and CAs, and auth's tokens and policies are
// each one Cache.
//
// # Trust
//
// A Cache is in sync while its watches run and the store answers its probes
// (Store.Ping every ProbeInterval: a watch on a store that went silent
// delivers nothing and does not close). Then a hit is served from memory,
// and a miss reads the store and keeps the value unless a change to the key
// (or a gap) was seen meanwhile.
//
// A gap is a watch that ends (etcd compaction, a lost leader, a slow
// consumer cut off, a closed store) or a probe that fails. From then on the
// cache is out of sync and trusts nothing it holds until it is rebuilt:
// ListWatch of every prefix at one revision, then each kept entry is
// checked against that list (same revision, or written by this process
// after it) and every other one dropped, and the watches resume from that
// revision, so no change between the list and the watch is lost. Out of
// sync, a Get reads the store (and uses the cached value only if the
// store's revision is the same); nothing read then is kept.
//
// # Degraded
//
// When, out of sync, the store does not answer (ErrUnavailable), a Get
// serves the value cached before the gap for at most CacheOptions.Grace
// after the last moment the cache was known in sync, and marks the request
// degraded (see WithDegradedNote) and counts it (Stats). A value that was
// not cached, or any value after the grace period, gives ErrUnavailable.
// Grace 0 serves nothing degraded. Writes never go through a Cache: they
// go to the store and fail there while it is down.
type Cache[T any] struct {
	cfg  CacheConfig[T]
	log  *slog.Logger
	now  func() time.Time
	grec atomic.Uint32 // degraded serving logged in this gap

	state atomic.Pointer[cacheState]
	epoch atomic.Uint64 // bumped when a gap starts: loads that straddle one keep nothing
	slots sync.Map      // key → *slot[T]
	n     atomic.Int64  // number of slots

	lastOK    atomic.Int64 // unix nanoseconds of the last moment the store was known in sync
	probeFail chan error
	kick      chan struct{}

	gaps, rebuilds, degraded atomic.Uint64

	cancel context.CancelFunc
	done   chan struct{}
}

// cacheState is immutable; Cache.state points to the current one.
type cacheState struct {
	synced bool
	since  time.Time // out of sync: the last moment the cache was known in sync
	down   bool      // out of sync: the store did not answer the last attempt
}

// noRevision marks a value derived by Lookup: dropped by every rebuild.
const noRevision = -1

type item[T any] struct {
	v   T
	rev int64 // the entry's revision; 0: the key is absent; noRevision: derived
}

type slot[T any] struct {
	loadMu sync.Mutex // one load of the key at a time
	wmu    sync.Mutex // guards writes of it, ver and floor (reads of it are lock-free)
	it     atomic.Pointer[item[T]]
	ver    atomic.Uint64 // bumped by every change seen to the key
	lver   atomic.Uint64 // bumped by this process's own drops (Invalidate, rebuilds)
	floor  int64         // no value of an older revision is kept (the newest the watch reported)
}

// Defaults for CacheOptions fields left zero.
const (
	DefaultProbeInterval = time.Second
	DefaultRetryInterval = 500 * time.Millisecond
)

// CacheOptions are the settings that every cache of a process shares.
type CacheOptions struct {
	// Grace is how long after the last moment a cache was known in sync
	// with a store that no longer answers it serves the values it holds
	// (degraded, counted and noted on the request); 0: never.
	Grace time.Duration
	// ProbeInterval is how often the store is pinged (default
	// DefaultProbeInterval): a silent store is noticed this late at most
	// (plus the store's own call timeout).
	ProbeInterval time.Duration
	// RetryInterval is how often a cache out of sync tries to rebuild
	// (default DefaultRetryInterval).
	RetryInterval time.Duration
	// Now is the clock of the grace period (default time.Now).
	Now func() time.Time
	// Logger receives gaps, rebuilds and degraded serving (default slog.Default()).
	Logger *slog.Logger
}

// IsZero reports whether no option is set.
func (o CacheOptions) IsZero() bool {
	return o.Grace == 0 && o.ProbeInterval == 0 && o.RetryInterval == 0 && o.Now == nil && o.Logger == nil
}

// CacheConfig configures NewCache.
type CacheConfig[T any] struct {
	CacheOptions
	// Name names the cache in logs and errors, e.g. "transit keys".
	Name string
	// Store is watched and read.
	Store Store
	// Prefixes are the watched key prefixes; none may be a prefix of another.
	// Keys passed to the methods are full store keys.
	Prefixes []string
	// Decode turns an entry into the value to cache. prev is the value
	// cached for the key before (hasPrev), for a decoder that can reuse what
	// did not change. Values are shared: callers must not change them.
	Decode func(ctx context.Context, e Entry, prev T, hasPrev bool) (T, error)
	// Absent: a key that is not in the store is cached as the zero T, and
	// Get returns it with no error. Otherwise Get returns ErrNotFound and
	// nothing is kept.
	Absent bool
	// Refresh: a change the watch reports to a cached key is decoded at
	// once (with the old value as prev), in the watch goroutine. Otherwise
	// the entry is dropped and loads on its next use.
	Refresh bool
	// MaxEntries bounds the entries kept; past it the cache empties
	// (0: unbounded).
	MaxEntries int
	// Dependents returns keys of derived values (Lookup) to drop when key
	// changes. Optional.
	Dependents func(key string) []string
	// OnChange is called in the watch goroutine after each change the
	// watch reports has been applied. Optional.
	OnChange func(ev Event)
}

// NewCache starts the watches of cfg.Prefixes (it fails if the store cannot
// start them) and returns the cache; Close stops it.
func NewCache[T any](cfg CacheConfig[T]) (*Cache[T], error) {
	if cfg.Store == nil || len(cfg.Prefixes) == 0 || cfg.Decode == nil {
		return nil, errors.New("keystore: cache needs a store, prefixes and a decoder")
	}
	for i, p := range cfg.Prefixes {
		for j, q := range cfg.Prefixes {
			if i != j && strings.HasPrefix(q, p) {
				return nil, fmt.Errorf("keystore: cache %s: prefix %q contains %q", cfg.Name, p, q)
			}
		}
	}
	if cfg.ProbeInterval <= 0 {
		cfg.ProbeInterval = DefaultProbeInterval
	}
	if cfg.RetryInterval <= 0 {
		cfg.RetryInterval = DefaultRetryInterval
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	c := &Cache[T]{cfg: cfg, log: cfg.Logger, now: cfg.Now, probeFail: make(chan error, 1),
		kick: make(chan struct{}, 1), done: make(chan struct{})}
	ctx, cancel := context.WithCancel(context.Background())
	sess, _, _, err := c.open(ctx)
	if err != nil {
		cancel()
		return nil, fmt.Errorf("keystore: cache %s: %w", cfg.Name, err)
	}
	c.cancel = cancel
	c.markOK()
	c.state.Store(&cacheState{synced: true})
	var wg sync.WaitGroup
	wg.Add(2)
	go func() { defer wg.Done(); c.run(ctx, sess) }()
	go func() { defer wg.Done(); c.probe(ctx) }()
	go func() { wg.Wait(); close(c.done) }()
	return c, nil
}

// Close stops the watches and the probe, and waits for them.
func (c *Cache[T]) Close() {
	c.cancel()
	<-c.done
}

// Get returns key's value: from memory when the cache is in sync and holds
// it; otherwise read from the store (ErrNotFound, wrapped, if absent and
// not cfg.Absent); when the store is out of reach, degraded (see Cache).
func (c *Cache[T]) Get(ctx context.Context, key string) (T, error) {
	return c.get(ctx, key, nil)
}

// Lookup is Get for a value derived from several entries: load computes
// it. It is kept like a loaded value, dropped when a key whose Dependents
// name it changes, and by every rebuild.
func (c *Cache[T]) Lookup(ctx context.Context, key string, load func(context.Context) (T, error)) (T, error) {
	return c.get(ctx, key, load)
}

func (c *Cache[T]) get(ctx context.Context, key string, load func(context.Context) (T, error)) (T, error) {
	st := c.state.Load()
	if st.synced {
		if v, ok := c.slots.Load(key); ok {
			if it := v.(*slot[T]).it.Load(); it != nil {
				return it.v, nil
			}
		}
		return c.loadThrough(ctx, key, load)
	}
	if !st.down {
		v, _, err := c.fetch(ctx, key, load, c.peek(key))
		if err == nil || !errors.Is(err, ErrUnavailable) {
			return v, err
		}
		c.markDown(st)
		st = c.state.Load()
		if st.synced { // rebuilt meanwhile
			return c.get(ctx, key, load)
		}
	}
	return c.serveDegraded(ctx, key, st)
}

// serveDegraded returns the value held for key if the grace period allows.
func (c *Cache[T]) serveDegraded(ctx context.Context, key string, st *cacheState) (T, error) {
	var zero T
	it := c.peek(key)
	age := c.now().Sub(st.since)
	if c.cfg.Grace <= 0 || age > c.cfg.Grace || it == nil {
		why := "not cached"
		switch {
		case c.cfg.Grace <= 0:
			why = "no grace period"
		case age > c.cfg.Grace:
			why = fmt.Sprintf("grace period of %s over", c.cfg.Grace)
		}
		return zero, fmt.Errorf("keystore: %s: store out of reach for %s (%s): %w",
			c.cfg.Name, age.Round(time.Millisecond), why, ErrUnavailable)
	}
	c.degraded.Add(1)
	noteDegraded(ctx)
	if c.grec.CompareAndSwap(0, 1) {
		c.log.Warn("keystore: store out of reach; serving cached entries degraded",
			"cache", c.cfg.Name, "since", st.since, "grace", c.cfg.Grace)
	}
	return it.v, nil
}

// fetch reads key (or runs load) without keeping anything. prev, when it
// has the revision the store holds, is returned as it is.
func (c *Cache[T]) fetch(ctx context.Context, key string, load func(context.Context) (T, error), prev *item[T]) (T, int64, error) {
	var zero T
	if load != nil {
		v, err := load(ctx)
		return v, noRevision, err
	}
	e, err := c.cfg.Store.Get(ctx, key)
	if errors.Is(err, ErrNotFound) && c.cfg.Absent {
		return zero, 0, nil
	}
	if err != nil {
		return zero, 0, err
	}
	if prev != nil && prev.rev == e.Revision {
		return prev.v, e.Revision, nil
	}
	var pv T
	if prev != nil {
		pv = prev.v
	}
	v, err := c.cfg.Decode(ctx, e, pv, prev != nil)
	if err != nil {
		return zero, 0, err
	}
	return v, e.Revision, nil
}

// loadThrough loads a missing key while in sync and keeps it unless a
// change to it, or a gap, came meanwhile.
func (c *Cache[T]) loadThrough(ctx context.Context, key string, load func(context.Context) (T, error)) (T, error) {
	s := c.slotFor(key)
	s.loadMu.Lock()
	defer s.loadMu.Unlock()
	if it := s.it.Load(); it != nil {
		return it.v, nil
	}
	ver, lver, epoch := s.ver.Load(), s.lver.Load(), c.epoch.Load()
	v, rev, err := c.fetch(ctx, key, load, nil)
	if err != nil {
		if s.it.Load() == nil && c.slots.CompareAndDelete(key, s) {
			c.n.Add(-1)
		}
		if errors.Is(err, ErrUnavailable) {
			c.kickProbe()
		}
		var zero T
		return zero, err
	}
	// A value of a known revision is kept unless the watch reported a
	// newer one (floor) or this process dropped the key meanwhile; an
	// absent or derived value, unless anything changed meanwhile.
	s.wmu.Lock()
	cur := s.it.Load()
	unchanged := s.lver.Load() == lver && c.epoch.Load() == epoch
	if rev > 0 {
		unchanged = unchanged && rev >= s.floor
	} else {
		unchanged = unchanged && s.ver.Load() == ver
	}
	if unchanged && (cur == nil || cur.rev < rev) {
		s.it.Store(&item[T]{v: v, rev: rev})
	}
	s.wmu.Unlock()
	return v, nil
}

// Put keeps v as key's value at revision rev, written by this process (so
// that its next use does not wait for the watch), unless a newer revision
// of the key is known.
func (c *Cache[T]) Put(key string, v T, rev int64) {
	s := c.slotFor(key)
	s.wmu.Lock()
	defer s.wmu.Unlock()
	if rev < s.floor {
		return
	}
	if cur := s.it.Load(); cur != nil && cur.rev >= rev {
		return
	}
	s.it.Store(&item[T]{v: v, rev: rev})
}

// Peek returns the value held for key, trusted or not (a decoder's prev).
func (c *Cache[T]) Peek(key string) (T, bool) {
	if it := c.peek(key); it != nil {
		return it.v, true
	}
	var zero T
	return zero, false
}

func (c *Cache[T]) peek(key string) *item[T] {
	if v, ok := c.slots.Load(key); ok {
		return v.(*slot[T]).it.Load()
	}
	return nil
}

// Invalidate drops keys (and their dependents): this process changed them.
func (c *Cache[T]) Invalidate(keys ...string) {
	for _, k := range keys {
		c.drop(k, 0, true)
		if c.cfg.Dependents != nil {
			for _, d := range c.cfg.Dependents(k) {
				c.drop(d, 0, true)
			}
		}
	}
}

// drop forgets key's value unless it is of revision rev or newer (rev 0:
// whatever it is), and raises its floor to rev. local: this process
// dropped it (not the watch).
func (c *Cache[T]) drop(key string, rev int64, local bool) {
	v, ok := c.slots.Load(key)
	if !ok {
		return
	}
	s := v.(*slot[T])
	s.wmu.Lock()
	defer s.wmu.Unlock()
	s.ver.Add(1)
	if local {
		s.lver.Add(1)
	}
	s.floor = max(s.floor, rev)
	if cur := s.it.Load(); cur != nil && (rev == 0 || cur.rev < rev) {
		s.it.Store(nil)
	}
}

func (c *Cache[T]) slotFor(key string) *slot[T] {
	if v, ok := c.slots.Load(key); ok {
		return v.(*slot[T])
	}
	if m := c.cfg.MaxEntries; m > 0 && c.n.Load() >= int64(m) {
		c.clear()
	}
	v, loaded := c.slots.LoadOrStore(key, &slot[T]{})
	if !loaded {
		c.n.Add(1)
	}
	return v.(*slot[T])
}

// clear drops every slot (the cache is full).
func (c *Cache[T]) clear() {
	c.slots.Range(func(k, v any) bool {
		s := v.(*slot[T])
		s.wmu.Lock()
		s.ver.Add(1)
		s.lver.Add(1)
		s.it.Store(nil)
		s.wmu.Unlock()
		if c.slots.CompareAndDelete(k, v) {
			c.n.Add(-1)
		}
		return true
	})
}

// CacheStats describe a cache for status pages and tests.
type CacheStats struct {
	Synced bool
	// Since is, out of sync, the last moment the cache was known in sync.
	Since time.Time
	// Down: out of sync, and the store did not answer the last attempt.
	Down bool
	// Gaps, Rebuilds and Degraded count gaps, rebuilds and values served degraded.
	Gaps, Rebuilds, Degraded uint64
	Entries                  int64
}

// Stats returns the cache's state and counters.
func (c *Cache[T]) Stats() CacheStats {
	st := c.state.Load()
	return CacheStats{Synced: st.synced, Since: st.since, Down: st.down, Gaps: c.gaps.Load(),
		Rebuilds: c.rebuilds.Load(), Degraded: c.degraded.Load(), Entries: c.n.Load()}
}

type degradedNoteKey struct{}

// DegradedNote records whether caches served a request degraded: from
// values they could not check with a store that was out of reach.
type DegradedNote struct{ n atomic.Int64 }

// Served reports how many values were served degraded.
func (d *DegradedNote) Served() int64 { return d.n.Load() }

// WithDegradedNote returns ctx carrying a new note that every Cache serving
// this request marks when it serves a value degraded; the request's audit
// line reads it.
func WithDegradedNote(ctx context.Context) (context.Context, *DegradedNote) {
	d := &DegradedNote{}
	return WithDegradedNoteIn(ctx, d), d
}

// WithDegradedNoteIn is WithDegradedNote with a note the caller holds (in a
// request's own state, to save an allocation).
func WithDegradedNoteIn(ctx context.Context, d *DegradedNote) context.Context {
	return context.WithValue(ctx, degradedNoteKey{}, d)
}

func noteDegraded(ctx context.Context) {
	if d, ok := ctx.Value(degradedNoteKey{}).(*DegradedNote); ok {
		d.n.Add(1)
	}
}

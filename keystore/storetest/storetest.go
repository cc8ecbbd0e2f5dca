// Package storetest is the one conformance suite for keystore.Store. Every
// implementation's test runs it:
//
//	func TestConformance(t *testing.T) {
//		storetest.Run(t, func(t *testing.T) keystore.Store { return openFresh(t) })
//	}
//
// The factory must return an empty store (or one whose keys are all under a
// prefix of its own) and should close it in t.Cleanup; the suite closes some
// stores itself, so Close must tolerate being called twice.
//
// RunDisrupted runs the two cases that matter most under failure (concurrent
// compare-and-swap writers, and a watch that sees every change in order)
// while a callback disrupts the backend halfway, e.g. by stopping an etcd
// member.
//
// The suite asserts outcomes, orders and counts, never durations. Waits for
// events are bounded by a generous timeout (Timeout) only so that a broken
// implementation fails instead of hanging.
package storetest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hsmgate/hsmgate/keystore"
)

// Timeout bounds each wait for a store call or an event.
var Timeout = 60 * time.Second

// Factory returns a fresh, empty store for one subtest.
type Factory func(t *testing.T) keystore.Store

// Run runs every conformance case as a named subtest, each on a fresh store.
func Run(t *testing.T, newStore Factory) {
	t.Helper()
	cases := []struct {
		name string
		fn   func(t *testing.T, s keystore.Store)
	}{
		{"GetMissing", testGetMissing},
		{"PutGetRoundTrip", testRoundTrip},
		{"RevisionGrows", testRevisionGrows},
		{"MustNotExistOnExisting", testMustNotExist},
		{"StaleRevision", testStaleRevision},
		{"AnyRevision", testAnyRevision},
		{"DeleteStaleRevision", testDeleteStale},
		{"DeleteMissing", testDeleteMissing},
		{"DeleteThenRecreate", testDeleteRecreate},
		{"ListPrefix", testListPrefix},
		{"InvalidKeys", testInvalidKeys},
		{"ValuesAreCopied", testValuesCopied},
		{"ConcurrentCASNeverLosesUpdate", func(t *testing.T, s keystore.Store) {
			testConcurrentCAS(t, s, nil)
		}},
		{"WatchSeesEveryChangeInOrder", testWatchOrder},
		{"WatchOnlyAfterCall", testWatchOnlyAfterCall},
		{"WatchClosesOnCancel", testWatchCancel},
		{"ListWatchAgrees", testListWatch},
		{"ListWatchUnderConcurrentWrites", testListWatchConcurrent},
		{"Ping", testPing},
		{"CloseThenUnavailable", testClose},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			c.fn(t, newStore(t))
		})
	}
}

// RunDisrupted runs the concurrent compare-and-swap case and a watch over
// the same writes on one store, calling disrupt once when half the
// increments are done. Writers keep going while disrupt runs, and the last
// quarter of each writer's increments waits until it has returned, so writes
// certainly happen after the disruption too. It then checks that no update
// was lost and that the watch saw every change, in order.
func RunDisrupted(t *testing.T, newStore Factory, disrupt func(t *testing.T)) {
	t.Helper()
	t.Run("ConcurrentCASAndWatchWhileDisrupted", func(t *testing.T) {
		testConcurrentCAS(t, newStore(t), disrupt)
	})
}

func ctxT(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), Timeout)
	t.Cleanup(cancel)
	return ctx
}

func mustPut(t *testing.T, s keystore.Store, key, val string, expect int64) int64 {
	t.Helper()
	rev, err := s.Put(ctxT(t), key, []byte(val), expect)
	if err != nil {
		t.Fatalf("Put(%q, expect %d): %v", key, expect, err)
	}
	return rev
}

func mustGet(t *testing.T, s keystore.Store, key string) keystore.Entry {
	t.Helper()
	e, err := s.Get(ctxT(t), key)
	if err != nil {
		t.Fatalf("Get(%q): %v", key, err)
	}
	return e
}

func wantErr(t *testing.T, what string, err, want error) {
	t.Helper()
	if !errors.Is(err, want) {
		t.Fatalf("%s: got error %v, want %v", what, err, want)
	}
}

func testGetMissing(t *testing.T, s keystore.Store) {
	_, err := s.Get(ctxT(t), "missing/key")
	wantErr(t, "Get missing", err, keystore.ErrNotFound)
}

func testRoundTrip(t *testing.T, s keystore.Store) {
	val := []byte{0, 1, 2, 0xff, 'x'}
	rev, err := s.Put(ctxT(t), "k/one", val, keystore.MustNotExist)
	if err != nil {
		t.Fatalf("Put: %v", err)
	}
	if rev <= 0 {
		t.Fatalf("Put revision: got %d, want > 0", rev)
	}
	e := mustGet(t, s, "k/one")
	if e.Key != "k/one" || !bytes.Equal(e.Value, val) || e.Revision != rev {
		t.Fatalf("Get: got {%q %x %d}, want {%q %x %d}", e.Key, e.Value, e.Revision, "k/one", val, rev)
	}
	// An empty value is a value, not an absence.
	rev = mustPut(t, s, "k/empty", "", keystore.MustNotExist)
	e = mustGet(t, s, "k/empty")
	if len(e.Value) != 0 || e.Revision != rev {
		t.Fatalf("Get empty value: got {%x %d}, want {\"\" %d}", e.Value, e.Revision, rev)
	}
}

func testRevisionGrows(t *testing.T, s keystore.Store) {
	r1 := mustPut(t, s, "a", "1", keystore.MustNotExist)
	r2 := mustPut(t, s, "b", "1", keystore.MustNotExist)
	r3 := mustPut(t, s, "a", "2", r1)
	if !(r1 < r2 && r2 < r3) {
		t.Fatalf("revisions: got %d, %d, %d, want strictly increasing", r1, r2, r3)
	}
	if err := s.Delete(ctxT(t), "b", r2); err != nil {
		t.Fatalf("Delete: %v", err)
	}
	r4 := mustPut(t, s, "c", "1", keystore.MustNotExist)
	if r4 <= r3 {
		t.Fatalf("revision after delete: got %d, want > %d", r4, r3)
	}
	if e := mustGet(t, s, "a"); e.Revision != r3 {
		t.Fatalf("Get a revision: got %d, want %d (revision of its last Put)", e.Revision, r3)
	}
}

func testMustNotExist(t *testing.T, s keystore.Store) {
	rev := mustPut(t, s, "x", "first", keystore.MustNotExist)
	_, err := s.Put(ctxT(t), "x", []byte("second"), keystore.MustNotExist)
	wantErr(t, "Put MustNotExist on existing key", err, keystore.ErrConflict)
	if e := mustGet(t, s, "x"); string(e.Value) != "first" || e.Revision != rev {
		t.Fatalf("after conflict: got {%q %d}, want {%q %d}", e.Value, e.Revision, "first", rev)
	}
}

func testStaleRevision(t *testing.T, s keystore.Store) {
	r1 := mustPut(t, s, "x", "v1", keystore.MustNotExist)
	r2 := mustPut(t, s, "x", "v2", r1)
	_, err := s.Put(ctxT(t), "x", []byte("v3"), r1)
	wantErr(t, "Put with stale revision", err, keystore.ErrConflict)
	if e := mustGet(t, s, "x"); string(e.Value) != "v2" || e.Revision != r2 {
		t.Fatalf("after conflict: got {%q %d}, want {%q %d}", e.Value, e.Revision, "v2", r2)
	}
	// A revision for a key that does not exist is a conflict too.
	_, err = s.Put(ctxT(t), "absent", []byte("v"), r2)
	wantErr(t, "Put with a revision on an absent key", err, keystore.ErrConflict)
	_, err = s.Get(ctxT(t), "absent")
	wantErr(t, "Get after failed Put", err, keystore.ErrNotFound)
	// A future revision never matches.
	_, err = s.Put(ctxT(t), "x", []byte("v3"), r2+1000)
	wantErr(t, "Put with future revision", err, keystore.ErrConflict)
}

func testAnyRevision(t *testing.T, s keystore.Store) {
	r1 := mustPut(t, s, "x", "v1", keystore.AnyRevision) // creates
	r2 := mustPut(t, s, "x", "v2", keystore.AnyRevision) // overwrites
	if r2 <= r1 {
		t.Fatalf("AnyRevision overwrite revision: got %d, want > %d", r2, r1)
	}
	if e := mustGet(t, s, "x"); string(e.Value) != "v2" {
		t.Fatalf("Get: got %q, want %q", e.Value, "v2")
	}
	if err := s.Delete(ctxT(t), "x", keystore.AnyRevision); err != nil {
		t.Fatalf("Delete AnyRevision: %v", err)
	}
	_, err := s.Get(ctxT(t), "x")
	wantErr(t, "Get after delete", err, keystore.ErrNotFound)
}

func testDeleteStale(t *testing.T, s keystore.Store) {
	r1 := mustPut(t, s, "x", "v1", keystore.MustNotExist)
	r2 := mustPut(t, s, "x", "v2", r1)
	wantErr(t, "Delete with stale revision", s.Delete(ctxT(t), "x", r1), keystore.ErrConflict)
	wantErr(t, "Delete with MustNotExist on an existing key", s.Delete(ctxT(t), "x", keystore.MustNotExist), keystore.ErrConflict)
	if e := mustGet(t, s, "x"); string(e.Value) != "v2" || e.Revision != r2 {
		t.Fatalf("after conflict: got {%q %d}, want {%q %d}", e.Value, e.Revision, "v2", r2)
	}
	if err := s.Delete(ctxT(t), "x", r2); err != nil {
		t.Fatalf("Delete with current revision: %v", err)
	}
	_, err := s.Get(ctxT(t), "x")
	wantErr(t, "Get after delete", err, keystore.ErrNotFound)
}

func testDeleteMissing(t *testing.T, s keystore.Store) {
	wantErr(t, "Delete missing (AnyRevision)", s.Delete(ctxT(t), "nope", keystore.AnyRevision), keystore.ErrNotFound)
	wantErr(t, "Delete missing (revision 7)", s.Delete(ctxT(t), "nope", 7), keystore.ErrNotFound)
}

func testDeleteRecreate(t *testing.T, s keystore.Store) {
	r1 := mustPut(t, s, "x", "v1", keystore.MustNotExist)
	if err := s.Delete(ctxT(t), "x", r1); err != nil {
		t.Fatalf("Delete: %v", err)
	}
	// The old revision must not resurrect the key.
	_, err := s.Put(ctxT(t), "x", []byte("v2"), r1)
	wantErr(t, "Put with the deleted key's revision", err, keystore.ErrConflict)
	r2 := mustPut(t, s, "x", "v3", keystore.MustNotExist)
	if r2 <= r1 {
		t.Fatalf("recreate revision: got %d, want > %d", r2, r1)
	}
}

func keysOf(es []keystore.Entry) []string {
	out := make([]string, len(es))
	for i, e := range es {
		out[i] = e.Key
	}
	return out
}

func testListPrefix(t *testing.T, s keystore.Store) {
	// Written out of order; neighbours that share bytes with the prefixes.
	keys := []string{"a/bc", "a/b/2", "a/", "a/b", "a/b/1", "a0", "a", "b/x", "a/b0", "a/a"}
	revs := map[string]int64{}
	for _, k := range keys {
		revs[k] = mustPut(t, s, k, "v:"+k, keystore.MustNotExist)
	}
	cases := []struct {
		prefix string
		want   []string
	}{
		{"a/b/", []string{"a/b/1", "a/b/2"}},
		{"a/b", []string{"a/b", "a/b/1", "a/b/2", "a/b0", "a/bc"}},
		{"a/bc", []string{"a/bc"}},
		{"a/", []string{"a/", "a/a", "a/b", "a/b/1", "a/b/2", "a/b0", "a/bc"}},
		{"a", []string{"a", "a/", "a/a", "a/b", "a/b/1", "a/b/2", "a/b0", "a/bc", "a0"}},
		{"", []string{"a", "a/", "a/a", "a/b", "a/b/1", "a/b/2", "a/b0", "a/bc", "a0", "b/x"}},
		{"c", nil},
		{"a/b/3", nil},
	}
	for _, c := range cases {
		t.Run(fmt.Sprintf("prefix=%q", c.prefix), func(t *testing.T) {
			got, err := s.List(ctxT(t), c.prefix)
			if err != nil {
				t.Fatalf("List(%q): %v", c.prefix, err)
			}
			if strings.Join(keysOf(got), " ") != strings.Join(c.want, " ") || len(got) != len(c.want) {
				t.Fatalf("List(%q): got %q, want %q", c.prefix, keysOf(got), c.want)
			}
			for _, e := range got {
				if string(e.Value) != "v:"+e.Key || e.Revision != revs[e.Key] {
					t.Fatalf("List(%q) entry %q: got {%q %d}, want {%q %d}", c.prefix, e.Key, e.Value, e.Revision, "v:"+e.Key, revs[e.Key])
				}
			}
		})
	}
}

func testInvalidKeys(t *testing.T, s keystore.Store) {
	long := strings.Repeat("k", keystore.MaxKeySize+1)
	ctx := ctxT(t)
	_, err := s.Get(ctx, "")
	wantErr(t, "Get empty key", err, keystore.ErrInvalidKey)
	_, err = s.Put(ctx, "", []byte("v"), keystore.AnyRevision)
	wantErr(t, "Put empty key", err, keystore.ErrInvalidKey)
	wantErr(t, "Delete empty key", s.Delete(ctx, "", keystore.AnyRevision), keystore.ErrInvalidKey)
	_, err = s.Put(ctx, long, []byte("v"), keystore.AnyRevision)
	wantErr(t, "Put over-long key", err, keystore.ErrInvalidKey)
	_, err = s.Get(ctx, long)
	wantErr(t, "Get over-long key", err, keystore.ErrInvalidKey)
	_, err = s.Put(ctx, "k", []byte("v"), -2)
	wantErr(t, "Put expect -2", err, keystore.ErrInvalidKey)
	_, err = s.Put(ctx, "k", make([]byte, 64<<20), keystore.AnyRevision)
	wantErr(t, "Put 64 MiB value", err, keystore.ErrInvalidKey)
	// The longest valid key works.
	maxKey := strings.Repeat("m", keystore.MaxKeySize)
	mustPut(t, s, maxKey, "v", keystore.MustNotExist)
	if e := mustGet(t, s, maxKey); string(e.Value) != "v" {
		t.Fatalf("Get max-size key: got %q, want %q", e.Value, "v")
	}
	if es, err := s.List(ctx, ""); err != nil || len(es) != 1 {
		t.Fatalf("List after invalid writes: got %d entries (%v), want 1", len(es), err)
	}
}

func testValuesCopied(t *testing.T, s keystore.Store) {
	val := []byte("original")
	rev := mustPut(t, s, "x", string(val), keystore.MustNotExist)
	in := []byte("second")
	if _, err := s.Put(ctxT(t), "x", in, rev); err != nil {
		t.Fatalf("Put: %v", err)
	}
	copy(in, "XXXXXX") // the caller reuses its buffer
	e := mustGet(t, s, "x")
	if string(e.Value) != "second" {
		t.Fatalf("after caller changed its buffer: got %q, want %q", e.Value, "second")
	}
	e.Value[0] = 'Z' // the caller scribbles on what it got
	if e2 := mustGet(t, s, "x"); string(e2.Value) != "second" {
		t.Fatalf("after caller changed a returned value: got %q, want %q", e2.Value, "second")
	}
}

// collect reads events from ch until it has n of them. It fails if the
// channel closes first or Timeout passes.
func collect(t *testing.T, ch <-chan keystore.Event, n int) []keystore.Event {
	t.Helper()
	var out []keystore.Event
	timer := time.NewTimer(Timeout)
	defer timer.Stop()
	for len(out) < n {
		select {
		case ev, ok := <-ch:
			if !ok {
				t.Fatalf("watch closed after %d events, want %d", len(out), n)
			}
			out = append(out, ev)
		case <-timer.C:
			t.Fatalf("watch: got %d events within %s, want %d", len(out), Timeout, n)
		}
	}
	return out
}

func testWatchOrder(t *testing.T, s keystore.Store) {
	ctx, cancel := context.WithCancel(ctxT(t))
	defer cancel()
	ch, err := s.Watch(ctx, "w/")
	if err != nil {
		t.Fatalf("Watch: %v", err)
	}
	type op struct {
		typ keystore.EventType
		key string
		val string
	}
	var want []keystore.Event
	revs := map[string]int64{}
	ops := []op{
		{keystore.EventPut, "w/a", "1"},
		{keystore.EventPut, "outside", "x"},
		{keystore.EventPut, "w/b", "1"},
		{keystore.EventPut, "w", "no: not under w/"},
		{keystore.EventPut, "w/a", "2"},
		{keystore.EventDelete, "w/b", ""},
		{keystore.EventPut, "wx/a", "no"},
		{keystore.EventPut, "w/c/d", "1"},
		{keystore.EventDelete, "w/a", ""},
		{keystore.EventPut, "w/b", "again"},
	}
	for i := 0; i < 20; i++ { // and a run of updates to one key
		ops = append(ops, op{keystore.EventPut, "w/n", strconv.Itoa(i)})
	}
	for _, o := range ops {
		var rev int64
		if o.typ == keystore.EventPut {
			rev = mustPut(t, s, o.key, o.val, keystore.AnyRevision)
			revs[o.key] = rev
		} else {
			if err := s.Delete(ctxT(t), o.key, revs[o.key]); err != nil {
				t.Fatalf("Delete(%q): %v", o.key, err)
			}
			// The delete's revision is not returned; check order only.
			rev = -1
		}
		if strings.HasPrefix(o.key, "w/") {
			ev := keystore.Event{Type: o.typ, Key: o.key, Revision: rev}
			if o.typ == keystore.EventPut {
				ev.Value = []byte(o.val)
			}
			want = append(want, ev)
		}
	}
	got := collect(t, ch, len(want))
	var last int64
	for i, g := range got {
		w := want[i]
		if g.Type != w.Type || g.Key != w.Key || !bytes.Equal(g.Value, w.Value) {
			t.Fatalf("event %d: got {%v %q %q rev %d}, want {%v %q %q}", i, g.Type, g.Key, g.Value, g.Revision, w.Type, w.Key, w.Value)
		}
		if w.Revision > 0 && g.Revision != w.Revision {
			t.Fatalf("event %d (%v %q): got revision %d, want %d", i, g.Type, g.Key, g.Revision, w.Revision)
		}
		if g.Revision <= last {
			t.Fatalf("event %d: revision %d after %d, want increasing", i, g.Revision, last)
		}
		last = g.Revision
	}
	// Nothing else arrives: a sentinel put after the others is the next event.
	sentinel := mustPut(t, s, "w/zz-sentinel", "end", keystore.MustNotExist)
	if ev := collect(t, ch, 1)[0]; ev.Key != "w/zz-sentinel" || ev.Revision != sentinel {
		t.Fatalf("event after the last expected one: got {%v %q %d}, want the sentinel put at %d", ev.Type, ev.Key, ev.Revision, sentinel)
	}
}

func testWatchOnlyAfterCall(t *testing.T, s keystore.Store) {
	mustPut(t, s, "p/before", "1", keystore.MustNotExist)
	ctx, cancel := context.WithCancel(ctxT(t))
	defer cancel()
	ch, err := s.Watch(ctx, "p/")
	if err != nil {
		t.Fatalf("Watch: %v", err)
	}
	rev := mustPut(t, s, "p/after", "2", keystore.MustNotExist)
	ev := collect(t, ch, 1)[0]
	if ev.Key != "p/after" || ev.Revision != rev || ev.Type != keystore.EventPut {
		t.Fatalf("first event: got {%v %q %d}, want {put %q %d}", ev.Type, ev.Key, ev.Revision, "p/after", rev)
	}
}

// waitClosed drains ch until it is closed; it fails after Timeout.
func waitClosed(t *testing.T, ch <-chan keystore.Event, what string) {
	t.Helper()
	timer := time.NewTimer(Timeout)
	defer timer.Stop()
	for {
		select {
		case _, ok := <-ch:
			if !ok {
				return
			}
		case <-timer.C:
			t.Fatalf("%s: watch channel not closed within %s", what, Timeout)
		}
	}
}

func testWatchCancel(t *testing.T, s keystore.Store) {
	ctx, cancel := context.WithCancel(ctxT(t))
	ch, err := s.Watch(ctx, "c/")
	if err != nil {
		t.Fatalf("Watch: %v", err)
	}
	mustPut(t, s, "c/1", "v", keystore.MustNotExist)
	collect(t, ch, 1)
	cancel()
	waitClosed(t, ch, "after cancel")
	// The store still works for others.
	mustPut(t, s, "c/2", "v", keystore.MustNotExist)
}

func testPing(t *testing.T, s keystore.Store) {
	if err := s.Ping(ctxT(t)); err != nil {
		t.Fatalf("Ping: %v", err)
	}
	if b := s.Backend(); b == "" {
		t.Fatalf("Backend: got empty name")
	}
}

func testClose(t *testing.T, s keystore.Store) {
	rev := mustPut(t, s, "k", "v", keystore.MustNotExist)
	ch, err := s.Watch(ctxT(t), "")
	if err != nil {
		t.Fatalf("Watch: %v", err)
	}
	if err := s.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	waitClosed(t, ch, "after Close")
	ctx := ctxT(t)
	_, err = s.Get(ctx, "k")
	wantErr(t, "Get after Close", err, keystore.ErrUnavailable)
	_, err = s.List(ctx, "")
	wantErr(t, "List after Close", err, keystore.ErrUnavailable)
	_, err = s.Put(ctx, "k", []byte("v2"), rev)
	wantErr(t, "Put after Close", err, keystore.ErrUnavailable)
	wantErr(t, "Delete after Close", s.Delete(ctx, "k", rev), keystore.ErrUnavailable)
	_, err = s.Watch(ctx, "")
	wantErr(t, "Watch after Close", err, keystore.ErrUnavailable)
	wantErr(t, "Ping after Close", s.Ping(ctx), keystore.ErrUnavailable)
	if err := s.Close(); err != nil {
		t.Fatalf("second Close: got %v, want nil", err)
	}
}

// Concurrent compare-and-swap: writers goroutines each make increments
// increments of one counter by read, +1, Put(expect=read revision), retrying
// on ErrConflict. Each value is "n writer seq" so the watch can account for
// every increment.
const (
	writers    = 4
	increments = 24
)

type counterVal struct {
	n, writer, seq int
}

func parseCounter(b []byte) (counterVal, error) {
	var c counterVal
	_, err := fmt.Sscanf(string(b), "%d %d %d", &c.n, &c.writer, &c.seq)
	return c, err
}

func testConcurrentCAS(t *testing.T, s keystore.Store, disrupt func(t *testing.T)) {
	const key = "cas/counter"
	total := writers * increments
	ctx, cancel := context.WithCancel(ctxT(t))
	defer cancel()
	mustPut(t, s, key, "0 -1 -1", keystore.MustNotExist)
	ch, err := s.Watch(ctx, "cas/")
	if err != nil {
		t.Fatalf("Watch: %v", err)
	}

	var (
		mu        sync.Mutex
		done      int
		ambiguous int // attempts that failed with ErrUnavailable: may or may not have applied
		conflicts int
		halfway   = make(chan struct{})
		// Each writer stops at 3/4 of its increments until disrupt has
		// returned, so that some writes certainly run after the disruption
		// (and some, usually, during it). Halfway comes before every writer
		// can be waiting, so this cannot deadlock.
		disrupted = make(chan struct{})
		errc      = make(chan error, writers)
	)
	var wg sync.WaitGroup
	for w := 0; w < writers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errc <- casWriter(ctx, s, key, w, disrupted, func(unavailable, conflict bool) {
				mu.Lock()
				defer mu.Unlock()
				switch {
				case unavailable:
					ambiguous++
				case conflict:
					conflicts++
				default:
					done++
					if done == total/2 {
						close(halfway)
					}
				}
			})
		}()
	}
	// Events arrive while writers run; read them concurrently so that a
	// bounded watch buffer never fills.
	var (
		evMu   sync.Mutex
		evs    []keystore.Event
		notify = make(chan struct{}, 1)
	)
	go func() {
		for ev := range ch {
			evMu.Lock()
			evs = append(evs, ev)
			evMu.Unlock()
			select {
			case notify <- struct{}{}:
			default:
			}
		}
		close(notify)
	}()
	if disrupt == nil {
		close(disrupted)
	} else {
		select {
		case <-halfway:
			disrupt(t)
			close(disrupted)
		case <-ctx.Done():
			t.Fatalf("writers did not reach halfway: %v", ctx.Err())
		}
	}
	wg.Wait()
	close(errc)
	for err := range errc {
		if err != nil {
			t.Fatalf("writer: %v", err)
		}
	}
	e := mustGet(t, s, key)
	final, err := parseCounter(e.Value)
	if err != nil {
		t.Fatalf("final value %q: %v", e.Value, err)
	}
	t.Logf("%d writers x %d increments: %d conflicts retried, %d ambiguous (unavailable) attempts", writers, increments, conflicts, ambiguous)
	// Without ambiguous failures the count is exact; an attempt that failed
	// with ErrUnavailable may have been applied, and then counts once more.
	if final.n < total || final.n > total+ambiguous {
		t.Fatalf("final counter: got %d, want %d (+ at most %d ambiguous)", final.n, total, ambiguous)
	}

	// The watch saw every change, in order: values 1..final.n, consecutive,
	// revisions increasing, ending at the final entry's revision; and every
	// writer's every increment is among them.
	got := waitEvents(t, &evMu, &evs, notify, final.n)
	seen := make(map[[2]int]bool)
	var last int64
	for i, ev := range got {
		if ev.Type != keystore.EventPut || ev.Key != key {
			t.Fatalf("event %d: got {%v %q}, want a put of %q", i, ev.Type, ev.Key, key)
		}
		c, err := parseCounter(ev.Value)
		if err != nil {
			t.Fatalf("event %d value %q: %v", i, ev.Value, err)
		}
		if c.n != i+1 {
			t.Fatalf("event %d: counter %d, want %d (an update was lost or reordered)", i, c.n, i+1)
		}
		if ev.Revision <= last {
			t.Fatalf("event %d: revision %d after %d, want increasing", i, ev.Revision, last)
		}
		last = ev.Revision
		seen[[2]int{c.writer, c.seq}] = true
	}
	if last != e.Revision {
		t.Fatalf("last event revision %d, want the final entry's %d", last, e.Revision)
	}
	for w := 0; w < writers; w++ {
		for i := 0; i < increments; i++ {
			if !seen[[2]int{w, i}] {
				t.Fatalf("increment %d of writer %d reported success but is not in the history", i, w)
			}
		}
	}
}

// waitEvents waits until *evs holds at least n events and returns the first n.
func waitEvents(t *testing.T, mu *sync.Mutex, evs *[]keystore.Event, notify <-chan struct{}, n int) []keystore.Event {
	t.Helper()
	timer := time.NewTimer(Timeout)
	defer timer.Stop()
	for {
		mu.Lock()
		have := len(*evs)
		if have >= n {
			out := append([]keystore.Event(nil), (*evs)[:n]...)
			mu.Unlock()
			return out
		}
		mu.Unlock()
		select {
		case _, ok := <-notify:
			if !ok {
				mu.Lock()
				have = len(*evs)
				mu.Unlock()
				if have < n {
					t.Fatalf("watch closed after %d events, want %d", have, n)
				}
			}
		case <-timer.C:
			t.Fatalf("watch: got %d events within %s, want %d", have, Timeout, n)
		}
	}
}

// casWriter makes increments increments of key, waiting for gate before the
// last quarter of them. report is called after each
// Put attempt. ErrConflict and ErrUnavailable are retried (the latter a bounded
// number of times, with a short pause so a failing-over backend can settle).
func casWriter(ctx context.Context, s keystore.Store, key string, w int, gate <-chan struct{}, report func(unavailable, conflict bool)) error {
	unavailable := 0
	var lastErr error
	for seq := 0; seq < increments; {
		if seq == increments*3/4 {
			select {
			case <-gate:
			case <-ctx.Done():
				return fmt.Errorf("writer %d waiting for the disruption to end: %w", w, ctx.Err())
			}
		}
		if err := ctx.Err(); err != nil {
			return fmt.Errorf("writer %d at increment %d: %w (last store error: %v)", w, seq, err, lastErr)
		}
		putFailed := false
		e, err := s.Get(ctx, key)
		if err == nil {
			var c counterVal
			if c, err = parseCounter(e.Value); err != nil {
				return fmt.Errorf("writer %d: value %q: %w", w, e.Value, err)
			}
			next := fmt.Sprintf("%d %d %d", c.n+1, w, seq)
			_, err = s.Put(ctx, key, []byte(next), e.Revision)
			if err == nil {
				report(false, false)
				seq++
				continue
			}
			if errors.Is(err, keystore.ErrConflict) {
				report(false, true)
				continue
			}
			putFailed = true
		}
		lastErr = err
		if errors.Is(err, keystore.ErrUnavailable) && unavailable < 200 {
			unavailable++
			if putFailed {
				report(true, false)
			}
			time.Sleep(20 * time.Millisecond)
			continue
		}
		return fmt.Errorf("writer %d increment %d: %w", w, seq, err)
	}
	return nil
}

package bbolt_test

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/hsmgate/hsmgate/keystore"
	"github.com/hsmgate/hsmgate/keystore/bbolt"
	"github.com/hsmgate/hsmgate/keystore/storetest"
)

func open(t testing.TB, path string, opts bbolt.Options) *bbolt.Store {
	t.Helper()
	s, err := bbolt.Open(path, opts)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	t.Cleanup(func() { _ = s.Close() })
	return s
}

func TestConformance(t *testing.T) {
	storetest.Run(t, func(t *testing.T) keystore.Store {
		return open(t, filepath.Join(t.TempDir(), "store.db"), bbolt.Options{})
	})
}

func TestReopenKeepsDataAndRevisions(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "store.db")
	s, err := bbolt.Open(path, bbolt.Options{})
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	r1, err := s.Put(ctx, "k", []byte("v1"), keystore.MustNotExist)
	if err != nil {
		t.Fatalf("Put: %v", err)
	}
	r2, err := s.Put(ctx, "gone", []byte("x"), keystore.MustNotExist)
	if err != nil {
		t.Fatalf("Put: %v", err)
	}
	if err := s.Delete(ctx, "gone", r2); err != nil {
		t.Fatalf("Delete: %v", err)
	}
	if err := s.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	s = open(t, path, bbolt.Options{})
	e, err := s.Get(ctx, "k")
	if err != nil || string(e.Value) != "v1" || e.Revision != r1 {
		t.Fatalf("Get after reopen: got {%q %d} %v, want {%q %d}", e.Value, e.Revision, err, "v1", r1)
	}
	r3, err := s.Put(ctx, "k", []byte("v2"), r1)
	if err != nil {
		t.Fatalf("Put after reopen: %v", err)
	}
	if r3 <= r2+1 { // the delete used r2+1
		t.Fatalf("revision after reopen: got %d, want > %d", r3, r2+1)
	}
}

func TestLockedFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "store.db")
	open(t, path, bbolt.Options{})
	// flock is per open file, so a second Open in this process waits as
	// another process would.
	_, err := bbolt.Open(path, bbolt.Options{LockTimeout: 50 * time.Millisecond})
	if !errors.Is(err, keystore.ErrUnavailable) {
		t.Fatalf("second Open: got %v, want ErrUnavailable (file locked)", err)
	}
}

func TestSlowWatcherIsCutOff(t *testing.T) {
	ctx := context.Background()
	s := open(t, filepath.Join(t.TempDir(), "store.db"), bbolt.Options{WatchBuffer: 4})
	slow, err := s.Watch(ctx, "")
	if err != nil {
		t.Fatalf("Watch: %v", err)
	}
	// Nobody reads slow; 4 events fill it, the 5th cuts it off.
	for i := 0; i < 5; i++ {
		if _, err := s.Put(ctx, fmt.Sprintf("k%d", i), []byte("v"), keystore.MustNotExist); err != nil {
			t.Fatalf("Put %d: %v", i, err)
		}
	}
	n := 0
	for range slow {
		n++
	}
	if n != 4 {
		t.Fatalf("slow watcher: got %d events before close, want 4", n)
	}
	// Writers were never blocked and a new watcher works.
	fresh, err := s.Watch(ctx, "")
	if err != nil {
		t.Fatalf("Watch: %v", err)
	}
	rev, err := s.Put(ctx, "k9", []byte("v"), keystore.MustNotExist)
	if err != nil {
		t.Fatalf("Put: %v", err)
	}
	if ev := <-fresh; ev.Key != "k9" || ev.Revision != rev {
		t.Fatalf("fresh watcher: got {%q %d}, want {%q %d}", ev.Key, ev.Revision, "k9", rev)
	}
}

// TestConcurrentPutsGroupCommit: concurrent Puts share commits (DB.Batch),
// some of them losing compare-and-swap races inside a batch; every winner
// gets a distinct revision, the losers ErrConflict and nothing else, and
// watchers see every committed change once, in increasing revision order
// with no gap, each published before its Put returned.
func TestConcurrentPutsGroupCommit(t *testing.T) {
	ctx := context.Background()
	const writers, perWriter = 16, 40
	s := open(t, filepath.Join(t.TempDir(), "store.db"), bbolt.Options{WatchBuffer: 4 * writers * perWriter})
	base, err := s.Revision(ctx)
	if err != nil {
		t.Fatalf("Revision: %v", err)
	}
	all, err := s.Watch(ctx, "")
	if err != nil {
		t.Fatalf("Watch: %v", err)
	}
	own, err := s.Watch(ctx, "own/")
	if err != nil {
		t.Fatalf("Watch: %v", err)
	}
	var (
		mu       sync.Mutex
		revs     = map[int64]string{} // revision -> key
		winners  = map[string]int{}   // shared key -> winners
		wg       sync.WaitGroup
		failures = make(chan error, writers*perWriter*2)
	)
	for w := range writers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range perWriter {
				key := fmt.Sprintf("own/%02d/%03d", w, i)
				rev, err := s.Put(ctx, key, []byte(key), keystore.MustNotExist)
				if err != nil {
					failures <- fmt.Errorf("Put(%q): %v", key, err)
					return
				}
				mu.Lock()
				revs[rev] = key
				mu.Unlock()
				// Every writer races for the same shared key: one wins.
				shared := fmt.Sprintf("shared/%03d", i)
				rev, err = s.Put(ctx, shared, []byte(key), keystore.MustNotExist)
				switch {
				case errors.Is(err, keystore.ErrConflict):
				case err != nil:
					failures <- fmt.Errorf("Put(%q): got %v, want success or ErrConflict", shared, err)
					return
				default:
					mu.Lock()
					revs[rev] = shared
					winners[shared]++
					mu.Unlock()
				}
			}
		}()
	}
	wg.Wait()
	close(failures)
	for err := range failures {
		t.Error(err)
	}
	if t.Failed() {
		return
	}
	for i := range perWriter {
		if n := winners[fmt.Sprintf("shared/%03d", i)]; n != 1 {
			t.Errorf("shared/%03d: got %d winners, want 1", i, n)
		}
	}
	want := writers*perWriter + perWriter
	if len(revs) != want {
		t.Fatalf("distinct revisions: got %d, want %d", len(revs), want)
	}
	// Each Put returned after its event was published: all are buffered.
	if n := len(all); n != want {
		t.Fatalf("events buffered when the last Put returned: got %d, want %d", n, want)
	}
	for i := range want {
		ev := <-all
		if wantRev := base + 1 + int64(i); ev.Revision != wantRev || ev.Key != revs[ev.Revision] {
			t.Fatalf("event %d: got {%q %d}, want {%q %d}", i, ev.Key, ev.Revision, revs[wantRev], wantRev)
		}
	}
	var last int64
	for i := range writers * perWriter {
		ev := <-own
		if ev.Revision <= last || revs[ev.Revision] != ev.Key {
			t.Fatalf("own/ event %d: got {%q %d} after revision %d", i, ev.Key, ev.Revision, last)
		}
		last = ev.Revision
	}
	if n := len(own); n != 0 {
		t.Fatalf("own/ watcher: %d extra events", n)
	}
	got, err := s.Revision(ctx)
	if err != nil || got != base+int64(want) {
		t.Fatalf("Revision: got %d, %v, want %d", got, err, base+int64(want))
	}
}

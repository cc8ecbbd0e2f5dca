package groupcommit

import (
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

type item struct {
	n      int
	result int
}

// TestEveryCallCommittedOnce: under contention every item is committed
// exactly once, its result is set before Do returns, commits never overlap,
// and items queued during a commit share the next one.
func TestEveryCallCommittedOnce(t *testing.T) {
	var q Queue[*item]
	var inCommit, commits, overlaps atomic.Int32
	seen := make([]atomic.Int32, 2000)
	commit := func(group []*item) {
		if inCommit.Add(1) != 1 {
			overlaps.Add(1)
		}
		commits.Add(1)
		time.Sleep(200 * time.Microsecond) // an fsync
		for _, it := range group {
			seen[it.n].Add(1)
			it.result = it.n * 2
		}
		inCommit.Add(-1)
	}
	var wg sync.WaitGroup
	for g := 0; g < 50; g++ {
		wg.Go(func() {
			for i := 0; i < 40; i++ {
				it := &item{n: g*40 + i}
				q.Do(it, commit)
				if it.result != it.n*2 {
					t.Errorf("item %d: got result %d after Do, want %d", it.n, it.result, it.n*2)
				}
			}
		})
	}
	wg.Wait()
	for i := range seen {
		if got := seen[i].Load(); got != 1 {
			t.Fatalf("item %d committed %d times, want 1", i, got)
		}
	}
	if overlaps.Load() != 0 {
		t.Errorf("%d commits overlapped another, want none", overlaps.Load())
	}
	if c := commits.Load(); c >= 2000 {
		t.Errorf("got %d commits for 2000 contended items, want fewer (groups)", c)
	}
}

// TestAloneCommitsAtOnce: a caller with no commit in progress is not
// delayed: its commit runs in its own goroutine, at once.
func TestAloneCommitsAtOnce(t *testing.T) {
	var q Queue[*item]
	it := &item{n: 7}
	start := time.Now()
	q.Do(it, func(g []*item) {
		if len(g) != 1 || g[0] != it {
			t.Errorf("got group %v, want the caller's item alone", g)
		}
		g[0].result = 1
	})
	if it.result != 1 || time.Since(start) > 100*time.Millisecond {
		t.Errorf("got result %d after %v, want 1 at once", it.result, time.Since(start))
	}
}

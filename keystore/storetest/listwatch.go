package storetest

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"sync"
	"testing"

	"github.com/hsmgate/hsmgate/keystore"
)

// testListWatch: ListWatch returns what List returns, a revision at least
// that of every listed entry, and then exactly the later changes.
func testListWatch(t *testing.T, s keystore.Store) {
	r1 := mustPut(t, s, "lw/a", "1", keystore.MustNotExist)
	r2 := mustPut(t, s, "lw/b", "2", keystore.MustNotExist)
	mustPut(t, s, "other/c", "3", keystore.MustNotExist)
	ctx, cancel := context.WithCancel(ctxT(t))
	defer cancel()
	es, rev, ch, err := s.ListWatch(ctx, "lw/")
	if err != nil {
		t.Fatalf("ListWatch: %v", err)
	}
	if len(es) != 2 || es[0].Key != "lw/a" || es[0].Revision != r1 || es[1].Key != "lw/b" || es[1].Revision != r2 {
		t.Fatalf("entries: got %v, want lw/a@%d and lw/b@%d", es, r1, r2)
	}
	if rev < r2 {
		t.Fatalf("revision: got %d, want at least %d", rev, r2)
	}
	r3 := mustPut(t, s, "lw/c", "4", keystore.MustNotExist)
	if err := s.Delete(ctxT(t), "lw/a", keystore.AnyRevision); err != nil {
		t.Fatalf("Delete: %v", err)
	}
	evs := collect(t, ch, 2)
	if evs[0].Type != keystore.EventPut || evs[0].Key != "lw/c" || evs[0].Revision != r3 {
		t.Fatalf("first event: got {%v %q %d}, want {put lw/c %d}", evs[0].Type, evs[0].Key, evs[0].Revision, r3)
	}
	if evs[1].Type != keystore.EventDelete || evs[1].Key != "lw/a" || evs[1].Revision <= r3 {
		t.Fatalf("second event: got {%v %q %d}, want a delete of lw/a after %d", evs[1].Type, evs[1].Key, evs[1].Revision, r3)
	}
}

// testListWatchConcurrent: while writers change keys, the listed entries
// plus the events after the returned revision always give the final state:
// nothing falls between the list and the watch, nothing is delivered twice.
func testListWatchConcurrent(t *testing.T, s keystore.Store) {
	const writers, writes = 4, 40
	var wg sync.WaitGroup
	start := make(chan struct{})
	errc := make(chan error, writers)
	for w := range writers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			for i := range writes {
				key := fmt.Sprintf("lwc/%d-%d", w, i%5)
				var err error
				if i%7 == 6 {
					err = s.Delete(ctxT(t), key, keystore.AnyRevision)
					if errors.Is(err, keystore.ErrNotFound) {
						err = nil
					}
				} else {
					_, err = s.Put(ctxT(t), key, []byte(fmt.Sprint(i)), keystore.AnyRevision)
				}
				if err != nil {
					errc <- err
					return
				}
			}
		}()
	}
	ctx, cancel := context.WithCancel(ctxT(t))
	defer cancel()
	close(start)
	es, rev, ch, err := s.ListWatch(ctx, "lwc/")
	if err != nil {
		t.Fatalf("ListWatch: %v", err)
	}
	wg.Wait()
	close(errc)
	for err := range errc {
		t.Fatalf("writer: %v", err)
	}
	state := map[string]string{}
	for _, e := range es {
		if e.Revision > rev {
			t.Fatalf("listed %q at revision %d, after the list's revision %d", e.Key, e.Revision, rev)
		}
		state[e.Key] = string(e.Value)
	}
	// A sentinel marks the end of the writes in the event stream.
	sentinel := mustPut(t, s, "lwc/~sentinel", "end", keystore.MustNotExist)
	last := rev
	for {
		ev := collect(t, ch, 1)[0]
		if ev.Revision <= last {
			t.Fatalf("event %v %q at revision %d, not after %d", ev.Type, ev.Key, ev.Revision, last)
		}
		last = ev.Revision
		if ev.Revision == sentinel {
			break
		}
		if ev.Type == keystore.EventDelete {
			delete(state, ev.Key)
		} else {
			state[ev.Key] = string(ev.Value)
		}
	}
	final, err := s.List(ctxT(t), "lwc/")
	if err != nil {
		t.Fatalf("List: %v", err)
	}
	want := map[string]string{}
	for _, e := range final {
		if e.Key != "lwc/~sentinel" {
			want[e.Key] = string(e.Value)
		}
	}
	if !maps.Equal(state, want) {
		t.Fatalf("list plus events: got %v, want the final state %v", state, want)
	}
}

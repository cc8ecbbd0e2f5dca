package auth

import (
	"context"
	"log/slog"
	"strings"
	"sync"
	"time"

	"github.com/hsmgate/hsmgate/keystore"
)

// watchedCache caches values decoded from keystore entries under prefix and
// drops an entry whenever Watch reports a change to its key. While the watch
// is down (cut off, store closed) nothing is cached, so a stale value is never
// served for longer than the watch takes to report the change.
type watchedCache[T any] struct {
	store  keystore.Store
	prefix string
	max    int

	mu       sync.RWMutex
	m        map[string]T
	gen      uint64
	watching bool
}

func newWatchedCache[T any](ctx context.Context, s keystore.Store, prefix string, max int) (*watchedCache[T], error) {
	c := &watchedCache[T]{store: s, prefix: prefix, max: max, m: map[string]T{}}
	ch, err := s.Watch(ctx, prefix)
	if err != nil {
		return nil, err
	}
	c.watching = true
	go c.watch(ctx, ch)
	return c, nil
}

func (c *watchedCache[T]) watch(ctx context.Context, ch <-chan keystore.Event) {
	for {
		for ev := range ch {
			c.invalidate(strings.TrimPrefix(ev.Key, c.prefix))
		}
		c.mu.Lock()
		c.m = map[string]T{}
		c.gen++
		c.watching = false
		c.mu.Unlock()
		for {
			if ctx.Err() != nil {
				return
			}
			var err error
			ch, err = c.store.Watch(ctx, c.prefix)
			if err == nil {
				c.mu.Lock()
				c.watching = true
				c.gen++
				c.mu.Unlock()
				break
			}
			slog.Warn("auth: re-watch", "prefix", c.prefix, "err", err)
			select {
			case <-ctx.Done():
				return
			case <-time.After(time.Second):
			}
		}
	}
}

func (c *watchedCache[T]) invalidate(name string) {
	c.mu.Lock()
	delete(c.m, name)
	c.gen++
	c.mu.Unlock()
}

// get returns the cached value and the generation to pass to put.
func (c *watchedCache[T]) get(name string) (v T, ok bool, gen uint64) {
	c.mu.RLock()
	defer c.mu.RUnlock()
	v, ok = c.m[name]
	return v, ok, c.gen
}

// put caches v if nothing changed since get returned gen.
func (c *watchedCache[T]) put(name string, v T, gen uint64) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if !c.watching || c.gen != gen {
		return
	}
	if len(c.m) >= c.max {
		c.m = map[string]T{}
	}
	c.m[name] = v
}

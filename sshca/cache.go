package sshca

import (
	"context"
	"log/slog"
	"strings"
	"sync"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/hsmgate/hsmgate/keystore"
)

// objCache keeps the decoded roles and CAs that signing requests use, so
// that a request reads neither from the store (with etcd, a round trip
// each) unless one changed. Any change to a role or CA, by this engine or
// another process on the same store, drops its entry: this engine's own
// writes at once, the others' when the store's Watch delivers them. While
// the Watch is down nothing is kept, so a change missed then cannot be
// served stale. Cached messages are shared: callers must not change them.
type objCache struct {
	mu    sync.Mutex
	m     map[string]any // decoded messages, and the derived deniedKeys
	epoch uint64         // bumped by every drop: a load that straddles one is not kept
	live  bool           // the Watch runs: entries may be kept

	cancel context.CancelFunc
	done   chan struct{}
}

// watchedPrefixes are the store prefixes whose entries objCache keeps (the
// revocation record only through the derived deniedKeys).
var watchedPrefixes = []string{prefixRoles, prefixCAs, keyKRL}

// cacheDenied is the objCache key of the deniedKeys set, derived from every
// CA and the revocation record: dropped whenever one of them changes.
const cacheDenied = "\x00denied-subject-keys"

// start begins watching the store; the watches end with stop.
func (c *objCache) start(store keystore.Store, log *slog.Logger) error {
	c.m = map[string]any{}
	ctx, cancel := context.WithCancel(context.Background())
	chans := make([]<-chan keystore.Event, len(watchedPrefixes))
	for i, p := range watchedPrefixes {
		ch, err := store.Watch(ctx, p)
		if err != nil {
			cancel()
			return err
		}
		chans[i] = ch
	}
	c.cancel = cancel
	c.done = make(chan struct{})
	c.setLive(true)
	var wg sync.WaitGroup
	for i, p := range watchedPrefixes {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c.watch(ctx, store, p, chans[i], log)
		}()
	}
	go func() { wg.Wait(); close(c.done) }()
	return nil
}

// stop ends the watches (and waits for them).
func (c *objCache) stop() {
	if c.cancel != nil {
		c.cancel()
		<-c.done
	}
}

// watch drops the entry of every change under prefix. When the store cuts
// the watch off, the cache empties and keeps nothing until the watch is back.
func (c *objCache) watch(ctx context.Context, store keystore.Store, prefix string, ch <-chan keystore.Event, log *slog.Logger) {
	for {
		for ev := range ch {
			c.drop(ev.Key)
		}
		if ctx.Err() != nil {
			return
		}
		c.setLive(false)
		for {
			var err error
			if ch, err = store.Watch(ctx, prefix); err == nil {
				break
			}
			log.Warn("sshca: watch failed; roles and CAs are read from the store until it is back", "prefix", prefix, "err", err)
			select {
			case <-ctx.Done():
				return
			case <-time.After(time.Second):
			}
		}
		c.setLive(true)
	}
}

// setLive empties the cache and says whether entries may be kept.
func (c *objCache) setLive(live bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	clear(c.m)
	c.epoch++
	c.live = live
}

// drop forgets key's entry.
func (c *objCache) drop(key string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	delete(c.m, key)
	if strings.HasPrefix(key, prefixCAs) || key == keyKRL {
		delete(c.m, cacheDenied)
	}
	c.epoch++
}

// get returns key's message from the cache, or the one load reads, which
// it keeps if no change was seen meanwhile.
func (c *objCache) get(key string, load func() (proto.Message, error)) (proto.Message, error) {
	m, err := c.getAny(key, func() (any, error) { return load() })
	if err != nil {
		return nil, err
	}
	pm, _ := m.(proto.Message)
	return pm, nil
}

// getAny is get for any value.
func (c *objCache) getAny(key string, load func() (any, error)) (any, error) {
	c.mu.Lock()
	m, ok := c.m[key]
	epoch, live := c.epoch, c.live
	c.mu.Unlock()
	if ok {
		return m, nil
	}
	m, err := load()
	if err != nil {
		return nil, err
	}
	if live {
		c.mu.Lock()
		if c.live && c.epoch == epoch {
			c.m[key] = m
		}
		c.mu.Unlock()
	}
	return m, nil
}

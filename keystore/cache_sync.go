package keystore

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"
)

// session is one generation of a cache's watches: one per prefix, started
// by ListWatch at known revisions, forwarded into events.
type session struct {
	cancel context.CancelFunc
	chans  []<-chan Event
	events chan Event
	gap    chan struct{} // closed when a watch ends
	once   sync.Once
	wg     sync.WaitGroup
}

// open lists and watches every prefix.
func (c *Cache[T]) open(ctx context.Context) (*session, [][]Entry, []int64, error) {
	sctx, cancel := context.WithCancel(ctx)
	s := &session{cancel: cancel, events: make(chan Event), gap: make(chan struct{})}
	lists := make([][]Entry, len(c.cfg.Prefixes))
	revs := make([]int64, len(c.cfg.Prefixes))
	for i, p := range c.cfg.Prefixes {
		es, rev, ch, err := c.cfg.Store.ListWatch(sctx, p)
		if err != nil {
			cancel()
			return nil, nil, nil, err
		}
		lists[i], revs[i] = es, rev
		s.chans = append(s.chans, ch)
	}
	for _, ch := range s.chans {
		s.wg.Add(1)
		go func() {
			defer s.wg.Done()
			for {
				select {
				case ev, ok := <-ch:
					if !ok {
						s.once.Do(func() { close(s.gap) })
						return
					}
					select {
					case s.events <- ev:
					case <-sctx.Done():
						return
					}
				case <-sctx.Done():
					return
				}
			}
		}()
	}
	return s, lists, revs, nil
}

func (s *session) stop() {
	s.cancel()
	s.wg.Wait()
}

// run applies the watches' changes; after a gap it rebuilds.
func (c *Cache[T]) run(ctx context.Context, sess *session) {
	for {
		reason, down := c.serve(ctx, sess)
		sess.stop()
		if ctx.Err() != nil {
			return
		}
		c.enterGap(reason, down)
		if sess = c.rebuild(ctx); sess == nil {
			return
		}
	}
}

// serve applies events until a watch ends or a probe fails.
// down says the store itself did not answer.
func (c *Cache[T]) serve(ctx context.Context, sess *session) (reason string, down bool) {
	select { // a failure seen before this session is no news
	case <-c.probeFail:
	default:
	}
	for {
		select {
		case ev := <-sess.events:
			c.apply(ctx, ev)
		case <-sess.gap:
			return "a watch ended", false
		case err := <-c.probeFail:
			return fmt.Sprintf("the store did not answer: %v", err), errors.Is(err, ErrUnavailable)
		case <-ctx.Done():
			return "", false
		}
	}
}

// enterGap stops trusting the cache's values.
func (c *Cache[T]) enterGap(reason string, down bool) {
	c.epoch.Add(1)
	c.grec.Store(0)
	c.state.Store(&cacheState{since: time.Unix(0, c.lastOK.Load()), down: down})
	c.gaps.Add(1)
	c.log.Warn("keystore: cache out of sync with the store; its entries are not trusted until it is rebuilt",
		"cache", c.cfg.Name, "reason", reason)
}

// markDown records that the store did not answer while out of sync.
func (c *Cache[T]) markDown(st *cacheState) {
	if !st.down {
		c.state.CompareAndSwap(st, &cacheState{since: st.since, down: true})
	}
}

func (c *Cache[T]) markOK() { c.lastOK.Store(c.now().UnixNano()) }

// kickProbe asks for a probe now (a load saw the store fail).
func (c *Cache[T]) kickProbe() {
	select {
	case c.kick <- struct{}{}:
	default:
	}
}

// probe pings the store every ProbeInterval and reports a failure to run.
func (c *Cache[T]) probe(ctx context.Context) {
	t := time.NewTicker(c.cfg.ProbeInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		case <-c.kick:
		}
		err := c.cfg.Store.Ping(ctx)
		if ctx.Err() != nil {
			return
		}
		if err == nil {
			if c.state.Load().synced {
				c.markOK()
			}
			continue
		}
		select {
		case c.probeFail <- err:
		default:
		}
	}
}

// rebuild lists and watches every prefix again until it succeeds, checks
// what the cache holds against the lists, and returns the new session.
func (c *Cache[T]) rebuild(ctx context.Context) *session {
	for attempt := 0; ; attempt++ {
		sess, lists, revs, err := c.open(ctx)
		if err == nil {
			kept, dropped := c.sweep(lists, revs)
			c.markOK()
			c.state.Store(&cacheState{synced: true})
			c.rebuilds.Add(1)
			c.log.Info("keystore: cache rebuilt", "cache", c.cfg.Name, "kept", kept, "dropped", dropped, "revisions", revs)
			return sess
		}
		if ctx.Err() != nil {
			return nil
		}
		if errors.Is(err, ErrUnavailable) {
			c.markDown(c.state.Load())
		}
		if attempt == 0 || attempt%100 == 0 {
			c.log.Warn("keystore: cache rebuild failed; retrying", "cache", c.cfg.Name, "attempt", attempt+1, "err", err)
		}
		t := time.NewTimer(c.cfg.RetryInterval)
		select {
		case <-ctx.Done():
			t.Stop()
			return nil
		case <-t.C:
		}
	}
}

// sweep keeps each held value whose key the lists show at the same
// revision (or absent, for an absent value), or that this process wrote
// after the list; it drops every other one, derived values included.
func (c *Cache[T]) sweep(lists [][]Entry, revs []int64) (kept, dropped int) {
	listed := make([]map[string]int64, len(lists))
	for i, es := range lists {
		listed[i] = make(map[string]int64, len(es))
		for _, e := range es {
			listed[i][e.Key] = e.Revision
		}
	}
	c.slots.Range(func(k, v any) bool {
		key, s := k.(string), v.(*slot[T])
		i := c.prefixOf(key)
		s.wmu.Lock()
		defer s.wmu.Unlock()
		it := s.it.Load()
		keep := false
		if i >= 0 {
			lrev, ok := listed[i][key]
			if ok {
				s.floor = max(s.floor, lrev)
			}
			keep = it != nil && it.rev != noRevision &&
				(it.rev > revs[i] || ok && it.rev == lrev || !ok && it.rev == 0)
		}
		if it == nil {
			return true
		}
		if keep {
			kept++
			return true
		}
		s.ver.Add(1)
		s.lver.Add(1)
		s.it.Store(nil)
		dropped++
		return true
	})
	return kept, dropped
}

func (c *Cache[T]) prefixOf(key string) int {
	for i, p := range c.cfg.Prefixes {
		if strings.HasPrefix(key, p) {
			return i
		}
	}
	return -1
}

// apply handles one change the watch reported.
func (c *Cache[T]) apply(ctx context.Context, ev Event) {
	if c.cfg.Dependents != nil {
		for _, d := range c.cfg.Dependents(ev.Key) {
			c.drop(d, 0, false)
		}
	}
	if c.cfg.Refresh && ev.Type == EventPut {
		c.refresh(ctx, ev)
	} else {
		c.drop(ev.Key, ev.Revision, false)
	}
	if c.cfg.OnChange != nil {
		c.cfg.OnChange(ev)
	}
}

// refreshTimeout bounds decoding a changed value in the watch goroutine.
const refreshTimeout = 30 * time.Second

// refresh decodes the new value of a cached key, with the old one as prev.
func (c *Cache[T]) refresh(ctx context.Context, ev Event) {
	v, ok := c.slots.Load(ev.Key)
	if !ok {
		return
	}
	s := v.(*slot[T])
	s.wmu.Lock()
	s.ver.Add(1)
	s.floor = max(s.floor, ev.Revision)
	cur := s.it.Load()
	s.wmu.Unlock()
	if cur == nil || cur.rev >= ev.Revision {
		return // not held (loads on next use), or our own write, held already
	}
	rctx, cancel := context.WithTimeout(ctx, refreshTimeout)
	defer cancel()
	nv, err := c.cfg.Decode(rctx, Entry{Key: ev.Key, Value: ev.Value, Revision: ev.Revision}, cur.v, true)
	if err != nil {
		c.log.Warn("keystore: cache reload after a change failed; the entry loads on next use",
			"cache", c.cfg.Name, "key", ev.Key, "err", err)
		c.drop(ev.Key, 0, true)
		return
	}
	c.Put(ev.Key, nv, ev.Revision)
}

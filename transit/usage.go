package transit

import (
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"

	"google.golang.org/protobuf/proto"

	"github.com/hsmgate/hsmgate/keystore"
	pb "github.com/hsmgate/hsmgate/proto/hsmgate/v1"
)

// usageCounter counts one version's encryptions in this process. It
// reserves blocks of the count in the store by compare-and-swap on
// usagePath(name, key id, version), so the stored value is always at least
// the number of encryptions done by every process: a crash wastes the rest
// of a block, never reuses it; Close gives the rest back. Taking from a
// reserved block is one atomic add; the mutex is taken only to reserve the
// next block or to release one.
type usageCounter struct {
	e    *Engine
	name string
	id   string // hex key_id; "" for keys made before key_id
	v    uint32
	key  string

	mu       sync.Mutex
	blk      atomic.Pointer[usageBlock]
	reserved atomic.Uint64 // stored value after this process's last reservation

	// Guarded by mu: the stored reservation and its revision as this
	// process last wrote or read them (known: they may be used for the next
	// compare-and-swap without reading first; a conflict reads again), and
	// the error of the last refill that failed.
	lastCur  uint64
	lastRev  int64
	known    bool
	lastErr  error
	refilled atomic.Uint64 // refills ended (success or failure)
}

type usageBlock struct {
	size uint64
	used atomic.Uint64
}

// unspent returns what this process has reserved in b but not used.
func (b *usageBlock) unspent() uint64 {
	if b == nil {
		return 0
	}
	return b.size - min(b.used.Load(), b.size)
}

type usageKey struct {
	name, id string
	v        uint32
}

// usagePrefix is where a key's counters live: UsagePrefix + name + "/" +
// hex(key_id) + "/" (UsagePrefix + name + "/" for keys without key_id). A
// counter belongs to one key's material, not to its name: a new key of a
// deleted key's name starts at zero, and a restored key finds its own.
func usagePrefix(name, id string) string {
	if id == "" {
		return UsagePrefix + name + "/"
	}
	return UsagePrefix + name + "/" + id + "/"
}

func usagePath(name, id string, v uint32) string {
	return usagePrefix(name, id) + strconv.FormatUint(uint64(v), 10)
}

func keyID(rec *pb.TransitKeyRecord) string { return hex.EncodeToString(rec.GetKeyId()) }

func (e *Engine) usageCounter(name, id string, v uint32) *usageCounter {
	k := usageKey{name, id, v}
	if c, ok := e.usage.Load(k); ok {
		return c.(*usageCounter)
	}
	c, _ := e.usage.LoadOrStore(k, &usageCounter{e: e, name: name, id: id, v: v, key: usagePath(name, id, v)})
	return c.(*usageCounter)
}

// blockSize is how many encryptions one reservation takes: Config.UsageBlock,
// but at most limit/(16 × live replicas) (at least 1), so that a small limit
// is shared in small blocks by the replicas instead of being taken whole by
// the first, and the blocks all live replicas hold at once stay within a
// sixteenth of the limit (what crashes can strand); and at least n, the
// batch being served.
func (e *Engine) blockSize(n, limit uint64) uint64 {
	size := e.cfg.UsageBlock
	if limit > 0 {
		size = min(size, max(limit/(16*e.liveReplicas()), 1))
	}
	return max(size, n)
}

// liveReplicas is Config.LiveReplicas(), at least 1.
func (e *Engine) liveReplicas() uint64 {
	if e.cfg.LiveReplicas == nil {
		return 1
	}
	return uint64(max(e.cfg.LiveReplicas(), 1))
}

func (e *Engine) forgetUsage(name string) {
	e.usage.Range(func(k, _ any) bool {
		if k.(usageKey).name == name {
			e.usage.Delete(k)
		}
		return true
	})
}

// take counts n encryptions against limit (0: no limit). It returns
// ErrUsageExhausted when the version cannot give n more.
func (u *usageCounter) take(ctx context.Context, n, limit uint64) error {
	for {
		b := u.blk.Load()
		if b != nil && b.used.Add(n) <= b.size {
			return nil
		}
		if err := u.refill(ctx, b, n, limit); err != nil {
			return err
		}
	}
}

// refill reserves the next block. One refill runs at a time; a caller that
// waited for another's refill takes its outcome: its block, or, when it
// failed (a store out of reach), its error at once, instead of trying the
// store again and waiting out a second timeout behind the first. In the
// common case it is one compare-and-swap on the revision this process last
// saw, without reading first.
func (u *usageCounter) refill(ctx context.Context, old *usageBlock, n, limit uint64) error {
	seen := u.refilled.Load()
	u.mu.Lock()
	defer u.mu.Unlock()
	if u.blk.Load() != old {
		return nil // another goroutine reserved a block meanwhile
	}
	if u.refilled.Load() != seen && u.lastErr != nil {
		return u.lastErr // the refill this call waited for failed just now
	}
	err := u.reserve(ctx, n, limit)
	u.lastErr = nil
	if errors.Is(err, keystore.ErrUnavailable) {
		// Shared with the callers queued behind this one. Not a cancelled
		// context or an exhausted limit: those are each caller's own.
		u.lastErr = err
	}
	u.refilled.Add(1)
	return err
}

func (u *usageCounter) reserve(ctx context.Context, n, limit uint64) error {
	for attempt := range maxCASRetries {
		if err := casBackoff(ctx, attempt); err != nil {
			return err
		}
		cur, rev := u.lastCur, u.lastRev
		if !u.known {
			var err error
			if cur, rev, err = u.e.readUsage(ctx, u.key); err != nil {
				return err
			}
		}
		size := u.e.blockSize(n, limit)
		if limit > 0 {
			if cur >= limit || limit-cur < n {
				if u.known { // what we last saw may be stale: read before refusing
					u.known = false
					continue
				}
				return fmt.Errorf("%w: key %q v%d reached %d encryptions", ErrUsageExhausted, u.name, u.v, limit)
			}
			size = min(size, limit-cur)
		}
		b, err := proto.Marshal(&pb.TransitUsageRecord{Reserved: cur + size})
		if err != nil {
			return err
		}
		newRev, err := u.e.store.Put(ctx, u.key, b, rev)
		if errors.Is(err, keystore.ErrConflict) {
			u.known = false
			continue
		}
		if err != nil {
			// The write may have committed (a timeout): read again next time.
			u.known = false
			return fmt.Errorf("transit: reserve usage of %q v%d: %w", u.name, u.v, err)
		}
		u.lastCur, u.lastRev, u.known = cur+size, newRev, true
		u.reserved.Store(cur + size)
		u.e.metrics.setReserved(u.name, u.v, cur+size)
		u.blk.Store(&usageBlock{size: size})
		if limit > 0 && cur+size >= limit {
			// The last block: rotate now, before the limit is reached.
			go u.e.rotateForUsage(context.Background(), u.name, u.v)
		}
		return nil
	}
	return fmt.Errorf("%w: usage of key %q v%d", ErrConflict, u.name, u.v)
}

// readUsage returns the stored reservation and its revision (MustNotExist if absent).
func (e *Engine) readUsage(ctx context.Context, key string) (uint64, int64, error) {
	ent, err := e.store.Get(ctx, key)
	if errors.Is(err, keystore.ErrNotFound) {
		return 0, keystore.MustNotExist, nil
	}
	if err != nil {
		return 0, 0, fmt.Errorf("transit: read usage: %w", err)
	}
	var r pb.TransitUsageRecord
	if err := proto.Unmarshal(ent.Value, &r); err != nil {
		return 0, 0, fmt.Errorf("transit: decode usage %s: %w", key, err)
	}
	return r.GetReserved(), ent.Revision, nil
}

// release gives the unspent rest of this process's block back to the
// store (Close calls it): the block is closed first, so no encryption can
// take from it afterwards, then its rest is subtracted by compare-and-swap.
// The stored value stays an upper bound: it is the sum of the blocks handed
// out, minus what their holders gave back unused.
func (u *usageCounter) release(ctx context.Context) error {
	u.mu.Lock()
	defer u.mu.Unlock()
	u.known = false // the stored value changes below
	b := u.blk.Swap(nil)
	if b == nil {
		return nil
	}
	var rest uint64
	for {
		used := b.used.Load()
		if used >= b.size {
			return nil
		}
		// Past the end: every later take from b fails and goes to refill.
		if b.used.CompareAndSwap(used, b.size+1) {
			rest = b.size - used
			break
		}
	}
	for attempt := range maxCASRetries {
		if err := casBackoff(ctx, attempt); err != nil {
			return err
		}
		cur, rev, err := u.e.readUsage(ctx, u.key)
		if err != nil {
			return err
		}
		if rev == keystore.MustNotExist || cur < rest {
			return nil // not ours to lower
		}
		val, err := proto.Marshal(&pb.TransitUsageRecord{Reserved: cur - rest})
		if err != nil {
			return err
		}
		_, err = u.e.store.Put(ctx, u.key, val, rev)
		if errors.Is(err, keystore.ErrConflict) {
			continue
		}
		if err != nil {
			return fmt.Errorf("transit: return usage of %q v%d: %w", u.name, u.v, err)
		}
		u.reserved.Store(cur - rest)
		u.e.metrics.setReserved(u.name, u.v, cur-rest)
		return nil
	}
	return fmt.Errorf("%w: usage of key %q v%d", ErrConflict, u.name, u.v)
}

// releaseUsage returns every counter's unspent block (Close).
func (e *Engine) releaseUsage(ctx context.Context) {
	e.usage.Range(func(_, c any) bool {
		u := c.(*usageCounter)
		if err := u.release(ctx); err != nil {
			e.log.Warn("transit: could not return an unused usage block; it stays counted", "key", u.name, "version", u.v, "err", err)
		}
		return true
	})
}

// unspent is what this process has reserved for a version and not used.
func (e *Engine) unspent(name, id string, v uint32) uint64 {
	c, ok := e.usage.Load(usageKey{name, id, v})
	if !ok {
		return 0
	}
	return c.(*usageCounter).blk.Load().unspent()
}

// usageCounts reads every version's stored reservation of a key.
func (e *Engine) usageCounts(ctx context.Context, name, id string) (map[uint32]uint64, error) {
	prefix := usagePrefix(name, id)
	ents, err := e.store.List(ctx, prefix)
	if err != nil {
		return nil, fmt.Errorf("transit: list usage of %q: %w", name, err)
	}
	out := make(map[uint32]uint64, len(ents))
	for _, ent := range ents {
		// Under a legacy prefix, other key ids' counters have a '/' more: skipped.
		v, err := strconv.ParseUint(strings.TrimPrefix(ent.Key, prefix), 10, 32)
		if err != nil {
			continue
		}
		var r pb.TransitUsageRecord
		if proto.Unmarshal(ent.Value, &r) == nil {
			out[uint32(v)] = r.GetReserved()
		}
	}
	return out, nil
}

// raiseUsage sets a version's stored reservation to at least n (never
// lower), by compare-and-swap.
func (e *Engine) raiseUsage(ctx context.Context, name, id string, v uint32, n uint64) error {
	key := usagePath(name, id, v)
	for attempt := range maxCASRetries {
		if err := casBackoff(ctx, attempt); err != nil {
			return err
		}
		cur, rev, err := e.readUsage(ctx, key)
		if err != nil {
			return err
		}
		if rev != keystore.MustNotExist && cur >= n {
			return nil
		}
		val, err := proto.Marshal(&pb.TransitUsageRecord{Reserved: n})
		if err != nil {
			return err
		}
		_, err = e.store.Put(ctx, key, val, rev)
		if errors.Is(err, keystore.ErrConflict) {
			continue
		}
		if err != nil {
			return fmt.Errorf("transit: write usage of %q v%d: %w", name, v, err)
		}
		return nil
	}
	return fmt.Errorf("%w: usage of key %q v%d", ErrConflict, name, v)
}

// rotateForUsage rotates name if its latest version is still from: the
// usage limit of from was (or is about to be) reached. Concurrent callers,
// here or in other processes, rotate once: the update checks latest.
func (e *Engine) rotateForUsage(ctx context.Context, name string, from uint32) (*keyState, error) {
	e.rotateMu.Lock()
	defer e.rotateMu.Unlock()
	mine := false // this call wrote the new version (see RotateDue)
	st, err := e.update(ctx, name, func(rec *pb.TransitKeyRecord, undo *[]func()) error {
		mine = false
		if rec.GetLatestVersion() != from {
			return errNoChange
		}
		mine = true
		return e.addVersion(ctx, rec, undo)
	})
	if err != nil {
		e.log.Warn("transit: usage rotation failed", "key", name, "err", err)
		return nil, err
	}
	if mine && st.rec.GetLatestVersion() != from {
		e.metrics.rotated(st, rotateUsage)
	}
	return st, nil
}

package transit

import (
	"context"
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
// UsagePrefix+name+"/"+version, so the stored value is always at least the
// number of encryptions done by every process: a crash or restart wastes the
// rest of a block, never reuses it. Taking from a reserved block is one
// atomic add; the mutex is taken only to reserve the next block.
type usageCounter struct {
	e    *Engine
	name string
	v    uint32
	key  string

	mu       sync.Mutex
	blk      atomic.Pointer[usageBlock]
	reserved atomic.Uint64 // stored value after this process's last reservation
}

type usageBlock struct {
	size uint64
	used atomic.Uint64
}

type usageKey struct {
	name string
	v    uint32
}

func usagePath(name string, v uint32) string {
	return UsagePrefix + name + "/" + strconv.FormatUint(uint64(v), 10)
}

func (e *Engine) usageCounter(name string, v uint32) *usageCounter {
	k := usageKey{name, v}
	if c, ok := e.usage.Load(k); ok {
		return c.(*usageCounter)
	}
	c, _ := e.usage.LoadOrStore(k, &usageCounter{e: e, name: name, v: v, key: usagePath(name, v)})
	return c.(*usageCounter)
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

func (u *usageCounter) refill(ctx context.Context, old *usageBlock, n, limit uint64) error {
	u.mu.Lock()
	defer u.mu.Unlock()
	if u.blk.Load() != old {
		return nil // another goroutine reserved a block meanwhile
	}
	for range maxCASRetries {
		cur, rev, err := u.e.readUsage(ctx, u.key)
		if err != nil {
			return err
		}
		size := max(u.e.cfg.UsageBlock, n)
		if limit > 0 {
			if cur >= limit || limit-cur < n {
				return fmt.Errorf("%w: key %q v%d reached %d encryptions", ErrUsageExhausted, u.name, u.v, limit)
			}
			size = min(size, limit-cur)
		}
		b, err := proto.Marshal(&pb.TransitUsageRecord{Reserved: cur + size})
		if err != nil {
			return err
		}
		_, err = u.e.store.Put(ctx, u.key, b, rev)
		if errors.Is(err, keystore.ErrConflict) {
			continue
		}
		if err != nil {
			return fmt.Errorf("transit: reserve usage of %q v%d: %w", u.name, u.v, err)
		}
		u.reserved.Store(cur + size)
		u.e.metrics.reserved.WithLabelValues(u.name, strconv.FormatUint(uint64(u.v), 10)).Set(float64(cur + size))
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

// usageCounts reads every version's stored reservation of a key.
func (e *Engine) usageCounts(ctx context.Context, name string) (map[uint32]uint64, error) {
	ents, err := e.store.List(ctx, UsagePrefix+name+"/")
	if err != nil {
		return nil, fmt.Errorf("transit: list usage of %q: %w", name, err)
	}
	out := make(map[uint32]uint64, len(ents))
	for _, ent := range ents {
		v, err := strconv.ParseUint(strings.TrimPrefix(ent.Key, UsagePrefix+name+"/"), 10, 32)
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

// deleteUsage removes stored counters of the given versions (all if nil).
func (e *Engine) deleteUsage(ctx context.Context, name string, below uint32) {
	ents, err := e.store.List(ctx, UsagePrefix+name+"/")
	if err != nil {
		return
	}
	for _, ent := range ents {
		v, err := strconv.ParseUint(strings.TrimPrefix(ent.Key, UsagePrefix+name+"/"), 10, 32)
		if err != nil || (below > 0 && uint32(v) >= below) {
			continue
		}
		_ = e.store.Delete(ctx, ent.Key, keystore.AnyRevision)
	}
}

// rotateForUsage rotates name if its latest version is still from: the
// usage limit of from was (or is about to be) reached. Concurrent callers,
// here or in other processes, rotate once: the update checks latest.
func (e *Engine) rotateForUsage(ctx context.Context, name string, from uint32) (*keyState, error) {
	e.rotateMu.Lock()
	defer e.rotateMu.Unlock()
	st, err := e.update(ctx, name, func(rec *pb.TransitKeyRecord, undo *[]func()) error {
		if rec.GetLatestVersion() != from {
			return errNoChange
		}
		return e.addVersion(ctx, rec, undo)
	})
	if err != nil {
		e.log.Warn("transit: usage rotation failed", "key", name, "err", err)
		return nil, err
	}
	if st.rec.GetLatestVersion() != from {
		e.metrics.rotations.WithLabelValues(name, "usage").Inc()
	}
	return st, nil
}

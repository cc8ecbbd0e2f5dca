package server

import (
	"context"
	"sync"
	"time"

	"golang.org/x/sync/semaphore"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/stats"

	"github.com/hsmgate/hsmgate/internal/auth"
)

// A unary RPC's request is read before any interceptor runs, so the budget
// is taken earlier, by a stats handler in the RPC's own goroutine:
//
//   - stats.Begin, before the request is read: the RPC waits (FIFO, until its
//     context ends) for MaxRecvBytes of the budget, the most its request can
//     be. While it waits the client can send only the stream's initial flow
//     control window (64 KiB: BDP window growth is off), so waiting requests
//     cost no memory;
//   - stats.InPayload, once the request is decoded: the hold shrinks to the
//     request's size, and stays until the RPC ends (stats.End);
//   - a request not fully read within RequestReadTimeout of getting its share
//     has its stream cancelled, so a client that stalls mid-request does not
//     keep the share;
//   - one client address (IPv4, or IPv6 /64) reads at most a quarter (at least 2) of the
//     budget's shares at once (readSlots): its other RPCs wait in their own
//     queue, so streams stalled from one address cannot hold every share.
//
// Streaming RPCs take the budget per received message (inflightStream);
// health and reflection are exempt.

type recvHoldKey struct{}

type streamCancelKey struct{}

// recvHold is one unary RPC's share of the budget.
type recvHold struct {
	b *budget

	mu       sync.Mutex
	held     int64
	received bool
	timer    *time.Timer
	slot     func() // gives back the address's read slot
}

// readSlots bounds, per client address, the unary requests being read at once.
type readSlots struct {
	max int64

	mu sync.Mutex
	m  map[string]*readSlot
}

type readSlot struct {
	sem  *semaphore.Weighted
	refs int
}

func newReadSlots(max int64) *readSlots {
	return &readSlots{max: max, m: make(map[string]*readSlot)}
}

// acquire waits for a read slot of key; it returns the slot's release.
func (r *readSlots) acquire(ctx context.Context, key string) (func(), error) {
	r.mu.Lock()
	sl := r.m[key]
	if sl == nil {
		sl = &readSlot{sem: semaphore.NewWeighted(r.max)}
		r.m[key] = sl
	}
	sl.refs++
	r.mu.Unlock()
	put := func() {
		r.mu.Lock()
		if sl.refs--; sl.refs == 0 {
			delete(r.m, key)
		}
		r.mu.Unlock()
	}
	if err := sl.sem.Acquire(ctx, 1); err != nil {
		put()
		return nil, err
	}
	var once sync.Once
	return func() {
		once.Do(func() {
			sl.sem.Release(1)
			put()
		})
	}, nil
}

// holding reports whether the RPC's request is accounted by its hold.
func (h *recvHold) holding() bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.held > 0
}

// budgetStats is the stats.Handler that places and moves recvHolds.
type budgetStats struct{ s *Server }

var _ stats.Handler = budgetStats{}

// TagConn works out once per connection what every RPC on it needs of the
// client's address: its string (the audit lines' remote, auth.WithRemote)
// and its read-slot key (ipKey).
func (budgetStats) TagConn(ctx context.Context, info *stats.ConnTagInfo) context.Context {
	if info == nil || info.RemoteAddr == nil {
		return ctx
	}
	ctx = auth.WithRemote(ctx, info.RemoteAddr.String())
	return context.WithValue(ctx, connIPKey{}, ipKey(info.RemoteAddr))
}

// connIPKey holds the connection's ipKey (TagConn).
type connIPKey struct{}

func (budgetStats) HandleConn(context.Context, stats.ConnStats) {}

func (bs budgetStats) TagRPC(ctx context.Context, info *stats.RPCTagInfo) context.Context {
	if publicMethod(info.FullMethodName) {
		return ctx
	}
	return context.WithValue(ctx, recvHoldKey{}, &recvHold{b: bs.s.budget})
}

func (bs budgetStats) HandleRPC(ctx context.Context, st stats.RPCStats) {
	h, _ := ctx.Value(recvHoldKey{}).(*recvHold)
	if h == nil {
		return
	}
	switch st := st.(type) {
	case *stats.Begin:
		if st.IsClientStream || st.IsServerStream {
			return
		}
		bs.reserve(ctx, h)
	case *stats.InPayload:
		h.shrink(int64(st.Length))
	case *stats.End:
		h.free()
	}
}

// reserve waits for a read slot of the client's address and MaxRecvBytes of
// the budget, and arms the read deadline.
func (bs budgetStats) reserve(ctx context.Context, h *recvHold) {
	n := min(int64(bs.s.cfg.MaxRecvBytes), h.b.max)
	h.b.waiters.Add(1)
	h.b.m.waiting.Inc()
	slot := func() {}
	var err error
	if k, ok := ctx.Value(connIPKey{}).(string); ok {
		slot, err = bs.s.readSlots.acquire(ctx, k)
	} else if p, ok := peer.FromContext(ctx); ok && p.Addr != nil {
		slot, err = bs.s.readSlots.acquire(ctx, ipKey(p.Addr))
	}
	if err == nil {
		if err = h.b.sem.Acquire(ctx, n); err != nil {
			slot()
		}
	}
	h.b.waiters.Add(-1)
	h.b.m.waiting.Dec()
	if err != nil {
		return // the stream ended while waiting
	}
	h.b.taken(n)
	cancel, _ := ctx.Value(streamCancelKey{}).(context.CancelFunc)
	h.mu.Lock()
	defer h.mu.Unlock()
	h.held = n
	h.slot = slot
	if cancel != nil {
		h.timer = time.AfterFunc(bs.s.cfg.RequestReadTimeout, func() {
			h.mu.Lock()
			stalled := !h.received
			h.mu.Unlock()
			if stalled {
				bs.s.lm.readTimeouts.Inc()
				cancel()
			}
		})
	}
}

// shrink keeps n bytes of the hold (the decoded request's size).
func (h *recvHold) shrink(n int64) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.received {
		return
	}
	h.received = true
	if h.timer != nil {
		h.timer.Stop()
	}
	if h.slot != nil {
		h.slot()
	}
	if h.held > n {
		h.b.give(h.held - max(n, 0))
		h.held = max(n, 0)
	}
}

// free gives the whole hold back.
func (h *recvHold) free() {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.received = true
	if h.timer != nil {
		h.timer.Stop()
	}
	if h.slot != nil {
		h.slot()
	}
	if h.held > 0 {
		h.b.give(h.held)
		h.held = 0
	}
}

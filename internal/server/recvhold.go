package server

import (
	"context"
	"sync"
	"time"

	"google.golang.org/grpc/stats"
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
//     keep the share.
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

func (budgetStats) TagConn(ctx context.Context, _ *stats.ConnTagInfo) context.Context { return ctx }
func (budgetStats) HandleConn(context.Context, stats.ConnStats)                       {}

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

// reserve waits for MaxRecvBytes of the budget and arms the read deadline.
func (bs budgetStats) reserve(ctx context.Context, h *recvHold) {
	n := min(int64(bs.s.cfg.MaxRecvBytes), h.b.max)
	h.b.waiters.Add(1)
	h.b.m.waiting.Inc()
	err := h.b.sem.Acquire(ctx, n)
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
	if h.held > 0 {
		h.b.give(h.held)
		h.held = 0
	}
}

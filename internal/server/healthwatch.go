package server

import (
	"context"
	"sync"
	"time"

	healthpb "google.golang.org/grpc/health/grpc_health_v1"
)

// DefaultHealthInterval is how often the ready checks run in the background.
const DefaultHealthInterval = 5 * time.Second

// readiness is the one verdict of the ready checks that both /readyz and
// grpc.health.v1 report: NOT_SERVING while the HSM, the store or another
// check is down, SERVING again once it is back.
type readiness struct {
	run sync.Mutex // one probe at a time; later callers reuse its result

	mu    sync.Mutex
	ok    bool
	lines []string
	at    time.Time
}

// probe runs every ready check (concurrently, each bounded by
// ReadyCheckTimeout), records the verdict and sets the gRPC health of ""
// and of every registered service from it. With share, a result made after
// the call began is returned instead (a burst of /readyz runs the checks
// once at a time, not once per request).
func (s *Server) probe(share bool) (ok bool, lines []string) {
	called := time.Now()
	r := &s.ready
	r.run.Lock()
	defer r.run.Unlock()
	r.mu.Lock()
	if share && !r.at.IsZero() && !r.at.Before(called) {
		ok, lines = r.ok, r.lines
		r.mu.Unlock()
		return ok, lines
	}
	r.mu.Unlock()

	s.mu.Lock()
	checks := append([]namedCheck(nil), s.checks...)
	names := make([]string, 0, len(s.services))
	for _, reg := range s.services {
		names = append(names, reg.desc.ServiceName)
	}
	s.mu.Unlock()

	lines = make([]string, len(checks))
	failed := make([]bool, len(checks))
	var wg sync.WaitGroup
	for i, c := range checks {
		wg.Add(1)
		go func() {
			defer wg.Done()
			ctx, cancel := context.WithTimeout(context.Background(), ReadyCheckTimeout)
			defer cancel()
			lines[i] = c.name + ": ok"
			if err := c.fn(ctx); err != nil {
				lines[i] = c.name + ": " + errsMessage(err)
				failed[i] = true
			}
		}()
	}
	wg.Wait()
	ok = true
	for _, f := range failed {
		ok = ok && !f
	}

	r.mu.Lock()
	changed := r.at.IsZero() || r.ok != ok
	r.ok, r.lines, r.at = ok, lines, time.Now()
	r.mu.Unlock()

	// After shutdown began, health.Shutdown has set NOT_SERVING and
	// ignores these.
	st := healthpb.HealthCheckResponse_SERVING
	if !ok {
		st = healthpb.HealthCheckResponse_NOT_SERVING
	}
	if s.serving.Load() {
		s.health.SetServingStatus("", st)
		for _, n := range names {
			s.health.SetServingStatus(n, st)
		}
		if changed && !ok {
			s.log.Warn("not ready: health NOT_SERVING", "checks", lines)
		} else if changed {
			s.log.Info("ready: health SERVING")
		}
	}
	return ok, lines
}

// watchHealth probes every interval until ctx ends.
func (s *Server) watchHealth(ctx context.Context, interval time.Duration) {
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			s.probe(false)
		}
	}
}

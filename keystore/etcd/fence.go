package etcd

import (
	"context"
	"slices"
	"sync"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
)

// The fence keeps calls off members that do not answer.
//
// The client spreads calls over a connection to every endpoint and drops a
// connection only when its keepalive fails, KeepAliveTime + KeepAliveTimeout
// after the member stopped answering (gRPC allows no keepalive under 10 s):
// until then a frozen member (SIGSTOP, a hung disk) or one cut off from the
// others keeps its share of the calls, each of which waits the request
// timeout and fails; seen with three replicas: 13 s without a successful
// write while one member of three was frozen. So the store probes every
// member on a connection of its own, every ProbeInterval, with a
// linearizable read bounded by RequestTimeout (a frozen member does not
// answer; a cut-off one has no leader), and keeps the client's endpoints to
// the members that answered; when none answers (quorum lost) it leaves them
// all, and puts a member back as soon as it answers again.
type fence struct {
	s      *Store
	probes map[string]*clientv3.Client
	fenced []string // endpoints left out now (sorted)
	cancel context.CancelFunc
	done   chan struct{}
}

func (s *Store) startFence() {
	ctx, cancel := context.WithCancel(context.Background())
	f := &fence{s: s, probes: map[string]*clientv3.Client{}, cancel: cancel, done: make(chan struct{})}
	s.fence = f
	go f.run(ctx)
}

func (f *fence) stop() {
	f.cancel()
	<-f.done
	for _, c := range f.probes {
		_ = c.Close()
	}
}

func (f *fence) run(ctx context.Context) {
	defer close(f.done)
	t := time.NewTicker(f.s.cfg.ProbeInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		f.round(ctx)
	}
}

// round probes every known member and sets the client's endpoints to those
// that answered (to all when none did).
func (f *fence) round(ctx context.Context) {
	// Known members: the configured ones, those auto-sync found, and those
	// fenced off now.
	known := slices.Concat(f.s.cfg.Endpoints, f.s.cli.Endpoints(), f.fenced)
	slices.Sort(known)
	known = slices.Compact(known)
	ok := make([]bool, len(known))
	var wg sync.WaitGroup
	for i, ep := range known {
		c := f.probe(ep)
		if c == nil {
			continue
		}
		wg.Go(func() {
			pctx, cancel := context.WithTimeout(ctx, f.s.cfg.RequestTimeout)
			defer cancel()
			_, err := c.Get(pctx, f.s.prefix, clientv3.WithCountOnly())
			ok[i] = err == nil
		})
	}
	wg.Wait()
	if ctx.Err() != nil {
		return
	}
	var healthy, fenced []string
	for i, ep := range known {
		if ok[i] {
			healthy = append(healthy, ep)
		} else {
			fenced = append(fenced, ep)
		}
	}
	if len(healthy) == 0 {
		healthy, fenced = known, nil // quorum lost: nothing to prefer
	}
	cur := slices.Clone(f.s.cli.Endpoints())
	slices.Sort(cur)
	if !slices.Equal(cur, healthy) {
		f.s.cli.SetEndpoints(healthy...)
	}
	f.fenced = fenced
}

// probe returns the probing client of ep, made on first use (nil if it
// cannot be made now).
func (f *fence) probe(ep string) *clientv3.Client {
	if c, ok := f.probes[ep]; ok {
		return c
	}
	cfg := f.s.cfg
	c, err := clientv3.New(clientv3.Config{
		Endpoints: []string{ep}, DialTimeout: cfg.DialTimeout, TLS: cfg.TLS,
		Username: cfg.Username, Password: cfg.Password, Logger: zap.NewNop(),
		DialKeepAliveTime: cfg.KeepAliveTime, DialKeepAliveTimeout: cfg.KeepAliveTimeout, PermitWithoutStream: true,
	})
	if err != nil {
		return nil
	}
	f.probes[ep] = c
	return c
}

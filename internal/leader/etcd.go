package leader

import (
	"context"
	"fmt"
	"log/slog"
	"math"
	"slices"
	"strings"
	"sync"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/client/v3/concurrency"

	"github.com/hsmgate/hsmgate/keystore"
)

// EtcdConfig configures NewEtcd.
type EtcdConfig struct {
	// Client is the etcd client (the store's: keystore/etcd Store.Client).
	Client *clientv3.Client
	// Prefix is where the election and the replica registry live, e.g. the
	// store's prefix + "leader/" (required, ends with "/").
	Prefix string
	// ReplicaID names this replica (CheckReplicaID).
	ReplicaID string
	// TTL of the session lease, rounded up to whole seconds (default DefaultTTL).
	TTL time.Duration
	// RequestTimeout bounds each registry and election call (default 2 s).
	RequestTimeout time.Duration
	// Logger (default slog.Default()).
	Logger *slog.Logger
}

// Etcd is an Elector on etcd's concurrency.Election.
type Etcd struct {
	cfg EtcdConfig
	log *slog.Logger

	ctx    context.Context // ends at Close: every session's keepalive stops
	cancel context.CancelFunc

	mu     sync.Mutex
	sess   *concurrency.Session
	closed bool
}

var _ Elector = (*Etcd)(nil)

// NewEtcd returns an Elector on cfg.Client. It does not contact etcd: the
// first session is made by Campaign.
func NewEtcd(cfg EtcdConfig) (*Etcd, error) {
	if cfg.Client == nil {
		return nil, fmt.Errorf("leader: etcd: no client")
	}
	if cfg.Prefix == "" || !strings.HasSuffix(cfg.Prefix, "/") {
		return nil, fmt.Errorf("leader: etcd: prefix %q must end with '/'", cfg.Prefix)
	}
	if err := CheckReplicaID(cfg.ReplicaID); err != nil {
		return nil, err
	}
	ttl, err := checkTTL(cfg.TTL)
	if err != nil {
		return nil, err
	}
	cfg.TTL = time.Duration(math.Ceil(ttl.Seconds())) * time.Second
	if cfg.RequestTimeout <= 0 {
		cfg.RequestTimeout = 2 * time.Second
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	ctx, cancel := context.WithCancel(context.Background())
	return &Etcd{cfg: cfg, log: cfg.Logger, ctx: ctx, cancel: cancel}, nil
}

// ReplicaID implements Elector.
func (e *Etcd) ReplicaID() string { return e.cfg.ReplicaID }

// TTL implements Elector.
func (e *Etcd) TTL() time.Duration { return e.cfg.TTL }

func (e *Etcd) registryKey(lease clientv3.LeaseID) string {
	// One key per session: a restarted replica with the same ID does not
	// lose its registration when the previous session's lease expires.
	return fmt.Sprintf("%sreplicas/%s/%x", e.cfg.Prefix, e.cfg.ReplicaID, int64(lease))
}

// session returns the live session, making (and registering) a new one
// when there is none or the last one ended.
func (e *Etcd) session(ctx context.Context) (*concurrency.Session, error) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.closed {
		return nil, ErrClosed
	}
	if e.sess != nil {
		select {
		case <-e.sess.Done():
			e.sess = nil
		default:
			return e.sess, nil
		}
	}
	gctx, cancel := context.WithTimeout(ctx, e.cfg.RequestTimeout)
	defer cancel()
	// The lease grant is bounded by gctx; the keepalive by e.ctx (Close).
	lease, err := e.cfg.Client.Grant(gctx, int64(e.cfg.TTL/time.Second))
	if err != nil {
		return nil, fmt.Errorf("leader: etcd: grant lease: %w: %v", keystore.ErrUnavailable, err)
	}
	s, err := concurrency.NewSession(e.cfg.Client, concurrency.WithLease(lease.ID), concurrency.WithContext(e.ctx))
	if err != nil {
		e.revoke(lease.ID)
		return nil, fmt.Errorf("leader: etcd: session: %w: %v", keystore.ErrUnavailable, err)
	}
	if _, err := e.cfg.Client.Put(gctx, e.registryKey(s.Lease()), e.cfg.ReplicaID, clientv3.WithLease(s.Lease())); err != nil {
		s.Orphan()
		e.revoke(s.Lease())
		return nil, fmt.Errorf("leader: etcd: register replica: %w: %v", keystore.ErrUnavailable, err)
	}
	e.sess = s
	return s, nil
}

func (e *Etcd) revoke(id clientv3.LeaseID) {
	ctx, cancel := context.WithTimeout(context.Background(), e.cfg.RequestTimeout)
	defer cancel()
	_, _ = e.cfg.Client.Revoke(ctx, id)
}

// Campaign implements Elector.
func (e *Etcd) Campaign(ctx context.Context) (Term, error) {
	for attempt := 0; ; attempt++ {
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		s, err := e.session(ctx)
		if err == ErrClosed {
			return nil, err
		}
		if err != nil {
			e.log.Warn("leader: cannot campaign", "err", err)
			if err := sleep(ctx, backoff(attempt, e.cfg.TTL)); err != nil {
				return nil, err
			}
			continue
		}
		t, err := e.campaign(ctx, s)
		if t != nil {
			return t, nil
		}
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		if err != nil {
			e.log.Warn("leader: campaign failed", "err", err)
			if err := sleep(ctx, backoff(attempt, e.cfg.TTL)); err != nil {
				return nil, err
			}
		}
	}
}

// campaign runs one election on s; (nil, nil) when s ended meanwhile.
func (e *Etcd) campaign(ctx context.Context, s *concurrency.Session) (Term, error) {
	cctx, cancel := context.WithCancel(ctx)
	defer cancel()
	go func() { // the session ended: stop waiting
		select {
		case <-s.Done():
			cancel()
		case <-cctx.Done():
		}
	}()
	el := concurrency.NewElection(s, e.cfg.Prefix+"election/")
	// concurrency.Election.Campaign, when its ctx ends while it waits,
	// resigns with the client's own context, which has no deadline: without
	// a quorum it never returns (seen: a replica's shutdown hung for good
	// once the quorum was lost). So it runs aside, and ctx ends the wait;
	// the stray resign ends when the quorum is back or the client closes.
	errc := make(chan error, 1)
	go func() { errc <- el.Campaign(cctx, e.cfg.ReplicaID) }()
	var err error
	select {
	case err = <-errc:
	case <-cctx.Done():
		err = cctx.Err()
	}
	if err != nil {
		select {
		case <-s.Done():
			return nil, nil
		default:
		}
		return nil, err
	}
	// The lease may have expired while we waited (our key gone with it):
	// lead only if our candidacy key is still the one we created.
	gctx, gcancel := context.WithTimeout(ctx, e.cfg.RequestTimeout)
	defer gcancel()
	resp, err := e.cfg.Client.Get(gctx, el.Key())
	if err != nil {
		return nil, fmt.Errorf("leader: etcd: check lead: %w: %v", keystore.ErrUnavailable, err)
	}
	if len(resp.Kvs) == 0 || resp.Kvs[0].CreateRevision != el.Rev() || resp.Kvs[0].Lease != int64(s.Lease()) {
		return nil, nil
	}
	t := &etcdTerm{el: el, s: s, timeout: e.cfg.RequestTimeout, done: make(chan struct{})}
	go t.guard(e.ctx, e.cfg.Client, e.cfg.TTL, time.Now())
	return t, nil
}

type etcdTerm struct {
	el      *concurrency.Election
	s       *concurrency.Session
	timeout time.Duration
	done    chan struct{}
}

func (t *etcdTerm) Done() <-chan struct{} { return t.done }

// guard ends the term when the session ends, or earlier: at the time the
// lease is sure to be alive until, by this replica's own clock. The
// session's keepalive learns of a lost lease only a TTL after the last
// answer it received, which is later than the server's expiry by a round
// trip: another replica could lead meanwhile. So the guard renews the
// lease itself every TTL/4 and counts the TTL from when it sent the last
// renewal that was answered (the server's expiry is at least that late),
// less a tenth for the clocks' drift.
func (t *etcdTerm) guard(ctx context.Context, cli *clientv3.Client, ttl time.Duration, sent time.Time) {
	defer close(t.done)
	valid := sent.Add(ttl - ttl/10)
	tick := time.NewTicker(ttl / 4)
	defer tick.Stop()
	for {
		expire := time.NewTimer(time.Until(valid))
		select {
		case <-t.s.Done():
			expire.Stop()
			return
		case <-expire.C:
			return
		case <-tick.C:
			expire.Stop()
		}
		now := time.Now()
		kctx, cancel := context.WithDeadline(ctx, valid)
		resp, err := cli.KeepAliveOnce(kctx, t.s.Lease())
		cancel()
		if err == nil && resp.TTL > 0 {
			valid = now.Add(ttl - ttl/10)
		}
	}
}

func (t *etcdTerm) Resign(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, t.timeout)
	defer cancel()
	if err := t.el.Resign(ctx); err != nil {
		return fmt.Errorf("leader: etcd: resign: %w: %v", keystore.ErrUnavailable, err)
	}
	return nil
}

// Live implements Elector.
func (e *Etcd) Live(ctx context.Context) ([]string, error) {
	ctx, cancel := context.WithTimeout(ctx, e.cfg.RequestTimeout)
	defer cancel()
	pre := e.cfg.Prefix + "replicas/"
	resp, err := e.cfg.Client.Get(ctx, pre, clientv3.WithPrefix(), clientv3.WithKeysOnly())
	if err != nil {
		return nil, fmt.Errorf("leader: etcd: list replicas: %w: %v", keystore.ErrUnavailable, err)
	}
	var ids []string
	for _, kv := range resp.Kvs {
		id, _, ok := strings.Cut(strings.TrimPrefix(string(kv.Key), pre), "/")
		if ok {
			ids = append(ids, id)
		}
	}
	slices.Sort(ids)
	return slices.Compact(ids), nil
}

// Close implements Elector: the session's lease is revoked, so its
// registration and candidacy (or lead) end at once.
func (e *Etcd) Close() error {
	e.mu.Lock()
	if e.closed {
		e.mu.Unlock()
		return nil
	}
	e.closed = true
	s := e.sess
	e.sess = nil
	e.mu.Unlock()
	if s != nil {
		s.Orphan() // stop the keepalive; revoke below with a bound
		e.revoke(s.Lease())
	}
	e.cancel()
	return nil
}

// backoff is the wait before retry attempt n: 100 ms doubling, at most ttl/2.
func backoff(n int, ttl time.Duration) time.Duration {
	d := 100 * time.Millisecond << min(n, 10)
	return min(d, ttl/2)
}

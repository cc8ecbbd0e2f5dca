package leader

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/hsmgate/hsmgate/keystore"
)

// StoreLeaseConfig configures NewStoreLease.
type StoreLeaseConfig struct {
	// Store holds the lease and the replica registry (required).
	Store keystore.Store
	// Prefix of the lease record (<Prefix>lease) and of the registry
	// (<Prefix>replicas/<id>); default "leader/".
	Prefix string
	// ReplicaID names this replica (CheckReplicaID).
	ReplicaID string
	// TTL of the lease and of a replica's registration (default DefaultTTL).
	TTL time.Duration
	// Now is the clock (default time.Now). Every party must share it: one machine.
	Now func() time.Time
	// Logger (default slog.Default()).
	Logger *slog.Logger
}

// StoreLease is an Elector on a lease record in a keystore.Store, for the
// bbolt store's single node (see the package doc).
type StoreLease struct {
	cfg StoreLeaseConfig
	log *slog.Logger

	ctx    context.Context
	cancel context.CancelFunc
	done   chan struct{} // heartbeat stopped

	mu     sync.Mutex
	closed bool
	term   *leaseTerm
}

var _ Elector = (*StoreLease)(nil)

// leaseRecord is the value of the lease and of each registration.
type leaseRecord struct {
	Replica string    `json:"replica"`
	Expires time.Time `json:"expires"`
}

// NewStoreLease registers this replica in cfg.Store (renewed every TTL/3
// until Close) and returns the Elector.
func NewStoreLease(cfg StoreLeaseConfig) (*StoreLease, error) {
	if cfg.Store == nil {
		return nil, errors.New("leader: store lease: no store")
	}
	if cfg.Prefix == "" {
		cfg.Prefix = "leader/"
	}
	if err := CheckReplicaID(cfg.ReplicaID); err != nil {
		return nil, err
	}
	ttl, err := checkTTL(cfg.TTL)
	if err != nil {
		return nil, err
	}
	cfg.TTL = ttl
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	ctx, cancel := context.WithCancel(context.Background())
	l := &StoreLease{cfg: cfg, log: cfg.Logger, ctx: ctx, cancel: cancel, done: make(chan struct{})}
	l.heartbeat() // registered before the first Live
	go l.heartbeats()
	return l, nil
}

// ReplicaID implements Elector.
func (l *StoreLease) ReplicaID() string { return l.cfg.ReplicaID }

// TTL implements Elector.
func (l *StoreLease) TTL() time.Duration { return l.cfg.TTL }

func (l *StoreLease) leaseKey() string    { return l.cfg.Prefix + "lease" }
func (l *StoreLease) registryKey() string { return l.cfg.Prefix + "replicas/" + l.cfg.ReplicaID }

func (l *StoreLease) heartbeats() {
	defer close(l.done)
	t := time.NewTicker(l.cfg.TTL / 3)
	defer t.Stop()
	for {
		select {
		case <-l.ctx.Done():
			return
		case <-t.C:
			l.heartbeat()
			l.prune()
		}
	}
}

// prune deletes registrations expired for more than a TTL (replicas that
// died: with hostname-pid IDs every restart is a new one), each at the
// revision read so that a replica coming back keeps its new one.
func (l *StoreLease) prune() {
	ents, err := l.cfg.Store.List(l.ctx, l.cfg.Prefix+"replicas/")
	if err != nil {
		return
	}
	old := l.cfg.Now().Add(-l.cfg.TTL)
	for _, e := range ents {
		var r leaseRecord
		if json.Unmarshal(e.Value, &r) == nil && r.Expires.Before(old) {
			_ = l.cfg.Store.Delete(l.ctx, e.Key, e.Revision)
		}
	}
}

func (l *StoreLease) heartbeat() {
	b, _ := json.Marshal(leaseRecord{Replica: l.cfg.ReplicaID, Expires: l.cfg.Now().Add(l.cfg.TTL)})
	if _, err := l.cfg.Store.Put(l.ctx, l.registryKey(), b, keystore.AnyRevision); err != nil && l.ctx.Err() == nil {
		l.log.Warn("leader: replica heartbeat failed", "err", err)
	}
}

// Live implements Elector: the replicas whose registration has not expired.
func (l *StoreLease) Live(ctx context.Context) ([]string, error) {
	ents, err := l.cfg.Store.List(ctx, l.cfg.Prefix+"replicas/")
	if err != nil {
		return nil, fmt.Errorf("leader: list replicas: %w", err)
	}
	now := l.cfg.Now()
	var ids []string
	for _, e := range ents {
		var r leaseRecord
		if json.Unmarshal(e.Value, &r) == nil && now.Before(r.Expires) {
			ids = append(ids, strings.TrimPrefix(e.Key, l.cfg.Prefix+"replicas/"))
		}
	}
	slices.Sort(ids)
	return ids, nil
}

// Campaign implements Elector: it takes the lease when it is absent or
// expired, else waits and looks again.
func (l *StoreLease) Campaign(ctx context.Context) (Term, error) {
	for attempt := 0; ; attempt++ {
		l.mu.Lock()
		closed := l.closed
		l.mu.Unlock()
		if closed || l.ctx.Err() != nil {
			return nil, ErrClosed
		}
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		t, wait, err := l.try(ctx)
		if t != nil {
			return t, nil
		}
		if err != nil {
			if errorsIsCtx(ctx, err) {
				return nil, ctx.Err()
			}
			l.log.Warn("leader: campaign failed", "err", err)
			wait = backoff(attempt, l.cfg.TTL)
		}
		if err := sleep(ctx, wait); err != nil {
			return nil, err
		}
	}
}

// try takes the lease if it is free; otherwise it says how long to wait.
func (l *StoreLease) try(ctx context.Context) (*leaseTerm, time.Duration, error) {
	poll := l.cfg.TTL / 3
	rev := keystore.MustNotExist
	ent, err := l.cfg.Store.Get(ctx, l.leaseKey())
	switch {
	case errors.Is(err, keystore.ErrNotFound):
	case err != nil:
		return nil, 0, fmt.Errorf("leader: read lease: %w", err)
	default:
		var r leaseRecord
		// Held and unexpired: wait, even when it names this replica's ID
		// (a restarted replica, or a second one misconfigured with the
		// same ID, must not lead beside the holder).
		if json.Unmarshal(ent.Value, &r) == nil && l.cfg.Now().Before(r.Expires) {
			return nil, min(poll, r.Expires.Sub(l.cfg.Now())+time.Millisecond), nil
		}
		rev = ent.Revision
	}
	start := l.cfg.Now()
	newRev, err := l.put(ctx, start, rev)
	if errors.Is(err, keystore.ErrConflict) {
		return nil, poll, nil // another candidate took it
	}
	if err != nil {
		return nil, 0, err
	}
	t := &leaseTerm{l: l, rev: newRev, done: make(chan struct{}), stop: make(chan struct{})}
	l.mu.Lock()
	if l.closed {
		l.mu.Unlock()
		_ = l.cfg.Store.Delete(context.WithoutCancel(ctx), l.leaseKey(), newRev)
		return nil, 0, ErrClosed
	}
	l.term = t
	l.mu.Unlock()
	go t.renew(start)
	return t, 0, nil
}

func (l *StoreLease) put(ctx context.Context, start time.Time, rev int64) (int64, error) {
	b, _ := json.Marshal(leaseRecord{Replica: l.cfg.ReplicaID, Expires: start.Add(l.cfg.TTL)})
	return l.cfg.Store.Put(ctx, l.leaseKey(), b, rev)
}

// Close implements Elector: it resigns a held lease and removes this
// replica's registration.
func (l *StoreLease) Close() error {
	l.mu.Lock()
	if l.closed {
		l.mu.Unlock()
		return nil
	}
	l.closed = true
	t := l.term
	l.mu.Unlock()
	if t != nil {
		_ = t.Resign(context.Background())
	}
	l.cancel()
	<-l.done
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	if err := l.cfg.Store.Delete(ctx, l.registryKey(), keystore.AnyRevision); err != nil && !errors.Is(err, keystore.ErrNotFound) {
		return fmt.Errorf("leader: unregister: %w", err)
	}
	return nil
}

// leaseTerm is a held lease, renewed every TTL/3 by compare-and-swap on
// the revision it last wrote. It ends (done) when a renewal loses the
// compare-and-swap, or when no renewal succeeded for a TTL: at the expiry
// it last wrote, by the shared clock, before anyone else may take it.
type leaseTerm struct {
	l    *StoreLease
	mu   sync.Mutex
	rev  int64
	once sync.Once
	done chan struct{}
	stop chan struct{} // Resign
	quit sync.Once
}

func (t *leaseTerm) Done() <-chan struct{} { return t.done }

func (t *leaseTerm) end() { t.once.Do(func() { close(t.done) }) }

func (t *leaseTerm) renew(start time.Time) {
	l := t.l
	defer t.end()
	deadline := start.Add(l.cfg.TTL)
	tick := time.NewTicker(l.cfg.TTL / 3)
	defer tick.Stop()
	for {
		expire := time.NewTimer(deadline.Sub(l.cfg.Now()))
		select {
		case <-t.stop:
			expire.Stop()
			return
		case <-l.ctx.Done():
			expire.Stop()
			return
		case <-expire.C:
			l.log.Warn("leader: lease not renewed in time")
			return
		case <-tick.C:
			expire.Stop()
		}
		now := l.cfg.Now()
		ctx, cancel := context.WithDeadline(l.ctx, deadline)
		t.mu.Lock()
		rev, err := l.put(ctx, now, t.rev)
		if err == nil {
			t.rev = rev
		}
		t.mu.Unlock()
		cancel()
		switch {
		case err == nil:
			deadline = now.Add(l.cfg.TTL)
		case errors.Is(err, keystore.ErrConflict):
			l.log.Warn("leader: lease taken by another replica")
			return
		default:
			l.log.Warn("leader: lease renewal failed", "err", err)
		}
	}
}

// Resign ends the term and deletes the lease (if still ours).
func (t *leaseTerm) Resign(ctx context.Context) error {
	t.quit.Do(func() { close(t.stop) })
	<-t.done
	t.mu.Lock()
	rev := t.rev
	t.mu.Unlock()
	t.l.mu.Lock()
	if t.l.term == t {
		t.l.term = nil
	}
	t.l.mu.Unlock()
	err := t.l.cfg.Store.Delete(ctx, t.l.leaseKey(), rev)
	if err != nil && !errors.Is(err, keystore.ErrNotFound) && !errors.Is(err, keystore.ErrConflict) {
		return fmt.Errorf("leader: resign: %w", err)
	}
	return nil
}

package etcd

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"strings"
	"sync/atomic"
	"time"

	"go.etcd.io/etcd/api/v3/mvccpb"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/hsmgate/hsmgate/keystore"
)

// Defaults for Config fields left zero.
const (
	DefaultDialTimeout      = 5 * time.Second
	DefaultRequestTimeout   = 2 * time.Second
	DefaultKeepAliveTime    = 10 * time.Second // gRPC's floor for client keepalive pings
	DefaultKeepAliveTimeout = 3 * time.Second
	DefaultAutoSyncInterval = time.Minute
	DefaultMaxValueSize     = 1 << 20 // etcd's own request limit is 1.5 MiB by default
	DefaultWatchBuffer      = 1024
)

// Config configures New.
type Config struct {
	// Endpoints are the etcd client URLs, e.g. "https://etcd-0:2379". Give
	// every member: the client balances across them and fails over.
	Endpoints []string
	// DialTimeout bounds connecting (and the first authentication) to a
	// member (default DefaultDialTimeout).
	DialTimeout time.Duration
	// RequestTimeout bounds every call, whatever the caller's deadline, so
	// that a frozen member or a cluster without quorum costs a call at most
	// this long and fails it with ErrUnavailable instead of hanging until
	// the caller's deadline (default DefaultRequestTimeout).
	RequestTimeout time.Duration
	// KeepAliveTime and KeepAliveTimeout: the client pings each member's
	// connection this often and drops it when no answer comes in time, so
	// that calls move off a member that froze or was cut off (defaults
	// DefaultKeepAliveTime, DefaultKeepAliveTimeout).
	KeepAliveTime, KeepAliveTimeout time.Duration
	// AutoSyncInterval: how often the client refreshes its endpoints from
	// the cluster's member list (default DefaultAutoSyncInterval; negative:
	// never, e.g. behind a proxy or a load balancer that is the only way in).
	AutoSyncInterval time.Duration
	// ProbeInterval: how often each member is probed on its own connection;
	// members that do not answer within RequestTimeout get no calls until
	// they do (fence.go). Default RequestTimeout / 2; negative: no probes.
	ProbeInterval time.Duration
	// TLS, when set, is used for client connections (and client certificates).
	TLS *tls.Config
	// Username and Password, when set, authenticate to etcd.
	Username, Password string
	// Prefix is prepended to every key, so several deployments can share one
	// etcd, e.g. "/hsmgate/prod/". Keys seen by callers never include it.
	Prefix string
	// MaxValueSize is the largest value Put accepts (default DefaultMaxValueSize).
	MaxValueSize int
	// WatchBuffer is the number of events a watcher may lag behind before it
	// is cut off (default DefaultWatchBuffer).
	WatchBuffer int
}

func (c Config) withDefaults() Config {
	if c.DialTimeout <= 0 {
		c.DialTimeout = DefaultDialTimeout
	}
	if c.RequestTimeout <= 0 {
		c.RequestTimeout = DefaultRequestTimeout
	}
	if c.KeepAliveTime <= 0 {
		c.KeepAliveTime = DefaultKeepAliveTime
	}
	if c.KeepAliveTimeout <= 0 {
		c.KeepAliveTimeout = DefaultKeepAliveTimeout
	}
	switch {
	case c.AutoSyncInterval == 0:
		c.AutoSyncInterval = DefaultAutoSyncInterval
	case c.AutoSyncInterval < 0:
		c.AutoSyncInterval = 0 // clientv3: 0 disables
	}
	switch {
	case c.ProbeInterval == 0:
		c.ProbeInterval = max(c.RequestTimeout/2, 100*time.Millisecond)
	case c.ProbeInterval < 0:
		c.ProbeInterval = 0
	}
	if c.MaxValueSize <= 0 {
		c.MaxValueSize = DefaultMaxValueSize
	}
	if c.WatchBuffer <= 0 {
		c.WatchBuffer = DefaultWatchBuffer
	}
	return c
}

// Store is a keystore.Store on an etcd cluster.
type Store struct {
	cli    *clientv3.Client
	cfg    Config
	prefix string
	closed atomic.Bool

	watches atomic.Int64 // running watch goroutines (for tests)
	fence   *fence       // nil without probes
}

var _ keystore.Store = (*Store)(nil)

// New connects to etcd and checks, within ctx, that the cluster answers a
// linearizable read (so that wrong endpoints, TLS or credentials fail at
// start). Unreachable etcd gives an error wrapping keystore.ErrUnavailable;
// refused credentials an error of no keystore kind.
func New(ctx context.Context, cfg Config) (*Store, error) {
	cfg = cfg.withDefaults()
	if len(cfg.Endpoints) == 0 {
		return nil, errors.New("keystore/etcd: no endpoints")
	}
	cli, err := clientv3.New(clientv3.Config{
		Endpoints:   cfg.Endpoints,
		DialTimeout: cfg.DialTimeout,
		TLS:         cfg.TLS,
		Username:    cfg.Username,
		Password:    cfg.Password,
		Logger:      zap.NewNop(),
		// A member that stops answering is dropped after the keepalive
		// timeout; the balancer sends calls to the others meanwhile.
		DialKeepAliveTime:    cfg.KeepAliveTime,
		DialKeepAliveTimeout: cfg.KeepAliveTimeout,
		PermitWithoutStream:  true,
		AutoSyncInterval:     cfg.AutoSyncInterval,
		// Not RejectOldCluster: clientv3's check fails New when any one
		// endpoint is down (a replica could not start during a member's
		// outage); checkVersions does it for the members that answer.
		// Room for the largest value plus the key and the prefix.
		MaxCallSendMsgSize: cfg.MaxValueSize + 64<<10,
	})
	op := fmt.Sprintf("connect %v", cfg.Endpoints)
	if err != nil {
		return nil, classify(op, err)
	}
	s := &Store{cli: cli, cfg: cfg, prefix: cfg.Prefix}
	// The first call also connects: allow the dial timeout on top.
	if err := s.ping(ctx, op, cfg.DialTimeout+cfg.RequestTimeout); err != nil {
		_ = cli.Close()
		return nil, err
	}
	if err := s.checkVersions(ctx); err != nil {
		_ = cli.Close()
		return nil, err
	}
	if cfg.ProbeInterval > 0 {
		s.startFence()
	}
	return s, nil
}

// MinServerVersion is the oldest etcd (major.minor) a store talks to: the
// client's own minor version and the one before, as clientv3 allows.
var MinServerVersion = [2]int{3, 6}

// versionCheckTimeout bounds each member's Status call in checkVersions: a
// live member answers in milliseconds.
const versionCheckTimeout = time.Second

// checkVersions refuses a cluster any of whose answering members runs an
// etcd older than MinServerVersion (a stray endpoint of an old cluster, or a
// downgrade). Members that do not answer within versionCheckTimeout (or
// RequestTimeout when shorter) are skipped: a stopped member must not hold
// up the start.
func (s *Store) checkVersions(ctx context.Context) error {
	eps := s.cli.Endpoints()
	errc := make(chan error, len(eps))
	wait := min(s.cfg.RequestTimeout, versionCheckTimeout)
	for _, ep := range eps {
		go func() {
			sctx, cancel := context.WithTimeout(ctx, wait)
			defer cancel()
			st, err := s.cli.Status(sctx, ep)
			if err != nil {
				errc <- nil
				return
			}
			var major, minor int
			if _, err := fmt.Sscanf(st.Version, "%d.%d", &major, &minor); err != nil {
				errc <- fmt.Errorf("keystore/etcd: member %s: version %q: %v", ep, st.Version, err)
				return
			}
			if major < MinServerVersion[0] || major == MinServerVersion[0] && minor < MinServerVersion[1] {
				errc <- fmt.Errorf("keystore/etcd: member %s runs etcd %s, older than %d.%d", ep, st.Version, MinServerVersion[0], MinServerVersion[1])
				return
			}
			errc <- nil
		}()
	}
	var errs []error
	for range eps {
		errs = append(errs, <-errc)
	}
	return errors.Join(errs...)
}

// Backend returns "etcd".
func (s *Store) Backend() string { return "etcd" }

// Client returns the underlying etcd client (for tests and diagnostics).
func (s *Store) Client() *clientv3.Client { return s.cli }

// ctx bounds a call by RequestTimeout, or by the caller's deadline when
// that is sooner.
func (s *Store) ctx(ctx context.Context) (context.Context, context.CancelFunc) {
	return context.WithTimeout(ctx, s.cfg.RequestTimeout)
}

func (s *Store) check(ctx context.Context, op string) error {
	if s.closed.Load() {
		return fmt.Errorf("keystore/etcd: %s: store closed: %w", op, keystore.ErrUnavailable)
	}
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("keystore/etcd: %s: %w", op, err)
	}
	return nil
}

// mapErr turns an etcd client error into a keystore error. caller is the
// caller's own ctx: its cancellation is reported as such; everything else
// is classified by classify.
func (s *Store) mapErr(caller context.Context, op string, err error) error {
	if s.closed.Load() {
		return fmt.Errorf("keystore/etcd: %s: store closed: %w", op, keystore.ErrUnavailable)
	}
	if errors.Is(caller.Err(), context.Canceled) {
		return fmt.Errorf("keystore/etcd: %s: %w", op, context.Canceled)
	}
	return classify(op, err)
}

// classify maps an etcd error: a deadline, a member or cluster that cannot
// answer, a lost leader or a NOSPACE alarm is ErrUnavailable; a request over
// etcd's size limit is ErrInvalidKey. Other errors (bad credentials,
// permission denied) are a misconfiguration, not the caller's fault, and
// stay unclassified so that the server answers Internal. etcd's error is
// kept as text only (%v), so that no etcd status code leaks to hsmgate's
// clients through errors.As.
func classify(op string, err error) error {
	if errors.Is(err, context.DeadlineExceeded) || errors.Is(err, context.Canceled) {
		return fmt.Errorf("keystore/etcd: %s: %w: %v", op, keystore.ErrUnavailable, err)
	}
	if errors.Is(err, rpctypes.ErrRequestTooLarge) {
		return fmt.Errorf("keystore/etcd: %s: %w: %v", op, keystore.ErrInvalidKey, err)
	}
	code := codes.Unknown
	var ee rpctypes.EtcdError
	if errors.As(err, &ee) {
		code = ee.Code()
	} else if st, ok := status.FromError(err); ok {
		code = st.Code()
	}
	switch code {
	case codes.Unavailable, codes.DeadlineExceeded, codes.Canceled, codes.ResourceExhausted:
		// ResourceExhausted: NOSPACE alarm; the store cannot take writes.
		return fmt.Errorf("keystore/etcd: %s: %w: %v", op, keystore.ErrUnavailable, err)
	}
	switch {
	case errors.Is(err, rpctypes.ErrNoLeader), errors.Is(err, rpctypes.ErrTimeout),
		errors.Is(err, rpctypes.ErrTimeoutDueToLeaderFail), errors.Is(err, rpctypes.ErrTimeoutDueToConnectionLost):
		return fmt.Errorf("keystore/etcd: %s: %w: %v", op, keystore.ErrUnavailable, err)
	}
	return fmt.Errorf("keystore/etcd: %s: %v", op, err)
}

// Get returns the entry at key; keystore.ErrNotFound if absent.
func (s *Store) Get(ctx context.Context, key string) (keystore.Entry, error) {
	if err := keystore.CheckKey(key); err != nil {
		return keystore.Entry{}, fmt.Errorf("keystore/etcd: get: %w", err)
	}
	op := fmt.Sprintf("get %q", key)
	if err := s.check(ctx, op); err != nil {
		return keystore.Entry{}, err
	}
	rctx, cancel := s.ctx(ctx)
	defer cancel()
	resp, err := s.cli.Get(rctx, s.prefix+key)
	if err != nil {
		return keystore.Entry{}, s.mapErr(ctx, op, err)
	}
	if len(resp.Kvs) == 0 {
		return keystore.Entry{}, fmt.Errorf("keystore/etcd: %s: %w", op, keystore.ErrNotFound)
	}
	kv := resp.Kvs[0]
	return keystore.Entry{Key: key, Value: nonNil(kv.Value), Revision: kv.ModRevision}, nil
}

func nonNil(b []byte) []byte {
	if b == nil {
		return []byte{}
	}
	return b
}

// List returns the entries whose key starts with prefix, sorted by key, all
// read at one revision.
func (s *Store) List(ctx context.Context, prefix string) ([]keystore.Entry, error) {
	op := fmt.Sprintf("list %q", prefix)
	if err := s.check(ctx, op); err != nil {
		return nil, err
	}
	rctx, cancel := s.ctx(ctx)
	defer cancel()
	resp, err := s.cli.Get(rctx, s.prefix+prefix, clientv3.WithPrefix(),
		clientv3.WithSort(clientv3.SortByKey, clientv3.SortAscend))
	if err != nil {
		return nil, s.mapErr(ctx, op, err)
	}
	return s.entries(resp.Kvs), nil
}

// entries turns etcd's key-values into entries without the store prefix.
func (s *Store) entries(kvs []*mvccpb.KeyValue) []keystore.Entry {
	out := make([]keystore.Entry, 0, len(kvs))
	for _, kv := range kvs {
		out = append(out, keystore.Entry{
			Key:      strings.TrimPrefix(string(kv.Key), s.prefix),
			Value:    nonNil(kv.Value),
			Revision: kv.ModRevision,
		})
	}
	return out
}

// Put writes value at key if the key's revision equals expect; see
// keystore.Store. It is one etcd transaction: If(mod revision == expect, or
// create revision == 0 for MustNotExist) Then(Put).
func (s *Store) Put(ctx context.Context, key string, value []byte, expect int64) (int64, error) {
	if err := keystore.CheckKey(key); err != nil {
		return 0, fmt.Errorf("keystore/etcd: put: %w", err)
	}
	op := fmt.Sprintf("put %q", key)
	if err := keystore.CheckExpect(expect); err != nil {
		return 0, fmt.Errorf("keystore/etcd: %s: %w", op, err)
	}
	if len(value) > s.cfg.MaxValueSize {
		return 0, fmt.Errorf("keystore/etcd: %s: value of %d bytes, limit %d: %w",
			op, len(value), s.cfg.MaxValueSize, keystore.ErrInvalidKey)
	}
	if err := s.check(ctx, op); err != nil {
		return 0, err
	}
	rctx, cancel := s.ctx(ctx)
	defer cancel()
	full := s.prefix + key
	put := clientv3.OpPut(full, string(value))
	if expect == keystore.AnyRevision {
		resp, err := s.cli.Do(rctx, put)
		if err != nil {
			return 0, s.mapErr(ctx, op, err)
		}
		return resp.Put().Header.Revision, nil
	}
	cond := clientv3.Compare(clientv3.ModRevision(full), "=", expect)
	if expect == keystore.MustNotExist {
		cond = clientv3.Compare(clientv3.CreateRevision(full), "=", 0)
	}
	resp, err := s.cli.Txn(rctx).If(cond).Then(put).Commit()
	if err != nil {
		return 0, s.mapErr(ctx, op, err)
	}
	if !resp.Succeeded {
		return 0, fmt.Errorf("keystore/etcd: %s: expected revision %d: %w", op, expect, keystore.ErrConflict)
	}
	return resp.Header.Revision, nil
}

// Delete removes key if its revision equals expect; see keystore.Store. A
// conditional delete is one transaction whose Else branch reads the key, to
// tell ErrNotFound from ErrConflict.
func (s *Store) Delete(ctx context.Context, key string, expect int64) error {
	if err := keystore.CheckKey(key); err != nil {
		return fmt.Errorf("keystore/etcd: delete: %w", err)
	}
	op := fmt.Sprintf("delete %q", key)
	if err := keystore.CheckExpect(expect); err != nil {
		return fmt.Errorf("keystore/etcd: %s: %w", op, err)
	}
	if err := s.check(ctx, op); err != nil {
		return err
	}
	rctx, cancel := s.ctx(ctx)
	defer cancel()
	full := s.prefix + key
	if expect == keystore.AnyRevision {
		resp, err := s.cli.Delete(rctx, full)
		if err != nil {
			return s.mapErr(ctx, op, err)
		}
		if resp.Deleted == 0 {
			return fmt.Errorf("keystore/etcd: %s: %w", op, keystore.ErrNotFound)
		}
		return nil
	}
	resp, err := s.cli.Txn(rctx).
		If(clientv3.Compare(clientv3.ModRevision(full), "=", expect)).
		Then(clientv3.OpDelete(full)).
		Else(clientv3.OpGet(full, clientv3.WithCountOnly())).
		Commit()
	if err != nil {
		return s.mapErr(ctx, op, err)
	}
	if resp.Succeeded {
		if resp.Responses[0].GetResponseDeleteRange().GetDeleted() == 0 {
			// expect was 0 and the key absent: ModRevision of a missing key is 0.
			return fmt.Errorf("keystore/etcd: %s: %w", op, keystore.ErrNotFound)
		}
		return nil
	}
	if resp.Responses[0].GetResponseRange().GetCount() == 0 {
		return fmt.Errorf("keystore/etcd: %s: %w", op, keystore.ErrNotFound)
	}
	return fmt.Errorf("keystore/etcd: %s: expected revision %d: %w", op, expect, keystore.ErrConflict)
}

// Watch delivers every change under prefix made after it returns: it reads
// the current revision R, then watches from R+1, so nothing between the call
// and the start of the etcd watch is missed. The watch requires a leader: a
// member cut off from the cluster ends it. The channel is closed when ctx is
// done, the store is closed, the watch is cancelled or compacted past, or
// the consumer lags more than Config.WatchBuffer events.
func (s *Store) Watch(ctx context.Context, prefix string) (<-chan keystore.Event, error) {
	op := fmt.Sprintf("watch %q", prefix)
	if err := s.check(ctx, op); err != nil {
		return nil, err
	}
	full := s.prefix + prefix
	rctx, cancel := s.ctx(ctx)
	resp, err := s.cli.Get(rctx, full, clientv3.WithPrefix(), clientv3.WithKeysOnly(), clientv3.WithLimit(1))
	cancel()
	if err != nil {
		return nil, s.mapErr(ctx, op, err)
	}
	return s.watchFrom(ctx, full, resp.Header.Revision), nil
}

// ListWatch lists prefix in one range read at revision R and watches it
// from R+1; see keystore.Store.
func (s *Store) ListWatch(ctx context.Context, prefix string) ([]keystore.Entry, int64, <-chan keystore.Event, error) {
	op := fmt.Sprintf("list and watch %q", prefix)
	if err := s.check(ctx, op); err != nil {
		return nil, 0, nil, err
	}
	full := s.prefix + prefix
	rctx, cancel := s.ctx(ctx)
	resp, err := s.cli.Get(rctx, full, clientv3.WithPrefix(),
		clientv3.WithSort(clientv3.SortByKey, clientv3.SortAscend))
	cancel()
	if err != nil {
		return nil, 0, nil, s.mapErr(ctx, op, err)
	}
	return s.entries(resp.Kvs), resp.Header.Revision, s.watchFrom(ctx, full, resp.Header.Revision), nil
}

// watchFrom watches the full (prefixed) key prefix from revision rev+1.
func (s *Store) watchFrom(ctx context.Context, full string, rev int64) <-chan keystore.Event {
	wctx, wcancel := context.WithCancel(clientv3.WithRequireLeader(ctx))
	wch := s.cli.Watch(wctx, full, clientv3.WithPrefix(), clientv3.WithRev(rev+1))
	out := make(chan keystore.Event, s.cfg.WatchBuffer)
	s.watches.Add(1)
	go func() {
		defer s.watches.Add(-1)
		defer close(out)
		defer wcancel()
		for wresp := range wch {
			if wresp.Canceled || wresp.Err() != nil {
				return // compacted, no leader, or closed: the consumer re-lists
			}
			for _, ev := range wresp.Events {
				e := keystore.Event{
					Key:      strings.TrimPrefix(string(ev.Kv.Key), s.prefix),
					Revision: ev.Kv.ModRevision,
				}
				switch ev.Type {
				case mvccpb.PUT:
					e.Type, e.Value = keystore.EventPut, nonNil(ev.Kv.Value)
				case mvccpb.DELETE:
					e.Type = keystore.EventDelete
				default:
					continue
				}
				select {
				case out <- e:
				default:
					return // the consumer fell behind: cut it off
				}
			}
		}
	}()
	return out
}

// Ping makes a linearizable read (it needs a quorum), bounded by ctx or
// RequestTimeout. Any failure, refused credentials included, is
// ErrUnavailable: the store cannot be used.
func (s *Store) Ping(ctx context.Context) error {
	err := s.ping(ctx, "ping", s.cfg.RequestTimeout)
	if err != nil && !errors.Is(err, keystore.ErrUnavailable) && !errors.Is(err, context.Canceled) {
		err = fmt.Errorf("%w: %w", keystore.ErrUnavailable, err)
	}
	return err
}

func (s *Store) ping(ctx context.Context, op string, timeout time.Duration) error {
	if err := s.check(ctx, op); err != nil {
		return err
	}
	rctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	if _, err := s.cli.Get(rctx, s.prefix+"health", clientv3.WithCountOnly()); err != nil {
		return s.mapErr(ctx, op, err)
	}
	return nil
}

// Close closes the client, which ends every watch. Later calls return
// keystore.ErrUnavailable; a second Close returns nil.
func (s *Store) Close() error {
	if s.closed.Swap(true) {
		return nil
	}
	if s.fence != nil {
		s.fence.stop()
	}
	if err := s.cli.Close(); err != nil && !errors.Is(err, context.Canceled) {
		return fmt.Errorf("keystore/etcd: close: %w", err)
	}
	return nil
}

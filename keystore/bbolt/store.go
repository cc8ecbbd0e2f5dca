package bbolt

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	bolt "go.etcd.io/bbolt"
	bolterrors "go.etcd.io/bbolt/errors"

	"github.com/hsmgate/hsmgate/internal/groupcommit"
	"github.com/hsmgate/hsmgate/keystore"
)

// Defaults for Options fields left zero.
const (
	DefaultLockTimeout  = 2 * time.Second
	DefaultMaxValueSize = 4 << 20
	DefaultWatchBuffer  = 1024
)

var (
	bucketEntries = []byte("entries")
	bucketMeta    = []byte("meta")
	keyRevision   = []byte("revision")
)

// Options tune Open. The zero value is ready to use.
type Options struct {
	// LockTimeout bounds the wait for the file lock held by another process
	// (default DefaultLockTimeout).
	LockTimeout time.Duration
	// MaxValueSize is the largest value Put accepts (default DefaultMaxValueSize).
	MaxValueSize int
	// WatchBuffer is the number of events a watcher may lag behind before it
	// is cut off (default DefaultWatchBuffer).
	WatchBuffer int
	// NoSync skips fsync after each commit: faster, and loses the last writes
	// on a crash. For tests and benchmarks only.
	NoSync bool

	// tune, if set, edits the bbolt options Open uses (after Open's own):
	// for benchmarks of bbolt's options (export_test.go).
	tune func(*bolt.Options)
}

func (o Options) withDefaults() Options {
	if o.LockTimeout <= 0 {
		o.LockTimeout = DefaultLockTimeout
	}
	if o.MaxValueSize <= 0 {
		o.MaxValueSize = DefaultMaxValueSize
	}
	if o.WatchBuffer <= 0 {
		o.WatchBuffer = DefaultWatchBuffer
	}
	return o
}

// Store is a keystore.Store in one bbolt file.
type Store struct {
	db     *bolt.DB
	opts   Options
	path   string
	closed atomic.Bool

	// group is the group commit: writes that arrive while a commit is in
	// progress queue up and share the next one (see groupUpdate).
	group groupcommit.Queue[*groupCall]

	// mu guards watchers and the publication sequence: committed events
	// wait in pending until every lower revision is published, so watchers
	// see them in revision order whatever order their writers return in.
	mu        sync.Mutex
	published *sync.Cond // on mu: next moved
	next      int64      // revision of the next event to publish
	pending   map[int64]keystore.Event
	watchers  map[*watcher]struct{}
}

var _ keystore.Store = (*Store)(nil)

type watcher struct {
	prefix string
	ch     chan keystore.Event
	done   chan struct{} // closed with ch, ends the goroutine that waits for ctx
	closed bool          // guarded by Store.mu
	after  int64         // the store's revision at registration: older events are not its
}

// Open opens (creating if needed) the store file at path. If another process
// holds the file, it fails after opts.LockTimeout with an error wrapping
// keystore.ErrUnavailable.
func Open(path string, opts Options) (*Store, error) {
	opts = opts.withDefaults()
	// NoFreelistSync and the hashmap freelist: see "bbolt options" in the
	// package doc. Every commit is still fsynced (NoSync is false).
	bo := &bolt.Options{
		Timeout:        opts.LockTimeout,
		NoSync:         opts.NoSync,
		NoFreelistSync: true,
		FreelistType:   bolt.FreelistMapType,
	}
	if opts.tune != nil {
		opts.tune(bo)
	}
	db, err := bolt.Open(path, 0o600, bo)
	if err != nil {
		if errors.Is(err, bolterrors.ErrTimeout) {
			return nil, fmt.Errorf("keystore/bbolt: open %s: file is locked by another process (waited %s): %w",
				path, opts.LockTimeout, keystore.ErrUnavailable)
		}
		return nil, fmt.Errorf("keystore/bbolt: open %s: %w", path, err)
	}
	err = db.Update(func(tx *bolt.Tx) error {
		if _, err := tx.CreateBucketIfNotExists(bucketEntries); err != nil {
			return err
		}
		_, err := tx.CreateBucketIfNotExists(bucketMeta)
		return err
	})
	if err != nil {
		_ = db.Close()
		return nil, fmt.Errorf("keystore/bbolt: init %s: %w", path, err)
	}
	s := &Store{
		db:       db,
		opts:     opts,
		path:     path,
		pending:  make(map[int64]keystore.Event),
		watchers: make(map[*watcher]struct{}),
	}
	s.published = sync.NewCond(&s.mu)
	rev, err := s.Revision(context.Background())
	if err != nil {
		_ = db.Close()
		return nil, err
	}
	s.next = rev + 1
	return s, nil
}

// Backend returns "bbolt".
func (s *Store) Backend() string { return "bbolt" }

// Path returns the file the store was opened on.
func (s *Store) Path() string { return s.path }

func (s *Store) check(ctx context.Context, op string) error {
	if s.closed.Load() {
		return fmt.Errorf("keystore/bbolt: %s: store closed: %w", op, keystore.ErrUnavailable)
	}
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("keystore/bbolt: %s: %w", op, err)
	}
	return nil
}

// wrapErr maps a bbolt error; a closed database is ErrUnavailable.
func wrapErr(op string, err error) error {
	if errors.Is(err, bolterrors.ErrDatabaseNotOpen) {
		return fmt.Errorf("keystore/bbolt: %s: store closed: %w", op, keystore.ErrUnavailable)
	}
	return fmt.Errorf("keystore/bbolt: %s: %w", op, err)
}

// Get returns the entry at key; keystore.ErrNotFound if absent.
func (s *Store) Get(ctx context.Context, key string) (keystore.Entry, error) {
	if err := keystore.CheckKey(key); err != nil {
		return keystore.Entry{}, fmt.Errorf("keystore/bbolt: get: %w", err)
	}
	if err := s.check(ctx, "get"); err != nil {
		return keystore.Entry{}, err
	}
	var e keystore.Entry
	err := s.db.View(func(tx *bolt.Tx) error {
		raw := tx.Bucket(bucketEntries).Get([]byte(key))
		if raw == nil {
			return keystore.ErrNotFound
		}
		var err error
		e, err = decodeEntry(key, raw)
		return err
	})
	if errors.Is(err, keystore.ErrNotFound) {
		return keystore.Entry{}, fmt.Errorf("keystore/bbolt: get %q: %w", key, err)
	}
	if err != nil {
		return keystore.Entry{}, wrapErr(fmt.Sprintf("get %q", key), err)
	}
	return e, nil
}

// List returns the entries whose key starts with prefix, sorted by key.
func (s *Store) List(ctx context.Context, prefix string) ([]keystore.Entry, error) {
	if err := s.check(ctx, "list"); err != nil {
		return nil, err
	}
	var out []keystore.Entry
	err := s.db.View(func(tx *bolt.Tx) error {
		var err error
		out, err = listTx(tx, prefix)
		return err
	})
	if err != nil {
		return nil, wrapErr(fmt.Sprintf("list %q", prefix), err)
	}
	return out, nil
}

// Put writes value at key if the key's revision equals expect; see keystore.Store.
func (s *Store) Put(ctx context.Context, key string, value []byte, expect int64) (int64, error) {
	if err := keystore.CheckKey(key); err != nil {
		return 0, fmt.Errorf("keystore/bbolt: put: %w", err)
	}
	if err := keystore.CheckExpect(expect); err != nil {
		return 0, fmt.Errorf("keystore/bbolt: put %q: %w", key, err)
	}
	if len(value) > s.opts.MaxValueSize {
		return 0, fmt.Errorf("keystore/bbolt: put %q: value of %d bytes, limit %d: %w",
			key, len(value), s.opts.MaxValueSize, keystore.ErrInvalidKey)
	}
	var rev int64
	err := s.write(ctx, "put", func(tx *bolt.Tx) (keystore.Event, error) {
		b := tx.Bucket(bucketEntries)
		cur := b.Get([]byte(key))
		if err := compare(key, cur, expect, false); err != nil {
			return keystore.Event{}, err
		}
		var err error
		if rev, err = nextRevision(tx); err != nil {
			return keystore.Event{}, err
		}
		if err := b.Put([]byte(key), encodeEntry(rev, value)); err != nil {
			return keystore.Event{}, err
		}
		return keystore.Event{Type: keystore.EventPut, Key: key, Value: bytes.Clone(value), Revision: rev}, nil
	})
	if err != nil {
		return 0, err
	}
	return rev, nil
}

// Delete removes key if its revision equals expect; see keystore.Store.
func (s *Store) Delete(ctx context.Context, key string, expect int64) error {
	if err := keystore.CheckKey(key); err != nil {
		return fmt.Errorf("keystore/bbolt: delete: %w", err)
	}
	if err := keystore.CheckExpect(expect); err != nil {
		return fmt.Errorf("keystore/bbolt: delete %q: %w", key, err)
	}
	return s.write(ctx, "delete", func(tx *bolt.Tx) (keystore.Event, error) {
		b := tx.Bucket(bucketEntries)
		cur := b.Get([]byte(key))
		if err := compare(key, cur, expect, true); err != nil {
			return keystore.Event{}, err
		}
		rev, err := nextRevision(tx)
		if err != nil {
			return keystore.Event{}, err
		}
		if err := b.Delete([]byte(key)); err != nil {
			return keystore.Event{}, err
		}
		return keystore.Event{Type: keystore.EventDelete, Key: key, Revision: rev}, nil
	})
}

// compare checks the compare-and-swap condition against the stored raw value
// (nil when absent).
func compare(key string, cur []byte, expect int64, deleting bool) error {
	if cur == nil {
		if deleting {
			return fmt.Errorf("keystore/bbolt: delete %q: %w", key, keystore.ErrNotFound)
		}
		if expect == keystore.AnyRevision || expect == keystore.MustNotExist {
			return nil
		}
		return fmt.Errorf("keystore/bbolt: put %q: expected revision %d, key absent: %w", key, expect, keystore.ErrConflict)
	}
	if expect == keystore.AnyRevision {
		return nil
	}
	rev, _, err := splitEntry(cur)
	if err != nil {
		return err
	}
	if rev != expect {
		op := "put"
		if deleting {
			op = "delete"
		}
		return fmt.Errorf("keystore/bbolt: %s %q: expected revision %d, have %d: %w", op, key, expect, rev, keystore.ErrConflict)
	}
	return nil
}

// write runs fn in a bbolt transaction shared with concurrent writes (group
// commit, see groupUpdate) and publishes the event fn returned once it is
// committed and every lower revision is published.
//
// fn may run several times (see groupUpdate): it recomputes everything from
// tx, and its compare-and-swap failure is its own error, so that only its
// caller fails. Revisions are taken inside the transaction, so those of a
// commit follow on from the previous commit with no gap, and each committed
// event is published exactly once.
func (s *Store) write(ctx context.Context, op string, fn func(tx *bolt.Tx) (keystore.Event, error)) error {
	if err := s.check(ctx, op); err != nil {
		return err
	}
	var ev keystore.Event
	err := s.groupUpdate(func(tx *bolt.Tx) error {
		var err error
		ev, err = fn(tx)
		return err
	})
	if err != nil {
		if errors.Is(err, keystore.ErrConflict) || errors.Is(err, keystore.ErrNotFound) {
			return err
		}
		return wrapErr(op, err)
	}
	s.publishInOrder(ev)
	return nil
}

// groupCall is one write waiting for a group commit.
type groupCall struct {
	fn  func(*bolt.Tx) error
	err error // its result, set by commitGroup
}

// groupUpdate runs fn in an Update transaction shared with the writes that
// queued while the previous commit was in progress: one fsync for all of
// them. A write that finds no commit in progress commits at once (no delay,
// unlike bbolt's timer-driven DB.Batch, which the same semantics follow).
// The first queued write leads the next commit, so no caller commits for
// others for longer than its own commit.
//
// As in DB.Batch, the functions of a group run one after another in one
// transaction; when one fails, the transaction is rolled back, that one runs
// again alone (and gets its own result) and the rest run again together. So
// fn must be idempotent, and its error is its caller's alone.
func (s *Store) groupUpdate(fn func(*bolt.Tx) error) error {
	c := &groupCall{fn: fn}
	s.group.Do(c, s.commitGroup)
	return c.err
}

// commitGroup commits calls in as few transactions as their failures allow
// and hands each its result.
func (s *Store) commitGroup(calls []*groupCall) {
	for len(calls) > 0 {
		failed := -1
		err := s.db.Update(func(tx *bolt.Tx) error {
			for i, c := range calls {
				if err := c.fn(tx); err != nil {
					failed = i
					return err
				}
			}
			return nil
		})
		if failed < 0 {
			for _, c := range calls {
				c.err = err
			}
			return
		}
		c := calls[failed]
		calls = slices.Delete(calls, failed, failed+1)
		c.err = s.db.Update(c.fn)
	}
}

// publishInOrder queues the committed ev, publishes every queued event
// whose turn has come, and returns once ev itself is published: a change
// whose write has returned is never delivered to a later watcher.
func (s *Store) publishInOrder(ev keystore.Event) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.pending[ev.Revision] = ev
	for {
		e, ok := s.pending[s.next]
		if !ok {
			break
		}
		delete(s.pending, s.next)
		s.publishLocked(e)
		s.next++
		s.published.Broadcast()
	}
	for s.next <= ev.Revision {
		s.published.Wait() // a lower revision committed and is on its way
	}
}

func nextRevision(tx *bolt.Tx) (int64, error) {
	m := tx.Bucket(bucketMeta)
	var rev uint64
	if raw := m.Get(keyRevision); raw != nil {
		if len(raw) != 8 {
			return 0, fmt.Errorf("corrupt revision counter (%d bytes)", len(raw))
		}
		rev = binary.BigEndian.Uint64(raw)
	}
	rev++
	var buf [8]byte
	binary.BigEndian.PutUint64(buf[:], rev)
	if err := m.Put(keyRevision, buf[:]); err != nil {
		return 0, err
	}
	return int64(rev), nil
}

// Revision returns the store-wide revision: that of the last Put or Delete.
func (s *Store) Revision(ctx context.Context) (int64, error) {
	if err := s.check(ctx, "revision"); err != nil {
		return 0, err
	}
	var rev int64
	err := s.db.View(func(tx *bolt.Tx) error {
		if raw := tx.Bucket(bucketMeta).Get(keyRevision); len(raw) == 8 {
			rev = int64(binary.BigEndian.Uint64(raw))
		}
		return nil
	})
	if err != nil {
		return 0, wrapErr("revision", err)
	}
	return rev, nil
}

func encodeEntry(rev int64, value []byte) []byte {
	buf := make([]byte, 0, binary.MaxVarintLen64+len(value))
	buf = binary.AppendUvarint(buf, uint64(rev))
	return append(buf, value...)
}

func splitEntry(raw []byte) (int64, []byte, error) {
	rev, n := binary.Uvarint(raw)
	if n <= 0 || rev == 0 {
		return 0, nil, errors.New("corrupt entry")
	}
	return int64(rev), raw[n:], nil
}

// decodeEntry copies raw (which bbolt owns only for the transaction) into an Entry.
func decodeEntry(key string, raw []byte) (keystore.Entry, error) {
	rev, val, err := splitEntry(raw)
	if err != nil {
		return keystore.Entry{}, fmt.Errorf("key %q: %w", key, err)
	}
	return keystore.Entry{Key: key, Value: bytes.Clone(val), Revision: rev}, nil
}

// Watch delivers every change under prefix made after it returns; see
// the package doc for ordering and the cut-off of slow consumers.
func (s *Store) Watch(ctx context.Context, prefix string) (<-chan keystore.Event, error) {
	_, _, ch, err := s.listWatch(ctx, "watch", prefix, false)
	return ch, err
}

// ListWatch lists prefix and registers a watcher for every later change,
// with the store's publication lock held so that no change falls between
// them; see keystore.Store.
func (s *Store) ListWatch(ctx context.Context, prefix string) ([]keystore.Entry, int64, <-chan keystore.Event, error) {
	return s.listWatch(ctx, "list and watch", prefix, true)
}

func (s *Store) listWatch(ctx context.Context, op, prefix string, list bool) ([]keystore.Entry, int64, <-chan keystore.Event, error) {
	if err := s.check(ctx, op); err != nil {
		return nil, 0, nil, err
	}
	w := &watcher{prefix: prefix, ch: make(chan keystore.Event, s.opts.WatchBuffer), done: make(chan struct{})}
	s.mu.Lock()
	if s.closed.Load() {
		s.mu.Unlock()
		return nil, 0, nil, fmt.Errorf("keystore/bbolt: %s: store closed: %w", op, keystore.ErrUnavailable)
	}
	// Events up to the committed revision that are not published yet are
	// still pending: they predate this call and are skipped. Later ones
	// cannot be published before s.mu is released. The revision and the
	// entries come from one read transaction, so they agree.
	var (
		rev int64
		out []keystore.Entry
	)
	err := s.db.View(func(tx *bolt.Tx) error {
		if raw := tx.Bucket(bucketMeta).Get(keyRevision); len(raw) == 8 {
			rev = int64(binary.BigEndian.Uint64(raw))
		}
		if !list {
			return nil
		}
		var err error
		out, err = listTx(tx, prefix)
		return err
	})
	if err != nil {
		s.mu.Unlock()
		return nil, 0, nil, wrapErr(fmt.Sprintf("%s %q", op, prefix), err)
	}
	w.after = rev
	s.watchers[w] = struct{}{}
	s.mu.Unlock()
	go func() {
		select {
		case <-ctx.Done():
			s.mu.Lock()
			s.dropLocked(w)
			s.mu.Unlock()
		case <-w.done: // cut off, or the store closed
		}
	}()
	return out, rev, w.ch, nil
}

// listTx reads the entries under prefix in tx, sorted by key.
func listTx(tx *bolt.Tx, prefix string) ([]keystore.Entry, error) {
	var out []keystore.Entry
	p := []byte(prefix)
	c := tx.Bucket(bucketEntries).Cursor()
	for k, v := c.Seek(p); k != nil && bytes.HasPrefix(k, p); k, v = c.Next() {
		e, err := decodeEntry(string(k), v)
		if err != nil {
			return nil, err
		}
		out = append(out, e)
	}
	return out, nil
}

func (s *Store) dropLocked(w *watcher) {
	if !w.closed {
		w.closed = true
		close(w.ch)
		close(w.done)
		delete(s.watchers, w)
	}
}

// publishLocked hands ev to every matching watcher without blocking; a
// watcher whose buffer is full is cut off. s.mu is held.
func (s *Store) publishLocked(ev keystore.Event) {
	for w := range s.watchers {
		if ev.Revision <= w.after || !strings.HasPrefix(ev.Key, w.prefix) {
			continue
		}
		e := ev
		if e.Value != nil {
			e.Value = bytes.Clone(e.Value) // each consumer owns its bytes
		}
		select {
		case w.ch <- e:
		default:
			s.dropLocked(w)
		}
	}
}

// Ping reports whether the store is open and its file readable.
func (s *Store) Ping(ctx context.Context) error {
	if err := s.check(ctx, "ping"); err != nil {
		return err
	}
	err := s.db.View(func(tx *bolt.Tx) error {
		if tx.Bucket(bucketEntries) == nil {
			return errors.New("entries bucket missing")
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("keystore/bbolt: ping: %w: %v", keystore.ErrUnavailable, err)
	}
	return nil
}

// Close closes every watcher and the file. Later calls return
// keystore.ErrUnavailable; a second Close returns nil.
func (s *Store) Close() error {
	if s.closed.Swap(true) {
		return nil
	}
	s.mu.Lock()
	for w := range s.watchers {
		s.dropLocked(w)
	}
	s.mu.Unlock()
	if err := s.db.Close(); err != nil {
		return fmt.Errorf("keystore/bbolt: close: %w", err)
	}
	return nil
}

// Package keystore is hsmgate's persistent state: a small key/value interface
// with compare-and-swap and prefix watches, implemented by keystore/bbolt (the
// embedded default) and keystore/etcd (the cluster backend). One conformance
// suite, keystore/storetest, runs against both.
// How it fits with the rest (the store schema: every key prefix and who writes it): docs/architecture.md.
//
// Values are opaque bytes (callers store marshalled protobuf messages). Secret
// material inside a value is always wrapped by the caller before it gets here.
//
// Cache (cache.go) is the one watch-fed cache of decoded entries that
// transit, sshca and auth use: it rebuilds from ListWatch after a watch gap
// before it trusts what it holds, and serves degraded, for a bounded grace
// period, while the store is out of reach.
//
// Revisions: every successful Put or Delete is given a revision from one
// store-wide counter that only grows (etcd's mod revision; a counter in the
// bbolt file). An entry's Revision is the revision of its last Put.
package keystore

import (
	"context"
	"fmt"

	"github.com/hsmgate/hsmgate/internal/errs"
)

// MaxKeySize is the longest key, in bytes, that every implementation accepts.
const MaxKeySize = 1024

// CheckKey returns ErrInvalidKey (wrapped) if key is empty or longer than
// MaxKeySize. Implementations call it first in Get, Put and Delete.
func CheckKey(key string) error {
	switch {
	case key == "":
		return fmt.Errorf("%w: empty key", ErrInvalidKey)
	case len(key) > MaxKeySize:
		return fmt.Errorf("%w: key of %d bytes, limit %d", ErrInvalidKey, len(key), MaxKeySize)
	}
	return nil
}

// CheckExpect returns ErrInvalidKey (wrapped) unless expect is AnyRevision,
// MustNotExist or a revision > 0.
func CheckExpect(expect int64) error {
	if expect < AnyRevision {
		return fmt.Errorf("%w: expected revision %d", ErrInvalidKey, expect)
	}
	return nil
}

// Sentinel errors. Every implementation returns exactly these (wrapped with %w
// is fine) so that callers and the server can match them with errors.Is.
var (
	// ErrNotFound: the key does not exist.
	ErrNotFound = errs.New(errs.NotFound, "keystore: not found")
	// ErrConflict: a compare-and-swap lost: the key's revision was not the one expected.
	ErrConflict = errs.New(errs.Aborted, "keystore: revision conflict")
	// ErrUnavailable: the backend cannot be reached or has been closed.
	ErrUnavailable = errs.New(errs.Unavailable, "keystore: unavailable")
	// ErrInvalidKey: empty key, or a key/value over the backend's limits, or an
	// expected revision below AnyRevision.
	ErrInvalidKey = errs.New(errs.InvalidArgument, "keystore: invalid key or value")
)

// Expected-revision values for Put and Delete, besides a revision > 0 that must match.
const (
	// MustNotExist makes Put succeed only when the key does not exist yet.
	MustNotExist int64 = 0
	// AnyRevision makes Put/Delete unconditional.
	AnyRevision int64 = -1
)

// Entry is one stored value.
type Entry struct {
	Key      string
	Value    []byte
	Revision int64 // revision of the Put that wrote this value
}

// EventType says what happened to a key.
type EventType int

const (
	EventPut EventType = iota + 1
	EventDelete
)

func (t EventType) String() string {
	switch t {
	case EventPut:
		return "put"
	case EventDelete:
		return "delete"
	}
	return "unknown"
}

// Event is one change seen by Watch. For EventDelete, Value is nil and
// Revision is the revision of the delete.
type Event struct {
	Type     EventType
	Key      string
	Value    []byte
	Revision int64
}

// Store is the key store. All methods are safe for concurrent use.
type Store interface {
	// Get returns the entry at key, or ErrNotFound.
	Get(ctx context.Context, key string) (Entry, error)
	// List returns every entry whose key starts with prefix, sorted by key
	// (byte order), read from one consistent snapshot. An empty prefix lists
	// everything.
	List(ctx context.Context, prefix string) ([]Entry, error)
	// Put writes value at key if the key's current revision equals expect
	// (MustNotExist: the key must be absent; AnyRevision: unconditional) and
	// returns the new revision; otherwise it returns ErrConflict and changes nothing.
	Put(ctx context.Context, key string, value []byte, expect int64) (int64, error)
	// Delete removes key if its revision equals expect (AnyRevision: any).
	// It returns ErrNotFound if the key is absent, ErrConflict on a lost race.
	Delete(ctx context.Context, key string, expect int64) error
	// Watch delivers, in revision order, every change under prefix made after
	// the call returns, each exactly once. The channel is closed when ctx is
	// done, the store is closed, or the backend ends the watch (etcd:
	// compaction, lost leader); a consumer that falls too far behind is cut
	// off by closing its channel. After a close the consumer must List and
	// Watch again.
	Watch(ctx context.Context, prefix string) (<-chan Event, error)
	// ListWatch is List and Watch in one step, with nothing between them:
	// it returns the entries under prefix read at one store revision rev,
	// rev itself, and a channel that delivers, as Watch does, every change
	// under prefix with a revision above rev. A watch-fed cache rebuilds
	// from it after a gap (see Cache).
	ListWatch(ctx context.Context, prefix string) (entries []Entry, rev int64, ch <-chan Event, err error)
	// Ping checks that the backend answers; ErrUnavailable if not.
	Ping(ctx context.Context) error
	// Backend names the implementation: "bbolt" or "etcd".
	Backend() string
	// Close releases the store and closes every Watch channel; later calls
	// return ErrUnavailable. A second Close returns nil.
	Close() error
}

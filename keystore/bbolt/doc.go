// Package bbolt is the embedded keystore.Store: one bbolt (go.etcd.io/bbolt)
// file in the data directory, for a single hsmgate process. It is the default
// backend and the one `hsmgate dev` uses.
//
// # Layout
//
// The file has two buckets:
//
//   - "entries": key → uvarint(revision) | value bytes;
//   - "meta": "revision" → the store-wide revision counter, 8 bytes big-endian.
//
// Every Put and Delete runs in a bbolt Update transaction that reads the
// key's current revision, checks the caller's expected revision (the
// compare-and-swap), increments the counter and writes; so a lost race is
// ErrConflict and nothing changes. Revisions start at 1 and only grow, also
// across deletes and restarts. Like etcd, a deleted key keeps no tombstone: a
// later Put with MustNotExist succeeds.
//
// Concurrent writes share commits (group commit: one fsync for many). A
// write that finds no commit in progress commits at once; those that arrive
// meanwhile queue and share the next commit, as bbolt's DB.Batch does but
// with no timer. Each write's function is idempotent and its
// compare-and-swap failure is its own error: when one fails, the shared
// transaction is rolled back, the failed write runs again alone and the
// others together, so only that caller sees ErrConflict.
//
// # Watches
//
// Watch is an in-process fan-out: after a write commits, its event is
// published to every watcher whose prefix matches, in revision order with no
// gaps: a committed event waits until every lower revision is published, and
// Put and Delete return only once their own event is. A watcher sees exactly
// the changes whose revision is above the store's revision when Watch
// returns. Each watcher has a bounded buffer (Options.WatchBuffer); a watcher whose
// buffer is full when an event arrives is cut off (its channel is closed) so
// that a stuck consumer can never block writers or grow memory; it must List
// and Watch again. Changes made by another process cannot be seen: the file
// lock keeps other processes out while the store is open.
//
// # Limits and failures
//
// Keys are 1..keystore.MaxKeySize bytes, values at most Options.MaxValueSize
// (default 4 MiB); beyond that ErrInvalidKey. Open waits at most
// Options.LockTimeout for the file lock and then fails with an error that
// says another process holds the file (wrapping ErrUnavailable). After Close
// every method returns ErrUnavailable. bbolt has no cancellation, so ctx is
// checked before each operation.
package bbolt

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
// Every Put and Delete runs in one bbolt Update transaction that reads the
// key's current revision, checks the caller's expected revision (the
// compare-and-swap), increments the counter and writes; so a lost race is
// ErrConflict and nothing changes. Revisions start at 1 and only grow, also
// across deletes and restarts. Like etcd, a deleted key keeps no tombstone: a
// later Put with MustNotExist succeeds.
//
// # Watches
//
// Watch is an in-process fan-out: after a write commits, its event is
// published to every watcher whose prefix matches, under the same lock that
// serialises writers, so each watcher sees events in revision order with no
// gaps. Watch itself takes that lock too, so a watcher sees exactly the
// changes whose revision is above the store's revision when Watch returns.
// Each watcher has a bounded buffer (Options.WatchBuffer); a watcher whose
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
// checked before each operation and while waiting for the writer lock.
package bbolt

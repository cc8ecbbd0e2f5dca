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
// # bbolt options
//
// Open runs bbolt with NoFreelistSync and the hashmap freelist
// (FreelistMapType). Every commit is still fsynced as before (fdatasync of
// the data pages, then of the meta page; NoSync and NoGrowSync stay false,
// TestBoltOptions), so a write whose Put returned survives a crash
// (TestCrashKeepsCommittedWrites kills a writing process and finds every
// acknowledged record).
//
// bbolt's freelist is derived data: the pages no tree reaches. By default
// bbolt writes the whole list with every commit. In a store that only grows
// it is one page; after deletes (a PKI Tidy of expired certificates frees
// pages by the thousand) it is hundreds of KiB, written and fsynced with
// every commit, whatever the write. With NoFreelistSync the meta page says
// "no freelist" and Open rebuilds the list by walking the tree. Measured
// with BenchmarkCertRecords (a store of 100k records of 1.5 KB under
// "pki/certs/<32 random hex>", new records at random keys, fsync; "tidied":
// half of them then deleted at random; 1 writer, one commit per record, or
// 8 sharing commits; CPU of the process per record, user and system, and
// bytes written per record; medians of 3 runs on a shared 2-core VM, so the
// CPU figures are indicative):
//
//	                        full, 1 writer   full, 8       tidied, 1         tidied, 8
//	default (array, synced) 265 µs, 33 KiB   133 µs, 20    761 µs, 240 KiB   291 µs, 64 KiB
//	map                     258 µs, 33 KiB   137 µs, 20   1360 µs, 239 KiB   371 µs, 64 KiB
//	NoFreelistSync          210 µs, 29 KiB   121 µs, 19    435 µs, 29 KiB    177 µs, 18 KiB
//	map + NoFreelistSync    239 µs, 29 KiB   117 µs, 19    263 µs, 29 KiB    162 µs, 18 KiB
//	InitialMmapSize 1 GiB   244 µs, 33 KiB   144 µs, 20    664 µs, 239 KiB   201 µs, 64 KiB
//
// A second run of the two NoFreelistSync rows: full 186/113 µs against
// 200/134 µs with the map, tidied 330/180 µs against 226/126 µs. So
// NoFreelistSync takes one page write off every commit of a growing store
// (about 10-20% of its CPU) and bounds a commit's writes by its data after
// deletes (40% less CPU, 3-8x fewer bytes); the hashmap freelist, which
// hands out runs of pages without scanning the list, takes another 8-40%
// off after deletes, and makes no difference beyond the noise on a growing
// store (its freelist has a few pages). Alone the hashmap freelist costs
// more (it sorts the whole list to write it at every commit), hence the
// pair. The existing benchmarks (BenchmarkStore, BenchmarkPutParallel, on a
// store of 1000 small keys) moved within their noise: fsync Put 377 -> 323
// µs, PutParallel at 8xGOMAXPROCS 65 -> 51 µs, Get 1.08 -> 1.12 µs.
//
// The price is at Open: the walk reads every page of the tree, every time
// the store opens (not only after a crash). BenchmarkCertRecordsOpen: 255-264
// ms for a 300 MiB store, against 1-2 ms reading the freelist page; 135 ms
// for the tidied 250 MiB one; that is about 1 ms per MiB from the page
// cache, the file's read time from a cold disk, and the file's pages are
// then resident (file-backed RSS, which the kernel can drop). For a single
// server process that is an acceptable start-up cost; etcd's backend opens
// bbolt with NoFreelistSync too. A store whose tree is damaged stops the
// process in Open with bbolt's message naming the page (TestOpenDamagedFile;
// bbolt panics, for some damage in a goroutine of its own, so Open cannot
// make it an error); with a synced freelist the same damage panics at the
// first read of that page. The file format is bbolt's either way: a file
// with a synced freelist (from an older hsmgate) opens normally, and an
// older hsmgate opening a file of this one rebuilds and writes the freelist
// itself (TestFreelistFormats).
//
// Not adopted: InitialMmapSize. bbolt maps the file in sizes doubling up to
// 1 GiB, then in 1 GiB steps, and remaps (waiting for read transactions and
// holding new ones) only when the file outgrows its map: a few times in a
// store's life; the benchmark shows no gain beyond its noise. Nor does any
// option change the growth of the file: 2.3 KiB per 1.5 KB record
// (used-KiB/op) with each of them, the records themselves in leaves about
// two-thirds full under random keys, plus overflow pages. The soak's RSS
// growth is that file, mapped: page cache, counted as file-backed RSS
// (bench/README.md).
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

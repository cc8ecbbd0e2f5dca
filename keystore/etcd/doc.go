// Package etcd is the cluster keystore.Store, on etcd v3 (go.etcd.io/etcd/client/v3):
// several hsmgate replicas share one etcd cluster and agree through it.
//
// # Mapping
//
//   - Every key is stored as Config.Prefix + key, so several deployments can
//     share one etcd; callers never see the prefix.
//   - An entry's Revision is etcd's ModRevision of the key, and the
//     revision a Put returns is the cluster revision of that write: one
//     store-wide counter that only grows, as keystore requires.
//   - Put is one transaction: If(ModRevision(key) == expect), or
//     If(CreateRevision(key) == 0) for MustNotExist, Then(Put); a failed
//     comparison is ErrConflict and writes nothing. AnyRevision is a plain Put.
//   - Delete with a revision is If(ModRevision == expect) Then(Delete)
//     Else(Get count), so an absent key is ErrNotFound and a lost race
//     ErrConflict.
//   - List is one range read (one revision), sorted by key.
//   - Every read is linearizable (etcd's default): a replica never reads a
//     value older than a write another replica has seen acknowledged.
//
// # Watches
//
// Watch first reads the current revision R, then starts an etcd watch with
// WithPrefix and WithRev(R+1): every change after Watch returns is delivered,
// even one made before etcd registered the watch. The etcd client resumes a
// watch on another member, from the last revision it delivered, when the
// member it used goes away, so events are neither lost nor repeated. The
// watch is made WithRequireLeader: on a member cut off from the leader it
// ends rather than silently going stale. The channel is closed when ctx is
// done, the store is closed, etcd cancels the watch (compaction past the
// next revision, no leader), or the consumer lags more than
// Config.WatchBuffer events; in each case the consumer lists again and
// watches again.
//
// # Errors
//
// Every call is bounded by Config.RequestTimeout (default 2 s), or by the
// caller's deadline when that is sooner: a frozen member or a cluster without
// quorum costs a call no more than that, whatever deadline the caller gave.
// Each member is also probed on a connection of its own every
// Config.ProbeInterval (default half the timeout); one that does not answer
// within RequestTimeout gets no calls until it does (fence.go), so calls move
// to the healthy members within about one timeout, not after the keepalive
// (10 s + 3 s) drops the connection; the client also re-reads the member list
// (AutoSyncInterval) and refuses members of an older cluster version.
// A deadline, an unreachable member or cluster, a lost leader, a NOSPACE
// alarm, or a closed store give keystore.ErrUnavailable; the caller's own cancellation
// gives context.Canceled. etcd's error text is kept, but never its gRPC
// status (it is formatted with %v), so the server's one mapping of domain
// errors to codes decides what a client sees. Keys are 1..keystore.MaxKeySize
// bytes and values at most Config.MaxValueSize (default 1 MiB, under etcd's
// default 1.5 MiB request limit); beyond that keystore.ErrInvalidKey.
//
// Credentials that etcd refuses are an error of no keystore kind (a
// misconfiguration: the server answers Internal), except that a refused TLS
// handshake cannot be told from an unreachable member: the client retries
// until the deadline, so it is ErrUnavailable.
//
// Tests run the keystore/storetest suite against real etcd servers started in
// process by keystore/etcd/etcdtest: one member; three members, of which the
// one the store and its watch are connected to is stopped while concurrent
// compare-and-swap writers and the watch run, then the suite again on the
// two left; a user confined by etcd RBAC to its prefix; and mutual TLS.
package etcd

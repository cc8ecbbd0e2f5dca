// Package leader runs hsmgate's background jobs (periodic key rotation, CRL
// refresh before nextUpdate, token, secret-ID and ACME tidy) on one replica
// at a time, and tells the engines how many replicas are alive.
//
// An Elector decides who leads; a Runner runs the registered jobs while its
// replica leads and stops them (their ctx is cancelled) as soon as the lead
// is lost. Two Electors:
//
//   - Etcd (NewEtcd): go.etcd.io/etcd/client/v3/concurrency. Each replica
//     holds one session (an etcd lease of Config TTL, default 10 s, kept
//     alive by the client) under which it registers itself
//     (<prefix>replicas/<id>) and campaigns (<prefix>election/). A replica
//     that dies, or cannot reach a quorum for the TTL, loses its lease: its
//     registration and its candidacy disappear with it and the next
//     candidate leads, within the TTL. A replica that closes revokes its
//     lease: the next one leads at once.
//   - StoreLease (NewStoreLease): a lease record written by compare-and-swap
//     in any keystore.Store, renewed every TTL/3 and taken over once
//     expired. It serves the bbolt store, whose single node is one process:
//     bbolt's file lock already keeps a second process off the same file,
//     so within a deployment on bbolt this replica always leads; the lease
//     still goes through the same interface and still excludes a second
//     runner on the same store inside one process. Expiry is judged by the
//     local clock, which every party shares on one machine.
//
// # What a leader change may cost
//
// Leadership is a lease. A leader that is cut off ends its term (cancels its
// jobs) at the time its lease is sure to be alive until by its own clock:
// the send time of its last answered renewal plus the TTL, less a tenth;
// the server expires the lease no earlier, and only then can another
// replica lead. Clocks that drift, or a job that ignores its ctx for long,
// could still overlap two leaders for a moment, so jobs never rely on
// exclusion for correctness, only for not doing the work N times: every
// job is idempotent and safe to re-run from the start after a kill mid-way:
//
//   - rotation writes a new version by compare-and-swap on the key record,
//     checking that the latest version is still the due one: two leaders
//     rotate a key once (transit.Engine.RotateDue);
//   - CRL refresh rebuilds a CRL that is past half its validity, by
//     compare-and-swap on the CRL record and its number; a half-done pass is
//     re-run whole (pki.Service.Maintain);
//   - tidy deletes expired records at the revision it read (auth.Tokens.Tidy,
//     acme.Server.Sweep).
//
// # Replica identity
//
// Every replica has an ID (config replica.id or replica.id_env; default
// hostname-pid). The server's logger carries it on every line
// (replica=<id>, added by runServer), and the Runner writes one audit line per
// job run and per change of leadership naming it (identity kind "replica").
// Prometheus: hsmgate_leader{replica} is 1 on the leader and 0 elsewhere;
// hsmgate_leader_live_replicas; hsmgate_leader_job_runs_total{job,result}.
package leader

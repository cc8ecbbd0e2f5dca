package main

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	hsmgatev1 "github.com/hsmgate/hsmgate/proto/hsmgate/v1"
)

// TestReplicasUnderEtcdFaults is the multi-replica end-to-end test: three
// `hsmgate server` processes (each from its own config file) on a
// three-member in-process etcd cluster, sharing one SoftHSM token, under a mixed load of encrypt, rotate,
// create, issue and revoke from several goroutines; then, one after
// another:
//
//   - rotation visibility, before the load: how long until a rotation
//     acknowledged by one replica is used by the next one's Encrypt (p99
//     logged);
//   - the etcd leader killed (closed): the longest gap between acknowledged
//     writes is logged;
//   - one of the two remaining members frozen (its connections held open,
//     nothing forwarded, as under SIGSTOP) until writes flow again: the
//     longest call and the time until writes flowed are logged, and no
//     call may run to the caller's deadline (far above the store timeout);
//   - every acknowledged write read back through every replica: none lost;
//   - the leader of the background jobs killed (SIGKILL): another replica
//     takes the lead and runs every job the dead one ran (the time to the
//     new leader and to the jobs' first runs are logged);
//   - quorum lost: writes answer Unavailable (not DeadlineExceeded) before
//     the caller's deadline; the time to that answer is logged;
//   - every line each replica logged names it (replica=<id>).
//
// Durations are reported with t.Logf, never asserted: the assertions are
// structural (no acknowledged write lost, no call ran to the caller's
// deadline, quorum loss answers Unavailable).
func TestReplicasUnderEtcdFaults(t *testing.T) {
	if testing.Short() {
		t.Skip("multi-replica end-to-end test: not with -short")
	}
	began := time.Now()
	rs := startReplicas(t, replicaOpts{requestTimeout: 2 * time.Second})
	setupLoad(t, rs)
	started := time.Since(began)
	// Rotation visibility, on the healthy cluster before the load.
	vis := rotationVisibility(t, rs, 40)

	l := newLedger()
	ld := startLoad(rs, l, 4)
	stopped := false
	stopLoad := func() {
		if !stopped {
			stopped = true
			ld.Stop()
		}
	}
	t.Cleanup(stopLoad)

	// A member killed: the etcd leader, so that the cluster also elects.
	killFrom := time.Now()
	time.Sleep(time.Second) // load before the fault: the window's baseline
	lead := rs.Etcd.Leader()
	if lead < 0 {
		lead = 0 // between terms: any member will do
	}
	rs.Etcd.Stop(lead)
	time.Sleep(3 * time.Second) // load after the fault
	killTo := time.Now()
	killed := l.window(killFrom, killTo)
	t.Logf("etcd leader m%d killed: %s; longest write gap %s", lead, killed, killed.writeGap.Round(time.Millisecond))

	// One of the two remaining members frozen: the cluster keeps its
	// quorum (the member runs on), but the replicas' connections to it
	// hang.
	frozen := (lead + 1) % len(rs.Etcd.Members)
	freezeFrom := time.Now()
	rs.Proxies[frozen].Freeze()
	// The member stays frozen until writes flow again (10 acknowledged:
	// calls that reach the healthy member succeed, and once the etcd
	// client's keepalive drops the hung connection all do), or for at most
	// frozenFor.
	const frozenFor, flowing = 25 * time.Second, 10
	resumed := l.writesAfter(flowing, freezeFrom.Add(rs.RequestTimeout), freezeFrom.Add(frozenFor))
	rs.Proxies[frozen].Thaw()
	freezeTo := time.Now()
	fr := l.window(freezeFrom, freezeTo)
	t.Logf("etcd member m%d frozen: %s; longest write gap %s", frozen, fr, fr.writeGap.Round(time.Millisecond))

	stopLoad()
	l.mu.Lock()
	deadlineHits, total := l.deadline, len(l.calls)
	nCreated, nRotated, nIssued, nRevoked, nSealed := len(l.created), l.rotated[loadRotKey], len(l.issued), len(l.revoked), len(l.sealed)
	l.mu.Unlock()
	if deadlineHits != 0 {
		t.Errorf("%d of %d calls ran to the caller's deadline (%s); want 0: the store's timeout (%s) must bound them", deadlineHits, total, callerDeadline, rs.RequestTimeout)
	}
	if fr.longest >= callerDeadline {
		t.Errorf("with m%d frozen, a call took %s: want less than the caller's deadline %s", frozen, fr.longest, callerDeadline)
	}
	if nCreated == 0 || nIssued == 0 || nRevoked == 0 || nRotated == 0 || nSealed == 0 {
		t.Errorf("the load acknowledged creates=%d issues=%d revokes=%d rotations up to v%d encrypts=%d; want some of each", nCreated, nIssued, nRevoked, nRotated, nSealed)
	}

	// No acknowledged write lost: every one is read back through every
	// replica (and ciphertexts decrypt on the replicas that did not make them).
	checked := checkNoWriteLost(t, rs, l)

	// The leader of the background jobs killed (SIGKILL, its lease left to
	// expire): another replica leads within the election TTL and runs every
	// job the dead one ran. The dead replica stays down.
	lk := killJobLeader(t, rs)
	t.Logf("job leader %s killed: %s leads after %s, its jobs %v resumed after %s", lk.killed, lk.next, msRound(lk.handover), lk.jobs, msRound(lk.resumed))

	// Quorum lost: stop the member that was neither killed nor frozen.
	rs.Etcd.Stop((lead + 2) % len(rs.Etcd.Members))
	// Every replica tries two writes at once; each must answer Unavailable
	// before the caller's deadline.
	type answer struct {
		what string
		err  error
		took time.Duration
	}
	answers := make(chan answer, 2*len(rs.Replicas))
	var wg sync.WaitGroup
	for i, r := range rs.Replicas {
		if r.stopped {
			continue // the killed job leader
		}
		wg.Go(func() {
			start := time.Now()
			err := l.call("noquorum", func(ctx context.Context) error {
				_, err := r.Transit.CreateKey(ctx, &hsmgatev1.CreateKeyRequest{Name: fmt.Sprintf("noquorum-%d", i), Type: hsmgatev1.TransitKeyType_TRANSIT_KEY_TYPE_AES256_GCM})
				return err
			})
			answers <- answer{"CreateKey on " + r.Name, err, time.Since(start)}
		})
		wg.Go(func() {
			start := time.Now()
			err := l.call("noquorum", func(ctx context.Context) error {
				_, err := r.Transit.RotateKey(ctx, &hsmgatev1.RotateKeyRequest{Name: loadRotKey})
				return err
			})
			answers <- answer{"RotateKey on " + r.Name, err, time.Since(start)}
		})
	}
	wg.Wait()
	close(answers)
	var toUnavailable []time.Duration
	for a := range answers {
		toUnavailable = append(toUnavailable, a.took)
		if got := status.Code(a.err); got != codes.Unavailable || a.took >= callerDeadline {
			t.Errorf("%s without quorum: got %v after %s, want Unavailable before the caller's deadline %s", a.what, a.err, msRound(a.took), callerDeadline)
		}
	}

	checkLogsNameReplica(t, rs)

	var b strings.Builder
	fmt.Fprintf(&b, "replicas: 3 servers, 3 etcd members, store.etcd.request_timeout %s, caller deadline %s, 4 load goroutines\n", rs.RequestTimeout, callerDeadline)
	row := func(k, v string) { fmt.Fprintf(&b, "  %-48s %s\n", k, v) }
	row("rotation visibility A->B (n, p50 / p99 / max)", fmt.Sprintf("%d, %s / %s / %s", len(vis), msRound(percentile(vis, 50)), msRound(percentile(vis, 99)), msRound(percentile(vis, 100))))
	row("etcd leader killed: longest write gap", msRound(killed.writeGap))
	row("etcd leader killed: calls", killed.String())
	row("member frozen: longest call", msRound(fr.longest))
	row("member frozen: longest write gap", msRound(fr.writeGap))
	if resumed.IsZero() {
		row("member frozen: writes flowing while frozen", fmt.Sprintf("no: fewer than %d acknowledged in %s", flowing, frozenFor))
	} else {
		row("member frozen: writes flowing while frozen", fmt.Sprintf("%d acknowledged after %s", flowing, msRound(resumed.Sub(freezeFrom))))
	}
	row("member frozen: calls", fr.String())
	row("job leader killed: next leader after (election_ttl "+rs.ElectionTTL.String()+")", fmt.Sprintf("%s (%s -> %s)", msRound(lk.handover), lk.killed, lk.next))
	row("job leader killed: every job run again after", fmt.Sprintf("%s (%s)", msRound(lk.resumed), strings.Join(lk.jobs, ", ")))
	row(fmt.Sprintf("quorum lost: time to Unavailable (max of %d)", len(toUnavailable)), msRound(percentile(toUnavailable, 100)))
	row("calls that ran to the caller's deadline", fmt.Sprint(deadlineHits))
	row("acknowledged writes read back on 3 replicas", fmt.Sprintf("%d (creates %d, rotations to v%d, issues %d, revokes %d), 0 lost; %d ciphertexts decrypted elsewhere", checked, nCreated, nRotated, nIssued, nRevoked, nSealed))
	row("wall time (of which start-up and fixtures)", fmt.Sprintf("%s (%s)", msRound(time.Since(began)), msRound(started)))
	t.Logf("figures\n%s", b.String())
}

// rotationVisibility rotates a key on one replica, then encrypts with it on
// the next until the new version is used, rounds times; it returns the
// time from each acknowledged rotation to its first use on the other replica.
func rotationVisibility(t *testing.T, rs *replicaSet, rounds int) []time.Duration {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute) // a hang guard
	defer cancel()
	const key = "visibility"
	if err := untilAvailable(ctx, func(ctx context.Context) error {
		_, err := rs.Replicas[0].Transit.CreateKey(ctx, &hsmgatev1.CreateKeyRequest{Name: key, Type: hsmgatev1.TransitKeyType_TRANSIT_KEY_TYPE_AES256_GCM})
		return existsOK(err)
	}); err != nil {
		t.Fatalf("CreateKey %s: %v", key, err)
	}
	n := len(rs.Replicas)
	var ds []time.Duration
	for i := range rounds {
		a, b := rs.Replicas[i%n], rs.Replicas[(i+1)%n]
		// On a loaded machine a store call can time out on a healthy
		// cluster too: such rounds are retried, not counted as faults.
		var resp *hsmgatev1.RotateKeyResponse
		err := untilAvailable(ctx, func(ctx context.Context) (err error) {
			resp, err = a.Transit.RotateKey(ctx, &hsmgatev1.RotateKeyRequest{Name: key})
			return err
		})
		if err != nil {
			t.Fatalf("RotateKey on %s: %v", a.Name, err)
		}
		want := resp.GetKey().GetLatestVersion()
		start := time.Now()
		for {
			er, err := b.Transit.Encrypt(ctx, &hsmgatev1.EncryptRequest{Name: key, Items: []*hsmgatev1.EncryptItem{{Plaintext: []byte("v")}}})
			if status.Code(err) == codes.Unavailable {
				continue // a usage reservation that timed out: try again
			}
			if err != nil {
				t.Fatalf("Encrypt on %s after a rotation on %s to v%d: %v", b.Name, a.Name, want, err)
			}
			if res := er.GetResults(); len(res) == 1 && res[0].GetKeyVersion() >= want {
				break
			}
		}
		ds = append(ds, time.Since(start))
	}
	return ds
}

func msRound(d time.Duration) string { return d.Round(time.Millisecond).String() }

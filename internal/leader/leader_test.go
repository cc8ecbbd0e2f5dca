package leader

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"slices"
	"sync"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"

	"github.com/hsmgate/hsmgate/internal/audit"
	"github.com/hsmgate/hsmgate/keystore"
	"github.com/hsmgate/hsmgate/keystore/bbolt"
	"github.com/hsmgate/hsmgate/keystore/etcd/etcdtest"
)

// testTTL is short so that takeovers after a crash happen within a test;
// etcd's floor with etcdtest's 500 ms election timeout is below 1 s.
const testTTL = 2 * time.Second

// waitFor polls cond until it holds; the bound only keeps a broken build
// from hanging (it is no performance assertion).
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not reached within 60 s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// run is one job run, as the job saw it.
type run struct {
	replica string
	ctx     context.Context
}

// replica is one runner with its own etcd client.
type replica struct {
	id  string
	cli *clientv3.Client
	el  Elector
	r   *Runner
}

func newClient(t *testing.T, endpoints []string) *clientv3.Client {
	t.Helper()
	cli, err := clientv3.New(clientv3.Config{Endpoints: endpoints, DialTimeout: 5 * time.Second, Logger: zap.NewNop(),
		DialKeepAliveTime: time.Second, DialKeepAliveTimeout: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cli.Close() })
	return cli
}

func newEtcdReplica(t *testing.T, id string, endpoints []string, jobs ...Job) *replica {
	t.Helper()
	cli := newClient(t, endpoints)
	el, err := NewEtcd(EtcdConfig{Client: cli, Prefix: "/test/leader/", ReplicaID: id, TTL: testTTL, RequestTimeout: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	return startReplica(t, id, el, cli, jobs...)
}

func startReplica(t *testing.T, id string, el Elector, cli *clientv3.Client, jobs ...Job) *replica {
	t.Helper()
	r, err := NewRunner(RunnerConfig{Elector: el, LiveInterval: 50 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	for _, j := range jobs {
		if err := r.Add(j); err != nil {
			t.Fatal(err)
		}
	}
	r.Start(context.Background())
	t.Cleanup(func() { r.Close() })
	return &replica{id: id, cli: cli, el: el, r: r}
}

// recorder is a job that reports each run on a channel; with block set,
// each run waits for its ctx to end (a job killed mid-way).
type recorder struct {
	runs  chan run
	ended chan run
	block bool
}

func newRecorder(block bool) *recorder {
	return &recorder{runs: make(chan run, 1024), ended: make(chan run, 1024), block: block}
}

func (rc *recorder) job(id string) Job {
	return Job{Name: "record", Interval: 20 * time.Millisecond, Run: func(ctx context.Context) (int, error) {
		select {
		case rc.runs <- run{id, ctx}:
		case <-ctx.Done():
			return 0, ctx.Err()
		}
		if rc.block {
			<-ctx.Done()
			rc.ended <- run{id, ctx}
			return 0, ctx.Err()
		}
		return 1, nil
	}}
}

func leaders(rs []*replica) []string {
	var out []string
	for _, r := range rs {
		if r.r.IsLeader() {
			out = append(out, r.id)
		}
	}
	return out
}

// TestEtcdExactlyOneLeader: three runners on a three-member etcd cluster;
// every job run comes from one replica, the one that says it leads, and
// every runner counts three live replicas.
func TestEtcdExactlyOneLeader(t *testing.T) {
	c := etcdtest.Start(t, 3)
	rc := newRecorder(false)
	var rs []*replica
	for i := range 3 {
		id := fmt.Sprintf("r%d", i)
		rs = append(rs, newEtcdReplica(t, id, c.Endpoints, rc.job(id)))
	}
	seen := map[string]int{}
	for range 30 {
		seen[(<-rc.runs).replica]++
	}
	if len(seen) != 1 {
		t.Fatalf("job runs by replica %v, want one replica only", seen)
	}
	var who string
	for id := range seen {
		who = id
	}
	if got := leaders(rs); !slices.Equal(got, []string{who}) {
		t.Fatalf("replicas saying they lead: %v, want [%s]", got, who)
	}
	for _, r := range rs {
		waitFor(t, r.id+" sees 3 live replicas", func() bool { return r.r.LiveReplicas() == 3 })
	}
	live, err := rs[0].el.Live(context.Background())
	if err != nil || !slices.Equal(live, []string{"r0", "r1", "r2"}) {
		t.Fatalf("Live = %v, %v; want [r0 r1 r2]", live, err)
	}
}

// TestEtcdLeaderKilledMidJob: the leader dies in the middle of a job (its
// client is gone without resigning, as in a crash): another replica runs
// the job once the dead one's lease expires, and the dead one is counted
// out of the live replicas.
func TestEtcdLeaderKilledMidJob(t *testing.T) {
	c := etcdtest.Start(t, 3)
	rc := newRecorder(true)
	rs := map[string]*replica{}
	for i := range 3 {
		id := fmt.Sprintf("r%d", i)
		rs[id] = newEtcdReplica(t, id, c.Endpoints, rc.job(id))
	}
	first := <-rc.runs
	old := rs[first.replica]
	waitFor(t, "3 live replicas", func() bool { return old.r.LiveReplicas() == 3 })
	killed := time.Now()
	old.cli.Close() // crash: no resign, no revoke
	// The killed leader's job is cancelled (its session is gone with its client).
	if e := <-rc.ended; e.replica != old.id {
		t.Fatalf("ended job ran on %s, want the killed leader %s", e.replica, old.id)
	}
	next := <-rc.runs
	took := time.Since(killed)
	if next.replica == old.id {
		t.Fatalf("job ran again on the killed replica %s", old.id)
	}
	t.Logf("takeover %s after the leader died (lease TTL %s)", took.Round(time.Millisecond), testTTL)
	if old.r.IsLeader() {
		t.Fatalf("killed replica still says it leads")
	}
	// Who leads is checked for safety, not pinned to one instant: when the
	// store stalls (a loaded CI machine), the new leader can lose its lease
	// again right after its job started, and another replica take over; the
	// log says so. What must hold: one replica leads again, never the dead
	// one, and never two at once.
	all := []*replica{rs["r0"], rs["r1"], rs["r2"]}
	waitFor(t, "one replica leading", func() bool { return len(leaders(all)) == 1 })
	if got := leaders(all); len(got) > 1 || slices.Contains(got, old.id) {
		t.Fatalf("replicas saying they lead: %v, want one live replica (not the killed %s)", got, old.id)
	}
	waitFor(t, "the dead replica counted out", func() bool { return rs[next.replica].r.LiveReplicas() == 2 })
}

// TestEtcdLeaderCutOff: the leader's only etcd member stops (the leader
// cannot reach the store; the cluster keeps quorum): its jobs are cancelled
// when its lease can no longer be renewed, and a replica that reaches the
// cluster leads.
func TestEtcdLeaderCutOff(t *testing.T) {
	c := etcdtest.Start(t, 3)
	rc := newRecorder(true)
	rs := map[string]*replica{}
	member := map[string]int{}
	for i := range 3 {
		id := fmt.Sprintf("r%d", i)
		// Replica i talks to member i only.
		rs[id] = newEtcdReplica(t, id, c.Endpoints[i:i+1], rc.job(id))
		member[id] = i
	}
	first := <-rc.runs
	cut := time.Now()
	c.Stop(member[first.replica])
	if e := <-rc.ended; e.replica != first.replica {
		t.Fatalf("ended job ran on %s, want the cut-off leader %s", e.replica, first.replica)
	}
	stopped := time.Since(cut)
	next := <-rc.runs
	if next.replica == first.replica {
		t.Fatalf("cut-off replica %s ran the job again", first.replica)
	}
	t.Logf("cut-off leader stopped its job after %s; %s led after %s (TTL %s)",
		stopped.Round(time.Millisecond), next.replica, time.Since(cut).Round(time.Millisecond), testTTL)
	if rs[first.replica].r.IsLeader() {
		t.Fatalf("cut-off replica still says it leads")
	}
}

// TestEtcdCloseHandsOver: a replica that shuts down resigns: the next one
// leads without waiting for a lease to expire, and Live drops it at once.
func TestEtcdCloseHandsOver(t *testing.T) {
	c := etcdtest.Start(t, 1)
	rc := newRecorder(false)
	a := newEtcdReplica(t, "a", c.Endpoints, rc.job("a"))
	for r := <-rc.runs; r.replica != "a"; r = <-rc.runs {
	}
	b := newEtcdReplica(t, "b", c.Endpoints, rc.job("b"))
	waitFor(t, "b registered", func() bool { ids, _ := b.el.Live(context.Background()); return len(ids) == 2 })
	if err := a.r.Close(); err != nil {
		t.Fatal(err)
	}
	ids, err := b.el.Live(context.Background())
	if err != nil || !slices.Equal(ids, []string{"b"}) {
		t.Fatalf("Live after a's Close = %v, %v; want [b]", ids, err)
	}
	for r := <-rc.runs; r.replica != "b"; r = <-rc.runs {
	}
	if _, err := a.el.Campaign(context.Background()); !errors.Is(err, ErrClosed) {
		t.Fatalf("Campaign after Close: %v, want ErrClosed", err)
	}
}

func openBolt(t *testing.T) keystore.Store {
	t.Helper()
	s, err := bbolt.Open(filepath.Join(t.TempDir(), "store.db"), bbolt.Options{NoSync: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

func newLeaseReplica(t *testing.T, st keystore.Store, id string, jobs ...Job) *replica {
	t.Helper()
	el, err := NewStoreLease(StoreLeaseConfig{Store: st, ReplicaID: id, TTL: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	return startReplica(t, id, el, nil, jobs...)
}

// TestStoreLeaseOneLeader: two runners on one bbolt store in one process
// (a second process cannot open the file: bbolt's lock) exclude each
// other through the lease; a crashed holder's lease is taken once it
// expires; a closed one's at once.
func TestStoreLeaseOneLeader(t *testing.T) {
	st := openBolt(t)
	rc := newRecorder(true)
	a := newLeaseReplica(t, st, "a", rc.job("a"))
	first := <-rc.runs
	if first.replica != "a" {
		t.Fatalf("first run on %s, want a (alone)", first.replica)
	}
	b := newLeaseReplica(t, st, "b", rc.job("b"))
	waitFor(t, "2 live replicas", func() bool { return b.r.LiveReplicas() == 2 })
	if got := leaders([]*replica{a, b}); !slices.Equal(got, []string{"a"}) {
		t.Fatalf("leaders %v, want [a]", got)
	}
	// Crash a: its renewals and heartbeats stop, its records stay.
	a.el.(*StoreLease).cancel()
	if e := <-rc.ended; e.replica != "a" {
		t.Fatalf("ended job on %s, want a", e.replica)
	}
	if next := <-rc.runs; next.replica != "b" {
		t.Fatalf("run after a's crash on %s, want b", next.replica)
	}
	waitFor(t, "a counted out", func() bool { return b.r.LiveReplicas() == 1 })

	// A graceful Close hands over without waiting for expiry.
	c := newLeaseReplica(t, st, "c", rc.job("c"))
	waitFor(t, "c registered", func() bool { return c.r.LiveReplicas() == 2 })
	if err := b.r.Close(); err != nil {
		t.Fatal(err)
	}
	if e := <-rc.ended; e.replica != "b" {
		t.Fatalf("ended job on %s, want b", e.replica)
	}
	if next := <-rc.runs; next.replica != "c" {
		t.Fatalf("run after b's Close on %s, want c", next.replica)
	}
	if ids, _ := c.el.Live(context.Background()); !slices.Equal(ids, []string{"c"}) {
		t.Fatalf("Live = %v, want [c]", ids)
	}
	// The crashed replica's registration does not stay in the store forever.
	waitFor(t, "a's registration pruned", func() bool {
		_, err := st.Get(context.Background(), "leader/replicas/a")
		return errors.Is(err, keystore.ErrNotFound)
	})
}

// memAudit collects audit lines.
type memAudit struct {
	mu    sync.Mutex
	lines []audit.Entry
}

func (m *memAudit) Write(e *audit.Entry) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.lines = append(m.lines, *e)
	return nil
}

// TestRunnerAuditAndJobs: job runs and leadership are audited naming the
// replica; a job added while leading starts at once; a job's error is
// audited with its code; names are unique.
func TestRunnerAuditAndJobs(t *testing.T) {
	st := openBolt(t)
	el, err := NewStoreLease(StoreLeaseConfig{Store: st, ReplicaID: "solo", TTL: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	au := &memAudit{}
	r, err := NewRunner(RunnerConfig{Elector: el, Audit: au})
	if err != nil {
		t.Fatal(err)
	}
	r.Start(context.Background())
	ran := make(chan struct{}, 16)
	waitFor(t, "leading", r.IsLeader)
	if err := r.Add(Job{Name: "late", Interval: time.Hour, Run: func(context.Context) (int, error) {
		ran <- struct{}{}
		return 2, nil
	}}); err != nil {
		t.Fatal(err)
	}
	<-ran
	if err := r.Add(Job{Name: "late", Interval: time.Hour, Run: func(context.Context) (int, error) { return 0, nil }}); err == nil {
		t.Fatalf("second job named late: no error")
	}
	failed := make(chan struct{}, 16)
	if err := r.Add(Job{Name: "broken", Interval: time.Hour, Run: func(context.Context) (int, error) {
		defer func() { failed <- struct{}{} }()
		return 0, keystore.ErrUnavailable
	}}); err != nil {
		t.Fatal(err)
	}
	<-failed
	if err := r.Close(); err != nil {
		t.Fatal(err)
	}
	au.mu.Lock()
	defer au.mu.Unlock()
	got := map[string]string{}
	for _, l := range au.lines {
		if l.Identity == nil || l.Identity.Name != "solo" || l.Identity.Kind != "replica" || l.Extra["replica"] != "solo" {
			t.Errorf("line %s does not name the replica: %+v", l.Method, l)
		}
		got[l.Method] = l.Code
	}
	want := map[string]string{"leader/acquire": "OK", "job/late": "OK", "job/broken": "Unavailable", "leader/resign": "OK"}
	for m, code := range want {
		if got[m] != code {
			t.Errorf("audit %s: code %q, want %q", m, got[m], code)
		}
	}
}

func TestReplicaIDAndTTL(t *testing.T) {
	for _, tc := range []struct {
		id string
		ok bool
	}{{"hsmgate-0", true}, {"a.b_c", true}, {"", false}, {"a/b", false}, {"a b", false}, {string(make([]byte, 129)), false}} {
		t.Run(tc.id, func(t *testing.T) {
			if err := CheckReplicaID(tc.id); (err == nil) != tc.ok {
				t.Fatalf("CheckReplicaID(%q) = %v, want ok %v", tc.id, err, tc.ok)
			}
		})
	}
	if err := CheckReplicaID(DefaultReplicaID()); err != nil {
		t.Fatalf("default replica id: %v", err)
	}
	if _, err := NewStoreLease(StoreLeaseConfig{Store: openBolt(t), ReplicaID: "x", TTL: time.Millisecond}); err == nil {
		t.Fatalf("TTL 1ms accepted")
	}
}

// TestStoreLeaseSameIDWaits: a second elector with the holder's replica ID
// (a restart before the lease expired, or a copied config) does not take
// the unexpired lease: two processes would run the jobs at once.
func TestStoreLeaseSameIDWaits(t *testing.T) {
	st := openBolt(t)
	mk := func() *StoreLease {
		el, err := NewStoreLease(StoreLeaseConfig{Store: st, ReplicaID: "dup", TTL: 5 * time.Second})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { el.Close() })
		return el
	}
	first, second := mk(), mk()
	term, err := first.Campaign(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	got, wait, err := second.try(context.Background())
	if err != nil || got != nil {
		t.Fatalf("second elector with the same ID: term %v, err %v; want to wait", got, err)
	}
	if wait <= 0 {
		t.Fatalf("wait %s, want > 0", wait)
	}
	select {
	case <-term.Done():
		t.Fatalf("the holder lost its term")
	default:
	}
}

// TestEtcdCloseWithoutQuorum: a replica that waits to lead when the
// quorum is lost still closes promptly (etcd's Election.Campaign, its ctx
// cancelled, resigns with the client's deadline-less context and waits for
// the quorum: a server's shutdown hung on it).
func TestEtcdCloseWithoutQuorum(t *testing.T) {
	c := etcdtest.Start(t, 3)
	rc := newRecorder(false)
	a := newEtcdReplica(t, "a", c.Endpoints, rc.job("a"))
	b := newEtcdReplica(t, "b", c.Endpoints, rc.job("b"))
	first := <-rc.runs
	waiting := b
	if first.replica == "b" {
		waiting = a
	}
	waitFor(t, "both registered", func() bool { ids, _ := waiting.el.Live(context.Background()); return len(ids) == 2 })
	c.Stop(0)
	c.Stop(1)
	start := time.Now()
	done := make(chan error, 1)
	go func() { done <- waiting.r.Close() }()
	// Close waits for the campaign to see its ctx end, then revokes the
	// lease (bounded by the request timeout, 1 s here).
	select {
	case err := <-done:
		t.Logf("%s closed without quorum in %s", waiting.id, time.Since(start).Round(time.Millisecond))
		if err != nil {
			t.Errorf("Close: %v", err)
		}
	case <-time.After(30 * time.Second): // a hang guard, far above the 1 s request timeout
		t.Fatalf("%s: Close without quorum still running after 30s", waiting.id)
	}
}

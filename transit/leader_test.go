package transit

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hsmgate/hsmgate/internal/leader"
	"github.com/hsmgate/hsmgate/keystore/etcd"
	"github.com/hsmgate/hsmgate/keystore/etcd/etcdtest"
	pb "github.com/hsmgate/hsmgate/proto/hsmgate/v1"
)

// leaderReplica is one replica of TestLeaderRotatesOncePerInterval: its
// own etcd client, engine and job runner.
type leaderReplica struct {
	id      string
	store   *etcd.Store
	e       *Engine
	r       *leader.Runner
	rotated atomic.Int64
}

// TestLeaderRotatesOncePerInterval: three replicas on a three-member etcd
// cluster, each with auto-rotation as a leader-run job: every period the
// key rotates once (not once per replica), passes of the leader after the
// rotation change nothing, and when the leader dies another replica does
// the next period's rotation.
func TestLeaderRotatesOncePerInterval(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	c := etcdtest.Start(t, 3)
	passes := make(chan string, 4096)
	var reps []*leaderReplica
	for i := range 3 {
		rp := &leaderReplica{id: fmt.Sprintf("r%d", i)}
		st, err := etcd.New(ctx, etcd.Config{Endpoints: c.Endpoints, Prefix: "/t/"})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { st.Close() })
		rp.store = st
		rp.e = newEngine(t, f, func(cfg *Config) { cfg.Store = st })
		el, err := leader.NewEtcd(leader.EtcdConfig{Client: st.Client(), Prefix: "/t/leader/", ReplicaID: rp.id, TTL: 2 * time.Second})
		if err != nil {
			t.Fatal(err)
		}
		rp.r, err = leader.NewRunner(leader.RunnerConfig{Elector: el})
		if err != nil {
			t.Fatal(err)
		}
		if err := rp.r.Add(leader.Job{Name: "transit-rotate", Interval: 20 * time.Millisecond, Run: func(ctx context.Context) (int, error) {
			names, err := rp.e.RotateDue(ctx)
			rp.rotated.Add(int64(len(names)))
			select {
			case passes <- rp.id:
			case <-ctx.Done():
			}
			return len(names), err
		}}); err != nil {
			t.Fatal(err)
		}
		rp.r.Start(ctx)
		t.Cleanup(func() { rp.r.Close() })
		reps = append(reps, rp)
	}
	if _, err := reps[0].e.CreateKey(ctx, &pb.CreateKeyRequest{Name: "k", Type: pb.TransitKeyType_TRANSIT_KEY_TYPE_AES256_GCM,
		AutoRotatePeriod: durationOf(time.Hour)}); err != nil {
		t.Fatal(err)
	}
	total := func() (n int64, by map[string]int64) {
		by = map[string]int64{}
		for _, rp := range reps {
			n += rp.rotated.Load()
			by[rp.id] = rp.rotated.Load()
		}
		return n, by
	}
	// latest reads the record through a live replica's store.
	latest := func(rp *leaderReplica) uint32 {
		k, err := rp.e.GetKey(ctx, "k")
		if err != nil {
			t.Fatal(err)
		}
		return k.LatestVersion
	}
	// period advances the clock one period and waits for the rotation and
	// then for more passes of the leader, which must not rotate again.
	period := func(want uint32, live *leaderReplica) string {
		t.Helper()
		f.clock.Advance(time.Hour)
		deadline := time.Now().Add(60 * time.Second)
		for latest(live) != want {
			if time.Now().After(deadline) {
				t.Fatalf("v%d not made within 60 s", want)
			}
			time.Sleep(10 * time.Millisecond)
		}
		var who string
		for range 10 {
			who = <-passes
		}
		if got := latest(live); got != want {
			t.Fatalf("after more passes latest v%d, want v%d", got, want)
		}
		if n, by := total(); n != int64(want-1) {
			t.Fatalf("%d rotations by replica %v after %d periods, want %d", n, by, want-1, want-1)
		}
		return who
	}
	lead := period(2, reps[0])
	if again := period(3, reps[0]); again != lead {
		t.Fatalf("passes by %s then %s with no fault", lead, again)
	}
	// The leader dies (its client closes, no resign); another replica leads
	// and does the next period's rotation.
	var dead *leaderReplica
	var alive []*leaderReplica
	for _, rp := range reps {
		if rp.id == lead {
			dead = rp
		} else {
			alive = append(alive, rp)
		}
	}
	before := dead.rotated.Load()
	dead.store.Client().Close()
	// Drain passes the dead leader made before it noticed.
	for who := <-passes; who == dead.id; who = <-passes {
	}
	period(4, alive[0])
	if dead.rotated.Load() != before {
		t.Fatalf("the dead replica rotated after its death")
	}
	t.Logf("rotations by replica after 3 periods and a leader death: %v", func() map[string]int64 { _, by := total(); return by }())
}

// TestRotateDueOverlapRotatesOnce: passes of several replicas at once (an
// old leader finishing while the new one starts) rotate a due key once.
func TestRotateDueOverlapRotatesOnce(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	f.create("k", pb.TransitKeyType_TRANSIT_KEY_TYPE_AES256_GCM, wrapped, func(r *pb.CreateKeyRequest) { r.AutoRotatePeriod = durationOf(time.Hour) })
	engines := []*Engine{f.e, newEngine(t, f), newEngine(t, f), newEngine(t, f)}
	f.clock.Advance(time.Hour)
	var wg sync.WaitGroup
	var rotated atomic.Int64
	for _, e := range engines {
		wg.Go(func() {
			names, err := e.RotateDue(ctx)
			if err != nil {
				t.Error(err)
			}
			rotated.Add(int64(len(names)))
		})
	}
	wg.Wait()
	if got := latestOf(t, f.e, "k"); got != 2 || rotated.Load() != 1 {
		t.Fatalf("latest v%d after %d rotations by %d concurrent passes, want v2 after 1", got, rotated.Load(), len(engines))
	}
}

// TestUsageBlockShrinksWithReplicas: a version's block is its limit / (16 ×
// live replicas): with a limit of 1,600, 100 for one replica and 25 for four.
func TestUsageBlockShrinksWithReplicas(t *testing.T) {
	var live atomic.Int64
	live.Store(1)
	f := newFixture(t, func(c *Config) { c.UsageBlock = 1 << 16; c.LiveReplicas = func() int { return int(live.Load()) } })
	ctx := context.Background()
	for _, tc := range []struct {
		key  string
		live int64
		want uint64
	}{{"one", 1, 100}, {"four", 4, 25}, {"many", 10_000, 1}, {"none", 0, 100}} {
		t.Run(tc.key, func(t *testing.T) {
			live.Store(tc.live)
			f.create(tc.key, pb.TransitKeyType_TRANSIT_KEY_TYPE_AES256_GCM, wrapped, func(r *pb.CreateKeyRequest) { r.MaxEncryptionsPerVersion = 1600 })
			f.encrypt(tc.key, []byte("x"), nil, nil)
			k, err := f.e.GetKey(ctx, tc.key)
			if err != nil {
				t.Fatal(err)
			}
			if got := k.Versions[0].GetReserved(); got != tc.want {
				t.Fatalf("reserved %d after one encryption with %d live replicas, want a block of %d", got, tc.live, tc.want)
			}
		})
	}
}

// TestDeadReplicaBlockStaysCounted: a replica that dies holding a usage
// block takes with it the only record of how much of the block it used,
// so its block is never given back to the others (what a naive reclaim
// of dead replicas' blocks would do): the versions' encryptions stay
// within the limit. Limit 64 with 2 live replicas: blocks of 2.
func TestDeadReplicaBlockStaysCounted(t *testing.T) {
	two := func(c *Config) { c.LiveReplicas = func() int { return 2 } }
	f := newFixture(t, two)
	ctx := context.Background()
	f.create("k", pb.TransitKeyType_TRANSIT_KEY_TYPE_AES256_GCM, wrapped, func(r *pb.CreateKeyRequest) { r.MaxEncryptionsPerVersion = 64 })
	dying := newEngine(t, f, two)
	if _, err := dying.Encrypt(ctx, &pb.EncryptRequest{Name: "k", Items: []*pb.EncryptItem{{}}}); err != nil {
		t.Fatal(err)
	}
	// The crash: its in-memory block is lost, nothing is given back.
	dying.usage.Range(func(k, _ any) bool { dying.usage.Delete(k); return true })
	dying.Close()
	done := 1
	for {
		_, err := f.e.Encrypt(ctx, &pb.EncryptRequest{Name: "k", KeyVersion: 1, Items: []*pb.EncryptItem{{}}})
		if err != nil {
			break
		}
		done++
	}
	if done > 64 {
		t.Fatalf("v1 encrypted %d times, over its limit 64", done)
	}
	if done != 63 {
		t.Fatalf("v1 encrypted %d times, want 63 (the dead replica's unused encryption stays counted)", done)
	}
}

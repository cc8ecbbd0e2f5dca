package transit

import (
	"context"
	"testing"
	"time"

	"google.golang.org/grpc/codes"

	"github.com/hsmgate/hsmgate/keystore"
	"github.com/hsmgate/hsmgate/keystore/etcd"
	"github.com/hsmgate/hsmgate/keystore/etcd/etcdtest"
	pb "github.com/hsmgate/hsmgate/proto/hsmgate/v1"
)

func latestOf(t testing.TB, e *Engine, name string) uint32 {
	t.Helper()
	k, err := e.GetKey(context.Background(), name)
	if err != nil {
		t.Fatal(err)
	}
	return k.LatestVersion
}

// TestUsageLimitRotation: with max 10 encryptions per version (blocks of
// max(10/16, 1) = 1), the key rotates itself before any version exceeds 10,
// the counts survive a restart (reopened engine on the same bbolt file) and
// never undercount: the stored count is at least the encryptions done.
func TestUsageLimitRotation(t *testing.T) {
	f := newFixture(t, func(c *Config) { c.UsageBlock = 4 })
	ctx := context.Background()
	f.create("k", pb.TransitKeyType_TRANSIT_KEY_TYPE_AES256_GCM, wrapped, func(r *pb.CreateKeyRequest) { r.MaxEncryptionsPerVersion = 10 })
	perVersion := map[uint32]uint64{}
	enc := func(n int) {
		for range n {
			ct := f.encrypt("k", []byte("x"), nil, nil)
			v, _, _ := ParseVersion(ct)
			perVersion[v]++
		}
	}
	enc(7)
	if perVersion[1] != 7 {
		t.Fatalf("v1 used %d times, want 7", perVersion[1])
	}
	k, _ := f.e.GetKey(ctx, "k")
	if c := k.Versions[0].GetReserved(); c != 7 {
		t.Fatalf("v1 reserved %d after 7 encryptions with blocks of 1, want 7", c)
	}
	f.reopen()
	enc(6)
	for v, n := range perVersion {
		if n > 10 {
			t.Fatalf("v%d used %d times, over the limit 10", v, n)
		}
	}
	if perVersion[1] != 10 || perVersion[2] != 3 {
		t.Fatalf("after restart: per version %v; want v1 10 (nothing wasted) and v2 3", perVersion)
	}
	k, _ = f.e.GetKey(ctx, "k")
	for _, v := range k.Versions {
		if v.GetReserved() < perVersion[v.Version] || v.GetReserved() > 10 {
			t.Fatalf("v%d count %d, used %d: undercount or over limit", v.Version, v.GetReserved(), perVersion[v.Version])
		}
	}
	// A batch larger than what is left rotates before it runs. It takes
	// the new version's whole limit, which rotates once more in the
	// background (usageCounter.reserve): so the batch's version is the one
	// after the latest before it, not necessarily the latest after it.
	before := latestOf(t, f.e, "k")
	r, err := f.e.Encrypt(ctx, &pb.EncryptRequest{Name: "k", Items: make([]*pb.EncryptItem, 10)})
	if err != nil {
		t.Fatal(err)
	}
	for i, res := range r.Results {
		if res.KeyVersion != before+1 {
			t.Fatalf("batch of 10: item %d used v%d, want the new version v%d (v%d had 7 left)", i, res.KeyVersion, before+1, before)
		}
	}
	// A batch over the limit cannot be served by any version.
	_, err = f.e.Encrypt(ctx, &pb.EncryptRequest{Name: "k", Items: make([]*pb.EncryptItem, 11)})
	wantCode(t, "batch over the per-version limit", err, codes.ResourceExhausted)
	// An explicit old version at its limit does not rotate: refused.
	_, err = f.e.Encrypt(ctx, &pb.EncryptRequest{Name: "k", KeyVersion: 1, Items: make([]*pb.EncryptItem, 5)})
	wantCode(t, "explicit exhausted version", err, codes.ResourceExhausted)
}

// TestAutoRotation: RotateDue with an injected clock rotates keys whose
// period has passed, once, and leaves the others.
func TestAutoRotation(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	f.create("hourly", pb.TransitKeyType_TRANSIT_KEY_TYPE_AES256_GCM, wrapped, func(r *pb.CreateKeyRequest) { r.AutoRotatePeriod = durationOf(time.Hour) })
	f.create("daily", pb.TransitKeyType_TRANSIT_KEY_TYPE_ED25519, inHSM, func(r *pb.CreateKeyRequest) { r.AutoRotatePeriod = durationOf(24 * time.Hour) })
	f.create("never", pb.TransitKeyType_TRANSIT_KEY_TYPE_AES256_GCM, wrapped)
	steps := []struct {
		advance time.Duration
		want    map[string]uint32
	}{
		{0, map[string]uint32{"hourly": 1, "daily": 1, "never": 1}},
		{59 * time.Minute, map[string]uint32{"hourly": 1, "daily": 1, "never": 1}},
		{time.Minute, map[string]uint32{"hourly": 2, "daily": 1, "never": 1}},
		{0, map[string]uint32{"hourly": 2, "daily": 1, "never": 1}},
		{23 * time.Hour, map[string]uint32{"hourly": 3, "daily": 2, "never": 1}},
	}
	for i, s := range steps {
		f.clock.Advance(s.advance)
		if _, err := f.e.RotateDue(ctx); err != nil {
			t.Fatal(err)
		}
		for name, want := range s.want {
			if got := latestOf(t, f.e, name); got != want {
				t.Fatalf("step %d: %s latest v%d, want v%d", i, name, got, want)
			}
		}
	}
	// RunRotator runs a pass at start and stops with its context.
	f.clock.Advance(time.Hour)
	rctx, cancel := context.WithCancel(ctx)
	done := make(chan error)
	go func() { done <- f.e.RunRotator(rctx) }()
	poll(t, "RunRotator's first pass", 30*time.Second, func() bool { return latestOf(t, f.e, "hourly") == 4 })
	cancel()
	if err := <-done; err != context.Canceled {
		t.Fatalf("RunRotator returned %v, want context.Canceled", err)
	}
}

// testSecondEngine: engine A serves a key from its cache; engine B (another
// process sharing the store) rotates it; A encrypts with the new version
// soon after, through its Watch. Then B deletes it and A refuses it.
func testSecondEngine(t *testing.T, f *fixture, b *Engine) {
	ctx := context.Background()
	f.create("shared", pb.TransitKeyType_TRANSIT_KEY_TYPE_AES256_GCM, wrapped, func(r *pb.CreateKeyRequest) { r.DeletionAllowed = true })
	ct := f.encrypt("shared", []byte("x"), nil, nil)
	if v, _, _ := ParseVersion(ct); v != 1 {
		t.Fatalf("v%d, want v1", v)
	}
	if _, err := b.RotateKey(ctx, "shared"); err != nil {
		t.Fatal(err)
	}
	poll(t, "engine A sees B's rotation", 30*time.Second, func() bool {
		v, _, _ := ParseVersion(f.encrypt("shared", []byte("x"), nil, nil))
		return v == 2
	})
	// B decrypts what A encrypted with v2 and vice versa.
	r, err := b.Decrypt(ctx, &pb.DecryptRequest{Name: "shared", Items: []*pb.DecryptItem{{Ciphertext: f.encrypt("shared", []byte("y"), nil, nil)}}})
	if err != nil || string(r.Results[0].Plaintext) != "y" {
		t.Fatalf("B decrypts A's ciphertext: %v %v", err, r.GetResults())
	}
	two := uint32(2)
	if _, err := b.UpdateKeyConfig(ctx, &pb.UpdateKeyConfigRequest{Name: "shared", MinDecryptionVersion: &two}); err != nil {
		t.Fatal(err)
	}
	poll(t, "engine A sees B's min_decryption_version", 30*time.Second, func() bool {
		_, c := f.decrypt("shared", ct, nil, nil)
		return c == codes.FailedPrecondition
	})
	if err := b.DeleteKey(ctx, "shared"); err != nil {
		t.Fatal(err)
	}
	poll(t, "engine A sees B's delete", 30*time.Second, func() bool {
		_, err := f.e.Encrypt(ctx, &pb.EncryptRequest{Name: "shared", Items: []*pb.EncryptItem{{}}})
		return code(err) == codes.NotFound
	})
}

func TestSecondEngineBbolt(t *testing.T) {
	f := newFixture(t)
	cfg := f.cfg
	cfg.Store = f.store
	b, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	testSecondEngine(t, f, b)
}

// TestSecondEngineEtcd runs two engines on two etcd clients of a real
// in-process etcd: the replicas of DESIGN.
func TestSecondEngineEtcd(t *testing.T) {
	if testing.Short() {
		t.Skip("starts etcd")
	}
	f := newFixture(t)
	cl := etcdtest.Start(t, 1)
	open := func() keystore.Store {
		s, err := etcd.New(context.Background(), etcd.Config{Endpoints: cl.Endpoints})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { s.Close() })
		return s
	}
	f.close()
	f.store = open()
	cfg := f.cfg
	cfg.Store = f.store
	a, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	f.e = a
	t.Cleanup(func() { a.Close() })
	cfg.Store = open()
	b, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	testSecondEngine(t, f, b)
}

// TestUsageConcurrent: many goroutines encrypting batches against a small
// limit never push a version over it, every ciphertext decrypts, and the
// stored counts cover every encryption.
func TestUsageConcurrent(t *testing.T) {
	f := newFixture(t, func(c *Config) { c.UsageBlock = 16; c.ParallelThreshold = 4 })
	ctx := context.Background()
	const limit, workers, rounds, batch = 100, 8, 20, 10
	f.create("c", pb.TransitKeyType_TRANSIT_KEY_TYPE_AES256_GCM, wrapped, func(r *pb.CreateKeyRequest) { r.MaxEncryptionsPerVersion = limit })
	type out struct {
		cts [][]byte
		err error
	}
	res := make(chan out, workers)
	for range workers {
		go func() {
			var o out
			for range rounds {
				r, err := f.e.Encrypt(ctx, &pb.EncryptRequest{Name: "c", Items: make([]*pb.EncryptItem, batch)})
				if err != nil {
					o.err = err
					break
				}
				for _, it := range r.Results {
					o.cts = append(o.cts, it.Ciphertext)
				}
			}
			res <- o
		}()
	}
	outs := make([]out, workers)
	for i := range outs {
		outs[i] = <-res
	}
	perVersion := map[uint32]uint64{}
	var all [][]byte
	for _, o := range outs {
		if o.err != nil {
			t.Fatal(o.err)
		}
		for _, ct := range o.cts {
			v, _, _ := ParseVersion(ct)
			perVersion[v]++
		}
		all = append(all, o.cts...)
	}
	for v, n := range perVersion {
		if n > limit {
			t.Fatalf("v%d used %d times, limit %d", v, n, limit)
		}
	}
	k, _ := f.e.GetKey(ctx, "c")
	for _, v := range k.Versions {
		if v.GetReserved() < perVersion[v.Version] {
			t.Fatalf("v%d stored count %d below %d encryptions", v.Version, v.GetReserved(), perVersion[v.Version])
		}
	}
	if k.LatestVersion < workers*rounds*batch/limit {
		t.Fatalf("latest v%d after %d encryptions with limit %d", k.LatestVersion, workers*rounds*batch, limit)
	}
	items := make([]*pb.DecryptItem, len(all))
	for i, ct := range all {
		items[i] = &pb.DecryptItem{Ciphertext: ct}
	}
	d, err := f.e.Decrypt(ctx, &pb.DecryptRequest{Name: "c", Items: items})
	if err != nil {
		t.Fatal(err)
	}
	for i, r := range d.Results {
		if r.Error != nil {
			t.Fatalf("item %d: %v", i, r.Error)
		}
	}
}

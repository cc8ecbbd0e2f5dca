package transit

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"google.golang.org/grpc/codes"

	"github.com/hsmgate/hsmgate/internal/errs"
	pb "github.com/hsmgate/hsmgate/proto/hsmgate/v1"
)

// gatedHSM is the real SoftHSM adapter whose next Random call, once armed,
// announces itself and waits: it holds a CreateKey between its existence
// check and its write, the window of the create race.
type gatedHSM struct {
	moduleHSM
	armed   atomic.Bool
	entered chan struct{}
	release chan struct{}
}

func (g *gatedHSM) Random(ctx context.Context, n int) ([]byte, error) {
	if g.armed.CompareAndSwap(true, false) {
		close(g.entered)
		<-g.release
	}
	return g.moduleHSM.Random(ctx, n)
}

// newEngine opens another engine (another replica) on f's store.
func newEngine(t *testing.T, f *fixture, mutate ...func(*Config)) *Engine {
	t.Helper()
	cfg := f.cfg
	cfg.Store = f.store
	for _, m := range mutate {
		m(&cfg)
	}
	e, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { e.Close() })
	return e
}

// TestCreateRaceKeepsUsage: a CreateKey that loses the race to another
// replica's CreateKey of the same name must not touch the winner's usage
// counters. Before the fix the loser deleted them, and the winner's
// exhausted v1 encrypted again (issue 18: 1,901 encryptions, limit 1,000).
func TestCreateRaceKeepsUsage(t *testing.T) {
	f := newFixture(t, func(c *Config) { c.UsageBlock = 4 })
	ctx := context.Background()
	g := &gatedHSM{moduleHSM: moduleHSM{f.mod}, entered: make(chan struct{}), release: make(chan struct{})}
	loser := newEngine(t, f, func(c *Config) { c.HSM = g })
	req := &pb.CreateKeyRequest{Name: "race", Type: pb.TransitKeyType_TRANSIT_KEY_TYPE_AES256_GCM, MaxEncryptionsPerVersion: 10}
	g.armed.Store(true)
	lost := make(chan error, 1)
	go func() { _, err := loser.CreateKey(ctx, req); lost <- err }()
	<-g.entered // the loser found no key and is making its material
	if _, err := f.e.CreateKey(ctx, req); err != nil {
		t.Fatal(err)
	}
	used := 0
	for {
		_, err := f.e.Encrypt(ctx, &pb.EncryptRequest{Name: "race", KeyVersion: 1, Items: []*pb.EncryptItem{{}}})
		if code(err) == codes.ResourceExhausted {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		used++
	}
	close(g.release)
	wantCode(t, "losing CreateKey", <-lost, codes.AlreadyExists)
	for _, e := range []*Engine{f.e, loser} {
		_, err := e.Encrypt(ctx, &pb.EncryptRequest{Name: "race", KeyVersion: 1, Items: []*pb.EncryptItem{{}}})
		if err == nil {
			used++
		}
	}
	if used != 10 {
		t.Fatalf("v1 encrypted %d times, limit 10", used)
	}
}

// TestCreateRaceManyReplicas: many concurrent creates of one name with a
// small limit on four engines sharing one store, while all four encrypt to
// exhaustion: no version ever exceeds its limit.
func TestCreateRaceManyReplicas(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	const limit, engines, perEngine = 48, 4, 240
	es := []*Engine{f.e}
	for range engines - 1 {
		es = append(es, newEngine(t, f))
	}
	req := &pb.CreateKeyRequest{Name: "many", Type: pb.TransitKeyType_TRANSIT_KEY_TYPE_AES256_GCM, MaxEncryptionsPerVersion: limit}
	var (
		mu         sync.Mutex
		perVersion = map[uint32]int{}
		wg         sync.WaitGroup
		fail       = make(chan error, 4*engines)
		created    atomic.Int32
	)
	for _, e := range es {
		for range 2 { // creators: keep creating while the others encrypt
			wg.Add(1)
			go func() {
				defer wg.Done()
				for range 10 {
					_, err := e.CreateKey(ctx, req)
					if err == nil {
						created.Add(1)
					} else if code(err) != codes.AlreadyExists {
						fail <- err
						return
					}
				}
			}()
		}
		wg.Add(1)
		go func() { // encrypter
			defer wg.Done()
			for done := 0; done < perEngine; {
				r, err := e.Encrypt(ctx, &pb.EncryptRequest{Name: "many", Items: make([]*pb.EncryptItem, 1+done%3)})
				if c := code(err); c == codes.NotFound || c == codes.Aborted {
					continue // not created yet, or too many concurrent reservations: retry, as a client does
				}
				if err != nil {
					fail <- err
					return
				}
				mu.Lock()
				for _, it := range r.Results {
					v, _, _ := ParseVersion(it.Ciphertext)
					perVersion[v]++
				}
				mu.Unlock()
				done += len(r.Results)
			}
		}()
	}
	wg.Wait()
	close(fail)
	for err := range fail {
		t.Fatal(err)
	}
	if n := created.Load(); n != 1 {
		t.Fatalf("%d creates succeeded, want 1", n)
	}
	// And each version's exhaustion holds on every engine.
	k, err := f.e.GetKey(ctx, "many")
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range es {
		for v := range perVersion {
			for {
				_, err := e.Encrypt(ctx, &pb.EncryptRequest{Name: "many", KeyVersion: v, Items: []*pb.EncryptItem{{}}})
				if err != nil {
					if code(err) != codes.ResourceExhausted && !errors.Is(err, ErrVersionNotAllowed) {
						t.Fatal(err)
					}
					break
				}
				perVersion[v]++
			}
		}
	}
	for v, n := range perVersion {
		if n > limit {
			t.Fatalf("v%d encrypted %d times, limit %d (latest v%d)", v, n, limit, k.LatestVersion)
		}
	}
}

// TestUsageSmallBlocks: a limit below the block size is reserved in blocks
// of limit/16; two replicas share each version instead of the first taking
// it whole; reserved and used are reported apart; Close gives the unspent
// rest of a block back.
func TestUsageSmallBlocks(t *testing.T) {
	f := newFixture(t, func(c *Config) { c.UsageBlock = DefaultUsageBlock })
	ctx := context.Background()
	const limit = 160 // blocks of 10
	f.create("sb", pb.TransitKeyType_TRANSIT_KEY_TYPE_AES256_GCM, wrapped, func(r *pb.CreateKeyRequest) { r.MaxEncryptionsPerVersion = limit })
	b := newEngine(t, f)
	f.encrypt("sb", nil, nil, nil)
	k, err := f.e.GetKey(ctx, "sb")
	if err != nil {
		t.Fatal(err)
	}
	if got := k.Versions[0]; got.GetReserved() != 10 || got.GetUsed() != 1 {
		t.Fatalf("after 1 encryption: reserved %d used %d, want 10 and 1", got.GetReserved(), got.GetUsed())
	}
	kb, err := b.GetKey(ctx, "sb")
	if err != nil {
		t.Fatal(err)
	}
	if got := kb.Versions[0]; got.GetReserved() != 10 || got.GetUsed() != 10 {
		t.Fatalf("seen from another replica: reserved %d used %d, want 10 and 10 (its blocks unknown there)", got.GetReserved(), got.GetUsed())
	}
	// Two replicas in turns: v1 serves (nearly) its whole limit.
	perVersion := map[uint32]int{1: 1}
	for i := range 200 {
		e := []*Engine{f.e, b}[i%2]
		r, err := e.Encrypt(ctx, &pb.EncryptRequest{Name: "sb", Items: []*pb.EncryptItem{{}}})
		if err != nil {
			t.Fatal(err)
		}
		v, _, _ := ParseVersion(r.Results[0].Ciphertext)
		perVersion[v]++
	}
	if perVersion[1] < limit-2*10 || perVersion[1] > limit {
		t.Fatalf("v1 served %d of its %d in turns by two replicas (%v), want at least %d", perVersion[1], limit, perVersion, limit-20)
	}
	// Close returns the unspent rest: the store then counts what was used.
	k, _ = f.e.GetKey(ctx, "sb")
	latest := k.Versions[len(k.Versions)-1]
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
	f.reopen()
	k, err = f.e.GetKey(ctx, "sb")
	if err != nil {
		t.Fatal(err)
	}
	got := k.Versions[len(k.Versions)-1]
	if got.GetReserved() != uint64(perVersion[latest.Version]) || got.GetUsed() != got.GetReserved() {
		t.Fatalf("v%d after both engines closed: reserved %d used %d, want %d encryptions done (was reserved %d)",
			latest.Version, got.GetReserved(), got.GetUsed(), perVersion[latest.Version], latest.GetReserved())
	}
}

// syncBuffer is a bytes.Buffer for a logger that goroutines share.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// faultyKEK is the real KEK whose Unwrap fails (Unavailable) while broken.
type faultyKEK struct {
	Wrapper
	broken atomic.Bool
}

func (k *faultyKEK) Unwrap(ctx context.Context, w []byte) ([]byte, error) {
	if k.broken.Load() {
		return nil, errs.New(errs.Unavailable, "test: HSM away")
	}
	return k.Wrapper.Unwrap(ctx, w)
}

// TestCommittedRotationSucceeds: a rotation whose new snapshot cannot be
// built after the write (the KEK cannot unwrap the new version for a
// moment) reports success, logs the cause, and the key serves the new
// version once the KEK is back. Before, RotateKey answered Unavailable for a
// rotation that had happened.
func TestCommittedRotationSucceeds(t *testing.T) {
	var logs syncBuffer
	kek := &faultyKEK{}
	f := newFixture(t, func(c *Config) {
		kek.Wrapper = c.KEK
		c.KEK = kek
		c.Logger = slog.New(slog.NewTextHandler(&logs, nil))
	})
	ctx := context.Background()
	f.create("rot", pb.TransitKeyType_TRANSIT_KEY_TYPE_AES256_GCM, wrapped)
	f.encrypt("rot", nil, nil, nil)
	kek.broken.Store(true)
	k, err := f.e.RotateKey(ctx, "rot")
	if err != nil {
		t.Fatalf("RotateKey that committed answered %v", err)
	}
	if k.LatestVersion != 2 {
		t.Fatalf("RotateKey answered latest v%d, want v2", k.LatestVersion)
	}
	if l := logs.String(); !strings.Contains(l, "key written") || !strings.Contains(l, "HSM away") {
		t.Fatalf("post-commit problem not logged with its cause: %q", logs.String())
	}
	kek.broken.Store(false)
	if v, _, _ := ParseVersion(f.encrypt("rot", nil, nil, nil)); v != 2 {
		t.Fatalf("encrypted with v%d after the rotation, want v2", v)
	}
}

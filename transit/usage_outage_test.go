package transit

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hsmgate/hsmgate/keystore"
	pb "github.com/hsmgate/hsmgate/proto/hsmgate/v1"
)

// stalledUsageStore is the real store, except that once stalled every call
// on a usage counter waits delay and then fails with ErrUnavailable, as the
// etcd store answers when its member is frozen and its request timeout
// runs out.
type stalledUsageStore struct {
	keystore.Store
	stalled atomic.Bool
	delay   time.Duration
	calls   atomic.Int64
}

func (s *stalledUsageStore) stall(ctx context.Context, key string) error {
	if !s.stalled.Load() || !strings.HasPrefix(key, UsagePrefix) {
		return nil
	}
	s.calls.Add(1)
	select {
	case <-time.After(s.delay):
	case <-ctx.Done():
		return ctx.Err()
	}
	return fmt.Errorf("stalled store: %w", keystore.ErrUnavailable)
}

func (s *stalledUsageStore) Get(ctx context.Context, key string) (keystore.Entry, error) {
	if err := s.stall(ctx, key); err != nil {
		return keystore.Entry{}, err
	}
	return s.Store.Get(ctx, key)
}

func (s *stalledUsageStore) Put(ctx context.Context, key string, v []byte, expect int64) (int64, error) {
	if err := s.stall(ctx, key); err != nil {
		return 0, err
	}
	return s.Store.Put(ctx, key, v, expect)
}

// TestUsageRefillOutageCostsOneTimeout: while the store does not answer,
// callers that queue for the same version's next usage block get the
// failed refill's Unavailable at once, instead of each trying the store in
// turn (8 store calls on the old code, the last caller waiting 8 store
// timeouts); and the next refill, once the store answers again, succeeds.
func TestUsageRefillOutageCostsOneTimeout(t *testing.T) {
	const delay = 400 * time.Millisecond
	f := newFixture(t, func(c *Config) { c.UsageBlock = 4 })
	f.create("outage", pb.TransitKeyType_TRANSIT_KEY_TYPE_AES256_GCM, wrapped, func(r *pb.CreateKeyRequest) {
		r.MaxEncryptionsPerVersion = 1 << 20
	})
	f.e.Close()
	ss := &stalledUsageStore{Store: f.store, delay: delay}
	cfg := f.cfg
	cfg.Store = ss
	e, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	f.e = e // closed by the fixture
	ctx := context.Background()
	enc := func() error {
		r, err := e.Encrypt(ctx, &pb.EncryptRequest{Name: "outage", Items: []*pb.EncryptItem{{Plaintext: []byte("x")}}})
		if err != nil {
			return err
		}
		if ie := r.Results[0].GetError(); ie != nil {
			return errors.New(ie.GetMessage())
		}
		return nil
	}
	for range 4 { // use up the first block of 4
		if err := enc(); err != nil {
			t.Fatal(err)
		}
	}

	ss.stalled.Store(true)
	const callers = 8
	var wg sync.WaitGroup
	var failed atomic.Int64
	var longest atomic.Int64
	for range callers {
		wg.Go(func() {
			start := time.Now()
			if err := enc(); err != nil {
				failed.Add(1)
			}
			d := int64(time.Since(start))
			for cur := longest.Load(); d > cur && !longest.CompareAndSwap(cur, d); cur = longest.Load() {
			}
		})
	}
	wg.Wait()
	t.Logf("%d callers while stalled: %d failed, longest %s, %d store calls (store timeout %s)",
		callers, failed.Load(), time.Duration(longest.Load()), ss.calls.Load(), delay)
	if failed.Load() != callers {
		t.Errorf("%d of %d encryptions failed while the store was stalled, want all", failed.Load(), callers)
	}
	// The callers queued behind one refill share its answer: one store
	// call (two if a caller was scheduled only after the first refill had
	// ended), where the old code made one per caller, each waiting out the
	// timeout in turn.
	if got := ss.calls.Load(); got > 2 {
		t.Errorf("%d stalled store calls for %d queued callers, want 1 (2 at most)", got, callers)
	}

	ss.stalled.Store(false)
	if err := enc(); err != nil {
		t.Fatalf("encrypt once the store answers again: %v", err)
	}
}

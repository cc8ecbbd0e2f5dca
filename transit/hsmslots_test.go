package transit

import (
	"context"
	"sync"
	"sync/atomic"
	"testing"

	pb "github.com/hsmgate/hsmgate/proto/hsmgate/v1"
)

// countingHSM records the most AES-GCM calls that were ever in flight at once.
type countingHSM struct {
	moduleHSM
	now, max atomic.Int32
}

type countingAEAD struct {
	AEAD
	h *countingHSM
}

func (h *countingHSM) AEAD(ctx context.Context, label string) (AEAD, error) {
	a, err := h.moduleHSM.AEAD(ctx, label)
	if err != nil {
		return nil, err
	}
	return countingAEAD{a, h}, nil
}

func (h *countingHSM) enter() func() {
	n := h.now.Add(1)
	for {
		m := h.max.Load()
		if n <= m || h.max.CompareAndSwap(m, n) {
			break
		}
	}
	return func() { h.now.Add(-1) }
}

func (a countingAEAD) SealContext(ctx context.Context, dst, nonce, pt, aad []byte) ([]byte, error) {
	defer a.h.enter()()
	return a.AEAD.SealContext(ctx, dst, nonce, pt, aad)
}

func (a countingAEAD) OpenContext(ctx context.Context, dst, nonce, ct, aad []byte) ([]byte, error) {
	defer a.h.enter()()
	return a.AEAD.OpenContext(ctx, dst, nonce, ct, aad)
}

// Concurrent batches of hsm-resident AES-GCM keys share the engine's
// HSMAEADConcurrency slots: with 1, no two HSM AES-GCM calls overlap.
func TestHSMAEADConcurrencyIsEngineWide(t *testing.T) {
	var h *countingHSM
	f := newFixture(t, func(c *Config) {
		h = &countingHSM{moduleHSM: c.HSM.(moduleHSM)}
		c.HSM = h
		c.HSMAEADConcurrency = 1
	})
	f.create("k", pb.TransitKeyType_TRANSIT_KEY_TYPE_AES256_GCM, inHSM)
	ctx := context.Background()
	items := make([]*pb.EncryptItem, 20)
	for i := range items {
		items[i] = &pb.EncryptItem{Plaintext: []byte("payload")}
	}
	var wg sync.WaitGroup
	for range 6 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			r, err := f.e.Encrypt(ctx, &pb.EncryptRequest{Name: "k", Items: items})
			if err != nil {
				t.Error(err)
				return
			}
			dec := &pb.DecryptRequest{Name: "k"}
			for _, x := range r.Results {
				dec.Items = append(dec.Items, &pb.DecryptItem{Ciphertext: x.Ciphertext})
			}
			if _, err := f.e.Decrypt(ctx, dec); err != nil {
				t.Error(err)
			}
		}()
	}
	wg.Wait()
	if got := h.max.Load(); got != 1 {
		t.Errorf("at most %d HSM AES-GCM calls in flight, want 1", got)
	}
	t.Run("a cancelled wait still answers", func(t *testing.T) {
		f.e.hsmAEAD <- struct{}{} // every slot taken
		defer func() { <-f.e.hsmAEAD }()
		cctx, cancel := context.WithCancel(ctx)
		cancel()
		if _, err := f.e.Encrypt(cctx, &pb.EncryptRequest{Name: "k", Items: items[:1]}); err == nil {
			t.Error("Encrypt with a cancelled context and no free slot: no error, want the context's")
		}
	})
}

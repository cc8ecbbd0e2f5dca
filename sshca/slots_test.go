package sshca

import (
	"context"
	"crypto"
	"io"
	"sync"
	"sync/atomic"
	"testing"

	"golang.org/x/crypto/ssh"

	"github.com/hsmgate/hsmgate/hsm"
	pb "github.com/hsmgate/hsmgate/proto/hsmgate/v1"
)

// countingKeys records the most HSM signatures ever in flight at once.
type countingKeys struct {
	hsm.Keys
	now, max atomic.Int32
}

type countingSigner struct {
	crypto.Signer
	k *countingKeys
}

func (k *countingKeys) SigningKey(ctx context.Context, label string) (crypto.Signer, error) {
	s, err := k.Keys.SigningKey(ctx, label)
	if err != nil {
		return nil, err
	}
	return countingSigner{s, k}, nil
}

func (s countingSigner) Sign(r io.Reader, digest []byte, opts crypto.SignerOpts) ([]byte, error) {
	n := s.k.now.Add(1)
	defer s.k.now.Add(-1)
	for m := s.k.max.Load(); n > m && !s.k.max.CompareAndSwap(m, n); m = s.k.max.Load() {
	}
	return s.Signer.Sign(r, digest, opts)
}

// Concurrent signing requests share the engine's SignConcurrency slots: with
// 2, no more than two HSM signatures overlap, however many batches run.
func TestSignConcurrencyIsEngineWide(t *testing.T) {
	env := newEnv(t)
	env.createCA(t, "users", userCT, pb.SSHKeyType_SSH_KEY_TYPE_ECDSA_P256)
	env.createRole(t, &pb.SSHRole{Name: "eng", Ca: "users", AllowedPrincipals: []string{"alice"}})
	keys := &countingKeys{Keys: env.e.keys}
	e, err := New(context.Background(), Config{Store: env.e.store, Keys: keys, Caller: env.caller.get, Now: env.clock.Now, SignConcurrency: 2})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { e.Close() })
	const requests, items = 8, 16
	var wg sync.WaitGroup
	errc := make(chan error, requests)
	for range requests {
		batch := make([]*pb.SSHSignItem, items)
		for i := range batch {
			_, subject := ed25519Key(t)
			batch[i] = &pb.SSHSignItem{PublicKey: subject, Principals: []string{"alice"}}
		}
		wg.Go(func() {
			res, err := e.Sign(context.Background(), userCT, "eng", batch)
			if err != nil {
				errc <- err
				return
			}
			for _, r := range res {
				if r.GetError() != nil {
					errc <- statusErr{r.GetError()}
					return
				}
				if _, _, _, _, err := ssh.ParseAuthorizedKey([]byte(r.GetCertificate())); err != nil {
					errc <- err
					return
				}
			}
		})
	}
	wg.Wait()
	close(errc)
	for err := range errc {
		t.Fatal(err)
	}
	if got := keys.max.Load(); got < 1 || got > 2 {
		t.Fatalf("at most %d HSM signatures were in flight at once, want 1 or 2 (SignConcurrency 2)", got)
	}
}

package hsm_test

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/sha256"
	"errors"
	"testing"

	"github.com/hsmgate/hsmgate/hsm"
	"github.com/hsmgate/hsmgate/hsm/hsmtest"
)

// TestKeysSeam: *Module is the Keys that pki and sshca use, with no
// adapter: a generated key signs through SigningKey, the signer bound with
// WithContext carries the request's context to the HSM (a cancelled
// request signs nothing), and a destroyed key is gone.
func TestKeysSeam(t *testing.T) {
	var keys hsm.Keys = hsmtest.Module(t)
	ctx := context.Background()
	if err := keys.GenerateKey(ctx, "seam", hsm.ECDSAP256); err != nil {
		t.Fatal(err)
	}
	if err := keys.GenerateKey(ctx, "seam", hsm.ECDSAP256); !errors.Is(err, hsm.ErrKeyExists) {
		t.Errorf("GenerateKey twice: got %v, want ErrKeyExists", err)
	}
	s, err := keys.SigningKey(ctx, "seam")
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := s.(hsm.ContextSigner); !ok {
		t.Fatalf("SigningKey: got %T, want a ContextSigner", s)
	}
	digest := sha256.Sum256([]byte("to be signed"))
	t.Run("bound signer signs", func(t *testing.T) {
		sig, err := hsm.WithContext(ctx, s).Sign(nil, digest[:], crypto.SHA256)
		if err != nil {
			t.Fatal(err)
		}
		if !ecdsa.VerifyASN1(s.Public().(*ecdsa.PublicKey), digest[:], sig) {
			t.Errorf("signature does not verify")
		}
	})
	t.Run("cancelled request signs nothing", func(t *testing.T) {
		cctx, cancel := context.WithCancel(ctx)
		cancel()
		if _, err := hsm.WithContext(cctx, s).Sign(nil, digest[:], crypto.SHA256); !errors.Is(err, context.Canceled) {
			t.Errorf("Sign with a cancelled context: got %v, want context.Canceled", err)
		}
	})
	t.Run("plain signer unchanged", func(t *testing.T) {
		var plain crypto.Signer = struct{ crypto.Signer }{s}
		if got := hsm.WithContext(ctx, plain); got != plain {
			t.Errorf("WithContext of a context-free signer: got %T, want it unchanged", got)
		}
	})
	if err := keys.DestroyKey(ctx, "seam"); err != nil {
		t.Fatal(err)
	}
	if _, err := keys.SigningKey(ctx, "seam"); !errors.Is(err, hsm.ErrKeyNotFound) {
		t.Errorf("SigningKey after DestroyKey: got %v, want ErrKeyNotFound", err)
	}
}

package transit

import (
	"context"
	"crypto"

	"github.com/hsmgate/hsmgate/internal/clock"
)

// Wrapper is the deployment KEK: it wraps and unwraps key material (inside
// the HSM, CKM_AES_KEY_WRAP_PAD). *hsm.KEK implements it.
type Wrapper interface {
	// Label names the KEK; every stored blob records it.
	Label() string
	// Wrap encrypts key material under the KEK. Errors of kind Unavailable
	// when the HSM is away.
	Wrap(ctx context.Context, plaintext []byte) ([]byte, error)
	// Unwrap reverses Wrap; an InvalidArgument-kind error if the blob does
	// not authenticate, Unavailable when the HSM is away.
	Unwrap(ctx context.Context, wrapped []byte) ([]byte, error)
}

// AEAD is an HSM-resident AES-GCM key with caller-made 12-byte nonces.
// *hsm.AEAD implements it.
type AEAD interface {
	// SealContext appends ciphertext||tag to dst; InvalidArgument-kind error
	// on a nonce that is not 12 bytes.
	SealContext(ctx context.Context, dst, nonce, plaintext, aad []byte) ([]byte, error)
	// OpenContext reverses SealContext; InvalidArgument-kind error when
	// authentication fails.
	OpenContext(ctx context.Context, dst, nonce, ciphertext, aad []byte) ([]byte, error)
}

// Signer is an HSM-resident private key. *hsm.Signer implements it.
type Signer interface {
	crypto.Signer
	// SignContext signs a digest (Ed25519: the message, opts.HashFunc() == 0);
	// *rsa.PSSOptions selects PSS.
	SignContext(ctx context.Context, digest []byte, opts crypto.SignerOpts) ([]byte, error)
}

// MAC is an HSM-resident HMAC key.
type MAC interface {
	// SumContext returns the HMAC of msg.
	SumContext(ctx context.Context, msg []byte) ([]byte, error)
}

// HSM is the slice of the HSM module that transit uses. The adapter in
// transit/transithsm wraps *hsm.Module. Errors carry internal/errs kinds
// (Unavailable when the HSM is away, NotFound for a missing label).
type HSM interface {
	// GenerateKey makes a non-extractable key of keyType ("aes256",
	// "ecdsa-p256", "ecdsa-p384", "ed25519", "rsa-2048"...) with this label.
	GenerateKey(ctx context.Context, label, keyType string) error
	// DestroyKey deletes the object(s) with this label; NotFound if absent.
	DestroyKey(ctx context.Context, label string) error
	// AEAD returns the AES key with this label.
	AEAD(ctx context.Context, label string) (AEAD, error)
	// Signer returns the private key with this label.
	Signer(ctx context.Context, label string) (Signer, error)
	// MAC returns the HMAC key ("hmac-sha256", "hmac-sha512") with this label, for hash h.
	MAC(ctx context.Context, label string, h crypto.Hash) (MAC, error)
	// Random returns n bytes from the HSM's RNG.
	Random(ctx context.Context, n int) ([]byte, error)
}

// Clock tells the time; tests inject a fake one (clock/clocktest).
type Clock = clock.Clock

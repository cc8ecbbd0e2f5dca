// Package tinkaead plugs hsmgate into Tink (github.com/tink-crypto/tink-go/v2)
// as a KMS: AEAD is a tink.AEAD (and tink.AEADWithContext) whose operations
// are transit Encrypt and Decrypt under one hsmgate key, and KMSClient is a
// registry.KMSClient for key URIs "hsmgate://<key name>".
//
// The usual use is Tink's envelope encryption, where hsmgate wraps only the
// data keys and Tink encrypts the data locally:
//
//	remote := tinkaead.New(c.Transit, "payments")
//	a := aead.NewKMSEnvelopeAEAD2(aead.AES256GCMKeyTemplate(), remote)
//	ct, err := a.Encrypt(plaintext, associatedData)
//
// It is its own package so that programs using the client without Tink do
// not compile Tink.
package tinkaead

import (
	"context"
	"fmt"
	"strings"

	"github.com/tink-crypto/tink-go/v2/core/registry"
	"github.com/tink-crypto/tink-go/v2/tink"

	"github.com/hsmgate/hsmgate/client"
)

// URIPrefix starts the key URIs KMSClient serves.
const URIPrefix = "hsmgate://"

// AEAD encrypts and decrypts with one transit key. Ciphertexts are binary
// transit ciphertexts (0x01 | uvarint(version) | nonce | sealed); the
// associated data is transit's. Methods without a context run with the
// Client's Timeout.
type AEAD struct {
	t   *client.Transit
	key string
}

var (
	_ tink.AEAD            = (*AEAD)(nil)
	_ tink.AEADWithContext = (*AEAD)(nil)
	_ registry.KMSClient   = (*KMSClient)(nil)
)

// New returns the AEAD of transit key.
func New(t *client.Transit, key string) *AEAD { return &AEAD{t: t, key: key} }

// Encrypt implements tink.AEAD.
func (a *AEAD) Encrypt(plaintext, associatedData []byte) ([]byte, error) {
	return a.EncryptWithContext(context.Background(), plaintext, associatedData)
}

// Decrypt implements tink.AEAD.
func (a *AEAD) Decrypt(ciphertext, associatedData []byte) ([]byte, error) {
	return a.DecryptWithContext(context.Background(), ciphertext, associatedData)
}

// EncryptWithContext implements tink.AEADWithContext.
func (a *AEAD) EncryptWithContext(ctx context.Context, plaintext, associatedData []byte) ([]byte, error) {
	ct, err := a.t.Encrypt(ctx, a.key, plaintext, client.WithAAD(associatedData))
	if err != nil {
		return nil, fmt.Errorf("tinkaead: encrypt: %w", err)
	}
	return ct, nil
}

// DecryptWithContext implements tink.AEADWithContext.
func (a *AEAD) DecryptWithContext(ctx context.Context, ciphertext, associatedData []byte) ([]byte, error) {
	pt, err := a.t.Decrypt(ctx, a.key, ciphertext, client.WithAAD(associatedData))
	if err != nil {
		return nil, fmt.Errorf("tinkaead: decrypt: %w", err)
	}
	return pt, nil
}

// KMSClient serves key URIs hsmgate://<key name> from one Client.
type KMSClient struct{ t *client.Transit }

// NewKMSClient returns a KMS client over t; register it with
// registry.RegisterKMSClient to resolve hsmgate:// URIs in Tink keysets.
func NewKMSClient(t *client.Transit) *KMSClient { return &KMSClient{t: t} }

// Supported reports whether keyURI is an hsmgate:// URI.
func (k *KMSClient) Supported(keyURI string) bool {
	name, ok := strings.CutPrefix(keyURI, URIPrefix)
	return ok && name != ""
}

// GetAEAD returns the AEAD of the key named by keyURI.
func (k *KMSClient) GetAEAD(keyURI string) (tink.AEAD, error) {
	if !k.Supported(keyURI) {
		return nil, fmt.Errorf("tinkaead: key URI %q: want %s<key name>: %w", keyURI, URIPrefix, client.ErrInvalidArgument)
	}
	return New(k.t, strings.TrimPrefix(keyURI, URIPrefix)), nil
}

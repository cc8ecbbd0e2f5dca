package hsm

import (
	"context"
	"crypto"
	"io"
)

// Keys is the HSM as the certificate authorities (pki and sshca) use it:
// key pairs made inside the token or adopted by PKCS#11 URI, reached only
// as crypto.Signer. *Module implements it; a test may wrap one to watch or
// corrupt signatures.
type Keys interface {
	// GenerateKey makes a non-extractable key pair with this label;
	// ErrKeyExists if the label is taken.
	GenerateKey(ctx context.Context, label string, kt KeyType) error
	// SigningKey returns the private key with this label (see
	// Module.Signer for the signature forms); ErrKeyNotFound if absent.
	// When the result is a ContextSigner, bind the request's context to it
	// with WithContext.
	SigningKey(ctx context.Context, label string) (crypto.Signer, error)
	// DestroyKey deletes the key pair; ErrKeyNotFound if absent.
	DestroyKey(ctx context.Context, label string) error
	// AdoptKey adopts the existing key that uri names, of one of the
	// allowed types (any when none); ErrNotAdoptable, ErrUnsupported,
	// ErrKeyNotFound or ErrInvalidInput when it cannot (Module.AdoptKey).
	AdoptKey(ctx context.Context, uri string, allowed ...KeyType) (Adopted, error)
}

var _ Keys = (*Module)(nil)

// SigningKey is Signer as a crypto.Signer, the form Keys gives: a *Signer,
// so a ContextSigner.
func (m *Module) SigningKey(ctx context.Context, label string) (crypto.Signer, error) {
	s, err := m.Signer(ctx, label)
	if err != nil {
		return nil, err
	}
	return s, nil
}

// ContextSigner is a crypto.Signer whose signatures also take a context
// (deadline and cancellation reach every HSM call). *Signer is one.
type ContextSigner interface {
	crypto.Signer
	SignContext(ctx context.Context, digest []byte, opts crypto.SignerOpts) ([]byte, error)
}

var _ ContextSigner = (*Signer)(nil)

// BoundSigner is a ContextSigner whose Sign passes Ctx to SignContext: for
// crypto/x509, x/crypto/ocsp and x/crypto/ssh, which sign through the
// context-free crypto.Signer interface during one request.
type BoundSigner struct {
	ContextSigner
	Ctx context.Context
}

// Sign signs with b.Ctx; the randomness source is the HSM's own.
func (b BoundSigner) Sign(_ io.Reader, digest []byte, opts crypto.SignerOpts) ([]byte, error) {
	return b.SignContext(b.Ctx, digest, opts)
}

// WithContext binds ctx to s when s takes a context (a BoundSigner), else
// returns s unchanged.
func WithContext(ctx context.Context, s crypto.Signer) crypto.Signer {
	if cs, ok := s.(ContextSigner); ok {
		return BoundSigner{ContextSigner: cs, Ctx: ctx}
	}
	return s
}

package hsm

// API CONTRACT (written first so that other packages compile against it; the
// hsm helper replaces every panic with the real implementation and may split
// this file, but keeps these names and signatures).

import (
	"context"
	"crypto"
	"crypto/cipher"
	"io"
	"log/slog"
	"time"

	"github.com/hsmgate/hsmgate/internal/errs"
)

// Sentinel errors (match with errors.Is).
var (
	// ErrUnavailable: the HSM cannot be used now (sessions closed, token
	// removed, not logged in, pool wait timed out). The server answers Unavailable.
	ErrUnavailable = errs.New(errs.Unavailable, "hsm: unavailable")
	// ErrKeyNotFound: no object with that label.
	ErrKeyNotFound = errs.New(errs.NotFound, "hsm: key not found")
	// ErrKeyExists: an object with that label exists already.
	ErrKeyExists = errs.New(errs.AlreadyExists, "hsm: key exists")
	// ErrInvalidNonce: a GCM nonce that is missing or not 12 bytes.
	ErrInvalidNonce = errs.New(errs.InvalidArgument, "hsm: invalid nonce")
	// ErrInvalidInput: malformed input to an operation (bad wrapped blob, wrong digest size...).
	ErrInvalidInput = errs.New(errs.InvalidArgument, "hsm: invalid input")
	// ErrUnsupported: the key type or mechanism is not supported by this module.
	ErrUnsupported = errs.New(errs.FailedPrecondition, "hsm: unsupported")
)

// Config opens a module. PIN is the resolved secret: callers read it from an
// environment variable or a file (see ResolvePIN), never from YAML.
type Config struct {
	Library     string        // path to the PKCS#11 module, e.g. /usr/lib/softhsm/libsofthsm2.so
	TokenLabel  string        // token to use
	PIN         string        // user PIN
	MaxSessions int           // size of the session pool; default 8
	WaitTimeout time.Duration // longest wait for a pooled session when ctx has no deadline; default 10s
	Logger      *slog.Logger  // nil: slog.Default()
}

// ResolvePIN returns the PIN from the environment variable env if set, else
// from the file at path (trailing newline trimmed); an error if neither yields one.
func ResolvePIN(env, path string) (string, error) { panic("unimplemented") }

// KeyType names a key type the HSM can generate.
type KeyType string

const (
	AES256    KeyType = "aes256"
	ECDSAP256 KeyType = "ecdsa-p256"
	ECDSAP384 KeyType = "ecdsa-p384"
	RSA2048   KeyType = "rsa-2048"
	RSA3072   KeyType = "rsa-3072"
	RSA4096   KeyType = "rsa-4096"
	Ed25519   KeyType = "ed25519"
)

// Module is an open PKCS#11 token with a logged-in, bounded session pool.
type Module struct{}

// Open loads the library (once per path per process; "already initialised"
// is tolerated), finds the token by label and logs in.
func Open(ctx context.Context, cfg Config) (*Module, error) { panic("unimplemented") }

// Close returns the pool's sessions. The library itself is finalised only by Finalize at process exit.
func (m *Module) Close() error { panic("unimplemented") }

// TokenLabel is the label of the token in use.
func (m *Module) TokenLabel() string { panic("unimplemented") }

// Ping checks that the token answers with a logged-in session; ErrUnavailable if not.
func (m *Module) Ping(ctx context.Context) error { panic("unimplemented") }

// Random returns n bytes from the HSM's RNG.
func (m *Module) Random(ctx context.Context, n int) ([]byte, error) { panic("unimplemented") }

// Rand is an io.Reader over the HSM's RNG (for crypto APIs that take one).
func (m *Module) Rand() io.Reader { panic("unimplemented") }

// EnsureKEK finds the AES-256 key-encryption key with this label, or creates
// it (CKA_TOKEN, CKA_SENSITIVE, CKA_EXTRACTABLE=false, CKA_WRAP/CKA_UNWRAP=true,
// no encrypt/decrypt/sign). created reports whether it was made now.
func (m *Module) EnsureKEK(ctx context.Context, label string) (kek *KEK, created bool, err error) {
	panic("unimplemented")
}

// KEK finds an existing KEK by label; ErrKeyNotFound if absent.
func (m *Module) KEK(ctx context.Context, label string) (*KEK, error) { panic("unimplemented") }

// KEK is the deployment's key-encryption key inside the HSM.
type KEK struct{}

// Label names the KEK; stored blobs record it.
func (k *KEK) Label() string { panic("unimplemented") }

// Wrap encrypts key material under the KEK with CKM_AES_KEY_WRAP_PAD (RFC 5649).
func (k *KEK) Wrap(ctx context.Context, plaintext []byte) ([]byte, error) { panic("unimplemented") }

// Unwrap reverses Wrap; ErrInvalidInput if the blob does not authenticate.
func (k *KEK) Unwrap(ctx context.Context, wrapped []byte) ([]byte, error) { panic("unimplemented") }

// GenerateKey makes a non-extractable token key (or key pair) of type kt with
// this label: one object per key version. ErrKeyExists if the label is taken.
func (m *Module) GenerateKey(ctx context.Context, label string, kt KeyType) error {
	panic("unimplemented")
}

// DestroyKey deletes the key (both halves of a pair) with this label; ErrKeyNotFound if absent.
func (m *Module) DestroyKey(ctx context.Context, label string) error { panic("unimplemented") }

// AEAD returns the AES-256 key with this label as an AES-GCM AEAD with
// 12-byte nonces and 16-byte tags. ErrKeyNotFound if absent.
func (m *Module) AEAD(ctx context.Context, label string) (*AEAD, error) { panic("unimplemented") }

// AEAD is an HSM-resident AES-GCM key. It implements cipher.AEAD (the methods
// without ctx use a background context bounded by Config.WaitTimeout and
// panic like crypto/cipher on a bad nonce length); prefer the Context forms,
// which return ErrInvalidNonce instead.
type AEAD struct{}

var _ cipher.AEAD = (*AEAD)(nil)

func (a *AEAD) NonceSize() int { return 12 }
func (a *AEAD) Overhead() int  { return 16 }
func (a *AEAD) Seal(dst, nonce, plaintext, additionalData []byte) []byte {
	panic("unimplemented")
}
func (a *AEAD) Open(dst, nonce, ciphertext, additionalData []byte) ([]byte, error) {
	panic("unimplemented")
}

// SealContext appends the GCM encryption of plaintext (ciphertext||tag) to dst.
// The nonce is made by the caller and must be exactly 12 bytes (ErrInvalidNonce).
func (a *AEAD) SealContext(ctx context.Context, dst, nonce, plaintext, aad []byte) ([]byte, error) {
	panic("unimplemented")
}

// OpenContext reverses SealContext; ErrInvalidInput if authentication fails.
func (a *AEAD) OpenContext(ctx context.Context, dst, nonce, ciphertext, aad []byte) ([]byte, error) {
	panic("unimplemented")
}

// Signer returns the private key with this label as a crypto.Signer
// (ECDSA: ASN.1 DER signatures over a digest; RSA: PKCS#1 v1.5, or PSS when
// opts is *rsa.PSSOptions; Ed25519: pure Ed25519 over the message, opts.HashFunc() == 0).
func (m *Module) Signer(ctx context.Context, label string) (*Signer, error) { panic("unimplemented") }

// Signer is an HSM-resident private key.
type Signer struct{}

var _ crypto.Signer = (*Signer)(nil)

func (s *Signer) Public() crypto.PublicKey { panic("unimplemented") }
func (s *Signer) Sign(rand io.Reader, digest []byte, opts crypto.SignerOpts) ([]byte, error) {
	panic("unimplemented")
}

// SignContext is Sign with a context; opts nil means SHA-256 for ECDSA/RSA.
func (s *Signer) SignContext(ctx context.Context, digest []byte, opts crypto.SignerOpts) ([]byte, error) {
	panic("unimplemented")
}

// KeyType of the signer.
func (s *Signer) KeyType() KeyType { panic("unimplemented") }

package hsm

// API CONTRACT: other packages compile against these names and signatures.
// The implementation lives in the other files of the package.

import (
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

	// Reconnects after a fault back off exponentially with jitter, from
	// ReconnectBackoff (default 50ms) up to MaxReconnectBackoff (default 5s).
	ReconnectBackoff    time.Duration
	MaxReconnectBackoff time.Duration
}

// Defaults of Config.
const (
	DefaultMaxSessions = 8
	DefaultWaitTimeout = 10 * time.Second

	DefaultReconnectBackoff    = 50 * time.Millisecond
	DefaultMaxReconnectBackoff = 5 * time.Second
)

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
	// HMAC keys: generic secrets of 32 and 64 bytes, for Module.MAC.
	HMACSHA256 KeyType = "hmac-sha256"
	HMACSHA512 KeyType = "hmac-sha512"
)

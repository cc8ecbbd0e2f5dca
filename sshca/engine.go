package sshca

import (
	"context"
	"crypto"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"runtime"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/hsmgate/hsmgate/hsm"
	"github.com/hsmgate/hsmgate/internal/auth"
	"github.com/hsmgate/hsmgate/internal/errs"
	"github.com/hsmgate/hsmgate/internal/limits"
	"github.com/hsmgate/hsmgate/keystore"
)

// Sentinel errors (match with errors.Is; wrapped with details).
var (
	// ErrCANotFound: no CA with that name.
	ErrCANotFound = errs.New(errs.NotFound, "sshca: CA not found")
	// ErrRoleNotFound: no role with that name.
	ErrRoleNotFound = errs.New(errs.NotFound, "sshca: role not found")
	// ErrExists: a CA or role with that name exists already.
	ErrExists = errs.New(errs.AlreadyExists, "sshca: already exists")
	// ErrInvalid: a malformed CA, role or revocation request.
	ErrInvalid = errs.New(errs.InvalidArgument, "sshca: invalid argument")
	// ErrNotAllowed: a signing request asks for something its role does not allow.
	ErrNotAllowed = errs.New(errs.InvalidArgument, "sshca: not allowed by role")
	// ErrWrongType: a user role used for host keys, or the reverse; a role
	// whose CA has the other type.
	ErrWrongType = errs.New(errs.FailedPrecondition, "sshca: wrong certificate type")
	// ErrState: a key version cannot change state that way (e.g. retiring the active one).
	ErrState = errs.New(errs.FailedPrecondition, "sshca: invalid key state change")
	// ErrSerialNotFound: revoking a serial that was never recorded, without naming a CA.
	ErrSerialNotFound = errs.New(errs.NotFound, "sshca: serial not found")
	// ErrTooManyItems: more items in one request than Config.MaxItems.
	ErrTooManyItems = errs.New(errs.ResourceExhausted, "sshca: too many items")
)

// Caller is who asks for a certificate: the vouched identity whose name and
// metadata fill principal templates, and the request id that goes into the
// key ID.
type Caller struct {
	// Name and Metadata: what an administrator or identity provider vouches
	// for (auth.Identity.Entity and EntityMetadata), never a token's display
	// name or free metadata. Empty when nothing is vouched: then templates
	// naming them allow nothing.
	Name     string
	Metadata map[string]string
	// Label names the caller in key IDs and issuance records when Name is
	// empty (e.g. "token-<accessor prefix>"); it never fills a principal.
	Label string
	// RequestID: the request's id as the auth interceptor validated it.
	RequestID string
}

// label is what {{identity.name}} gives in a key ID and what the issuance
// record names.
func (c Caller) label() string {
	if c.Name != "" {
		return c.Name
	}
	return c.Label
}

// CallerFunc tells who is calling. It returns an error only for an internal fault.
type CallerFunc func(ctx context.Context) (Caller, error)

// DefaultCaller takes the vouched identity from auth.FromContext and the
// request id the auth interceptor chose and validated (auth.RequestID);
// without one (no interceptor), a random id.
func DefaultCaller(ctx context.Context) (Caller, error) {
	var c Caller
	if id, ok := auth.FromContext(ctx); ok {
		c.Name, c.Metadata = id.Entity, id.EntityMetadata
		if c.Name == "" {
			c.Label = string(id.Kind)
			if len(id.Accessor) >= 12 {
				c.Label = "token-" + id.Accessor[:12]
			}
		}
	}
	c.RequestID, _ = auth.RequestID(ctx)
	if c.RequestID == "" {
		var b [8]byte
		if _, err := rand.Read(b[:]); err != nil {
			return c, err
		}
		c.RequestID = hex.EncodeToString(b[:])
	}
	return c, nil
}

// Config configures an Engine.
type Config struct {
	// Store holds CAs, roles, issuance records and revocations (required).
	Store keystore.Store
	// Keys makes, adopts and signs with the CA keys (required): an *hsm.Module.
	Keys hsm.Keys
	// Caller tells who is calling; nil: DefaultCaller.
	Caller CallerFunc
	// Now is the clock; nil: time.Now.
	Now func() time.Time
	// Rand is the randomness for serials, certificate nonces and key labels
	// (safe for concurrent use: a batch signs in parallel); nil: crypto/rand.
	Rand io.Reader
	// MaxItems bounds the items of one signing request; 0:
	// limits.MaxItemsPerRequest (1000), the default of every engine.
	MaxItems int
	// Logger receives the HTTP endpoints' internal errors; nil: slog.Default().
	Logger *slog.Logger
	// SignConcurrency bounds the HSM signatures in flight across all
	// requests of the engine: enough to keep the HSM busy while some calls
	// wait on its locks, few enough that concurrent batches do not pile
	// threads on it (SoftHSM slows down then); 0: 4 x GOMAXPROCS.
	SignConcurrency int
	// Cache configures the cache of roles and CAs (grace period of degraded
	// service while the store is out of reach, clock); see keystore.Cache.
	Cache keystore.CacheOptions
}

// Engine is the SSH CA. It is safe for concurrent use.
type Engine struct {
	store    keystore.Store
	keys     hsm.Keys
	caller   CallerFunc
	now      func() time.Time
	rand     io.Reader
	log      *slog.Logger
	maxItems int
	slots    chan struct{} // one per HSM signature in flight, engine-wide

	mu      sync.Mutex
	signers map[string]crypto.Signer // by HSM label

	krl atomic.Pointer[krlSnapshot]

	cache *keystore.Cache[any] // roles, CAs and denied keys for signing (cache.go)

	metrics *metrics // metrics.go
}

// New returns an engine and makes sure the revocation record (and so an
// empty KRL) exists.
func New(ctx context.Context, cfg Config) (*Engine, error) {
	if cfg.Store == nil || cfg.Keys == nil {
		return nil, errors.New("sshca: Config.Store and Config.Keys are required")
	}
	e := &Engine{
		store:    cfg.Store,
		keys:     cfg.Keys,
		caller:   cfg.Caller,
		now:      cfg.Now,
		rand:     cfg.Rand,
		log:      cfg.Logger,
		maxItems: cfg.MaxItems,
		signers:  map[string]crypto.Signer{},
		metrics:  newMetrics(),
	}
	if e.caller == nil {
		e.caller = DefaultCaller
	}
	if e.now == nil {
		e.now = time.Now
	}
	if e.rand == nil {
		e.rand = rand.Reader
	}
	if e.log == nil {
		e.log = slog.Default()
	}
	if e.maxItems <= 0 {
		e.maxItems = limits.MaxItemsPerRequest
	}
	conc := cfg.SignConcurrency
	if conc <= 0 {
		conc = 4 * runtime.GOMAXPROCS(0)
	}
	e.slots = make(chan struct{}, conc)
	if err := e.ensureRevocationList(ctx); err != nil {
		return nil, err
	}
	copts := cfg.Cache
	if copts.Logger == nil {
		copts.Logger = e.log
	}
	c, err := newCache(e.store, copts)
	if err != nil {
		return nil, fmt.Errorf("sshca: watch roles and CAs: %w", err)
	}
	e.cache = c
	return e, nil
}

// Close stops the engine's watch of the store. The store and the HSM stay
// open (they belong to the caller).
func (e *Engine) Close() error {
	e.cache.Close()
	return nil
}

// Store keys.
const (
	prefixCAs    = "ssh/cas/"
	prefixRoles  = "ssh/roles/"
	prefixIssued = "ssh/issued/"
	keyKRL       = "ssh/krl"
)

// getProto reads key into m and returns its revision.
func (e *Engine) getProto(ctx context.Context, key string, m proto.Message) (int64, error) {
	ent, err := e.store.Get(ctx, key)
	if err != nil {
		return 0, err
	}
	if err := proto.Unmarshal(ent.Value, m); err != nil {
		return 0, fmt.Errorf("sshca: decode %s: %w", key, err)
	}
	return ent.Revision, nil
}

func (e *Engine) putProto(ctx context.Context, key string, m proto.Message, expect int64) (int64, error) {
	b, err := proto.MarshalOptions{Deterministic: true}.Marshal(m)
	if err != nil {
		return 0, fmt.Errorf("sshca: encode %s: %w", key, err)
	}
	rev, err := e.store.Put(ctx, key, b, expect)
	e.dropCached(key)
	return rev, err
}

// dropCached forgets a role or CA this engine just wrote: its next use
// reads what was written, without waiting for the Watch (an unconditional
// drop: after a failed write too, when the store may have changed).
func (e *Engine) dropCached(key string) {
	if e.cache != nil { // nil while New writes the first revocation record
		e.cache.Invalidate(key)
	}
}

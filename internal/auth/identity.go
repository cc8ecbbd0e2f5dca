package auth

import (
	"context"

	"github.com/hsmgate/hsmgate/internal/errs"
)

// Kind says how an identity was authenticated.
type Kind string

const (
	KindMTLS  Kind = "mtls"
	KindToken Kind = "token"
	KindJWT   Kind = "jwt"
	KindRoot  Kind = "root"
)

// Identity is an authenticated caller.
//
// Name and Metadata describe the caller for people (audit lines, LookupSelf);
// for a token they are its display name and free metadata, which whoever
// created the token chose. Entity and EntityMetadata are what an
// administrator or an identity provider vouches for: the certificate's
// subject, the JWT's claims, or the entity an administrator bound to a token
// (inherited by its children). Only the vouched fields may decide anything:
// SSH principals, rate-limit buckets.
type Identity struct {
	// Name: the URI SAN or CN of a certificate, the display name of a token
	// ("token-<accessor prefix>" when it has none), or the configured claim of
	// a JWT. Informational: never a principal.
	Name string
	Kind Kind
	// Policies bound to the identity (ignored for root).
	Policies []string
	// Metadata: JWT claims mapped to strings, certificate facts, token
	// metadata. Informational, like Name.
	Metadata map[string]string
	// Accessor of the token for token and root identities; empty otherwise.
	Accessor string
	// Entity: the vouched name (certificate subject, JWT claim, or the entity
	// bound to a token); empty for a token bound to none.
	Entity string
	// EntityMetadata: vouched facts (certificate facts, JWT claims, a token's
	// entity metadata).
	EntityMetadata map[string]string
	// Lineage: for tokens, the accessor of the first token of the lineage
	// (a child made by a non-root token shares its parent's).
	Lineage string

	// rateKey is RateKey, made once for an identity that serves many
	// requests (a cached token's); "" elsewhere.
	rateKey string
}

// RateKey is the key of the identity's rate-limit bucket: its vouched entity
// when it has one (every token bound to an entity shares that entity's
// bucket), else its token lineage (a token and the children it made share
// one bucket), else kind and name.
func (id *Identity) RateKey() string {
	if id.rateKey != "" {
		return id.rateKey
	}
	switch {
	case id.Entity != "":
		return "entity:" + id.Entity
	case id.Lineage != "":
		return "lineage:" + id.Lineage
	case id.Accessor != "":
		return "lineage:" + id.Accessor
	}
	return "id:" + string(id.Kind) + ":" + id.Name
}

// Root reports whether the identity bypasses policy.
func (id *Identity) Root() bool { return id != nil && id.Kind == KindRoot }

// Sentinel errors of the package.
var (
	// ErrUnauthenticated: no credential, or a bad, expired or revoked one.
	ErrUnauthenticated = errs.New(errs.Unauthenticated, "auth: unauthenticated")
	// ErrPermissionDenied: the identity's policies do not allow the request.
	ErrPermissionDenied = errs.New(errs.PermissionDenied, "auth: permission denied")
	// ErrNoRule: the method has no rule in the table.
	ErrNoRule = errs.New(errs.PermissionDenied, "auth: method has no authorization rule")
	// ErrRateLimited: a rate limit was exceeded.
	ErrRateLimited = errs.New(errs.ResourceExhausted, "auth: rate limit exceeded")
	// ErrInvalid: a malformed policy, token request or name.
	ErrInvalid = errs.New(errs.InvalidArgument, "auth: invalid argument")
	// ErrNotFound: no such policy or token.
	ErrNotFound = errs.New(errs.NotFound, "auth: not found")
	// ErrNotRenewable: the token cannot be renewed.
	ErrNotRenewable = errs.New(errs.FailedPrecondition, "auth: token is not renewable")
)

type identityKey struct{}

// WithIdentity returns ctx carrying id.
func WithIdentity(ctx context.Context, id *Identity) context.Context {
	return context.WithValue(ctx, identityKey{}, id)
}

// FromContext returns the identity the interceptor put in ctx.
func FromContext(ctx context.Context) (*Identity, bool) {
	id, ok := ctx.Value(identityKey{}).(*Identity)
	return id, ok && id != nil
}

type requestIDKey struct{}

type anonymousKey struct{}

// IsAnonymous reports whether the interceptor admitted the request in ctx
// without credentials under an Anonymous rule: its handler must answer the
// public part only.
func IsAnonymous(ctx context.Context) bool {
	v, _ := ctx.Value(anonymousKey{}).(bool)
	return v
}

// RequestID returns the id the interceptor gave the request (the caller's
// "x-request-id" when valid, else a random one): the request_id of its audit lines.
func RequestID(ctx context.Context) (string, bool) {
	id, ok := ctx.Value(requestIDKey{}).(string)
	return id, ok && id != ""
}

func withCall(ctx context.Context, id *Identity, reqID string) context.Context {
	return &callCtx{Context: ctx, id: id, reqID: reqID}
}

// callCtx is a handler's context: its identity and request id in one
// allocation (WithIdentity and a second WithValue make two).
type callCtx struct {
	context.Context
	id    *Identity
	reqID string
}

func (c *callCtx) Value(k any) any {
	switch k.(type) {
	case identityKey:
		return c.id
	case requestIDKey:
		return c.reqID
	}
	return c.Context.Value(k)
}

type remoteKey struct{}

// WithRemote records the client address of a connection (its string, made
// once per connection by the server's stats handler) in the connection's
// context: the remote of its requests' audit lines.
func WithRemote(ctx context.Context, addr string) context.Context {
	return context.WithValue(ctx, remoteKey{}, &addr)
}

// Remote returns the client address WithRemote recorded for the connection.
func Remote(ctx context.Context) (string, bool) {
	r, ok := ctx.Value(remoteKey{}).(*string)
	if !ok {
		return "", false
	}
	return *r, true
}

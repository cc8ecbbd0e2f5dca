// Package auth authenticates and authorises every hsmgate request.
// How it fits with the rest (the threat model): docs/architecture.md.
//
// # Identities
//
// A request carries at most one credential, looked for in this order:
//
//   - a bearer token in the "authorization: Bearer <token>" metadata (or, for
//     HTTP, the Authorization or X-Vault-Token header). A value starting with
//     "hgs." is an hsmgate token; any other value is treated as a JWT when an
//     OIDC issuer is configured. A bad bearer credential is refused
//     (Unauthenticated); there is no fall-back to the client certificate.
//   - a client certificate verified by the TLS layer (tls.VerifyClientCertIfGiven
//     with the configured client CAs). The identity is the first URI SAN (e.g.
//     spiffe://example.org/ns/payments/sa/api), else the subject CN; policies
//     come from MTLSConfig.Mappings (first glob matching the name).
//
// Tokens are "hgs." followed by 32 random bytes in unpadded base64url. Only the
// hex SHA-256 of a token is stored (keystore key auth/tokens/<sha256-hex>); that
// hash is the token's accessor, used to look up, renew and revoke it. The stored
// hash is compared with the presented one in constant time. Tokens have a TTL, a
// max TTL that renewal cannot pass, a renewable flag, bound policies and a root
// flag. A root identity bypasses policy, like Vault's root token. EnsureRoot
// stores a root token that never expires (dev mode's, or one made offline by
// `hsmgate token root`); a non-root caller can only create tokens bound to
// policies it holds itself. A token created by a token is its child: its
// expiry and max expiry stay within the parent's, and revoking a token revokes
// its descendants (root callers may create orphans, which are not tied). Token records are cached and the cache is
// invalidated by Watch, so a revocation on one replica reaches the others. After a watch gap (compaction, a lost
// member, a silent network noticed by the cache's probe) the cache is rebuilt from the store before it is trusted
// again, so a revocation made meanwhile is never missed. While the store is out of reach, tokens and policies cached
// before are accepted for Config.Cache.Grace (store.degraded_grace; 0: never), and the request's audit line carries
// extra.degraded; a token this replica saw revoked stays refused (see keystore.Cache).
//
// # Vouched identity
//
// An Identity has two kinds of fields. Name and Metadata describe the caller
// to people (audit lines, LookupSelf): for a token they are its display name
// and metadata, which whoever created the token chose, so they decide
// nothing. Entity and EntityMetadata are what an administrator or an identity
// provider vouches for: a certificate's subject and facts (the client CA
// vouches), a JWT's claims (the issuer vouches), or the entity bound to a
// token. Only those fill SSH principal templates ({{identity.name}},
// {{identity.metadata.*}}) and key rate-limit buckets.
//
// A token's entity and entity metadata are set at creation by a root caller,
// or by a caller holding admin on auth/entities/<entity> (vouching is an
// administrator's act); otherwise a token inherits its creator's (a token
// made by an mTLS or JWT identity carries that subject), and a child can
// never shed or change what it inherited. A token bound to no entity fills
// no template.
//
// Rate limits are per vouched identity: the entity when there is one (every
// token bound to it shares the bucket), else the token's lineage: a token
// made by a non-root token keeps its creator's lineage, so minting children
// never multiplies the limit, while tokens made by root start their own (two
// unrelated tokens with the same display name never share a bucket).
//
// JWTs are verified with go-oidc against a JWKS from a file or a URL: issuer,
// audience, expiry and signature are checked; a configurable claim (e.g.
// "preferred_username" or "email") names the identity, and a groups claim maps to
// policies.
//
// # Policies
//
// A policy is a named list of rules: a resource glob, capabilities, and an
// effect (allow or deny). A request is allowed when some rule of the identity's
// policies allows the capability on the resource and no rule denies it:
// explicit deny wins, and the default is deny.
//
// Glob semantics: '*' is the only special character and matches any run of
// characters, '/' included, possibly empty. So "transit/keys/payments-*"
// matches "transit/keys/payments-eu", "transit/*" matches every transit
// resource, and "*" matches everything. There is no escaping: resource names
// never contain '*'.
//
// Policies live in the keystore under auth/policies/<name> as hsmgate.v1.Policy
// messages; they are cached in memory and the cache is invalidated by Watch, so
// replicas agree after a change.
//
// # The interceptor
//
// Interceptor.Unary and Interceptor.Stream decide every RPC from one Table.
// A method missing from the table is refused with PermissionDenied (it is a
// wiring mistake; CheckTableCovers lets a test prove that every registered
// method has a rule). Public rules skip authentication and the audit log (health
// checks, reflection). Anonymous rules (hsmgate status) admit a unary request
// with no credentials at all, without an identity, unaudited and rate limited
// per client address (RateLimitConfig.Anonymous, default 5/s, burst 20); the
// handler sees IsAnonymous and answers its public part only. With any
// credential the request is authenticated and authorised as usual, so a bad
// token is refused, never downgraded. For client and bidi streams, the rule's Resource func is
// applied to every received message, and each message is authorised, rate
// limited and audited before the handler sees it.
//
// Order for one request: find the rule, authenticate, compute the resource,
// authorise, rate limit, write the audit request line (fail closed: the handler
// never runs when it cannot be written, the caller gets Unavailable), run the
// handler, write the audit response line (if that fails, the caller gets
// Unavailable rather than the result). Refusals are audited too, with one
// exception: unauthenticated and rate-limited refusals, which any network
// peer can cause in bulk, are counted (hsmgate_auth_refusals_total{reason})
// and sampled: at most Options.RefusalAuditRate lines per second of each
// (default 10), the next line written carrying extra.suppressed, the number
// left out since the previous one. So a flood of refused requests cannot fill
// the disk, which would stop the (fail-closed) service.
//
// The request id is chosen here, in one place: the caller's x-request-id
// (HTTP X-Request-Id) when it is 1 to 64 characters of [A-Za-z0-9._-], else a
// random one. It is returned in the x-request-id header, written in the audit
// lines, added to the server's call log line, and given to handlers by
// RequestID (the SSH CA puts it in key IDs); nothing reads the raw header.
//
// Errors reach the client as a status mapped by errs.GRPCStatus. An Internal
// error is logged by the interceptor, once, with its cause, the method and the
// request id; the client only sees "internal error". Handlers therefore
// return domain errors, not statuses they made (which would lose the cause).
//
// Interceptor.HTTP applies the same steps to an HTTP handler (credentials
// from Authorization: Bearer, X-Vault-Token or the client certificate);
// HTTPGate lets handlers be wrapped before the interceptor exists.
//
// # Rate limits
//
// Token buckets (golang.org/x/time/rate) per identity and per resource, one
// token per request (a batch counts as one request). The per-identity limit is
// the default, or the most generous override among the identity's policies; a
// per-resource limit applies to the first configured glob matching the
// resource, with one bucket per resource. Buckets live in a bounded LRU map.
// Refusals are ResourceExhausted.
package auth

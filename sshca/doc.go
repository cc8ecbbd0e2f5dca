// Package sshca is hsmgate's SSH certificate authority: CA keys in the HSM,
// roles that bound what a certificate may contain, user and host certificate
// issuance, and revocation through an OpenSSH KRL (package sshca/krl).
// How it fits with the rest (the store schema and the threat model): docs/architecture.md.
//
// # CAs
//
// A CA (store key ssh/cas/<name>) signs either user or host certificates,
// never both, so that the TrustedUserCAKeys file and the @cert-authority
// lines never trust a key for the wrong purpose. Each CA has key versions,
// each a non-extractable HSM key (label sshca/<name>/v<n>-<random>) of type
// ecdsa-p256, ecdsa-p384, ed25519, rsa-3072 or rsa-4096, used only as a
// crypto.Signer. RSA CAs sign certificates with rsa-sha2-512 (default) or
// rsa-sha2-256, never with ssh-rsa (SHA-1): the signer handed to
// golang.org/x/crypto/ssh offers exactly one algorithm.
//
// Rotation adds an ACTIVE version and turns the previous one RETIRING: it
// stops signing but stays published, so that certificates it issued keep
// working while clients and servers pick up the new key. A RETIRING version
// becomes RETIRED (unpublished; its certificates stop being trusted by sshd
// once TrustedUserCAKeys / known_hosts are refreshed) by RetireCAKey, or by
// itself once the CA's rotation overlap has passed (evaluated against the
// injected clock on every read, so no background job is needed).
//
// # Roles
//
// A role (ssh/roles/<name>) names a CA and holds the allow-lists. The
// choices, where Vault and step-ca differ:
//
//   - Principals: a request's principals, or the role's default principals
//     when it names none, must each match an allowed pattern. Patterns are
//     literals, wildcards (`*` matches within one DNS label, as PKI's globs
//     do: "*.example.com" is not "a.b.example.com"; `**` matches across
//     labels, for a role that means it), and templates {{identity.name}} and
//     {{identity.metadata.<key>}} filled from the caller's vouched identity
//     (auth.Identity.Entity and EntityMetadata: a certificate subject, a JWT
//     claim, or the entity an administrator bound to a token, which its
//     children inherit), never from a token's display name or free metadata,
//     which whoever minted the token chose. The substituted text is always
//     literal, never a wildcard; a token bound to no entity fills no
//     template. A certificate
//     with no principals is never issued: OpenSSH treats an empty list as
//     "any principal" (CVE-2024-7594 is the same mistake in Vault).
//   - TTL: a request longer than max_ttl is refused, not clamped; valid_after
//     is backdated by the role's backdate (default 1 minute) for clock skew.
//   - Extensions (user roles): a request names the extensions it wants, each
//     in allowed_extensions; with none named, default_extensions apply.
//   - Critical options (user roles): critical_options are forced on every
//     certificate and cannot be changed by a request; a request may add
//     options named in allowed_critical_options. Only force-command,
//     source-address (validated CIDR list) and verify-required exist.
//     Host roles allow neither extensions nor critical options.
//   - Subject keys: allowed families with a minimum size; by default
//     ed25519, ecdsa >= 256, rsa >= 3072, sk-ecdsa and sk-ed25519 (FIDO
//     keys). DSA and RSA below 2048 bits are never accepted; a certificate
//     is not accepted as the key to certify. The public key of any CA here
//     (every CA, every version, whatever its state) and any key revoked by
//     key or fingerprint are never certified, on the user and host paths
//     alike (InvalidArgument for the item): a certificate for a CA key,
//     revoked by key, would put the CA key in the KRL and switch the whole
//     CA off in sshd. For the same reason a CA key cannot be revoked by key
//     or fingerprint (rotate and retire it instead). The set of refused keys
//     is kept in memory and dropped whenever a CA or the revocation record
//     changes, like the roles and CAs below.
//   - Key ID: a template over {{identity.name}}, {{request_id}}, {{role}},
//     {{ca}}, {{serial}} and {{principals}}; by default
//     "{{identity.name}}:{{role}}:{{request_id}}", so that the audit log and
//     a key ID revocation can name a person or a request. In a key ID,
//     {{identity.name}} is the vouched name, or "token-<accessor prefix>"
//     for a token bound to none; {{request_id}} is the id the auth
//     interceptor validated and audited (auth.RequestID), never the raw
//     x-request-id header.
//
// Serial numbers are random, 64-bit and nonzero (a collision needs about
// 2^32 certificates; none is checked for, as that would cost a store write
// per certificate). Every signing request is recorded in the store
// (ssh/issued/<UTC day>/<time>-<serial>, one record per request) before any
// certificate is returned: serial, CA key, key ID, principals, validity,
// subject key fingerprint, role, identity and request id. Revoking a serial
// without naming its CA finds the CA key in these records, newest day first,
// over the longest max_ttl of the current roles.
//
// Signing reads its role and CA from memory: the engine keeps those it has
// used and drops one whenever it changes, at once for its own writes and,
// for other replicas' writes, when the store's Watch delivers the change
// (milliseconds; after a watch gap the cache is rebuilt before it is
// trusted, and while the store is out of reach what it holds serves only
// for Config.Cache.Grace, audited as degraded). So a request does
// not read the store (with etcd, two round trips) unless something changed.
//
// # Revocation
//
// Revocations (by serial, key ID, public key or SHA-256 fingerprint) are
// kept in one store record (ssh/krl) updated by compare-and-swap, from which
// the KRL is generated deterministically; every replica serves the same bytes,
// regenerated whenever the record's revision changes. The record, and so an
// empty KRL, exists from the start: sshd refuses every key when its
// RevokedKeys file is missing.
//
// # HTTP
//
// RegisterHTTP serves, without authentication (they are public by nature):
// /v1/ssh/trusted-user-ca-keys (sshd's TrustedUserCAKeys file),
// /v1/ssh/known-hosts (@cert-authority lines for ssh's known_hosts) and
// /v1/ssh/krl (sshd's RevokedKeys file).
package sshca

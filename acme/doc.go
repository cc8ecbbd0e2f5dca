// Package acme is hsmgate's ACME server (RFC 8555), with External Account
// Binding, tls-alpn-01 (RFC 8737), IP identifiers (RFC 8738) and ARI
// (RFC 9773). Each directory (acme/dirs/<name>) is bound to a PKI role:
// names are checked by that role at newOrder (pki.Service.CheckNames) and
// certificates are issued through pki.Service.Sign, so they get the same
// role checks, zlint gate, HSM signature and certificate record as
// PKIService.Sign; revocation goes through pki.Service.Revoke (CRL, OCSP).
//
// Served under /acme/<dir>/ on the HTTPS listener: directory, new-nonce,
// new-account, new-order, revoke-cert, key-change, renewal-info/<certID>,
// acct/<id>[/orders], order/<id>[/finalize], authz/<id>,
// chall/<authz>/<type>, cert/<serial>.
//
// Decisions:
//
//   - JWS (RFC 8555 6.2) is parsed and verified by hand (jws.go): flattened
//     form only, protected header only, ES256/ES384 (P-256/P-384),
//     RS256 (>= 2048 bits), EdDSA (Ed25519); jwk only on new-account and
//     revoke-cert, kid (an existing, valid account of the same directory)
//     everywhere else; "url" must equal BaseURL + the request path. go-jose
//     parses JWKs and computes thumbprints only. The nonce is consumed last,
//     so a request refused for its form or signature does not burn it.
//   - All state is in the keystore as JSON documents (store.go lists the
//     keys): nonces, accounts and their key index, orders, authorizations,
//     certificates issued, EAB keys, the per-account order and authorization
//     indexes. Every update is compare-and-swap on the entry's revision, so
//     replicas on etcd agree (TestReplicasOnEtcd).
//   - Nonces: 128 random bits, stored with their expiry (Config.NonceLifetime,
//     default 10 minutes); using one deletes it with CAS on the revision read,
//     so of two requests racing with one nonce only one wins. Run sweeps
//     expired ones.
//   - EAB keys: the HMAC key must be known to check a binding, so it is
//     stored wrapped by the deployment's KEK in the HSM (Config.Wrapper),
//     never in clear and never as a useless one-way hash; it is shown once
//     by CreateEAB and unwrapped only to verify a MAC (constant-time compare).
//     A key is single-use: claiming it is a CAS write naming the account.
//   - EAB policy (eabpolicy.go): a key may carry allowed domain suffixes and
//     a max of new orders per UTC day; the account it binds copies them and
//     newOrder enforces them (rejectedIdentifier; rateLimited with a count
//     in the keystore, shared by replicas), on top of the role's checks.
//   - Validation runs in Config.Workers goroutines fed by a bounded queue
//     (Config.QueueSize); a full queue answers rateLimited with Retry-After,
//     never validates inside the request. http-01 reads at most 1 KiB, follows
//     at most 10 redirects to http:80 or https:443 only, never connects to
//     unspecified, multicast or link-local addresses (cloud metadata), and
//     does not quote what it fetched. Connection, DNS and TLS failures are
//     retried (Config.ValidationAttempts). Config.Validation is a TEST-ONLY
//     redirection of validation connections to loopback ports; its zero value
//     is the real thing. A validation queued on a replica that dies is taken
//     up again by any replica's Sweep once it has been processing too long.
//   - Limits (limits.go): rates of new orders (per account and per IP), new
//     accounts (per IP) and failed validations (per account) are token
//     buckets in each replica's memory; the open-order cap and authorization
//     reuse use keystore indexes and hold across replicas.
//   - Every request is audited (audit.go): a request line naming the account
//     before anything changes (fail closed: 503 if it cannot be written), a
//     response line with the status, problem type, account and order.
//   - notBefore in the future is refused (certificates start when signed, with
//     the role's backdate); notAfter may not be further than the role's max_ttl.
//   - Finalize (finalize.go) sets the order processing, has the role sign,
//     names the serial in the order, then writes the certificate record: the
//     commit point. After it, finalize answers success whatever happens to
//     the write that marks the order valid (retried); an order left
//     processing is settled by its next read: valid when the certificate it
//     names is recorded, ready again (finalize may be retried) when it has
//     been processing for finalizeStale without one.
//   - Revocation: by the account that ordered the certificate (kid) or with the
//     certificate's own key (jwk); reasons 0, 1, 3, 4, 5, 9.
//   - Download: the default chain is the issuer's (leaf, issuer, its chain).
//     When another of our CAs cross-signed the issuer, each such chain
//     (leaf, cross certificate, signer and its chain) is served at
//     .../cert/<serial>/<n> and named in Link rel="alternate" headers
//     (RFC 8555 7.4.2), computed once at finalize.
package acme

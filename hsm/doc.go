// Package hsm is hsmgate's only door to PKCS#11: it opens a token, keeps a
// bounded pool of logged-in sessions, and offers the deployment KEK (wrap and
// unwrap with CKM_AES_KEY_WRAP_PAD), HSM-resident AES-256-GCM keys as
// cipher.AEAD, ECDSA/RSA/Ed25519 keys as crypto.Signer, and the HSM's RNG.
// How it fits with the rest (the key hierarchy): docs/architecture.md.
//
// # Binding
//
// The package speaks PKCS#11 through github.com/miekg/pkcs11 directly and
// does not use crypto11. crypto11 would help with little (finding keys,
// ECDSA/RSA signers) and stands in the way of most of what is required here:
// its session pool does not honour a context, gives broken sessions back to
// the pool (upstream issue #142) and blocks forever with PoolWaitTimeout 0;
// it has no KWP, no Ed25519, a 16-byte default GCM nonce, and panics on AEAD
// Seal, on a double Close and on RSA Sign with nil opts. Owning the session
// pool is what makes recovery possible, and with the pool in hand the rest
// is a few PKCS#11 calls each.
//
// # Sessions and recovery
//
// The library is loaded and C_Initialize'd once per path per process
// (CKR_CRYPTOKI_ALREADY_INITIALIZED is tolerated) and finalised only by
// Finalize, at process exit. A Module finds its token by label and keeps at
// most Config.MaxSessions read-write sessions, opened lazily and logged in as
// the user. Waiting for a free session honours ctx; without a deadline in
// ctx the wait is bounded by Config.WaitTimeout and ends in ErrUnavailable.
// A PKCS#11 call itself cannot be interrupted once made.
//
// A failed call is handled by what failed:
//
//   - lost login (CKR_USER_NOT_LOGGED_IN, or a session found in the public
//     state, e.g. after a C_Logout from another context): the token is logged
//     in again through that session (which is alive and stays in the pool)
//     and the operation retried once;
//   - token not answering C_GetTokenInfo while the session still works (what
//     SoftHSM does when a token's directory goes away): the session stays in
//     the pool, the token is looked up again by label and, if found, the
//     operation retried once;
//   - dead session or token (CKR_SESSION_HANDLE_INVALID, CKR_SESSION_CLOSED,
//     CKR_TOKEN_NOT_PRESENT, CKR_DEVICE_REMOVED, CKR_DEVICE_ERROR, ...): the
//     session is never returned to the pool;
//     every session of the pool's current generation is presumed dead and
//     dropped (never closed: its handle number may already belong to a new
//     session), the token is looked up again by
//     label (it may come back in another slot), a new session is opened and
//     logged in, and the operation retried once.
//
// If the retry fails too, or the token cannot be found or logged in to, the
// error wraps ErrUnavailable; the next call tries again, so the Module works
// again as soon as the token is back, without being reopened. Before a lookup
// answers ErrKeyNotFound it checks that the session is logged in and that
// the token answers, so that a token that went away reads as ErrUnavailable
// and not as a missing key.
//
// The Module never calls C_CloseAllSessions and closes sessions only in
// Close: SoftHSM 2.6.1 crashes (SIGSEGV) when sessions are closed under a
// thread that is inside a call on them (seen here; softhsm/SoftHSMv2 #688,
// #464), and closing a session also destroys the key copies it made (below).
// The tests close sessions from outside only between rounds of calls.
//
// Objects are found by label, CKA_CLASS and CKA_TOKEN=true. The handle cached
// for a key is that of a session-object copy of it (C_CopyObject with
// CKA_TOKEN=false; sensitivity and non-extractability are kept, and the
// tests check it for the KEK), because SoftHSM re-reads a token object's file
// on each use: measured here, AES-GCM on a copy is about 2.5x faster and
// ECDSA about 1.3x. A copy lives as long as the pooled session that made it;
// handles are cached per pool generation, the cache is cleared on recovery
// and on re-login, and a handle that turns stale (CKR_OBJECT_HANDLE_INVALID,
// CKR_KEY_HANDLE_INVALID) is forgotten and the operation retried once with
// the object found and copied afresh. DestroyKey removes the token objects
// and this process's copies; a key destroyed by another process stays
// usable here through its copy until the session that holds it goes, so
// callers retire a key version in the key store before destroying its object.
//
// # SoftHSM
//
// SoftHSM reads SOFTHSM2_CONF once, at C_Initialize, and does not see a
// token created (by softhsm2-util) or brought back after that in the same
// process; see hsm/softhsm and hsm/hsmtest.
//
// # Keys
//
// The KEK is an AES-256 token object: CKA_PRIVATE, CKA_SENSITIVE,
// CKA_EXTRACTABLE=false, CKA_WRAP/CKA_UNWRAP only. Wrap turns the material
// into a short-lived session object (CKK_GENERIC_SECRET, sensitive,
// extractable) and wraps it with C_WrapKey; Unwrap unwraps into a session
// object, reads CKA_VALUE and destroys it. The wrapped plaintext is the
// material followed by 0x80 and zeros up to a multiple of 8 bytes
// (ISO/IEC 7816-4 padding): SoftHSM 2.6.1 returns KWP unwraps with their
// RFC 5649 padding still attached, and with input that needs no KWP padding
// Unwrap is exact on every token. A blob is therefore KWP(material || 80 00..).
// SoftHSM reports a blob that fails its integrity check as CKR_GENERAL_ERROR;
// Unwrap maps it to ErrInvalidInput.
//
// GenerateKey makes one token object (or pair) per label, with a random
// CKA_ID shared by both halves of a pair. Private and secret keys are
// CKA_PRIVATE, CKA_SENSITIVE and non-extractable. AES-256 keys encrypt and
// decrypt with CKM_AES_GCM, 12-byte nonces from the caller (anything else is
// ErrInvalidNonce before the HSM is called: SoftHSM accepts an empty IV) and
// 16-byte tags. ECDSA signs digests with CKM_ECDSA, and the raw r||s is
// returned as ASN.1 DER. RSA signs PKCS#1 v1.5 with CKM_RSA_PKCS over
// DigestInfo||digest, and PSS with CKM_RSA_PKCS_PSS (salt as long as the hash
// for PSSSaltLengthAuto and PSSSaltLengthEqualsHash). Ed25519 keys are made
// with CKM_EC_EDWARDS_KEY_PAIR_GEN and CKA_EC_PARAMS = the RFC 8410 OID
// 1.3.101.112 (SoftHSM also accepts the PrintableString "edwards25519") and
// sign with CKM_EDDSA (pure Ed25519 only). A Signer reads its public key once.
//
// Errors are ErrUnavailable, ErrKeyNotFound, ErrKeyExists, ErrInvalidNonce,
// ErrInvalidInput and ErrUnsupported (match with errors.Is); other PKCS#11
// failures are returned wrapped and map to Internal. No error or log line
// carries a PIN or key material.
package hsm

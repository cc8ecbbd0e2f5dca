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
// Finalize, at process exit. All calls go through the PKCS11 interface (the
// part of *pkcs11.Ctx used here), where tests put hsm/hsmfault to inject
// faults. A Module finds its token by label and keeps at most
// Config.MaxSessions read-write pool sessions, opened lazily and logged in as
// the user, plus one "keeper" session that holds the key copies (below).
// Waiting for a free session honours ctx; without a deadline in ctx the
// wait is bounded by Config.WaitTimeout and ends in ErrUnavailable. A
// PKCS#11 call itself cannot be interrupted, so when ctx has a deadline the
// work runs on a goroutine of its own: the caller returns when ctx ends
// (ErrUnavailable wrapping ctx's error), and the goroutine puts the session
// back when the library returns. A hung call keeps its place in the pool;
// a pool full of hung calls answers waiters by their deadline. (Without a
// deadline the call runs on the caller's goroutine, which saves the
// hand-off, a few microseconds; a hang then holds the caller.)
//
// A failed call is handled by what failed:
//
//   - lost login (CKR_USER_NOT_LOGGED_IN, or a key search that finds
//     nothing in a session found in the public state, e.g. after a C_Logout
//     from another context): the token is logged in again through that
//     session (which is alive and stays in the pool) and the operation
//     retried once; if logging in fails, or the retry finds the login lost
//     again, the answer is ErrUnavailable. A search that finds nothing in a
//     logged-in session is repeated once before ErrKeyNotFound, since the
//     token may have been logged in again between the search and the check
//     of the session's state: a key that exists never reads as not found;
//   - token not answering C_GetTokenInfo while the session still works (what
//     SoftHSM does when a token's directory goes away): the session stays in
//     the pool, the token is looked up again by label and, if found, the
//     operation retried once;
//   - dead session or token (CKR_SESSION_HANDLE_INVALID, CKR_SESSION_CLOSED,
//     CKR_TOKEN_NOT_PRESENT, CKR_DEVICE_REMOVED, CKR_DEVICE_ERROR, ...): the
//     session is closed (C_CloseSession; "handle invalid" means that it was
//     gone already), never returned to the pool; the keeper is checked
//     (C_GetSessionInfo) and retired if it does not answer; a new session is
//     opened (the token looked up again by label if its slot is gone: it may
//     come back in another slot) and logged in, and the operation retried
//     once. Other pool sessions are not presumed dead: each is closed and
//     replaced when a call finds it dead;
//   - CKR_OPERATION_ACTIVE (an operation left behind): the session is closed.
//
// A session whose C_CloseSession fails stays registered as unclosed, and the
// slot is reset (C_CloseAllSessions, which also closes the pool's and the
// keeper's sessions; the pool then starts afresh) as soon as the Module can
// take every place of its pool, so that no session is in use; while
// MaxSessions sessions wait for that reset, no new session is opened and
// calls answer ErrUnavailable. So the sessions of a Module in the library
// number at most 2*MaxSessions+2 (pool, unclosed, keeper and a failed
// keeper), and MaxSessions+1 once the device answers again.
//
// Reconnects (opening a session after a fault, and slot resets) back off:
// the first reconnect after a healthy period is immediate (one fault costs
// one retry), each one that fails doubles the wait, from
// Config.ReconnectBackoff up to Config.MaxReconnectBackoff, with jitter (a
// random wait in [d/2, d]), and a call that succeeds clears it. Callers that
// arrive while a wait runs make one attempt between them; a caller whose ctx
// ends before the attempt is due gets ErrUnavailable at once; one without a
// deadline waits. If the retry fails too, or the token cannot be found or
// logged in to, the error wraps ErrUnavailable; the Module works again as
// soon as the token is back, without being reopened. Before a lookup answers
// ErrKeyNotFound it checks that the session is logged in and that the token
// answers, so that a token that went away reads as ErrUnavailable and not as
// a missing key.
//
// Closing a session must never destroy objects that another thread is
// using, nor a session that another thread is inside a call on: SoftHSM
// 2.6.1 crashes (SIGSEGV) then (seen here; softhsm/SoftHSMv2 #688, #464).
// Pool sessions therefore own no long-lived objects (the key copies are the
// keeper's), a session is closed only by the goroutine that holds it, and
// the keeper is closed, and the slot reset, only while the Module holds every
// place of its pool. Each session handle is registered when opened and
// unregistered when closed, and opens and closes are serialised, so that a
// handle number that the library gave out again (after closing a session
// behind our back) is never closed or used for the old session. A slot
// reset closes every session of the process on that slot: one Module per
// token per process.
//
// Objects are found by label, CKA_CLASS and CKA_TOKEN=true. The handle cached
// for a key is that of a session-object copy of it (C_CopyObject with
// CKA_TOKEN=false, made in the keeper session; sensitivity and
// non-extractability are kept, and the tests check it for the KEK), because
// SoftHSM re-reads a token object's file on each use: measured here, AES-GCM
// on a copy is about 2.5x faster and ECDSA about 1.3x. The cache is cleared
// when the keeper is retired or the slot reset and on re-login, and a handle
// that turns stale (CKR_OBJECT_HANDLE_INVALID, CKR_KEY_HANDLE_INVALID) is
// forgotten and the operation retried once with the object found and copied
// afresh; while no keeper can be had the token object is used directly.
// DestroyKey removes the token objects and this process's copies; a key
// destroyed by another process stays usable here through its copy until the
// keeper goes, so callers retire a key version in the key store before
// destroying its object.
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
// GenerateKey makes one token object (or pair) per label, with a CKA_ID of
// "hsmgate:" and 16 random bytes, shared by both halves of a pair. Private and secret keys are
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
// # Adopted keys
//
// AdoptKey takes a key made by another tool (a key ceremony) by RFC 7512
// URI (ParseURI: token, manufacturer, model, serial, object, id, type; no
// query, so never a PIN or a module path). The key must be the only private
// or secret key matching the URI, CKA_SENSITIVE, not CKA_EXTRACTABLE,
// CKA_PRIVATE, and of a supported type; a private key needs exactly one
// matching public key, and a test signature must verify with it. The
// answer's Ref ("pkcs11:object=...;id=...") is used in place of a label by
// Signer, AEAD and MAC: each lookup finds the objects by those attributes
// and fails (ErrInvalidInput) if more than one matches, so an object added
// later with the same label and id is never used in the key's place.
// GenerateKey refuses labels that start with "pkcs11:", and DestroyKey
// refuses references (ErrUnsupported): hsmgate never destroys a key it did
// not make. Keys whose CKA_ID starts with "hsmgate:" (hsmgate's own) are
// not adopted (ErrNotAdoptable), so that a caller allowed to create one key
// cannot take over another of hsmgate's keys by URI; AES keys must have
// CKA_ENCRYPT and CKA_DECRYPT, HMAC keys CKA_SIGN. Interop with crypto11 and OpenSC's pkcs11-tool, both ways, is
// tested in interop_test.go.
//
// Errors are ErrUnavailable, ErrKeyNotFound, ErrKeyExists, ErrInvalidNonce,
// ErrInvalidInput, ErrUnsupported and ErrNotAdoptable (match with errors.Is); other PKCS#11
// failures are returned wrapped and map to Internal. No error or log line
// carries a PIN or key material.
package hsm

// Package vaultdoor serves the part of Vault's HTTP API that cert-manager's
// Vault issuer, SOPS (hc_vault) and programs written against
// github.com/hashicorp/vault/api use, under /v1/ on hsmgate's HTTPS listener.
//
// It is a translation, not a second engine. A Vault request becomes the
// request message of the gRPC method it maps to (pki/sign/<role> becomes
// PKIService/Sign, transit/encrypt/<key> TransitService/Encrypt, ...), and
// that method's generated handler runs in process through the gRPC server's
// own interceptors (Registry.UnaryInterceptors): the caller's token (from
// X-Vault-Token or Authorization: Bearer) and TLS state reach the auth
// interceptor exactly as a gRPC call's do, so the RPC's rule in the
// capability table, the rate limits and the audit lines are the RPC's own.
// The audit line's "method" is the mapped RPC and its "remote" ends in
// "via vault <METHOD> <path>", naming the door and the Vault path. With no
// interceptor installed the door answers 503 and calls nothing.
//
// Operations with no RPC: root/sign-intermediate runs pki.SignIntermediate
// under the door's own rule (AuthTable: "update" on pki/issuers/<issuer>,
// like cross-signing), through the same interceptors. Logins
// (auth/approle|kubernetes|cert/login) call Logins, implemented by
// internal/auth, and write their own audit line (no identity exists yet).
// Public reads, public in Vault too (sys/health, <pki>/ca, ca/pem, ca_chain,
// cert/ca_chain, cert/ca, crl, crl/pem, cert/<serial>, ssh/public_key), call
// the engines directly and are neither authenticated nor audited, like the
// PKI and SSH CA's own HTTP endpoints.
//
// Transport, as Vault: PUT is POST; LIST or GET ?list=true lists; bodies are
// one JSON object of at most Config.MaxBodyBytes; each field accepts the
// string, number and bool forms Vault accepts for it (a duration as "2160h",
// "30d" or seconds; a list as a JSON array or one comma-separated string);
// a field the endpoint does not read is refused (400), never ignored.
// Answers use Vault's envelope (request_id, lease_id, renewable,
// lease_duration, data, wrap_info, warnings, auth) and errors
// {"errors":["..."]}: 400 bad input, 403 denied or bad token (as Vault), 404
// unknown path or object, 405 wrong method, 412 a lost race to retry, 429
// rate limited, 503 unavailable, 500 internal (logged with the request id).
// X-Vault-Namespace and X-Vault-Request are accepted and ignored.
//
// Differences from Vault, on purpose: ciphertexts read vault:v<N>:<base64>
// but are hsmgate's envelope (decrypt also takes hsmgate:v<N>:); nonces and
// convergent upserts are refused (nonces are random; create keys with
// keys/<name>); a DNS common name is always among a certificate's SANs (CA/B
// BR 7.1.4.3), exclude_cn_from_sans notwithstanding; sign and issue use the
// role's issuer, the mount's issuer serves ca, crl and sign-intermediate;
// an SSH certificate's key ID comes from the role's key_id_format (a key_id
// field is refused); batch items fail alone with Vault's per-item "error",
// and a batch with a failed item answers 400 (or
// partial_failure_response_code when some succeeded).
package vaultdoor

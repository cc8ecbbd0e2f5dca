// Package client is the Go client of hsmgate, for the microservices that
// use its transit engine (encryption as a service), its X.509 CA and its
// SSH CA. It is its own module, github.com/hsmgate/hsmgate/client, with the
// generated stubs in github.com/hsmgate/hsmgate/proto: a program that imports
// both compiles gRPC, protobuf and go.step.sm/crypto's key parsing, and none
// of the server (no etcd, bbolt, zlint, Prometheus, PKCS#11), and builds
// with the Go version the generated code needs.
//
// # Connecting
//
// New makes a Client from Options; FromEnv fills Options from the same
// HSMGATE_* variables as the hsmgate CLI (`eval "$(hsmgate dev)"` sets
// them):
//
//	c, err := client.New(ctx, client.FromEnv())
//	if err != nil { ... }
//	defer c.Close()
//	ct, err := c.Transit.Encrypt(ctx, "payments", plaintext, client.WithAAD(orderID))
//
// A Client is one HTTP/2 connection, made lazily and remade after a
// failure, shared by every goroutine: make one per process. Every call is
// over TLS (the CA of HSMGATE_CACERT, else the system roots), with an
// optional client certificate (mTLS) and a bearer token (HSMGATE_TOKEN or
// the file HSMGATE_TOKEN_FILE) sent as per-RPC credentials, never over
// plaintext. A call whose context has no deadline gets Options.Timeout
// (default 30s).
//
// # Retries
//
// Idempotent calls that fail with Unavailable or Aborted are retried with
// exponential backoff and full jitter, inside the call's deadline
// (RetryPolicy). Reads and the transit data plane are idempotent, Encrypt
// included: a lost Encrypt answer committed nothing the caller can see and
// each attempt draws a fresh nonce. Creating, rotating or deleting keys,
// issuing certificates and signing SSH keys are never retried: a lost answer
// may have minted a certificate, and a retry would mint a second. See
// IsIdempotent.
//
// # Errors
//
// Every error from the server matches one sentinel with errors.Is:
// ErrNotFound, ErrInvalidArgument, ErrPermissionDenied, ErrUnavailable,
// ErrResourceExhausted and the others, one per gRPC code (deadline and
// cancellation match context.DeadlineExceeded and context.Canceled). The
// error is an *Error that keeps the status for status.FromError. Batch calls
// return an error only when the whole call failed; each item's result then
// carries its own Err, so one bad item fails only itself.
//
// # Transit
//
// Client.Transit encrypts, decrypts, rewraps, signs, verifies and MACs one
// item (Encrypt) or many in one RPC (EncryptBatch). Ciphertexts are binary
// (0x01 | uvarint(version) | nonce | sealed); package textform reads and
// writes their text form hsmgate:v<N>:<base64> (EncryptText, DecryptText).
// Signatures and MACs are Versioned values whose String is that text form.
//
// Transit.Batcher gathers concurrent single-item Encrypt, Decrypt and Sign
// calls from many goroutines into batch RPCs, each caller getting its own
// result: many callers with one item each get the throughput of batches.
//
// Transit.Envelope is envelope encryption: data sealed locally with
// AES-256-GCM under a fresh data key per message, the data key wrapped by a
// transit key and stored beside the data (format in Envelope's doc).
// Package tinkaead adapts a transit key to Tink's tink.AEAD and KMS client,
// so Tink users can plug hsmgate in as their KMS.
//
// # PKI and SSH
//
// PKI.Issue generates the key locally (it never leaves the process),
// builds the CSR and has the CA sign it; PKI.IssueForKey does the same
// for a key you have (ParsePrivateKey); PKI.SignCSR signs a CSR made
// elsewhere; PKI.Chain and PKI.RootPool fetch the CA chain through the
// authenticated connection; PKI.Revoke takes RFC 5280 reasons by name
// (ParseRevocationReason). SSH.SignKeyFile signs a public key file and
// writes <key>-cert.pub beside it, where ssh finds it.
//
// ParsePrivateKey reads keys in every common form (PKCS#1, PKCS#8, SEC 1,
// OpenSSH, encrypted PEM) through go.step.sm/crypto/pemutil;
// ImportMaterial and WrapForImport prepare your own key material for the
// server's ImportKey (BYOK: RSA-OAEP-SHA256 of an AES key, then RFC 5649
// KWP of the material, package kwp).
//
// # Other services
//
// Client.Conn serves the generated stubs of the services without helpers
// (auth, ACME, system), with the same credentials, deadlines, retries and
// errors; Transit.Stub, PKI.Stub and SSH.Stub give the key, issuer and
// role management RPCs.
package client

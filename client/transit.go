package client

import (
	"context"
	"fmt"

	"google.golang.org/genproto/googleapis/rpc/status"
	grpcstatus "google.golang.org/grpc/status"

	"github.com/hsmgate/hsmgate/client/textform"
	pb "github.com/hsmgate/hsmgate/proto/hsmgate/v1"
)

// Transit is the client of the transit engine: encryption, signatures and
// MACs under named, versioned keys whose material stays in the server.
//
// Every data method comes in two forms: one item (Encrypt), returning the
// item's error, and a batch (EncryptBatch), one RPC for many items, which
// returns an error only for a whole-call failure and otherwise one result
// per item, in order, each with its own Err (a caller's mistake in one item
// fails only that item). Batches must respect the server's limit on items
// per request (ErrResourceExhausted beyond it). For many goroutines making
// single calls, Batcher gathers them into batch RPCs.
type Transit struct{ c pb.TransitServiceClient }

// Stub is the generated client, for the key-management RPCs (CreateKey,
// RotateKey, ...). Calls on it get the Client's token, deadline, retries
// and error mapping.
func (t *Transit) Stub() pb.TransitServiceClient { return t.c }

// Option sets an optional parameter of a transit call.
type Option func(*callOpts)

type callOpts struct {
	aad, keyContext []byte
	version         uint32
	hash            pb.TransitHashAlgorithm
	sigAlg          pb.TransitSignatureAlgorithm
	prehashed       bool
	wrappedOnly     bool
}

func collect(opts []Option) callOpts {
	var o callOpts
	for _, f := range opts {
		f(&o)
	}
	return o
}

// WithAAD sets the associated data of a single-item Encrypt, Decrypt or
// Rewrap (authenticated, not encrypted; decryption needs the same).
func WithAAD(aad []byte) Option { return func(o *callOpts) { o.aad = aad } }

// WithKeyContext sets the derivation context of a derived key.
func WithKeyContext(c []byte) Option { return func(o *callOpts) { o.keyContext = c } }

// WithKeyVersion picks the key version (0: the latest) of Encrypt, Rewrap,
// GenerateDataKey, Sign and HMAC.
func WithKeyVersion(v uint32) Option { return func(o *callOpts) { o.version = v } }

// WithHash sets the hash of Sign and Verify (default: the key type's).
func WithHash(h pb.TransitHashAlgorithm) Option { return func(o *callOpts) { o.hash = h } }

// WithSignatureAlgorithm sets PSS or PKCS#1 v1.5 for RSA keys.
func WithSignatureAlgorithm(a pb.TransitSignatureAlgorithm) Option {
	return func(o *callOpts) { o.sigAlg = a }
}

// WithPrehashed says the input of Sign and Verify is already a digest.
func WithPrehashed() Option { return func(o *callOpts) { o.prehashed = true } }

// WithWrappedOnly asks GenerateDataKey for the wrapped key only: the
// plaintext key is never sent (DataKey.Plaintext is nil), for a key to
// store now and unwrap later with Decrypt.
func WithWrappedOnly() Option { return func(o *callOpts) { o.wrappedOnly = true } }

// itemErr is the error of one batch result.
func itemErr(s *status.Status) error {
	if s == nil {
		return nil
	}
	return FromStatus(grpcstatus.FromProto(s))
}

// convert checks that a batch response has one result per item and
// converts each.
func convert[P, R any](op string, items int, results []P, f func(P) R) ([]R, error) {
	if len(results) != items {
		return nil, countErr(op, len(results), items)
	}
	out := make([]R, len(results))
	for i, r := range results {
		out[i] = f(r)
	}
	return out, nil
}

// countErr reports a response whose result count is not the item count.
func countErr(op string, got, want int) error {
	return fmt.Errorf("client: transit %s: %d results for %d items: %w", op, got, want, ErrInternal)
}

// EncryptItem is one plaintext of a batch.
type EncryptItem struct {
	Plaintext      []byte
	AssociatedData []byte
	Context        []byte // derived keys only
	Reference      string // echoed in the result
}

// EncryptResult is one item's ciphertext (binary; textform.Format shows
// it) or error.
type EncryptResult struct {
	Ciphertext []byte
	KeyVersion uint32
	Reference  string
	Err        error
}

// Encrypt encrypts one plaintext under key and returns the binary
// ciphertext. Options: WithAAD, WithKeyContext, WithKeyVersion.
func (t *Transit) Encrypt(ctx context.Context, key string, plaintext []byte, opts ...Option) ([]byte, error) {
	o := collect(opts)
	rs, err := t.EncryptBatch(ctx, key, []EncryptItem{{Plaintext: plaintext, AssociatedData: o.aad, Context: o.keyContext}}, opts...)
	if err != nil {
		return nil, err
	}
	return rs[0].Ciphertext, rs[0].Err
}

// EncryptBatch encrypts items in one RPC. Option: WithKeyVersion.
func (t *Transit) EncryptBatch(ctx context.Context, key string, items []EncryptItem, opts ...Option) ([]EncryptResult, error) {
	o := collect(opts)
	req := &pb.EncryptRequest{Name: key, KeyVersion: o.version, Items: make([]*pb.EncryptItem, len(items))}
	for i, it := range items {
		req.Items[i] = &pb.EncryptItem{Plaintext: it.Plaintext, AssociatedData: it.AssociatedData, Context: it.Context, Reference: it.Reference}
	}
	resp, err := t.c.Encrypt(ctx, req)
	if err != nil {
		return nil, err
	}
	return convert("encrypt", len(items), resp.GetResults(), func(r *pb.EncryptResult) EncryptResult {
		return EncryptResult{Ciphertext: r.GetCiphertext(), KeyVersion: r.GetKeyVersion(), Reference: r.GetReference(), Err: itemErr(r.GetError())}
	})
}

// EncryptText is Encrypt returning the text form hsmgate:v<N>:<base64>.
func (t *Transit) EncryptText(ctx context.Context, key string, plaintext []byte, opts ...Option) (string, error) {
	ct, err := t.Encrypt(ctx, key, plaintext, opts...)
	if err != nil {
		return "", err
	}
	return textform.Format(ct)
}

// DecryptItem is one ciphertext of a batch.
type DecryptItem struct {
	Ciphertext     []byte // binary; textform.Parse reads the text form
	AssociatedData []byte
	Context        []byte
	Reference      string
}

// DecryptResult is one item's plaintext or error.
type DecryptResult struct {
	Plaintext  []byte
	KeyVersion uint32
	Reference  string
	Err        error
}

// Decrypt decrypts one binary ciphertext. Options: WithAAD, WithKeyContext.
func (t *Transit) Decrypt(ctx context.Context, key string, ciphertext []byte, opts ...Option) ([]byte, error) {
	o := collect(opts)
	rs, err := t.DecryptBatch(ctx, key, []DecryptItem{{Ciphertext: ciphertext, AssociatedData: o.aad, Context: o.keyContext}})
	if err != nil {
		return nil, err
	}
	return rs[0].Plaintext, rs[0].Err
}

// DecryptText decrypts a ciphertext in the text form hsmgate:v<N>:<base64>.
func (t *Transit) DecryptText(ctx context.Context, key, text string, opts ...Option) ([]byte, error) {
	ct, err := textform.Parse(text)
	if err != nil {
		return nil, fmt.Errorf("client: %w: %w", ErrInvalidArgument, err)
	}
	return t.Decrypt(ctx, key, ct, opts...)
}

// DecryptBatch decrypts items in one RPC.
func (t *Transit) DecryptBatch(ctx context.Context, key string, items []DecryptItem) ([]DecryptResult, error) {
	req := &pb.DecryptRequest{Name: key, Items: make([]*pb.DecryptItem, len(items))}
	for i, it := range items {
		req.Items[i] = &pb.DecryptItem{Ciphertext: it.Ciphertext, AssociatedData: it.AssociatedData, Context: it.Context, Reference: it.Reference}
	}
	resp, err := t.c.Decrypt(ctx, req)
	if err != nil {
		return nil, err
	}
	return convert("decrypt", len(items), resp.GetResults(), func(r *pb.DecryptResult) DecryptResult {
		return DecryptResult{Plaintext: r.GetPlaintext(), KeyVersion: r.GetKeyVersion(), Reference: r.GetReference(), Err: itemErr(r.GetError())}
	})
}

// Rewrap re-encrypts a ciphertext under the latest (or WithKeyVersion)
// version of key without the plaintext leaving the server. Options:
// WithAAD, WithKeyContext, WithKeyVersion.
func (t *Transit) Rewrap(ctx context.Context, key string, ciphertext []byte, opts ...Option) ([]byte, error) {
	o := collect(opts)
	rs, err := t.RewrapBatch(ctx, key, []DecryptItem{{Ciphertext: ciphertext, AssociatedData: o.aad, Context: o.keyContext}}, opts...)
	if err != nil {
		return nil, err
	}
	return rs[0].Ciphertext, rs[0].Err
}

// RewrapBatch rewraps items in one RPC. Option: WithKeyVersion.
func (t *Transit) RewrapBatch(ctx context.Context, key string, items []DecryptItem, opts ...Option) ([]EncryptResult, error) {
	o := collect(opts)
	req := &pb.RewrapRequest{Name: key, KeyVersion: o.version, Items: make([]*pb.RewrapItem, len(items))}
	for i, it := range items {
		req.Items[i] = &pb.RewrapItem{Ciphertext: it.Ciphertext, AssociatedData: it.AssociatedData, Context: it.Context, Reference: it.Reference}
	}
	resp, err := t.c.Rewrap(ctx, req)
	if err != nil {
		return nil, err
	}
	return convert("rewrap", len(items), resp.GetResults(), func(r *pb.RewrapResult) EncryptResult {
		return EncryptResult{Ciphertext: r.GetCiphertext(), KeyVersion: r.GetKeyVersion(), Reference: r.GetReference(), Err: itemErr(r.GetError())}
	})
}

// DataKey is a fresh data key: Plaintext for local use (wipe it after),
// Ciphertext (binary, wrapped under the transit key) to store.
type DataKey struct {
	Plaintext  []byte
	Ciphertext []byte
	KeyVersion uint32
}

// GenerateDataKey returns a new data key of bits (128, 256 or 512; 0 is
// 256) wrapped under key. Options: WithAAD, WithKeyContext, WithKeyVersion,
// WithWrappedOnly.
func (t *Transit) GenerateDataKey(ctx context.Context, key string, bits uint32, opts ...Option) (DataKey, error) {
	o := collect(opts)
	resp, err := t.c.GenerateDataKey(ctx, &pb.GenerateDataKeyRequest{Name: key, Bits: bits, KeyVersion: o.version, WrappedOnly: o.wrappedOnly,
		Items: []*pb.DataKeyItem{{AssociatedData: o.aad, Context: o.keyContext}}})
	if err != nil {
		return DataKey{}, err
	}
	if len(resp.GetResults()) != 1 {
		return DataKey{}, countErr("generate data key", len(resp.GetResults()), 1)
	}
	r := resp.GetResults()[0]
	if err := itemErr(r.GetError()); err != nil {
		return DataKey{}, err
	}
	return DataKey{Plaintext: r.GetPlaintext(), Ciphertext: r.GetCiphertext(), KeyVersion: r.GetKeyVersion()}, nil
}

// Versioned is a signature or MAC with the key version that made it. Its
// String is the text form hsmgate:v<N>:<base64>; ParseVersioned reads it.
type Versioned struct {
	KeyVersion uint32
	Bytes      []byte
}

func (v Versioned) String() string { return textform.FormatVersioned(v.KeyVersion, v.Bytes) }

// ParseVersioned reads the text form of a signature or MAC.
func ParseVersioned(s string) (Versioned, error) {
	ver, b, err := textform.ParseVersioned(s)
	if err != nil {
		return Versioned{}, fmt.Errorf("client: %w: %w", ErrInvalidArgument, err)
	}
	return Versioned{KeyVersion: ver, Bytes: b}, nil
}

package client

import (
	"context"

	pb "github.com/hsmgate/hsmgate/proto/hsmgate/v1"
)

// SignItem is one input of a signing or MAC batch.
type SignItem struct {
	Input     []byte // the message, or its digest WithPrehashed
	Reference string
}

// SignResult is one item's signature (or MAC) or error.
type SignResult struct {
	Signature Versioned
	Reference string
	Err       error
}

// VerifyItem is one signature (or MAC) to check.
type VerifyItem struct {
	Input     []byte
	Signature Versioned // KeyVersion 0: the latest version
	Reference string
}

// VerifyResult says whether one signature is valid. An invalid signature
// is Valid false with Err nil; Err is for an item the server could not
// check (unknown version, malformed input).
type VerifyResult struct {
	Valid     bool
	Reference string
	Err       error
}

func (o callOpts) signRequest(key string) *pb.SignDataRequest {
	return &pb.SignDataRequest{Name: key, KeyVersion: o.version, HashAlgorithm: o.hash, Prehashed: o.prehashed, SignatureAlgorithm: o.sigAlg}
}

// Sign signs input with an asymmetric key (ECDSA: ASN.1 DER). Options:
// WithKeyVersion, WithHash, WithPrehashed, WithSignatureAlgorithm.
func (t *Transit) Sign(ctx context.Context, key string, input []byte, opts ...Option) (Versioned, error) {
	rs, err := t.SignBatch(ctx, key, []SignItem{{Input: input}}, opts...)
	if err != nil {
		return Versioned{}, err
	}
	return rs[0].Signature, rs[0].Err
}

// SignBatch signs items in one RPC.
func (t *Transit) SignBatch(ctx context.Context, key string, items []SignItem, opts ...Option) ([]SignResult, error) {
	req := collect(opts).signRequest(key)
	req.Items = make([]*pb.SignItem, len(items))
	for i, it := range items {
		req.Items[i] = &pb.SignItem{Input: it.Input, Reference: it.Reference}
	}
	resp, err := t.c.SignData(ctx, req)
	if err != nil {
		return nil, err
	}
	return convert("sign", len(items), resp.GetResults(), func(r *pb.SignResult) SignResult {
		return SignResult{Signature: Versioned{KeyVersion: r.GetKeyVersion(), Bytes: r.GetSignature()}, Reference: r.GetReference(), Err: itemErr(r.GetError())}
	})
}

// Verify checks a signature made by Sign: (false, nil) for a signature that
// does not verify. Options: WithHash, WithPrehashed, WithSignatureAlgorithm.
func (t *Transit) Verify(ctx context.Context, key string, input []byte, sig Versioned, opts ...Option) (bool, error) {
	rs, err := t.VerifyBatch(ctx, key, []VerifyItem{{Input: input, Signature: sig}}, opts...)
	if err != nil {
		return false, err
	}
	return rs[0].Valid, rs[0].Err
}

// VerifyBatch checks items in one RPC.
func (t *Transit) VerifyBatch(ctx context.Context, key string, items []VerifyItem, opts ...Option) ([]VerifyResult, error) {
	o := collect(opts)
	req := &pb.VerifySignatureRequest{Name: key, HashAlgorithm: o.hash, Prehashed: o.prehashed, SignatureAlgorithm: o.sigAlg,
		Items: make([]*pb.VerifyItem, len(items))}
	for i, it := range items {
		req.Items[i] = &pb.VerifyItem{Input: it.Input, Signature: it.Signature.Bytes, KeyVersion: it.Signature.KeyVersion, Reference: it.Reference}
	}
	resp, err := t.c.VerifySignature(ctx, req)
	if err != nil {
		return nil, err
	}
	return convert("verify", len(items), resp.GetResults(), func(r *pb.VerifyResult) VerifyResult {
		return VerifyResult{Valid: r.GetValid(), Reference: r.GetReference(), Err: itemErr(r.GetError())}
	})
}

// HMAC computes the MAC of input with an hmac-* key. Option: WithKeyVersion.
func (t *Transit) HMAC(ctx context.Context, key string, input []byte, opts ...Option) (Versioned, error) {
	rs, err := t.HMACBatch(ctx, key, []SignItem{{Input: input}}, opts...)
	if err != nil {
		return Versioned{}, err
	}
	return rs[0].Signature, rs[0].Err
}

// HMACBatch computes MACs of items in one RPC.
func (t *Transit) HMACBatch(ctx context.Context, key string, items []SignItem, opts ...Option) ([]SignResult, error) {
	req := &pb.ComputeHmacRequest{Name: key, KeyVersion: collect(opts).version, Items: make([]*pb.HmacItem, len(items))}
	for i, it := range items {
		req.Items[i] = &pb.HmacItem{Input: it.Input, Reference: it.Reference}
	}
	resp, err := t.c.ComputeHmac(ctx, req)
	if err != nil {
		return nil, err
	}
	return convert("hmac", len(items), resp.GetResults(), func(r *pb.HmacResult) SignResult {
		return SignResult{Signature: Versioned{KeyVersion: r.GetKeyVersion(), Bytes: r.GetHmac()}, Reference: r.GetReference(), Err: itemErr(r.GetError())}
	})
}

// VerifyHMAC checks a MAC (in constant time, on the server): (false, nil)
// for a MAC that does not match.
func (t *Transit) VerifyHMAC(ctx context.Context, key string, input []byte, mac Versioned) (bool, error) {
	rs, err := t.VerifyHMACBatch(ctx, key, []VerifyItem{{Input: input, Signature: mac}})
	if err != nil {
		return false, err
	}
	return rs[0].Valid, rs[0].Err
}

// VerifyHMACBatch checks MACs in one RPC.
func (t *Transit) VerifyHMACBatch(ctx context.Context, key string, items []VerifyItem) ([]VerifyResult, error) {
	req := &pb.VerifyHmacRequest{Name: key, Items: make([]*pb.VerifyHmacItem, len(items))}
	for i, it := range items {
		req.Items[i] = &pb.VerifyHmacItem{Input: it.Input, Hmac: it.Signature.Bytes, KeyVersion: it.Signature.KeyVersion, Reference: it.Reference}
	}
	resp, err := t.c.VerifyHmac(ctx, req)
	if err != nil {
		return nil, err
	}
	return convert("verify hmac", len(items), resp.GetResults(), func(r *pb.VerifyHmacResult) VerifyResult {
		return VerifyResult{Valid: r.GetValid(), Reference: r.GetReference(), Err: itemErr(r.GetError())}
	})
}

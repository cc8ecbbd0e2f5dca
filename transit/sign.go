package transit

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/hmac"
	"crypto/rsa"
	"fmt"

	"github.com/hsmgate/hsmgate/internal/errs"
	pb "github.com/hsmgate/hsmgate/proto/hsmgate/v1"
)

// signParams are the per-request choices of a signature.
type signParams struct {
	hash      crypto.Hash // 0 for Ed25519
	prehashed bool
	pss       bool
}

func (st *keyState) signParams(h pb.TransitHashAlgorithm, prehashed bool, alg pb.TransitSignatureAlgorithm) (signParams, error) {
	var p signParams
	if st.ti.kind != kindSign {
		return p, fmt.Errorf("%w: %q is %s, not a signing key", ErrWrongKeyType, st.rec.GetName(), st.ti.name)
	}
	if st.ti.name == "ed25519" {
		if prehashed {
			return p, fmt.Errorf("%w: ed25519 signs the message itself; prehashed input is not supported", ErrInvalid)
		}
		if h != pb.TransitHashAlgorithm_TRANSIT_HASH_ALGORITHM_UNSPECIFIED {
			return p, fmt.Errorf("%w: ed25519 takes no hash_algorithm", ErrInvalid)
		}
		return p, nil
	}
	hash, ok := hashFor(h, st.ti.hash)
	if !ok {
		return p, fmt.Errorf("%w: hash_algorithm %v", ErrInvalid, h)
	}
	p.hash, p.prehashed = hash, prehashed
	switch alg {
	case pb.TransitSignatureAlgorithm_TRANSIT_SIGNATURE_ALGORITHM_UNSPECIFIED, pb.TransitSignatureAlgorithm_TRANSIT_SIGNATURE_ALGORITHM_PSS:
		p.pss = st.ti.rsaBits != 0
	case pb.TransitSignatureAlgorithm_TRANSIT_SIGNATURE_ALGORITHM_PKCS1V15:
		if st.ti.rsaBits == 0 {
			return p, fmt.Errorf("%w: signature_algorithm applies to RSA keys only", ErrInvalid)
		}
	default:
		return p, fmt.Errorf("%w: signature_algorithm %v", ErrInvalid, alg)
	}
	return p, nil
}

// digest returns what the signer signs: the message (Ed25519), the input
// itself when prehashed (its length checked), or its hash.
func (p signParams) digest(in []byte) ([]byte, error) {
	if p.hash == 0 {
		return in, nil
	}
	if p.prehashed {
		if len(in) != p.hash.Size() {
			return nil, fmt.Errorf("%w: prehashed input of %d bytes, want %d for %v", ErrInvalid, len(in), p.hash.Size(), p.hash)
		}
		return in, nil
	}
	h := p.hash.New()
	h.Write(in)
	return h.Sum(nil), nil
}

func (p signParams) opts() crypto.SignerOpts {
	if p.pss {
		return &rsa.PSSOptions{SaltLength: rsa.PSSSaltLengthEqualsHash, Hash: p.hash}
	}
	return p.hash
}

func (e *Engine) signState(ctx context.Context, name string, h pb.TransitHashAlgorithm, prehashed bool, alg pb.TransitSignatureAlgorithm) (*keyState, signParams, error) {
	st, err := e.state(ctx, name)
	if err != nil {
		return nil, signParams{}, err
	}
	p, err := st.signParams(h, prehashed, alg)
	return st, p, err
}

// SignData signs every item with the latest (or req.KeyVersion) version.
// ECDSA signatures are ASN.1 DER; RSA is PSS (salt = hash length) unless
// PKCS1V15 is asked for.
func (e *Engine) SignData(ctx context.Context, req *pb.SignDataRequest) (*pb.SignDataResponse, error) {
	st, p, err := e.signState(ctx, req.GetName(), req.GetHashAlgorithm(), req.GetPrehashed(), req.GetSignatureAlgorithm())
	if err != nil {
		return nil, err
	}
	v, err := st.usable(req.GetKeyVersion(), true)
	if err != nil {
		return nil, err
	}
	items := req.GetItems()
	res := make([]pb.SignResult, len(items))
	out := make([]*pb.SignResult, len(items))
	opts := p.opts()
	var f faults
	e.parallel(ctx, st, len(items), func(lo, hi int) {
		for i := lo; i < hi; i++ {
			it, r := items[i], &res[i]
			out[i] = r
			r.Reference = it.GetReference()
			d, err := p.digest(it.GetInput())
			if err == nil {
				var sig []byte
				if v.hsigner != nil {
					sig, err = v.hsigner.SignContext(ctx, d, opts)
					if err != nil {
						err = fmt.Errorf("transit: hsm sign: %w", asFault(err))
					}
				} else {
					sig, err = v.priv.Sign(e.rand, d, opts)
					if err != nil {
						err = fmt.Errorf("transit: sign: %v", err)
					}
				}
				r.Signature, r.KeyVersion = sig, v.n
			}
			if err != nil && itemStatus(err, &f) {
				r.Error = errs.GRPCStatus(err).Proto()
			}
		}
	})
	if f.err != nil {
		return nil, f.err
	}
	count(st, opSign, out, func(r *pb.SignResult) bool { return r.Error != nil })
	return &pb.SignDataResponse{Results: out}, nil
}

// verify checks one signature with v's public key (also for hsm keys: the
// public half is verified in process).
func (p signParams) verify(pub crypto.PublicKey, d, sig []byte) bool {
	switch k := pub.(type) {
	case *ecdsa.PublicKey:
		return ecdsa.VerifyASN1(k, d, sig)
	case ed25519.PublicKey:
		return ed25519.Verify(k, d, sig)
	case *rsa.PublicKey:
		if p.pss {
			return rsa.VerifyPSS(k, p.hash, d, sig, &rsa.PSSOptions{SaltLength: rsa.PSSSaltLengthAuto, Hash: p.hash}) == nil
		}
		return rsa.VerifyPKCS1v15(k, p.hash, d, sig) == nil
	}
	return false
}

// VerifySignature checks every item's signature against the version it
// names (0: the latest). A bad signature is valid=false, not an error.
func (e *Engine) VerifySignature(ctx context.Context, req *pb.VerifySignatureRequest) (*pb.VerifySignatureResponse, error) {
	st, p, err := e.signState(ctx, req.GetName(), req.GetHashAlgorithm(), req.GetPrehashed(), req.GetSignatureAlgorithm())
	if err != nil {
		return nil, err
	}
	items := req.GetItems()
	res := make([]pb.VerifyResult, len(items))
	out := make([]*pb.VerifyResult, len(items))
	e.parallel(ctx, st, len(items), func(lo, hi int) {
		for i := lo; i < hi; i++ {
			it, r := items[i], &res[i]
			out[i] = r
			r.Reference = it.GetReference()
			v, err := st.usable(it.GetKeyVersion(), false)
			var d []byte
			if err == nil {
				d, err = p.digest(it.GetInput())
			}
			if err != nil {
				r.Error = errs.GRPCStatus(err).Proto()
				continue
			}
			r.Valid = p.verify(v.pub, d, it.GetSignature())
		}
	})
	count(st, opVerify, out, func(r *pb.VerifyResult) bool { return r.Error != nil })
	return &pb.VerifySignatureResponse{Results: out}, nil
}

func (e *Engine) hmacState(ctx context.Context, name string) (*keyState, error) {
	return e.kindState(ctx, name, kindHMAC, "an hmac key")
}

// ComputeHmac MACs every item with the latest (or req.KeyVersion) version.
func (e *Engine) ComputeHmac(ctx context.Context, req *pb.ComputeHmacRequest) (*pb.ComputeHmacResponse, error) {
	st, err := e.hmacState(ctx, req.GetName())
	if err != nil {
		return nil, err
	}
	v, err := st.usable(req.GetKeyVersion(), true)
	if err != nil {
		return nil, err
	}
	items := req.GetItems()
	size := st.ti.hash.Size()
	slab := make([]byte, len(items)*size)
	res := make([]pb.HmacResult, len(items))
	out := make([]*pb.HmacResult, len(items))
	var f faults
	e.parallel(ctx, st, len(items), func(lo, hi int) {
		for i := lo; i < hi; i++ {
			r := &res[i]
			out[i] = r
			r.Reference = items[i].GetReference()
			mac, err := v.hmacOf(ctx, slab[i*size:i*size:(i+1)*size], items[i].GetInput())
			if err != nil {
				f.set(err) // only the HSM fails here: the whole call fails
				return
			}
			r.Hmac, r.KeyVersion = mac, v.n
		}
	})
	if f.err != nil {
		return nil, f.err
	}
	count(st, opHMAC, out, func(r *pb.HmacResult) bool { return false })
	return &pb.ComputeHmacResponse{Results: out}, nil
}

// VerifyHmac checks every item's MAC in constant time (hmac.Equal).
func (e *Engine) VerifyHmac(ctx context.Context, req *pb.VerifyHmacRequest) (*pb.VerifyHmacResponse, error) {
	st, err := e.hmacState(ctx, req.GetName())
	if err != nil {
		return nil, err
	}
	items := req.GetItems()
	res := make([]pb.VerifyHmacResult, len(items))
	out := make([]*pb.VerifyHmacResult, len(items))
	var f faults
	e.parallel(ctx, st, len(items), func(lo, hi int) {
		var buf []byte
		for i := lo; i < hi; i++ {
			it, r := items[i], &res[i]
			out[i] = r
			r.Reference = it.GetReference()
			v, err := st.usable(it.GetKeyVersion(), false)
			if err != nil {
				r.Error = errs.GRPCStatus(err).Proto()
				continue
			}
			if buf, err = v.hmacOf(ctx, buf[:0], it.GetInput()); err != nil {
				f.set(err)
				return
			}
			r.Valid = hmac.Equal(buf, it.GetHmac())
		}
	})
	if f.err != nil {
		return nil, f.err
	}
	count(st, opVerifyHMAC, out, func(r *pb.VerifyHmacResult) bool { return r.Error != nil })
	return &pb.VerifyHmacResponse{Results: out}, nil
}

package transit

import (
	"context"
	"crypto/hkdf"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"sync"

	"google.golang.org/grpc/codes"

	"github.com/hsmgate/hsmgate/internal/errs"
	pb "github.com/hsmgate/hsmgate/proto/hsmgate/v1"
)

// usable returns version n of the snapshot if it may be used: for
// encryption (and signing) n = 0 means the latest and n must be >=
// min_encryption_version; always >= min_decryption_version, not trimmed,
// not disabled, not above the latest.
func (st *keyState) usable(n uint32, encrypt bool) (*version, error) {
	rec := st.rec
	if n == 0 {
		n = rec.GetLatestVersion()
	}
	switch {
	case n > rec.GetLatestVersion():
		return nil, fmt.Errorf("%w: version %d of %q (latest %d)", ErrUnknownVersion, n, rec.GetName(), rec.GetLatestVersion())
	case n < rec.GetMinAvailableVersion():
		return nil, fmt.Errorf("%w: version %d of %q was trimmed", ErrVersionNotAllowed, n, rec.GetName())
	case n < rec.GetMinDecryptionVersion():
		return nil, fmt.Errorf("%w: version %d of %q is below min_decryption_version %d", ErrVersionNotAllowed, n, rec.GetName(), rec.GetMinDecryptionVersion())
	case encrypt && rec.GetMinEncryptionVersion() != 0 && n < rec.GetMinEncryptionVersion():
		return nil, fmt.Errorf("%w: version %d of %q is below min_encryption_version %d", ErrVersionNotAllowed, n, rec.GetName(), rec.GetMinEncryptionVersion())
	}
	v := st.versions[n]
	if v == nil {
		return nil, fmt.Errorf("%w: version %d of %q", ErrUnknownVersion, n, rec.GetName())
	}
	switch v.state {
	case pb.TransitVersionState_TRANSIT_VERSION_STATE_DISABLED:
		return nil, fmt.Errorf("%w: version %d of %q", ErrVersionDisabled, n, rec.GetName())
	case pb.TransitVersionState_TRANSIT_VERSION_STATE_DESTROYED:
		return nil, fmt.Errorf("%w: version %d of %q was trimmed", ErrVersionNotAllowed, n, rec.GetName())
	}
	if !v.loaded {
		return nil, fmt.Errorf("transit: %q v%d: %w", rec.GetName(), n, errNoMaterial)
	}
	return v, nil
}

// itemError reports whether err is the caller's mistake about one item (it
// fails that item) rather than an internal fault (it fails the whole call).
func itemError(err error) bool {
	switch errs.Code(err) {
	case codes.InvalidArgument, codes.FailedPrecondition, codes.NotFound, codes.OutOfRange:
		return true
	}
	return false
}

// faults collects the first internal fault of a parallel batch.
type faults struct {
	mu  sync.Mutex
	err error
}

func (f *faults) set(err error) {
	f.mu.Lock()
	if f.err == nil {
		f.err = err
	}
	f.mu.Unlock()
}

// itemStatus turns an item's error into its google.rpc.Status, or records
// an internal fault (returning nil).
func itemStatus(err error, f *faults) bool {
	if itemError(err) {
		return true
	}
	f.set(err)
	return false
}

// derive returns the per-context AEAD key and the convergent nonce key:
// HKDF-SHA256(version key, no salt, info = "hsmgate transit v1" | context), 64 bytes.
func derive(key secret, context []byte) ([]byte, error) {
	if len(context) == 0 {
		return nil, ErrContextRequired
	}
	return hkdf.Key(sha256.New, key.view(), nil, "hsmgate transit v1\x00"+string(context), 64)
}

// convergentNonce is HMAC-SHA256(nonceKey, uvarint(len(aad)) | aad | plaintext)
// truncated to size: equal plaintext, AAD and context give equal ciphertext,
// and a different AAD never reuses a nonce.
func convergentNonce(dst, nonceKey, aad, pt []byte) {
	m := hmac.New(sha256.New, nonceKey)
	var l [binary.MaxVarintLen64]byte
	m.Write(l[:binary.PutUvarint(l[:], uint64(len(aad)))])
	m.Write(aad)
	m.Write(pt)
	sum := m.Sum(nil)
	for len(dst) > 0 {
		n := copy(dst, sum)
		dst = dst[n:]
		if len(dst) > 0 {
			m.Reset()
			m.Write(sum)
			sum = m.Sum(nil)
		}
	}
}

// sealTo appends the envelope of one encryption to dst (whose capacity is
// enough). nonce holds random bytes unless the key is convergent.
func (st *keyState) sealTo(ctx context.Context, dst []byte, v *version, nonce, pt, aad, kctx []byte) ([]byte, error) {
	ns := st.ti.nonceSize
	dst = appendHeader(dst, v.n)
	switch {
	case v.haead != nil:
		if len(nonce) != 12 {
			return nil, fmt.Errorf("transit: nonce of %d bytes", len(nonce))
		}
		dst = append(dst, nonce...)
		out, err := v.haead.SealContext(ctx, dst, nonce, pt, aad)
		if err != nil {
			return nil, fmt.Errorf("transit: hsm seal: %w", asFault(err))
		}
		return out, nil
	case st.rec.GetDerived():
		k, err := derive(v.key, kctx)
		if err != nil {
			return nil, err
		}
		defer wipe(k)
		a, err := newAEAD(st.ti, k[:32])
		if err != nil {
			return nil, err
		}
		off := len(dst)
		dst = append(dst, nonce...)
		if st.rec.GetConvergent() {
			convergentNonce(dst[off:off+ns], k[32:], aad, pt)
		}
		return a.Seal(dst, dst[off:off+ns], pt, aad), nil
	default:
		dst = append(dst, nonce...)
		return v.aead.Seal(dst, nonce, pt, aad), nil
	}
}

// asFault makes an HSM error that is not Unavailable an internal fault:
// on encryption or signing, a refusal by the HSM is never the caller's mistake.
func asFault(err error) error {
	if itemError(err) {
		return fmt.Errorf("hsm refused: %v", err)
	}
	return err
}

// open decrypts one binary ciphertext; dst receives the plaintext.
func (st *keyState) open(ctx context.Context, dst, ct, aad, kctx []byte) ([]byte, uint32, error) {
	env, err := ParseEnvelope(ct, st.ti.nonceSize)
	if err != nil {
		return nil, 0, err
	}
	v, err := st.usable(env.Version, false)
	if err != nil {
		return nil, env.Version, err
	}
	switch {
	case v.haead != nil:
		pt, err := v.haead.OpenContext(ctx, dst, env.Nonce, env.Sealed, aad)
		if err != nil {
			if itemError(err) {
				return nil, v.n, ErrDecrypt
			}
			return nil, v.n, fmt.Errorf("transit: hsm open: %w", err)
		}
		return pt, v.n, nil
	case st.rec.GetDerived():
		k, err := derive(v.key, kctx)
		if err != nil {
			return nil, v.n, err
		}
		defer wipe(k)
		a, err := newAEAD(st.ti, k[:32])
		if err != nil {
			return nil, v.n, err
		}
		pt, err := a.Open(dst, env.Nonce, env.Sealed, aad)
		if err != nil {
			return nil, v.n, ErrDecrypt
		}
		return pt, v.n, nil
	default:
		pt, err := v.aead.Open(dst, env.Nonce, env.Sealed, aad)
		if err != nil {
			return nil, v.n, ErrDecrypt
		}
		return pt, v.n, nil
	}
}

// kindState returns the snapshot of a key of the given kind; what names
// the kind in the error ("an encryption key").
func (e *Engine) kindState(ctx context.Context, name string, kind keyKind, what string) (*keyState, error) {
	st, err := e.state(ctx, name)
	if err != nil {
		return nil, err
	}
	if st.ti.kind != kind {
		return nil, fmt.Errorf("%w: %q is %s, not %s", ErrWrongKeyType, name, st.ti.name, what)
	}
	return st, nil
}

// aeadState returns the snapshot of an encryption key.
func (e *Engine) aeadState(ctx context.Context, name string) (*keyState, error) {
	return e.kindState(ctx, name, kindAEAD, "an encryption key")
}

// maxUsageRotations bounds how many usage rotations one call may go
// through (concurrent callers may use up each new version first).
const maxUsageRotations = 64

// encryptVersion picks the version to encrypt n items with and counts them,
// rotating first when the version's usage limit is reached. With an
// explicit version, or when a fresh version cannot hold n (n above the
// limit), it returns ErrUsageExhausted.
func (e *Engine) encryptVersion(ctx context.Context, st *keyState, want uint32, n int) (*keyState, *version, error) {
	for attempt := 0; ; attempt++ {
		v, err := st.usable(want, true)
		if err != nil {
			return nil, nil, err
		}
		limit := st.rec.GetMaxEncryptionsPerVersion()
		err = v.usage.take(ctx, uint64(n), limit)
		if err == nil {
			return st, v, nil
		}
		if !errors.Is(err, ErrUsageExhausted) || want != 0 || attempt >= maxUsageRotations || uint64(n) > limit {
			return nil, nil, err
		}
		if st, err = e.rotateForUsage(ctx, st.rec.GetName(), v.n); err != nil {
			return nil, nil, err
		}
	}
}

// randomNonces fills n nonces of size ns from Config.Rand in one read.
func (e *Engine) randomNonces(n, ns int) ([]byte, error) {
	b := make([]byte, n*ns)
	if _, err := io.ReadFull(e.rand, b); err != nil {
		return nil, fmt.Errorf("transit: random nonce: %w", err)
	}
	return b, nil
}

// encryptSetup resolves an encryption key, picks and counts the version for
// n items and reads their random nonces.
func (e *Engine) encryptSetup(ctx context.Context, name string, want uint32, n int) (*keyState, *version, []byte, error) {
	st, err := e.aeadState(ctx, name)
	if err != nil {
		return nil, nil, nil, err
	}
	st, v, err := e.encryptVersion(ctx, st, want, n)
	if err != nil {
		return nil, nil, nil, err
	}
	nonces, err := e.randomNonces(n, st.ti.nonceSize)
	if err != nil {
		return nil, nil, nil, err
	}
	return st, v, nonces, nil
}

// Encrypt seals every item with the latest version (or req.KeyVersion).
// Per-item errors (missing context) are in the results; an error return
// fails the whole call (unknown key, wrong type, version not allowed, HSM
// or store fault).
func (e *Engine) Encrypt(ctx context.Context, req *pb.EncryptRequest) (*pb.EncryptResponse, error) {
	items := req.GetItems()
	st, v, nonces, err := e.encryptSetup(ctx, req.GetName(), req.GetKeyVersion(), len(items))
	if err != nil {
		return nil, err
	}
	ns := st.ti.nonceSize
	hl := headerLen(v.n)
	offs := make([]int, len(items)+1)
	for i, it := range items {
		offs[i+1] = offs[i] + hl + ns + len(it.GetPlaintext()) + tagSize
	}
	slab := make([]byte, offs[len(items)])
	res := make([]pb.EncryptResult, len(items))
	out := make([]*pb.EncryptResult, len(items))
	var f faults
	e.parallel(ctx, st, len(items), func(lo, hi int) {
		for i := lo; i < hi; i++ {
			it, r := items[i], &res[i]
			out[i] = r
			r.Reference = it.GetReference()
			ct, err := st.sealTo(ctx, slab[offs[i]:offs[i]:offs[i+1]], v, nonces[i*ns:(i+1)*ns], it.GetPlaintext(), it.GetAssociatedData(), it.GetContext())
			if err != nil {
				if itemStatus(err, &f) {
					r.Error = errs.GRPCStatus(err).Proto()
				}
				continue
			}
			r.Ciphertext, r.KeyVersion = ct, v.n
		}
	})
	if f.err != nil {
		return nil, f.err
	}
	st.count(opEncrypt, out, func(r *pb.EncryptResult) bool { return r.Error != nil })
	return &pb.EncryptResponse{Results: out}, nil
}

// count adds a batch to the key's metrics.
func count[T any](st *keyState, o op, rs []T, failed func(T) bool) {
	bad := 0
	for _, r := range rs {
		if failed(r) {
			bad++
		}
	}
	st.counters.items[o].Add(float64(len(rs)))
	if bad > 0 {
		st.counters.errs[o].Add(float64(bad))
	}
}

func (st *keyState) count(o op, rs []*pb.EncryptResult, failed func(*pb.EncryptResult) bool) {
	count(st, o, rs, failed)
}

// Decrypt opens every item with the version its ciphertext names.
func (e *Engine) Decrypt(ctx context.Context, req *pb.DecryptRequest) (*pb.DecryptResponse, error) {
	st, err := e.aeadState(ctx, req.GetName())
	if err != nil {
		return nil, err
	}
	items := req.GetItems()
	offs := make([]int, len(items)+1)
	for i, it := range items {
		offs[i+1] = offs[i] + max(len(it.GetCiphertext())-tagSize, 0)
	}
	slab := make([]byte, offs[len(items)])
	res := make([]pb.DecryptResult, len(items))
	out := make([]*pb.DecryptResult, len(items))
	var f faults
	e.parallel(ctx, st, len(items), func(lo, hi int) {
		for i := lo; i < hi; i++ {
			it, r := items[i], &res[i]
			out[i] = r
			r.Reference = it.GetReference()
			pt, n, err := st.open(ctx, slab[offs[i]:offs[i]:offs[i+1]], it.GetCiphertext(), it.GetAssociatedData(), it.GetContext())
			if err != nil {
				if itemStatus(err, &f) {
					r.Error = errs.GRPCStatus(err).Proto()
				}
				continue
			}
			if pt == nil {
				pt = []byte{}
			}
			r.Plaintext, r.KeyVersion = pt, n
		}
	})
	if f.err != nil {
		return nil, f.err
	}
	count(st, opDecrypt, out, func(r *pb.DecryptResult) bool { return r.Error != nil })
	return &pb.DecryptResponse{Results: out}, nil
}

// Rewrap decrypts every item and encrypts it again with the latest (or
// req.KeyVersion) version, keeping its AAD and context.
func (e *Engine) Rewrap(ctx context.Context, req *pb.RewrapRequest) (*pb.RewrapResponse, error) {
	items := req.GetItems()
	st, v, nonces, err := e.encryptSetup(ctx, req.GetName(), req.GetKeyVersion(), len(items))
	if err != nil {
		return nil, err
	}
	ns := st.ti.nonceSize
	// One slab for all new ciphertexts: a valid old ciphertext holds at
	// least a 2-byte header, nonce and tag around the plaintext, so
	// headerLen(v.n)+len(ct) bounds the new one.
	hl := headerLen(v.n)
	offs := make([]int, len(items)+1)
	for i, it := range items {
		offs[i+1] = offs[i] + hl + len(it.GetCiphertext())
	}
	slab := make([]byte, offs[len(items)])
	res := make([]pb.RewrapResult, len(items))
	out := make([]*pb.RewrapResult, len(items))
	var f faults
	e.parallel(ctx, st, len(items), func(lo, hi int) {
		var pbuf []byte
		for i := lo; i < hi; i++ {
			it, r := items[i], &res[i]
			out[i] = r
			r.Reference = it.GetReference()
			pt, _, err := st.open(ctx, pbuf[:0], it.GetCiphertext(), it.GetAssociatedData(), it.GetContext())
			if err == nil {
				pbuf = pt
				dst := slab[offs[i]:offs[i]:offs[i+1]]
				var ct []byte
				ct, err = st.sealTo(ctx, dst, v, nonces[i*ns:(i+1)*ns], pt, it.GetAssociatedData(), it.GetContext())
				r.Ciphertext, r.KeyVersion = ct, v.n
			}
			if err != nil {
				r.Ciphertext, r.KeyVersion = nil, 0
				if itemStatus(err, &f) {
					r.Error = errs.GRPCStatus(err).Proto()
				}
			}
		}
		wipe(pbuf)
	})
	if f.err != nil {
		return nil, f.err
	}
	count(st, opRewrap, out, func(r *pb.RewrapResult) bool { return r.Error != nil })
	return &pb.RewrapResponse{Results: out}, nil
}

// GenerateDataKey makes random data keys of req.Bits (128, 256 default,
// 512) from Config.Rand and encrypts each under the key with the item's AAD
// and context.
func (e *Engine) GenerateDataKey(ctx context.Context, req *pb.GenerateDataKeyRequest) (*pb.GenerateDataKeyResponse, error) {
	bits := req.GetBits()
	switch bits {
	case 0:
		bits = 256
	case 128, 256, 512:
	default:
		return nil, fmt.Errorf("%w: bits must be 128, 256 or 512", ErrInvalid)
	}
	st, err := e.aeadState(ctx, req.GetName())
	if err != nil {
		return nil, err
	}
	items := req.GetItems()
	st, v, err := e.encryptVersion(ctx, st, req.GetKeyVersion(), len(items))
	if err != nil {
		return nil, err
	}
	size, ns := int(bits/8), st.ti.nonceSize
	keys := make([]byte, len(items)*size)
	if _, err := io.ReadFull(e.rand, keys); err != nil {
		return nil, fmt.Errorf("transit: random: %w", err)
	}
	nonces, err := e.randomNonces(len(items), ns)
	if err != nil {
		return nil, err
	}
	clen := headerLen(v.n) + ns + size + tagSize
	slab := make([]byte, len(items)*clen)
	res := make([]pb.DataKeyResult, len(items))
	out := make([]*pb.DataKeyResult, len(items))
	var f faults
	e.parallel(ctx, st, len(items), func(lo, hi int) {
		for i := lo; i < hi; i++ {
			it, r := items[i], &res[i]
			out[i] = r
			r.Reference = it.GetReference()
			pt := keys[i*size : (i+1)*size : (i+1)*size]
			dst := slab[i*clen : i*clen : (i+1)*clen]
			ct, err := st.sealTo(ctx, dst, v, nonces[i*ns:(i+1)*ns], pt, it.GetAssociatedData(), it.GetContext())
			if err != nil {
				if itemStatus(err, &f) {
					r.Error = errs.GRPCStatus(err).Proto()
				}
				continue
			}
			r.Ciphertext, r.KeyVersion = ct, v.n
			if !req.GetWrappedOnly() {
				r.Plaintext = pt
			}
		}
	})
	if req.GetWrappedOnly() {
		wipe(keys)
	}
	if f.err != nil {
		return nil, f.err
	}
	count(st, opDatakey, out, func(r *pb.DataKeyResult) bool { return r.Error != nil })
	return &pb.GenerateDataKeyResponse{Results: out}, nil
}

// GenerateRandom returns n bytes (1..65536) from the HSM's RNG (Config.Rand without an HSM).
func (e *Engine) GenerateRandom(ctx context.Context, n int) ([]byte, error) {
	if n <= 0 || n > 1<<16 {
		return nil, fmt.Errorf("%w: bytes must be 1..65536", ErrInvalid)
	}
	return e.random(ctx, n)
}

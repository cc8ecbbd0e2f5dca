package transit

import (
	"bytes"
	"context"
	"crypto"
	"crypto/aes"
	"crypto/cipher"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/hmac"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"io"
	"sync"
	"time"

	"golang.org/x/crypto/chacha20poly1305"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/hsmgate/hsmgate/internal/errs"
	pb "github.com/hsmgate/hsmgate/proto/hsmgate/v1"
)

// keyState is an immutable snapshot of one key: its record and the loaded
// material of its usable versions. Rotation and config changes build a new
// one; the hot path reads it through an atomic.Pointer.
type keyState struct {
	rec      *pb.TransitKeyRecord // never modified after build
	rev      int64
	ti       typeInfo
	versions []*version // index = version number; nil below min_available_version
	counters *keyCounters
}

// version is one key version's state and (if usable) material.
type version struct {
	n        uint32
	state    pb.TransitVersionState
	created  time.Time
	wrapped  []byte // stored blob, to reuse material across snapshots
	hsmLabel string
	loaded   bool // material present

	key     secret      // symmetric material (wrapped residency)
	aead    cipher.AEAD // wrapped, non-derived AEAD
	haead   AEAD        // hsm AES-GCM
	priv    crypto.Signer
	hsigner Signer
	hmac    MAC // hsm HMAC
	pub     crypto.PublicKey
	pkcs8   secret
	macs    *sync.Pool // of hash.Hash keyed with key (hmac types)

	usage *usageCounter // encryption types
}

func ts(t time.Time) *timestamppb.Timestamp { return timestamppb.New(t) }

// build makes a snapshot of rec, loading material of the versions that can
// be used (active, >= min_decryption_version) and reusing prev's loaded
// material where the stored blob did not change.
func (e *Engine) build(ctx context.Context, rec *pb.TransitKeyRecord, rev int64, prev *keyState) (*keyState, error) {
	ti, ok := keyTypes[rec.GetType()]
	if !ok {
		return nil, fmt.Errorf("transit: key %q has unknown type %v", rec.GetName(), rec.GetType())
	}
	st := &keyState{rec: rec, rev: rev, ti: ti, versions: make([]*version, rec.GetLatestVersion()+1)}
	if prev != nil && prev.counters != nil {
		st.counters = prev.counters
	} else {
		st.counters = e.metrics.counters(rec.GetName(), ti)
	}
	floor := max(rec.GetMinDecryptionVersion(), rec.GetMinAvailableVersion(), 1)
	for _, vr := range rec.GetVersions() {
		n := vr.GetVersion()
		if n == 0 || n > rec.GetLatestVersion() {
			return nil, fmt.Errorf("transit: key %q: stored version %d out of range", rec.GetName(), n)
		}
		v := &version{n: n, state: vr.GetState(), created: vr.GetCreateTime().AsTime(),
			wrapped: vr.GetWrappedMaterial(), hsmLabel: vr.GetHsmLabel()}
		if ti.kind == kindAEAD {
			v.usage = e.usageCounter(rec.GetName(), keyID(rec), n)
		}
		if len(vr.GetPublicKey()) > 0 {
			pub, err := x509.ParsePKIXPublicKey(vr.GetPublicKey())
			if err != nil {
				return nil, fmt.Errorf("transit: key %q v%d: public key: %w", rec.GetName(), n, err)
			}
			v.pub = pub
		}
		st.versions[n] = v
		if n < floor || v.state != pb.TransitVersionState_TRANSIT_VERSION_STATE_ACTIVE {
			continue
		}
		if prev != nil && int(n) < len(prev.versions) {
			if old := prev.versions[n]; old != nil && old.loaded && old.hsmLabel == v.hsmLabel && bytes.Equal(old.wrapped, v.wrapped) {
				v.copyMaterial(old)
				continue
			}
		}
		if err := e.loadMaterial(ctx, rec, vr, ti, v); err != nil {
			return nil, err
		}
	}
	return st, nil
}

func (v *version) copyMaterial(o *version) {
	v.loaded, v.key, v.aead, v.haead, v.priv, v.hsigner, v.hmac, v.pkcs8, v.macs = true, o.key, o.aead, o.haead, o.priv, o.hsigner, o.hmac, o.pkcs8, o.macs
	if o.pub != nil {
		v.pub = o.pub
	}
}

func (e *Engine) kekFor(ctx context.Context, label string) (Wrapper, error) {
	if label == "" || label == e.cfg.KEK.Label() {
		return e.cfg.KEK, nil
	}
	if e.cfg.OldKEK == nil {
		return nil, fmt.Errorf("transit: blob wrapped under unknown KEK %q", label)
	}
	return e.cfg.OldKEK(ctx, label)
}

func (e *Engine) loadMaterial(ctx context.Context, rec *pb.TransitKeyRecord, vr *pb.TransitKeyVersionRecord, ti typeInfo, v *version) error {
	name, n := rec.GetName(), vr.GetVersion()
	if vr.GetHsmLabel() != "" {
		if e.cfg.HSM == nil {
			return fmt.Errorf("%w: key %q is hsm-resident but no HSM is configured", ErrUnavailable, name)
		}
		switch ti.kind {
		case kindAEAD:
			a, err := e.cfg.HSM.AEAD(ctx, vr.GetHsmLabel())
			if err != nil {
				return fmt.Errorf("transit: key %q v%d: hsm key: %w", name, n, err)
			}
			v.haead = a
		case kindSign:
			s, err := e.cfg.HSM.Signer(ctx, vr.GetHsmLabel())
			if err != nil {
				return fmt.Errorf("transit: key %q v%d: hsm key: %w", name, n, err)
			}
			v.hsigner = s
			if v.pub == nil {
				v.pub = s.Public()
			}
		case kindHMAC:
			c, err := e.cfg.HSM.MAC(ctx, vr.GetHsmLabel(), ti.hash)
			if err != nil {
				return fmt.Errorf("transit: key %q v%d: hsm key: %w", name, n, err)
			}
			v.hmac = c
		default:
			return fmt.Errorf("transit: key %q: type %s cannot be hsm-resident", name, ti.name)
		}
		v.loaded = true
		return nil
	}
	kek, err := e.kekFor(ctx, vr.GetKekLabel())
	if err != nil {
		return fmt.Errorf("transit: key %q v%d: %w", name, n, err)
	}
	raw, err := kek.Unwrap(ctx, vr.GetWrappedMaterial())
	if err != nil {
		if errs.Code(err) == errs.Unavailable.Code() {
			return fmt.Errorf("transit: key %q v%d: unwrap: %w", name, n, err)
		}
		// A blob that does not unwrap is our internal fault, not the caller's.
		return fmt.Errorf("transit: key %q v%d: unwrap failed: %v", name, n, err)
	}
	defer wipe(raw)
	if err := v.setMaterial(ti, raw); err != nil {
		return fmt.Errorf("transit: key %q v%d: %v", name, n, err)
	}
	return nil
}

// setMaterial loads raw material (symmetric bytes or PKCS#8) into v.
func (v *version) setMaterial(ti typeInfo, raw []byte) error {
	switch ti.kind {
	case kindAEAD:
		if len(raw) != ti.keyLen {
			return fmt.Errorf("%w: %s key must be %d bytes, got %d", ErrInvalid, ti.name, ti.keyLen, len(raw))
		}
		a, err := newAEAD(ti, raw)
		if err != nil {
			return err
		}
		v.key, v.aead = newSecret(raw), a
	case kindHMAC:
		if len(raw) < 32 || len(raw) > 1024 {
			return fmt.Errorf("%w: %s key must be 32..1024 bytes, got %d", ErrInvalid, ti.name, len(raw))
		}
		key := newSecret(raw)
		h := ti.hash
		v.key = key
		v.macs = &sync.Pool{New: func() any { return hmac.New(h.New, key.view()) }}
	case kindSign:
		k, err := x509.ParsePKCS8PrivateKey(raw)
		if err != nil {
			return fmt.Errorf("%w: private key is not PKCS#8: %v", ErrInvalid, err)
		}
		if err := checkPrivate(ti, k); err != nil {
			return err
		}
		s := k.(crypto.Signer)
		v.priv, v.pub, v.pkcs8 = s, s.Public(), newSecret(raw)
	}
	v.loaded = true
	return nil
}

func newAEAD(ti typeInfo, key []byte) (cipher.AEAD, error) {
	if ti.nonceSize == chacha20poly1305.NonceSizeX {
		return chacha20poly1305.NewX(key)
	}
	b, err := aes.NewCipher(key)
	if err != nil {
		return nil, err
	}
	return cipher.NewGCM(b)
}

func checkPrivate(ti typeInfo, k any) error {
	ok := false
	switch k := k.(type) {
	case *ecdsa.PrivateKey:
		ok = (ti.name == "ecdsa-p256" && k.Curve == elliptic.P256()) || (ti.name == "ecdsa-p384" && k.Curve == elliptic.P384())
	case ed25519.PrivateKey:
		ok = ti.name == "ed25519"
	case *rsa.PrivateKey:
		ok = ti.rsaBits != 0 && k.N.BitLen() == ti.rsaBits
	}
	if !ok {
		return fmt.Errorf("%w: private key does not match type %s", ErrInvalid, ti.name)
	}
	return nil
}

// random returns n bytes for key material: from the HSM's RNG when there is
// an HSM, else from Config.Rand.
func (e *Engine) random(ctx context.Context, n int) ([]byte, error) {
	if e.cfg.HSM != nil {
		b, err := e.cfg.HSM.Random(ctx, n)
		if err != nil {
			return nil, fmt.Errorf("transit: hsm random: %w", err)
		}
		if len(b) != n {
			return nil, fmt.Errorf("transit: hsm random: %d bytes, want %d", len(b), n)
		}
		return b, nil
	}
	b := make([]byte, n)
	if _, err := io.ReadFull(e.rand, b); err != nil {
		return nil, fmt.Errorf("transit: random: %w", err)
	}
	return b, nil
}

// generateRSAKey makes RSA keys. Since Go 1.26 rsa.GenerateKey always uses
// the system's secure source and ignores its reader, so RSA primes do not
// come from the HSM RNG. Tests replace it with a cache of pregenerated keys.
var generateRSAKey = func(bits int) (*rsa.PrivateKey, error) { return rsa.GenerateKey(rand.Reader, bits) }

// newRawMaterial makes fresh material for a wrapped version: symmetric bytes
// from the HSM RNG, ECDSA scalars and Ed25519 seeds from the HSM RNG, RSA
// from Go (see generateRSAKey). Private keys are returned as PKCS#8.
func (e *Engine) newRawMaterial(ctx context.Context, ti typeInfo) ([]byte, error) {
	switch ti.kind {
	case kindAEAD, kindHMAC:
		return e.random(ctx, ti.keyLen)
	}
	var k any
	switch ti.name {
	case "ecdsa-p256", "ecdsa-p384":
		curve, size := elliptic.P256(), 32
		if ti.name == "ecdsa-p384" {
			curve, size = elliptic.P384(), 48
		}
		for i := 0; k == nil; i++ {
			b, err := e.random(ctx, size)
			if err != nil {
				return nil, err
			}
			// Rejection sampling: a scalar >= n (or zero) is refused; retry.
			if pk, err := ecdsa.ParseRawPrivateKey(curve, b); err == nil {
				k = pk
			} else if i > 64 {
				return nil, fmt.Errorf("transit: cannot make an ECDSA scalar: %v", err)
			}
			wipe(b)
		}
	case "ed25519":
		seed, err := e.random(ctx, ed25519.SeedSize)
		if err != nil {
			return nil, err
		}
		k = ed25519.NewKeyFromSeed(seed)
		wipe(seed)
	default:
		rk, err := generateRSAKey(ti.rsaBits)
		if err != nil {
			return nil, fmt.Errorf("transit: rsa: %w", err)
		}
		k = rk
	}
	return x509.MarshalPKCS8PrivateKey(k)
}

// newVersion makes version n of rec's key: material in the HSM (hsm
// residency) or generated and wrapped under the KEK. raw, if not nil, is
// imported material instead of fresh material. undo destroys an HSM object
// made here if the caller abandons the version.
func (e *Engine) newVersion(ctx context.Context, rec *pb.TransitKeyRecord, n uint32, raw []byte) (*pb.TransitKeyVersionRecord, func(), error) {
	ti := keyTypes[rec.GetType()]
	vr := &pb.TransitKeyVersionRecord{Version: n, State: pb.TransitVersionState_TRANSIT_VERSION_STATE_ACTIVE, CreateTime: ts(e.clock.Now())}
	if rec.GetResidency() == pb.TransitResidency_TRANSIT_RESIDENCY_HSM {
		if e.cfg.HSM == nil {
			return nil, nil, fmt.Errorf("%w: no HSM configured for hsm residency", ErrInvalid)
		}
		suffix := make([]byte, 6)
		if _, err := io.ReadFull(e.rand, suffix); err != nil {
			return nil, nil, fmt.Errorf("transit: random: %w", err)
		}
		label := fmt.Sprintf("transit/%s/v%d/%s", rec.GetName(), n, hex.EncodeToString(suffix))
		if err := e.cfg.HSM.GenerateKey(ctx, label, ti.hsmType); err != nil {
			return nil, nil, fmt.Errorf("transit: key %q v%d: generate in hsm: %w", rec.GetName(), n, err)
		}
		undo := func() { e.destroyHSM(label) }
		vr.HsmLabel = label
		if ti.kind == kindSign {
			s, err := e.cfg.HSM.Signer(ctx, label)
			if err != nil {
				undo()
				return nil, nil, fmt.Errorf("transit: key %q v%d: %w", rec.GetName(), n, err)
			}
			der, err := x509.MarshalPKIXPublicKey(s.Public())
			if err != nil {
				undo()
				return nil, nil, fmt.Errorf("transit: key %q v%d: public key: %w", rec.GetName(), n, err)
			}
			vr.PublicKey = der
		}
		return vr, undo, nil
	}
	if raw == nil {
		var err error
		if raw, err = e.newRawMaterial(ctx, ti); err != nil {
			return nil, nil, err
		}
		defer wipe(raw)
	}
	var probe version
	if err := probe.setMaterial(ti, raw); err != nil {
		return nil, nil, err
	}
	if probe.pub != nil {
		der, err := x509.MarshalPKIXPublicKey(probe.pub)
		if err != nil {
			return nil, nil, err
		}
		vr.PublicKey = der
	}
	w, err := e.cfg.KEK.Wrap(ctx, raw)
	if err != nil {
		return nil, nil, fmt.Errorf("transit: key %q v%d: wrap: %w", rec.GetName(), n, err)
	}
	vr.WrappedMaterial, vr.KekLabel = w, e.cfg.KEK.Label()
	return vr, func() {}, nil
}

// destroyHSM deletes an HSM object, logging (never failing) when it cannot:
// the record no longer names it, so it is an orphan to clean up by label.
func (e *Engine) destroyHSM(label string) {
	if e.cfg.HSM == nil || label == "" || adoptedLabel(label) {
		return // an adopted key is not hsmgate's to destroy
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := e.cfg.HSM.DestroyKey(ctx, label); err != nil && errs.Code(err) != errs.NotFound.Code() {
		e.log.Warn("transit: could not destroy hsm object; orphaned", "label", label, "err", err)
	}
}

// hmacOf computes the MAC of msg: with v's pooled hash, or by the HSM for
// an hsm-resident key (whose failure is a fault, not the item's mistake).
func (v *version) hmacOf(ctx context.Context, dst, msg []byte) ([]byte, error) {
	if v.hmac != nil {
		sum, err := v.hmac.SumContext(ctx, msg)
		if err != nil {
			return nil, fmt.Errorf("transit: hsm hmac: %w", asFault(err))
		}
		return append(dst, sum...), nil
	}
	h := v.macs.Get().(hash.Hash)
	h.Reset()
	h.Write(msg)
	dst = h.Sum(dst)
	v.macs.Put(h)
	return dst, nil
}

var errNoMaterial = errors.New("transit: version material not loaded")

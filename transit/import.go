package transit

import (
	"context"
	"crypto/rsa"
	"crypto/sha256"
	"errors"
	"fmt"

	"google.golang.org/protobuf/proto"

	"github.com/hsmgate/hsmgate/client/kwp"
	"github.com/hsmgate/hsmgate/keystore"
	pb "github.com/hsmgate/hsmgate/proto/hsmgate/v1"
)

// wrappingKey is the ImportKey key pair.
type wrappingKey struct {
	priv   *rsa.PrivateKey
	pubPEM string
}

// WrappingKeyBits is the size of the ImportKey wrapping key.
const WrappingKeyBits = 4096

// GetWrappingKey returns the PEM public key that ImportKey material is
// wrapped for, creating the key pair on first use (RSA-4096, private half
// stored wrapped under the KEK at WrappingKeyPath, shared by every replica).
func (e *Engine) GetWrappingKey(ctx context.Context) (string, error) {
	wk, err := e.wrappingKey(ctx)
	if err != nil {
		return "", err
	}
	return wk.pubPEM, nil
}

func (e *Engine) wrappingKey(ctx context.Context) (*wrappingKey, error) {
	if wk := e.wrapKey.Load(); wk != nil {
		return wk, nil
	}
	e.wrapMu.Lock()
	defer e.wrapMu.Unlock()
	if wk := e.wrapKey.Load(); wk != nil {
		return wk, nil
	}
	for range maxCASRetries {
		ent, err := e.store.Get(ctx, WrappingKeyPath)
		if err == nil {
			wk, err := e.openWrappingKey(ctx, ent.Value)
			if err != nil {
				return nil, err
			}
			e.wrapKey.Store(wk)
			return wk, nil
		}
		if !errors.Is(err, keystore.ErrNotFound) {
			return nil, fmt.Errorf("transit: read wrapping key: %w", err)
		}
		rec := &pb.TransitKeyRecord{Name: "wrapping-key", Type: pb.TransitKeyType_TRANSIT_KEY_TYPE_RSA_4096,
			Residency: pb.TransitResidency_TRANSIT_RESIDENCY_WRAPPED, LatestVersion: 1, MinDecryptionVersion: 1,
			CreateTime: ts(e.clock.Now())}
		vr, _, err := e.newVersion(ctx, rec, 1, nil)
		if err != nil {
			return nil, err
		}
		rec.Versions = []*pb.TransitKeyVersionRecord{vr}
		val, err := proto.Marshal(rec)
		if err != nil {
			return nil, err
		}
		if _, err := e.store.Put(ctx, WrappingKeyPath, val, keystore.MustNotExist); err != nil && !errors.Is(err, keystore.ErrConflict) {
			return nil, fmt.Errorf("transit: store wrapping key: %w", err)
		}
		// Read back: another replica may have won the race.
	}
	return nil, fmt.Errorf("%w: wrapping key", ErrConflict)
}

func (e *Engine) openWrappingKey(ctx context.Context, val []byte) (*wrappingKey, error) {
	rec := &pb.TransitKeyRecord{}
	if err := proto.Unmarshal(val, rec); err != nil || len(rec.GetVersions()) != 1 {
		return nil, fmt.Errorf("transit: wrapping key record is corrupt")
	}
	var v version
	if err := e.loadMaterial(ctx, rec, rec.GetVersions()[0], keyTypes[rec.GetType()], &v); err != nil {
		return nil, err
	}
	priv, ok := v.priv.(*rsa.PrivateKey)
	if !ok {
		return nil, fmt.Errorf("transit: wrapping key is not RSA")
	}
	p, err := publicKeyPEM(&priv.PublicKey)
	if err != nil {
		return nil, err
	}
	return &wrappingKey{priv: priv, pubPEM: p}, nil
}

// unwrapImport opens ImportKey material: RSA-OAEP-SHA256 (empty label) of a
// 32-byte AES key in the first 512 bytes, then RFC 5649 KWP of the material
// under that key.
func (e *Engine) unwrapImport(ctx context.Context, wrapped []byte) ([]byte, error) {
	wk, err := e.wrappingKey(ctx)
	if err != nil {
		return nil, err
	}
	k := wk.priv.Size()
	if len(wrapped) <= k {
		return nil, fmt.Errorf("%w: wrapped material shorter than the %d-byte OAEP block", ErrInvalid, k)
	}
	eph, err := rsa.DecryptOAEP(sha256.New(), nil, wk.priv, wrapped[:k], nil)
	if err != nil || len(eph) != 32 {
		return nil, fmt.Errorf("%w: OAEP part does not decrypt to an AES-256 key", ErrInvalid)
	}
	defer wipe(eph)
	m, err := kwp.Unwrap(eph, wrapped[k:])
	if err != nil {
		return nil, fmt.Errorf("%w: KWP part does not unwrap", ErrInvalid)
	}
	return m, nil
}

// ImportKey creates a wrapped key from caller material (or, with
// new_version, adds a version to an existing imported key).
func (e *Engine) ImportKey(ctx context.Context, req *pb.ImportKeyRequest) (*pb.TransitKey, error) {
	if err := checkName(req.GetName()); err != nil {
		return nil, err
	}
	raw, err := e.unwrapImport(ctx, req.GetWrappedMaterial())
	if err != nil {
		return nil, err
	}
	defer wipe(raw)
	ti, ok := keyTypes[req.GetType()]
	if !ok {
		return nil, fmt.Errorf("%w: key type %v", ErrInvalid, req.GetType())
	}
	var probe version
	if err := probe.setMaterial(ti, raw); err != nil {
		return nil, err
	}
	if req.GetNewVersion() {
		st, err := e.update(ctx, req.GetName(), func(rec *pb.TransitKeyRecord, undo *[]func()) error {
			if !rec.GetImported() || rec.GetType() != req.GetType() {
				return fmt.Errorf("%w: new_version needs an imported key of the same type", ErrInvalid)
			}
			n := rec.GetLatestVersion() + 1
			vr, _, err := e.newVersion(ctx, rec, n, raw)
			if err != nil {
				return err
			}
			rec.Versions, rec.LatestVersion, rec.LastRotateTime = append(rec.Versions, vr), n, ts(e.clock.Now())
			return nil
		})
		if err != nil {
			return nil, err
		}
		return e.describeCommitted(ctx, st), nil
	}
	st, err := e.create(ctx, &keyOptions{
		name: req.GetName(), typ: req.GetType(), residency: pb.TransitResidency_TRANSIT_RESIDENCY_WRAPPED,
		derived: req.GetDerived(), convergent: req.GetConvergent(), exportable: req.GetExportable(),
		deletionAllowed: req.GetDeletionAllowed(), imported: true, autoRotate: req.GetAutoRotatePeriod(),
		maxEncryptions: req.GetMaxEncryptionsPerVersion(), allowRename: req.GetAllowRestoreRename(),
	}, raw)
	if err != nil {
		return nil, err
	}
	return e.describeCommitted(ctx, st), nil
}

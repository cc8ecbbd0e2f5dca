package transit

import (
	"context"
	"crypto/x509"
	"encoding/base64"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"math"
	"sort"
	"strings"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/hsmgate/hsmgate/internal/auth"
	"github.com/hsmgate/hsmgate/keystore"
	pb "github.com/hsmgate/hsmgate/proto/hsmgate/v1"
)

// keyOptions are the settings shared by CreateKey, ImportKey and RestoreKey.
type keyOptions struct {
	name                            string
	typ                             pb.TransitKeyType
	residency                       pb.TransitResidency
	derived, convergent, exportable bool
	deletionAllowed, imported       bool
	allowRename                     bool
	autoRotate                      *durationpb.Duration
	maxEncryptions                  uint64
	keyURI                          string // adopt this existing HSM key as version 1 (hsm residency)
}

// KeyAdopter is the optional part of HSM that adopts an existing HSM key
// by RFC 7512 PKCS#11 URI (hsm.Module.AdoptKey through transithsm): it
// checks that the key is sensitive, non-extractable and of keyType, and
// returns the reference that names it in place of a label (a string that
// starts with "pkcs11:"). Errors carry internal/errs kinds.
type KeyAdopter interface {
	AdoptKey(ctx context.Context, uri, keyType string) (ref string, err error)
}

// adoptedLabel reports whether an HSM label is the reference of an adopted
// key (hsm.IsRef): such a key is never destroyed by hsmgate.
func adoptedLabel(label string) bool { return strings.HasPrefix(label, "pkcs11:") }

func (e *Engine) checkOptions(o *keyOptions) (typeInfo, error) {
	if err := checkName(o.name); err != nil {
		return typeInfo{}, err
	}
	ti, ok := keyTypes[o.typ]
	if !ok {
		return ti, fmt.Errorf("%w: key type %v", ErrInvalid, o.typ)
	}
	switch o.residency {
	case pb.TransitResidency_TRANSIT_RESIDENCY_UNSPECIFIED:
		o.residency = pb.TransitResidency_TRANSIT_RESIDENCY_WRAPPED
	case pb.TransitResidency_TRANSIT_RESIDENCY_WRAPPED:
	case pb.TransitResidency_TRANSIT_RESIDENCY_HSM:
		switch {
		case ti.hsmType == "":
			return ti, fmt.Errorf("%w: %s keys cannot be hsm-resident", ErrInvalid, ti.name)
		case o.derived || o.convergent || o.exportable:
			return ti, fmt.Errorf("%w: hsm-resident keys cannot be derived, convergent or exportable", ErrInvalid)
		case e.cfg.HSM == nil:
			return ti, fmt.Errorf("%w: no HSM configured for hsm residency", ErrInvalid)
		}
	default:
		return ti, fmt.Errorf("%w: residency %v", ErrInvalid, o.residency)
	}
	if o.keyURI != "" {
		if o.residency != pb.TransitResidency_TRANSIT_RESIDENCY_HSM {
			return ti, fmt.Errorf("%w: key_uri needs residency hsm", ErrInvalid)
		}
		if _, ok := e.cfg.HSM.(KeyAdopter); !ok {
			return ti, fmt.Errorf("%w: this HSM cannot adopt keys", ErrInvalid)
		}
	}
	if o.derived && ti.kind != kindAEAD {
		return ti, fmt.Errorf("%w: only encryption keys can be derived", ErrInvalid)
	}
	if o.convergent && !o.derived {
		return ti, fmt.Errorf("%w: convergent encryption needs a derived key", ErrInvalid)
	}
	if err := checkPeriod(o.autoRotate); err != nil {
		return ti, err
	}
	if o.maxEncryptions == 0 {
		o.maxEncryptions = ti.defaultMax
	}
	if ti.kind == kindAEAD && ti.nonceSize == 12 && o.maxEncryptions > 1<<32 {
		return ti, fmt.Errorf("%w: max_encryptions_per_version above 2^32 breaks AES-GCM's random-nonce limit", ErrInvalid)
	}
	if ti.kind != kindAEAD && o.maxEncryptions != 0 {
		return ti, fmt.Errorf("%w: max_encryptions_per_version applies to encryption keys only", ErrInvalid)
	}
	return ti, nil
}

func checkPeriod(d *durationpb.Duration) error {
	if d == nil {
		return nil
	}
	if err := d.CheckValid(); err != nil {
		return fmt.Errorf("%w: auto_rotate_period: %v", ErrInvalid, err)
	}
	if p := d.AsDuration(); p != 0 && p < MinAutoRotatePeriod {
		return fmt.Errorf("%w: auto_rotate_period must be 0 or at least %v", ErrInvalid, MinAutoRotatePeriod)
	}
	return nil
}

func (e *Engine) newRecord(o *keyOptions) (*pb.TransitKeyRecord, error) {
	id, err := e.newKeyID()
	if err != nil {
		return nil, err
	}
	now := ts(e.clock.Now())
	rec := &pb.TransitKeyRecord{
		Name: o.name, Type: o.typ, Residency: o.residency, Derived: o.derived, Convergent: o.convergent,
		Exportable: o.exportable, DeletionAllowed: o.deletionAllowed, Imported: o.imported,
		MinDecryptionVersion: 1, MinAvailableVersion: 1, MaxEncryptionsPerVersion: o.maxEncryptions,
		CreateTime: now, UpdateTime: now, AllowRestoreRename: o.allowRename, KeyId: id,
	}
	if o.autoRotate.AsDuration() > 0 {
		rec.AutoRotatePeriod = o.autoRotate
	}
	return rec, nil
}

// newKeyID returns a random 16-byte key_id (from Config.Rand).
func (e *Engine) newKeyID() ([]byte, error) {
	id := make([]byte, 16)
	if _, err := io.ReadFull(e.rand, id); err != nil {
		return nil, fmt.Errorf("transit: random key id: %w", err)
	}
	return id, nil
}

// create stores a new record with one version (raw: imported material).
func (e *Engine) create(ctx context.Context, o *keyOptions, raw []byte) (*keyState, error) {
	if _, err := e.checkOptions(o); err != nil {
		return nil, err
	}
	if _, err := e.store.Get(ctx, KeyPrefix+o.name); err == nil {
		return nil, fmt.Errorf("%w: %q", ErrKeyExists, o.name)
	} else if !errors.Is(err, keystore.ErrNotFound) {
		return nil, fmt.Errorf("transit: create %q: %w", o.name, err)
	}
	rec, err := e.newRecord(o)
	if err != nil {
		return nil, err
	}
	var vr *pb.TransitKeyVersionRecord
	undo := func() {}
	if o.keyURI != "" {
		vr, err = e.adoptVersion(ctx, rec, o.keyURI)
	} else {
		vr, undo, err = e.newVersion(ctx, rec, 1, raw)
	}
	if err != nil {
		return nil, err
	}
	rec.Versions, rec.LatestVersion, rec.LastRotateTime = []*pb.TransitKeyVersionRecord{vr}, 1, rec.CreateTime
	// No usage counter is touched before the must-not-exist write: this
	// key's counters live under its own fresh key_id, so an earlier key of
	// this name, or a concurrent create that wins, keeps its counters.
	rev, err := e.putRecord(ctx, rec, keystore.MustNotExist)
	if err != nil {
		undo()
		if errors.Is(err, keystore.ErrConflict) {
			return nil, fmt.Errorf("%w: %q", ErrKeyExists, o.name)
		}
		return nil, err
	}
	return e.committed(ctx, rec, rev, nil), nil
}

// adoptVersion makes version 1 of rec's key from the existing HSM key that
// uri names. Its HsmLabel is the key's reference, which records that
// hsmgate does not own it: trims and deletes never destroy it.
func (e *Engine) adoptVersion(ctx context.Context, rec *pb.TransitKeyRecord, uri string) (*pb.TransitKeyVersionRecord, error) {
	ti := keyTypes[rec.GetType()]
	ref, err := e.cfg.HSM.(KeyAdopter).AdoptKey(ctx, uri, ti.hsmType)
	if err != nil {
		return nil, fmt.Errorf("transit: key %q: adopt: %w", rec.GetName(), err)
	}
	vr := &pb.TransitKeyVersionRecord{Version: 1, State: pb.TransitVersionState_TRANSIT_VERSION_STATE_ACTIVE, CreateTime: ts(e.clock.Now()), HsmLabel: ref}
	if ti.kind == kindSign {
		s, err := e.cfg.HSM.Signer(ctx, ref)
		if err != nil {
			return nil, fmt.Errorf("transit: key %q: %w", rec.GetName(), err)
		}
		if vr.PublicKey, err = x509.MarshalPKIXPublicKey(s.Public()); err != nil {
			return nil, fmt.Errorf("transit: key %q: public key: %w", rec.GetName(), err)
		}
	}
	return vr, nil
}

// CreateKey makes a new key with version 1. ErrKeyExists if the name is
// taken; ErrInvalid for a bad name or option combination.
func (e *Engine) CreateKey(ctx context.Context, req *pb.CreateKeyRequest) (*pb.TransitKey, error) {
	st, err := e.create(ctx, &keyOptions{
		name: req.GetName(), typ: req.GetType(), residency: req.GetResidency(), derived: req.GetDerived(),
		convergent: req.GetConvergent(), exportable: req.GetExportable(), deletionAllowed: req.GetDeletionAllowed(),
		autoRotate: req.GetAutoRotatePeriod(), maxEncryptions: req.GetMaxEncryptionsPerVersion(),
		allowRename: req.GetAllowRestoreRename(), keyURI: req.GetKeyUri(),
	}, nil)
	if err != nil {
		return nil, err
	}
	return e.describeCommitted(ctx, st), nil
}

// GetKey returns a key's metadata with per-version state and counts.
func (e *Engine) GetKey(ctx context.Context, name string) (*pb.TransitKey, error) {
	rec, rev, err := e.getRecord(ctx, name)
	if err != nil {
		return nil, err
	}
	if st := e.cached(name); st != nil && st.rev == rev {
		return e.describe(ctx, st)
	}
	return e.describe(ctx, &keyState{rec: rec, rev: rev, ti: keyTypes[rec.GetType()]})
}

// describe renders a snapshot as the API's TransitKey, with each version's
// usage read from the store.
func (e *Engine) describe(ctx context.Context, st *keyState) (*pb.TransitKey, error) {
	var counts map[uint32]uint64
	if st.ti.kind == kindAEAD {
		var err error
		if counts, err = e.usageCounts(ctx, st.rec.GetName(), keyID(st.rec)); err != nil {
			return nil, err
		}
	}
	return e.render(st, counts), nil
}

// describeCommitted is describe after a write that committed: it cannot
// fail. If the usage counts cannot be read, it logs why and leaves them out
// (reserved and used 0); the write is reported as done, which it is.
func (e *Engine) describeCommitted(ctx context.Context, st *keyState) *pb.TransitKey {
	k, err := e.describe(ctx, st)
	if err == nil {
		return k
	}
	reqID, _ := auth.RequestID(ctx)
	e.log.Warn("transit: key written; its usage counts could not be read for the answer",
		"key", st.rec.GetName(), "request_id", reqID, "err", err)
	return e.render(st, nil)
}

// render builds the TransitKey of a snapshot and its stored usage counts.
func (e *Engine) render(st *keyState, counts map[uint32]uint64) *pb.TransitKey {
	rec := st.rec
	k := &pb.TransitKey{
		Name: rec.GetName(), Type: rec.GetType(), Residency: rec.GetResidency(), Derived: rec.GetDerived(),
		Convergent: rec.GetConvergent(), Exportable: rec.GetExportable(), DeletionAllowed: rec.GetDeletionAllowed(),
		Imported: rec.GetImported(), LatestVersion: rec.GetLatestVersion(),
		MinDecryptionVersion: rec.GetMinDecryptionVersion(), MinEncryptionVersion: rec.GetMinEncryptionVersion(),
		AutoRotatePeriod: rec.GetAutoRotatePeriod(), MaxEncryptionsPerVersion: rec.GetMaxEncryptionsPerVersion(),
		CreateTime: rec.GetCreateTime(), UpdateTime: rec.GetUpdateTime(), AllowRestoreRename: rec.GetAllowRestoreRename(),
	}
	for _, vr := range rec.GetVersions() {
		kv := &pb.TransitKeyVersion{Version: vr.GetVersion(), State: vr.GetState(), CreateTime: vr.GetCreateTime()}
		if st.ti.kind == kindAEAD {
			n := counts[vr.GetVersion()]
			kv.Reserved = proto.Uint64(n)
			kv.Used = proto.Uint64(n - min(n, e.unspent(rec.GetName(), keyID(rec), vr.GetVersion())))
		}
		if len(vr.GetPublicKey()) > 0 {
			kv.PublicKeyPem = string(pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: vr.GetPublicKey()}))
		}
		k.Versions = append(k.Versions, kv)
	}
	return k
}

// ListKeys returns key names in order after pageToken, at most pageSize
// (default and maximum 1000), and the token of the next page ("" at the end).
func (e *Engine) ListKeys(ctx context.Context, pageSize int, pageToken string) ([]string, string, error) {
	if pageSize <= 0 || pageSize > 1000 {
		pageSize = 1000
	}
	after := ""
	if pageToken != "" {
		b, err := base64.RawURLEncoding.DecodeString(pageToken)
		if err != nil {
			return nil, "", fmt.Errorf("%w: page token", ErrInvalid)
		}
		after = string(b)
	}
	ents, err := e.store.List(ctx, KeyPrefix)
	if err != nil {
		return nil, "", fmt.Errorf("transit: list keys: %w", err)
	}
	var names []string
	for _, ent := range ents {
		if n := strings.TrimPrefix(ent.Key, KeyPrefix); n > after {
			names = append(names, n)
		}
	}
	sort.Strings(names)
	next := ""
	if len(names) > pageSize {
		names = names[:pageSize]
		next = base64.RawURLEncoding.EncodeToString([]byte(names[pageSize-1]))
	}
	return names, next, nil
}

// addVersion appends a fresh version to rec.
func (e *Engine) addVersion(ctx context.Context, rec *pb.TransitKeyRecord, undo *[]func()) error {
	if rec.GetImported() {
		return fmt.Errorf("%w: imported keys rotate only by importing a new version", ErrNotAllowed)
	}
	if rec.GetLatestVersion() == math.MaxUint32 {
		return fmt.Errorf("%w: no more versions", ErrNotAllowed)
	}
	n := rec.GetLatestVersion() + 1
	vr, u, err := e.newVersion(ctx, rec, n, nil)
	if err != nil {
		return err
	}
	*undo = append(*undo, u)
	rec.Versions = append(rec.Versions, vr)
	rec.LatestVersion = n
	rec.LastRotateTime = ts(e.clock.Now())
	return nil
}

// RotateKey adds a new latest version.
func (e *Engine) RotateKey(ctx context.Context, name string) (*pb.TransitKey, error) {
	st, err := e.update(ctx, name, func(rec *pb.TransitKeyRecord, undo *[]func()) error {
		return e.addVersion(ctx, rec, undo)
	})
	if err != nil {
		return nil, err
	}
	e.metrics.rotated(st, rotateRPC)
	return e.describeCommitted(ctx, st), nil
}

// UpdateKeyConfig changes the settings present in req, with Vault's rules:
// 1 <= min_decryption_version <= latest and >= the trimmed floor;
// min_encryption_version is 0 (latest) or in [min_decryption_version, latest];
// exportable cannot be unset.
func (e *Engine) UpdateKeyConfig(ctx context.Context, req *pb.UpdateKeyConfigRequest) (*pb.TransitKey, error) {
	if err := checkPeriod(req.GetAutoRotatePeriod()); err != nil {
		return nil, err
	}
	st, err := e.update(ctx, req.GetName(), func(rec *pb.TransitKeyRecord, _ *[]func()) error {
		ti := keyTypes[rec.GetType()]
		if req.MinDecryptionVersion != nil {
			v := max(req.GetMinDecryptionVersion(), 1)
			if v > rec.GetLatestVersion() {
				return fmt.Errorf("%w: min_decryption_version %d above latest version %d", ErrInvalid, v, rec.GetLatestVersion())
			}
			if v < rec.GetMinAvailableVersion() {
				return fmt.Errorf("%w: min_decryption_version %d below trimmed versions (min available %d)", ErrInvalid, v, rec.GetMinAvailableVersion())
			}
			rec.MinDecryptionVersion = v
		}
		if req.MinEncryptionVersion != nil {
			v := req.GetMinEncryptionVersion()
			if v > rec.GetLatestVersion() {
				return fmt.Errorf("%w: min_encryption_version %d above latest version %d", ErrInvalid, v, rec.GetLatestVersion())
			}
			rec.MinEncryptionVersion = v
		}
		if m := rec.GetMinEncryptionVersion(); m != 0 && m < rec.GetMinDecryptionVersion() {
			return fmt.Errorf("%w: min_encryption_version %d must be 0 or >= min_decryption_version %d", ErrInvalid, m, rec.GetMinDecryptionVersion())
		}
		if req.DeletionAllowed != nil {
			rec.DeletionAllowed = req.GetDeletionAllowed()
		}
		if req.Exportable != nil {
			if !req.GetExportable() && rec.GetExportable() {
				return fmt.Errorf("%w: an exportable key stays exportable", ErrInvalid)
			}
			if req.GetExportable() && rec.GetResidency() == pb.TransitResidency_TRANSIT_RESIDENCY_HSM {
				return fmt.Errorf("%w: hsm-resident keys cannot be exportable", ErrInvalid)
			}
			rec.Exportable = req.GetExportable()
		}
		if d := req.GetAutoRotatePeriod(); d != nil {
			rec.AutoRotatePeriod = nil
			if d.AsDuration() > 0 {
				rec.AutoRotatePeriod = d
			}
		}
		if req.MaxEncryptionsPerVersion != nil {
			m := req.GetMaxEncryptionsPerVersion()
			if ti.kind != kindAEAD && m != 0 {
				return fmt.Errorf("%w: max_encryptions_per_version applies to encryption keys only", ErrInvalid)
			}
			if m == 0 {
				m = ti.defaultMax
			}
			if ti.nonceSize == 12 && m > 1<<32 {
				return fmt.Errorf("%w: max_encryptions_per_version above 2^32", ErrInvalid)
			}
			rec.MaxEncryptionsPerVersion = m
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	return e.describeCommitted(ctx, st), nil
}

// SetVersionEnabled disables or enables one version. The latest version
// cannot be disabled (rotate first); a destroyed version cannot change.
func (e *Engine) SetVersionEnabled(ctx context.Context, name string, n uint32, enabled bool) (*pb.TransitKey, error) {
	st, err := e.update(ctx, name, func(rec *pb.TransitKeyRecord, _ *[]func()) error {
		if n == 0 || n > rec.GetLatestVersion() {
			return fmt.Errorf("%w: version %d of %q", ErrUnknownVersion, n, name)
		}
		if !enabled && n == rec.GetLatestVersion() {
			return fmt.Errorf("%w: cannot disable the latest version; rotate first", ErrNotAllowed)
		}
		for _, vr := range rec.GetVersions() {
			if vr.GetVersion() != n {
				continue
			}
			if vr.GetState() == pb.TransitVersionState_TRANSIT_VERSION_STATE_DESTROYED {
				return fmt.Errorf("%w: version %d was trimmed", ErrVersionNotAllowed, n)
			}
			want := pb.TransitVersionState_TRANSIT_VERSION_STATE_ACTIVE
			if !enabled {
				want = pb.TransitVersionState_TRANSIT_VERSION_STATE_DISABLED
			}
			if vr.GetState() == want {
				return errNoChange
			}
			vr.State = want
			return nil
		}
		return fmt.Errorf("%w: version %d of %q", ErrUnknownVersion, n, name)
	})
	if err != nil {
		return nil, err
	}
	return e.describeCommitted(ctx, st), nil
}

// TrimKey destroys every version below minAvailable: wrapped blobs are
// deleted from the record and HSM objects destroyed. minAvailable must not
// exceed min_decryption_version nor a non-zero min_encryption_version.
func (e *Engine) TrimKey(ctx context.Context, name string, minAvailable uint32) (*pb.TransitKey, error) {
	var labels []string
	st, err := e.update(ctx, name, func(rec *pb.TransitKeyRecord, _ *[]func()) error {
		labels = nil
		switch {
		case minAvailable == 0:
			return fmt.Errorf("%w: min_available_version must be >= 1", ErrInvalid)
		case minAvailable > rec.GetMinDecryptionVersion():
			return fmt.Errorf("%w: min_available_version %d above min_decryption_version %d", ErrInvalid, minAvailable, rec.GetMinDecryptionVersion())
		case rec.GetMinEncryptionVersion() != 0 && minAvailable > rec.GetMinEncryptionVersion():
			return fmt.Errorf("%w: min_available_version %d above min_encryption_version %d", ErrInvalid, minAvailable, rec.GetMinEncryptionVersion())
		case minAvailable > rec.GetLatestVersion():
			return fmt.Errorf("%w: min_available_version above latest", ErrInvalid)
		case minAvailable <= rec.GetMinAvailableVersion():
			return errNoChange
		}
		for _, vr := range rec.GetVersions() {
			if vr.GetVersion() >= minAvailable {
				continue
			}
			if vr.GetHsmLabel() != "" {
				labels = append(labels, vr.GetHsmLabel())
			}
			vr.State = pb.TransitVersionState_TRANSIT_VERSION_STATE_DESTROYED
			vr.WrappedMaterial, vr.KekLabel, vr.HsmLabel = nil, "", ""
		}
		rec.MinAvailableVersion = minAvailable
		return nil
	})
	if err != nil {
		return nil, err
	}
	for _, l := range labels {
		e.destroyHSM(l)
	}
	// The trimmed versions' usage counters stay: a backup from before the
	// trim may bring their material back, and must find its count.
	return e.describeCommitted(ctx, st), nil
}

// DeleteKey removes a key whose deletion_allowed is set (ErrNotAllowed
// otherwise) and destroys its HSM objects.
func (e *Engine) DeleteKey(ctx context.Context, name string) error {
	for range maxCASRetries {
		rec, rev, err := e.getRecord(ctx, name)
		if err != nil {
			return err
		}
		if !rec.GetDeletionAllowed() {
			return fmt.Errorf("%w: deletion_allowed is false for %q", ErrNotAllowed, name)
		}
		err = e.store.Delete(ctx, KeyPrefix+name, rev)
		if errors.Is(err, keystore.ErrConflict) {
			continue
		}
		if errors.Is(err, keystore.ErrNotFound) {
			return fmt.Errorf("%w: %q", ErrKeyNotFound, name)
		}
		if err != nil {
			return fmt.Errorf("transit: delete %q: %w", name, err)
		}
		e.dropCached(name)
		e.forgetUsage(name)
		e.metrics.forget(name)
		for _, vr := range rec.GetVersions() {
			e.destroyHSM(vr.GetHsmLabel())
		}
		// The usage counters stay (under this key's key_id): restoring a
		// backup of this key must find them, or it would count from the
		// backup's older values. A new key of this name has another key_id.
		return nil
	}
	return fmt.Errorf("%w: key %q", ErrConflict, name)
}

// ExportKey returns the plaintext material of an exportable key: all usable
// versions, or version n. Symmetric keys as raw bytes, private keys as PKCS#8.
func (e *Engine) ExportKey(ctx context.Context, name string, n uint32) (*pb.ExportKeyResponse, error) {
	st, err := e.state(ctx, name)
	if err != nil {
		return nil, err
	}
	if !st.rec.GetExportable() {
		return nil, fmt.Errorf("%w: %q is not exportable", ErrNotAllowed, name)
	}
	resp := &pb.ExportKeyResponse{Name: name, Type: st.rec.GetType()}
	for i, v := range st.versions {
		if v == nil || (n != 0 && uint32(i) != n) {
			continue
		}
		if n != 0 {
			if _, err := st.usable(n, false); err != nil {
				return nil, err
			}
		}
		if !v.loaded {
			continue
		}
		m := v.key.Bytes()
		if v.pkcs8.Len() > 0 {
			m = v.pkcs8.Bytes()
		}
		resp.Versions = append(resp.Versions, &pb.ExportedKeyVersion{Version: v.n, Material: m})
	}
	if n != 0 && len(resp.Versions) == 0 {
		return nil, fmt.Errorf("%w: version %d of %q", ErrUnknownVersion, n, name)
	}
	return resp, nil
}

// publicKeyPEM renders a public key.
func publicKeyPEM(pub any) (string, error) {
	der, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		return "", err
	}
	return string(pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der})), nil
}

package transit

import (
	"bytes"
	"context"
	"crypto/aes"
	"crypto/cipher"
	"crypto/subtle"
	"encoding/binary"
	"errors"
	"fmt"
	"io"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/hsmgate/hsmgate/internal/errs"
	"github.com/hsmgate/hsmgate/keystore"
	pb "github.com/hsmgate/hsmgate/proto/hsmgate/v1"
)

// Sealed backups (BackupKey, RestoreKey).
//
// A backup is backupMagic then a TransitSealedBackup. Its body, a
// TransitKeyBackup (every field of the key record: name, type, flags,
// minimum versions, usage limit, versions with their KEK-wrapped material;
// and every version's reserved usage count), is sealed with AES-256-GCM
// under a body key made for this backup alone:
//
//   - body key: 32 random bytes from the HSM's RNG;
//   - wrapped_key = KWP under the KEK (inside the HSM; the KEK never leaves
//     it) of backupKeyBlock bytes: backupKeyDomain, the body key, zeros;
//   - AAD = "hsmgate transit backup v1\x00" | magic | the clear fields
//     (name, kek_label, wrapped_key, nonce), each length-prefixed.
//
// Only the HSM holding the KEK can open the body key, and only the holder of
// the body key can make a body that authenticates, so a backup cannot be
// edited (flags, limits, counters, name) nor made from scratch. The block's
// form keeps KWP blobs of key material from serving as body keys: transit
// wraps only 32-byte AEAD keys, 32..1024-byte HMAC keys and PKCS#8 (first
// byte 0x30), never 1088 bytes starting with 0x00.
//
// Restore rules: a backup restores under its own name; under another name
// only if the key was created with allow_restore_rename (sealed in the
// backup, so it cannot be added). It carries exportable as it was (no
// restore can set it). Usage counters are raised to at least the backup's,
// never lowered (counters outlive their key, under its key_id). A renamed
// copy gets a new key_id and its copied versions of an encryption key are
// counted at 2^32, the highest limit aes256-gcm accepts: the copy never
// encrypts with the same material under a second, independent counter; its
// first encryption rotates to fresh material (an imported copy must import
// a new version first). (xchacha20-poly1305 without a limit has no nonce
// bound to protect: its counts are informational.)
//
// Backups made before sealing (a bare TransitKeyBackup, whose fields
// nothing authenticates) are refused with ErrInvalid: accepting them would
// keep the editing attack open.

// backupMagic starts every sealed backup.
var backupMagic = []byte("HGTB\x01")

const (
	backupKeyDomain = "\x00hsmgate transit backup key v1\x00"
	backupKeyBlock  = 1088
	backupAADLabel  = "hsmgate transit backup v1\x00"
	// maxBackupSize bounds what RestoreKey parses.
	maxBackupSize = 32 << 20
	// maxWrappedBackupKey bounds the wrapped body key (KWP of the block).
	maxWrappedBackupKey = 2 * backupKeyBlock
	// renamedUsage is what a renamed copy's copied versions of an encryption
	// key are counted at: 2^32, the highest max_encryptions_per_version
	// aes256-gcm allows.
	renamedUsage = 1 << 32
)

// errBackupAuth is the answer to any backup that does not authenticate.
var errBackupAuth = fmt.Errorf("%w: backup does not authenticate (edited, damaged, or sealed under another deployment's KEK)", ErrInvalid)

// BackupKey returns a sealed backup of the key: its whole record and usage
// counts. hsm-resident keys cannot be backed up (their material never
// leaves the HSM): ErrNotAllowed.
func (e *Engine) BackupKey(ctx context.Context, name string) ([]byte, error) {
	rec, _, err := e.getRecord(ctx, name)
	if err != nil {
		return nil, err
	}
	if rec.GetResidency() == pb.TransitResidency_TRANSIT_RESIDENCY_HSM {
		return nil, fmt.Errorf("%w: hsm-resident keys cannot be backed up", ErrNotAllowed)
	}
	counts, err := e.usageCounts(ctx, name, keyID(rec))
	if err != nil {
		return nil, err
	}
	body, err := proto.Marshal(&pb.TransitKeyBackup{Key: rec, EncryptionsReserved: counts, BackupTime: timestamppb.New(e.clock.Now())})
	if err != nil {
		return nil, fmt.Errorf("transit: backup %q: encode: %w", name, err)
	}
	out, err := e.sealBackup(ctx, name, body)
	if err != nil {
		return nil, fmt.Errorf("transit: backup %q: %w", name, err)
	}
	return out, nil
}

// sealBackup seals body as described at the top of this file.
func (e *Engine) sealBackup(ctx context.Context, name string, body []byte) ([]byte, error) {
	bk, err := e.random(ctx, 32)
	if err != nil {
		return nil, err
	}
	defer wipe(bk)
	block := make([]byte, backupKeyBlock)
	defer wipe(block)
	copy(block, backupKeyDomain)
	copy(block[len(backupKeyDomain):], bk)
	wrapped, err := e.cfg.KEK.Wrap(ctx, block)
	if err != nil {
		return nil, fmt.Errorf("wrap body key: %w", err)
	}
	env := &pb.TransitSealedBackup{Name: name, KekLabel: e.cfg.KEK.Label(), WrappedKey: wrapped, Nonce: make([]byte, 12)}
	if _, err := io.ReadFull(e.rand, env.Nonce); err != nil {
		return nil, fmt.Errorf("nonce: %w", err)
	}
	aead, err := backupAEAD(bk)
	if err != nil {
		return nil, err
	}
	env.Sealed = aead.Seal(nil, env.GetNonce(), body, backupAAD(env))
	out, err := proto.Marshal(env)
	if err != nil {
		return nil, err
	}
	return append(bytes.Clone(backupMagic), out...), nil
}

func backupAEAD(key []byte) (cipher.AEAD, error) {
	b, err := aes.NewCipher(key)
	if err != nil {
		return nil, err
	}
	return cipher.NewGCM(b)
}

// backupAAD binds the clear fields of env to its sealed body.
func backupAAD(env *pb.TransitSealedBackup) []byte {
	aad := append([]byte(backupAADLabel), backupMagic...)
	for _, f := range [][]byte{[]byte(env.GetName()), []byte(env.GetKekLabel()), env.GetWrappedKey(), env.GetNonce()} {
		aad = binary.BigEndian.AppendUint32(aad, uint32(len(f)))
		aad = append(aad, f...)
	}
	return aad
}

// BackupName returns the name a backup claims (RestoreKey's authorisation
// resource when no new name is given), or "" if it does not parse. The
// claim is authenticated by RestoreKey, which refuses a backup whose sealed
// record has another name.
func BackupName(backup []byte) string {
	if len(backup) > maxBackupSize {
		return ""
	}
	if rest, ok := bytes.CutPrefix(backup, backupMagic); ok {
		var env pb.TransitSealedBackup
		if proto.Unmarshal(rest, &env) != nil {
			return ""
		}
		return env.GetName()
	}
	// An unsealed backup of earlier versions: named so that RestoreKey
	// reaches the engine and its clear refusal.
	var old pb.TransitKeyBackup
	if proto.Unmarshal(backup, &old) != nil {
		return ""
	}
	return old.GetKey().GetName()
}

// openBackup checks and opens a sealed backup. ErrInvalid for anything that
// is not a sealed backup of this deployment, unedited; Unavailable-kind
// errors when the HSM is away.
func (e *Engine) openBackup(ctx context.Context, backup []byte) (*pb.TransitKeyBackup, error) {
	if len(backup) > maxBackupSize {
		return nil, fmt.Errorf("%w: backup larger than %d bytes", ErrInvalid, maxBackupSize)
	}
	rest, ok := bytes.CutPrefix(backup, backupMagic)
	if !ok {
		var old pb.TransitKeyBackup
		if proto.Unmarshal(backup, &old) == nil && old.GetKey() != nil {
			return nil, fmt.Errorf("%w: backup is in the unsealed format of earlier versions, whose fields nothing authenticates; it cannot be restored: take a new backup", ErrInvalid)
		}
		return nil, fmt.Errorf("%w: not a transit backup", ErrInvalid)
	}
	var env pb.TransitSealedBackup
	if err := proto.Unmarshal(rest, &env); err != nil {
		return nil, fmt.Errorf("%w: backup does not decode", ErrInvalid)
	}
	if len(env.ProtoReflect().GetUnknown()) > 0 || len(env.GetNonce()) != 12 || len(env.GetWrappedKey()) == 0 || len(env.GetWrappedKey()) > maxWrappedBackupKey ||
		len(env.GetKekLabel()) > 256 || checkName(env.GetName()) != nil {
		return nil, fmt.Errorf("%w: backup header is malformed", ErrInvalid)
	}
	kek, err := e.kekFor(ctx, env.GetKekLabel())
	if err != nil {
		if errs.Code(err) == errs.Unavailable.Code() {
			return nil, fmt.Errorf("transit: restore: %w", err)
		}
		return nil, fmt.Errorf("%w: backup sealed under a KEK this deployment does not have", ErrInvalid)
	}
	block, err := kek.Unwrap(ctx, env.GetWrappedKey())
	if err != nil {
		if errs.Code(err) == errs.Unavailable.Code() {
			return nil, fmt.Errorf("transit: restore: unwrap backup key: %w", err)
		}
		return nil, errBackupAuth
	}
	defer wipe(block)
	if len(block) != backupKeyBlock || subtle.ConstantTimeCompare(block[:len(backupKeyDomain)], []byte(backupKeyDomain)) != 1 ||
		!allZero(block[len(backupKeyDomain)+32:]) {
		return nil, errBackupAuth
	}
	aead, err := backupAEAD(block[len(backupKeyDomain) : len(backupKeyDomain)+32])
	if err != nil {
		return nil, err
	}
	body, err := aead.Open(nil, env.GetNonce(), env.GetSealed(), backupAAD(&env))
	if err != nil {
		return nil, errBackupAuth
	}
	var b pb.TransitKeyBackup
	if err := proto.Unmarshal(body, &b); err != nil || b.GetKey() == nil || b.GetKey().GetName() != env.GetName() {
		return nil, fmt.Errorf("%w: sealed backup body is inconsistent", ErrInvalid)
	}
	return &b, nil
}

func allZero(b []byte) bool {
	var acc byte
	for _, c := range b {
		acc |= c
	}
	return acc == 0
}

// RestoreKey recreates a key from a sealed backup, under its own name, or
// under newName if the key allows it (see the rules at the top of this
// file). ErrKeyExists if the name is taken; ErrNotAllowed for a rename the
// key does not allow; ErrInvalid for a backup that does not authenticate or
// is malformed.
func (e *Engine) RestoreKey(ctx context.Context, backup []byte, newName string) (*pb.TransitKey, error) {
	b, err := e.openBackup(ctx, backup)
	if err != nil {
		return nil, err
	}
	rec := b.GetKey()
	orig := rec.GetName()
	renamed := newName != "" && newName != orig
	if renamed {
		if !rec.GetAllowRestoreRename() {
			return nil, fmt.Errorf("%w: %q was not created with allow_restore_rename; restore it under its own name", ErrNotAllowed, orig)
		}
		rec.Name = newName
	}
	if err := checkRestored(rec); err != nil {
		return nil, err
	}
	counts := map[uint32]uint64{}
	for _, vr := range rec.GetVersions() {
		counts[vr.GetVersion()] = b.GetEncryptionsReserved()[vr.GetVersion()]
	}
	if renamed {
		if rec.KeyId, err = e.newKeyID(); err != nil {
			return nil, err
		}
		if keyTypes[rec.GetType()].kind == kindAEAD {
			for v := range counts {
				counts[v] = max(counts[v], renamedUsage)
			}
		}
	}
	name := rec.GetName()
	if _, err := e.store.Get(ctx, KeyPrefix+name); err == nil {
		return nil, fmt.Errorf("%w: %q", ErrKeyExists, name)
	} else if !errors.Is(err, keystore.ErrNotFound) {
		return nil, fmt.Errorf("transit: restore %q: %w", name, err)
	}
	// Prove the material unwraps before anything is written.
	st, err := e.build(ctx, rec, 0, nil)
	if err != nil {
		if itemError(err) || errors.Is(err, errNoMaterial) {
			return nil, fmt.Errorf("%w: backup material: %v", ErrInvalid, err)
		}
		return nil, err
	}
	// Counters first, so no encryption can run before they are in place;
	// a counter already there (this key's, from before a delete) keeps the
	// larger value.
	if st.ti.kind == kindAEAD {
		for v, n := range counts {
			if err := e.raiseUsage(ctx, name, keyID(rec), v, n); err != nil {
				return nil, fmt.Errorf("transit: restore usage of %q: %w", name, err)
			}
		}
	}
	rec.UpdateTime = ts(e.clock.Now())
	rev, err := e.putRecord(ctx, rec, keystore.MustNotExist)
	if errors.Is(err, keystore.ErrConflict) {
		return nil, fmt.Errorf("%w: %q", ErrKeyExists, name)
	}
	if err != nil {
		return nil, err
	}
	st.rev = rev
	e.install(name, st)
	return e.describeCommitted(ctx, st), nil
}

func checkRestored(rec *pb.TransitKeyRecord) error {
	if err := checkName(rec.GetName()); err != nil {
		return err
	}
	ti, ok := keyTypes[rec.GetType()]
	if !ok {
		return fmt.Errorf("%w: backup has an unknown key type", ErrInvalid)
	}
	if rec.GetResidency() != pb.TransitResidency_TRANSIT_RESIDENCY_WRAPPED {
		return fmt.Errorf("%w: only wrapped keys can be restored", ErrInvalid)
	}
	if rec.GetLatestVersion() == 0 || len(rec.GetVersions()) == 0 {
		return fmt.Errorf("%w: backup has no versions", ErrInvalid)
	}
	latest := rec.GetLatestVersion()
	if d := rec.GetMinDecryptionVersion(); d == 0 || d > latest || rec.GetMinEncryptionVersion() > latest ||
		(rec.GetMinEncryptionVersion() != 0 && rec.GetMinEncryptionVersion() < d) || rec.GetMinAvailableVersion() > d {
		return fmt.Errorf("%w: backup has inconsistent minimum versions", ErrInvalid)
	}
	if ti.kind != kindAEAD && rec.GetMaxEncryptionsPerVersion() != 0 {
		return fmt.Errorf("%w: backup has a usage limit on a key that does not encrypt", ErrInvalid)
	}
	seen := map[uint32]bool{}
	for _, vr := range rec.GetVersions() {
		if vr.GetVersion() == 0 || vr.GetVersion() > rec.GetLatestVersion() || seen[vr.GetVersion()] || vr.GetHsmLabel() != "" {
			return fmt.Errorf("%w: backup has a bad version list", ErrInvalid)
		}
		seen[vr.GetVersion()] = true
	}
	return nil
}

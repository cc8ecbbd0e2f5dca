package transit

import (
	"bytes"
	"context"
	"crypto/rand"
	"strings"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/protobuf/proto"

	pb "github.com/hsmgate/hsmgate/proto/hsmgate/v1"
)

// editBackup is the attacker of issue 13: it changes fields of a backup.
// An unsealed backup (the old format) is decoded, edited and re-encoded. A
// sealed one cannot be opened without the KEK, so the attacker (given the
// plaintext body here, more than a real one has) edits the body and seals
// it under a key of their own, keeping the header: the best forgery there is.
func editBackup(t *testing.T, f *fixture, bk []byte, edit func(*pb.TransitKeyBackup)) []byte {
	t.Helper()
	var old pb.TransitKeyBackup
	if proto.Unmarshal(bk, &old) == nil && old.GetKey() != nil {
		edit(&old)
		out, err := proto.Marshal(&old)
		if err != nil {
			t.Fatal(err)
		}
		return out
	}
	body, err := f.e.openBackup(context.Background(), bk)
	if err != nil {
		t.Fatalf("open own backup: %v", err)
	}
	edit(body)
	plain, err := proto.Marshal(body)
	if err != nil {
		t.Fatal(err)
	}
	var env pb.TransitSealedBackup
	if err := proto.Unmarshal(bk[len(backupMagic):], &env); err != nil {
		t.Fatal(err)
	}
	mine := make([]byte, 32)
	rand.Read(mine)
	a, err := backupAEAD(mine)
	if err != nil {
		t.Fatal(err)
	}
	env.Name = body.GetKey().GetName()
	env.Sealed = a.Seal(nil, env.GetNonce(), plain, backupAAD(&env))
	out, err := proto.Marshal(&env)
	if err != nil {
		t.Fatal(err)
	}
	return append(bytes.Clone(backupMagic), out...)
}

// TestBackupAttacks: each edit of issue 13 is refused, and nothing is
// written; an unedited restore keeps the usage counters. Every case but the
// last two restored the edited key before backups were sealed.
func TestBackupAttacks(t *testing.T) {
	f := newFixture(t, func(c *Config) { c.UsageBlock = 1 })
	ctx := context.Background()
	const limit = 20
	newKey := func(name string, mod ...func(*pb.CreateKeyRequest)) {
		f.create(name, pb.TransitKeyType_TRANSIT_KEY_TYPE_AES256_GCM, wrapped, append([]func(*pb.CreateKeyRequest){func(r *pb.CreateKeyRequest) {
			r.DeletionAllowed, r.MaxEncryptionsPerVersion = true, limit
		}}, mod...)...)
	}
	exhaustV1 := func(name string) {
		for {
			_, err := f.e.Encrypt(ctx, &pb.EncryptRequest{Name: name, KeyVersion: 1, Items: []*pb.EncryptItem{{}}})
			if code(err) == codes.ResourceExhausted {
				return
			}
			if err != nil {
				t.Fatal(err)
			}
		}
	}
	absent := func(name string) {
		t.Helper()
		if _, err := f.e.GetKey(ctx, name); code(err) != codes.NotFound {
			t.Fatalf("key %q after a refused restore: %v, want NotFound", name, err)
		}
	}

	t.Run("exportable set, restored under a new name", func(t *testing.T) {
		newKey("exp1")
		bk, err := f.e.BackupKey(ctx, "exp1")
		if err != nil {
			t.Fatal(err)
		}
		forged := editBackup(t, f, bk, func(b *pb.TransitKeyBackup) { b.Key.Exportable = true })
		_, err = f.e.RestoreKey(ctx, forged, "exp1-copy")
		if err == nil {
			if _, xerr := f.e.ExportKey(ctx, "exp1-copy", 0); xerr == nil {
				t.Fatal("edited backup restored and the copy exported the raw key")
			}
			t.Fatal("edited backup restored")
		}
		absent("exp1-copy")
	})
	t.Run("exportable set, restored under its own name", func(t *testing.T) {
		newKey("exp2")
		bk, err := f.e.BackupKey(ctx, "exp2")
		if err != nil {
			t.Fatal(err)
		}
		if err := f.e.DeleteKey(ctx, "exp2"); err != nil {
			t.Fatal(err)
		}
		_, err = f.e.RestoreKey(ctx, editBackup(t, f, bk, func(b *pb.TransitKeyBackup) { b.Key.Exportable = true }), "")
		wantCode(t, "restore with exportable edited", err, codes.InvalidArgument)
		absent("exp2")
	})
	t.Run("limit lifted and reservations cleared", func(t *testing.T) {
		newKey("lim")
		exhaustV1("lim")
		bk, err := f.e.BackupKey(ctx, "lim")
		if err != nil {
			t.Fatal(err)
		}
		if err := f.e.DeleteKey(ctx, "lim"); err != nil {
			t.Fatal(err)
		}
		forged := editBackup(t, f, bk, func(b *pb.TransitKeyBackup) {
			b.Key.MaxEncryptionsPerVersion = 0
			b.EncryptionsReserved = nil
		})
		if _, err := f.e.RestoreKey(ctx, forged, ""); err == nil {
			_, eerr := f.e.Encrypt(ctx, &pb.EncryptRequest{Name: "lim", KeyVersion: 1, Items: []*pb.EncryptItem{{}}})
			t.Fatalf("edited backup restored; exhausted v1 encrypts again: %v", eerr)
		} else {
			wantCode(t, "restore with limit edited", err, codes.InvalidArgument)
		}
		absent("lim")
		// The unedited backup restores, and v1 stays exhausted.
		if _, err := f.e.RestoreKey(ctx, bk, ""); err != nil {
			t.Fatal(err)
		}
		_, err = f.e.Encrypt(ctx, &pb.EncryptRequest{Name: "lim", KeyVersion: 1, Items: []*pb.EncryptItem{{}}})
		wantCode(t, "exhausted v1 after restore", err, codes.ResourceExhausted)
	})
	t.Run("new name without allow_restore_rename", func(t *testing.T) {
		newKey("ren")
		bk, err := f.e.BackupKey(ctx, "ren")
		if err != nil {
			t.Fatal(err)
		}
		_, err = f.e.RestoreKey(ctx, bk, "ren-copy")
		wantCode(t, "unedited restore under a new name", err, codes.FailedPrecondition)
		absent("ren-copy")
	})
	t.Run("allow_restore_rename edited in", func(t *testing.T) {
		newKey("ren2")
		bk, err := f.e.BackupKey(ctx, "ren2")
		if err != nil {
			t.Fatal(err)
		}
		_, err = f.e.RestoreKey(ctx, editBackup(t, f, bk, func(b *pb.TransitKeyBackup) { b.Key.AllowRestoreRename = true }), "ren2-copy")
		if err == nil {
			t.Fatal("backup with allow_restore_rename edited in restored under a new name")
		}
		absent("ren2-copy")
	})
	t.Run("unedited restore keeps the counters", func(t *testing.T) {
		newKey("cnt")
		f.encrypt("cnt", []byte("a"), nil, nil)
		bk, err := f.e.BackupKey(ctx, "cnt")
		if err != nil {
			t.Fatal(err)
		}
		exhaustV1("cnt") // after the backup: the store counts 20, the backup less
		if err := f.e.DeleteKey(ctx, "cnt"); err != nil {
			t.Fatal(err)
		}
		k, err := f.e.RestoreKey(ctx, bk, "")
		if err != nil {
			t.Fatal(err)
		}
		if got := k.Versions[0].GetReserved(); got < limit {
			t.Fatalf("restored v1 reserved %d, want %d (the count before the delete, not the backup's)", got, limit)
		}
		_, err = f.e.Encrypt(ctx, &pb.EncryptRequest{Name: "cnt", KeyVersion: 1, Items: []*pb.EncryptItem{{}}})
		wantCode(t, "v1 exhausted before the delete, after restore", err, codes.ResourceExhausted)
	})
	t.Run("old unsealed format", func(t *testing.T) {
		newKey("old")
		rec, _, err := f.e.getRecord(ctx, "old")
		if err != nil {
			t.Fatal(err)
		}
		if err := f.e.DeleteKey(ctx, "old"); err != nil {
			t.Fatal(err)
		}
		old, _ := proto.Marshal(&pb.TransitKeyBackup{Key: rec})
		_, err = f.e.RestoreKey(ctx, old, "")
		wantCode(t, "old-format backup", err, codes.InvalidArgument)
		if !strings.Contains(err.Error(), "unsealed format") {
			t.Fatalf("old-format error %q does not say why", err)
		}
		absent("old")
	})
}

// TestBackupSealed: a backup holds no key material nor wrapped blob in
// clear; any changed byte, a claimed name that is not the sealed one, and
// another deployment's backup are refused; an allowed rename makes a copy
// that decrypts but never encrypts with the copied aes256-gcm material.
func TestBackupSealed(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	f.create("s", pb.TransitKeyType_TRANSIT_KEY_TYPE_AES256_GCM, wrapped, func(r *pb.CreateKeyRequest) {
		r.DeletionAllowed, r.AllowRestoreRename, r.MaxEncryptionsPerVersion = true, true, 100
	})
	ct := f.encrypt("s", []byte("hello"), nil, nil)
	bk, err := f.e.BackupKey(ctx, "s")
	if err != nil {
		t.Fatal(err)
	}
	rec, _, _ := f.e.getRecord(ctx, "s")
	if w := rec.Versions[0].WrappedMaterial; bytes.Contains(bk, w) {
		t.Fatal("backup shows the KEK-wrapped material in clear")
	}
	if BackupName(bk) != "s" {
		t.Fatalf("BackupName %q, want s", BackupName(bk))
	}
	if err := f.e.DeleteKey(ctx, "s"); err != nil {
		t.Fatal(err)
	}

	t.Run("every changed byte", func(t *testing.T) {
		for i := 0; i < len(bk); i += 1 + i/64 {
			bad := bytes.Clone(bk)
			bad[i] ^= 0x01
			if _, err := f.e.RestoreKey(ctx, bad, ""); err == nil {
				t.Fatalf("backup with byte %d of %d changed restored", i, len(bk))
			}
		}
		if _, err := f.e.RestoreKey(ctx, bk[:len(bk)-1], ""); err == nil {
			t.Fatal("truncated backup restored")
		}
		if _, err := f.e.GetKey(ctx, "s"); code(err) != codes.NotFound {
			t.Fatalf("key after refused restores: %v", err)
		}
	})
	t.Run("claimed name is not the sealed one", func(t *testing.T) {
		var env pb.TransitSealedBackup
		if err := proto.Unmarshal(bk[len(backupMagic):], &env); err != nil {
			t.Fatal(err)
		}
		env.Name = "other"
		b, _ := proto.Marshal(&env)
		_, err := f.e.RestoreKey(ctx, append(bytes.Clone(backupMagic), b...), "")
		wantCode(t, "clear name changed", err, codes.InvalidArgument)
	})
	t.Run("another deployment's KEK", func(t *testing.T) {
		g := newFixture(t)
		_, err := g.e.RestoreKey(ctx, bk, "")
		wantCode(t, "restore at another deployment", err, codes.InvalidArgument)
	})
	t.Run("allowed rename", func(t *testing.T) {
		k, err := f.e.RestoreKey(ctx, bk, "s-copy")
		if err != nil {
			t.Fatal(err)
		}
		if k.Versions[0].GetReserved() < renamedUsage {
			t.Fatalf("copy's v1 reserved %d, want >= 2^32", k.Versions[0].GetReserved())
		}
		if got, c := f.decrypt("s-copy", ct, nil, nil); c != codes.OK || string(got) != "hello" {
			t.Fatalf("copy decrypts %q %v", got, c)
		}
		_, err = f.e.Encrypt(ctx, &pb.EncryptRequest{Name: "s-copy", KeyVersion: 1, Items: []*pb.EncryptItem{{}}})
		wantCode(t, "copy encrypts with copied v1", err, codes.ResourceExhausted)
		if v, _, _ := ParseVersion(f.encrypt("s-copy", []byte("x"), nil, nil)); v != 2 {
			t.Fatalf("copy encrypted with v%d, want a fresh v2", v)
		}
		// Raising the copy's limit to the most allowed does not reopen v1.
		m := uint64(1 << 32)
		if _, err := f.e.UpdateKeyConfig(ctx, &pb.UpdateKeyConfigRequest{Name: "s-copy", MaxEncryptionsPerVersion: &m}); err != nil {
			t.Fatal(err)
		}
		_, err = f.e.Encrypt(ctx, &pb.EncryptRequest{Name: "s-copy", KeyVersion: 1, Items: []*pb.EncryptItem{{}}})
		wantCode(t, "copy encrypts with copied v1 after raising the limit", err, codes.ResourceExhausted)
		// The original restores beside it, with its own counters.
		o, err := f.e.RestoreKey(ctx, bk, "")
		if err != nil {
			t.Fatal(err)
		}
		if r := o.Versions[0].GetReserved(); r == 0 || r >= renamedUsage {
			t.Fatalf("original's v1 reserved %d after restore", r)
		}
	})
}

// FuzzRestoreBackup: no input panics RestoreKey, and none but an unedited
// backup restores (a success must give the backed-up key, unchanged).
func FuzzRestoreBackup(f *testing.F) {
	fx := newFixture(f)
	ctx := context.Background()
	fx.create("fz", pb.TransitKeyType_TRANSIT_KEY_TYPE_AES256_GCM, wrapped, func(r *pb.CreateKeyRequest) {
		r.DeletionAllowed, r.MaxEncryptionsPerVersion = true, 1000
	})
	fx.encrypt("fz", nil, nil, nil)
	bk, err := fx.e.BackupKey(ctx, "fz")
	if err != nil {
		f.Fatal(err)
	}
	want, err := fx.e.GetKey(ctx, "fz")
	if err != nil {
		f.Fatal(err)
	}
	rec, _, _ := fx.e.getRecord(ctx, "fz")
	if err := fx.e.DeleteKey(ctx, "fz"); err != nil {
		f.Fatal(err)
	}
	old, _ := proto.Marshal(&pb.TransitKeyBackup{Key: rec})
	f.Add(bk)
	f.Add(old)
	f.Add(bk[:len(backupMagic)+10])
	f.Add(append(bytes.Clone(backupMagic), 0x0a, 0x02, 'f', 'z'))
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, b []byte) {
		k, err := fx.e.RestoreKey(ctx, b, "")
		if err != nil {
			if c := code(err); c != codes.InvalidArgument && c != codes.FailedPrecondition {
				t.Fatalf("RestoreKey: code %v (%v), want InvalidArgument", c, err)
			}
			return
		}
		if k.Name != want.Name || k.Exportable != want.Exportable || k.MaxEncryptionsPerVersion != want.MaxEncryptionsPerVersion ||
			k.LatestVersion != want.LatestVersion || k.AllowRestoreRename != want.AllowRestoreRename ||
			k.Versions[0].GetReserved() < want.Versions[0].GetReserved() {
			t.Fatalf("restored %v from %x, want the backed-up key %v", k, b, want)
		}
		if err := fx.e.DeleteKey(ctx, k.Name); err != nil {
			t.Fatal(err)
		}
	})
}

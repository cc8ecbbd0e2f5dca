package transit

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/x509"
	"testing"

	"google.golang.org/grpc/codes"

	"github.com/hsmgate/hsmgate/client"
	pb "github.com/hsmgate/hsmgate/proto/hsmgate/v1"
)

// TestImportExportBackupRestore: imported material is the key (export gives
// it back); backup/restore keeps versions, config and counts; restore
// refuses an existing name; delete needs deletion_allowed and destroys.
func TestImportExportBackupRestore(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	key := bytes.Repeat([]byte{0x42}, 32)
	f.importKey("imp", pb.TransitKeyType_TRANSIT_KEY_TYPE_AES256_GCM, key, func(r *pb.ImportKeyRequest) { r.Exportable = true })
	ex, err := f.e.ExportKey(ctx, "imp", 0)
	if err != nil || len(ex.Versions) != 1 || !bytes.Equal(ex.Versions[0].Material, key) {
		t.Fatalf("ExportKey: %v %v", err, ex)
	}
	_, err = f.e.RotateKey(ctx, "imp")
	wantCode(t, "rotate an imported key", err, codes.FailedPrecondition)
	key2 := bytes.Repeat([]byte{0x43}, 32)
	f.importKey("imp", pb.TransitKeyType_TRANSIT_KEY_TYPE_AES256_GCM, key2, func(r *pb.ImportKeyRequest) { r.NewVersion = true })
	ex, err = f.e.ExportKey(ctx, "imp", 2)
	if err != nil || len(ex.Versions) != 1 || !bytes.Equal(ex.Versions[0].Material, key2) {
		t.Fatalf("ExportKey v2: %v %v", err, ex)
	}
	// A wrong-size key, a private key of the wrong type, garbage: refused.
	p, _ := f.e.GetWrappingKey(ctx)
	pub, _ := client.ParseWrappingKey(p)
	_, edPriv, _ := ed25519.GenerateKey(rand.Reader)
	edDER, _ := x509.MarshalPKCS8PrivateKey(edPriv)
	for name, c := range map[string]struct {
		typ pb.TransitKeyType
		m   []byte
	}{
		"short aes":     {pb.TransitKeyType_TRANSIT_KEY_TYPE_AES256_GCM, key[:16]},
		"ed25519 as ec": {pb.TransitKeyType_TRANSIT_KEY_TYPE_ECDSA_P256, edDER},
		"not pkcs8":     {pb.TransitKeyType_TRANSIT_KEY_TYPE_RSA_2048, []byte("nope")},
		"short hmac":    {pb.TransitKeyType_TRANSIT_KEY_TYPE_HMAC_SHA256, key[:8]},
	} {
		w, _ := client.WrapForImport(pub, c.m, rand.Reader)
		_, err := f.e.ImportKey(ctx, &pb.ImportKeyRequest{Name: "bad", Type: c.typ, WrappedMaterial: w})
		wantCode(t, name, err, codes.InvalidArgument)
	}
	// Wrapped for another wrapping key: refused.
	other, _ := cachedRSA(2048)
	w, _ := client.WrapForImport(&other.PublicKey, key, rand.Reader)
	_, err = f.e.ImportKey(ctx, &pb.ImportKeyRequest{Name: "bad", Type: pb.TransitKeyType_TRANSIT_KEY_TYPE_AES256_GCM, WrappedMaterial: w})
	wantCode(t, "wrapped for another key", err, codes.InvalidArgument)

	// Backup / restore.
	f.create("b", pb.TransitKeyType_TRANSIT_KEY_TYPE_XCHACHA20_POLY1305, wrapped, func(r *pb.CreateKeyRequest) { r.DeletionAllowed, r.AllowRestoreRename = true, true })
	ct1 := f.encrypt("b", []byte("v1"), nil, nil)
	if _, err := f.e.RotateKey(ctx, "b"); err != nil {
		t.Fatal(err)
	}
	ct2 := f.encrypt("b", []byte("v2"), nil, nil)
	before, _ := f.e.GetKey(ctx, "b")
	bk, err := f.e.BackupKey(ctx, "b")
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Contains(bk, key) {
		t.Fatal("backup contains raw key bytes")
	}
	_, err = f.e.RestoreKey(ctx, bk, "")
	wantCode(t, "restore over existing", err, codes.AlreadyExists)
	if err := f.e.DeleteKey(ctx, "b"); err != nil {
		t.Fatal(err)
	}
	_, err = f.e.Decrypt(ctx, &pb.DecryptRequest{Name: "b", Items: []*pb.DecryptItem{{Ciphertext: ct1}}})
	wantCode(t, "decrypt after delete", err, codes.NotFound)
	for _, name := range []string{"b", "b-copy"} {
		k, err := f.e.RestoreKey(ctx, bk, map[string]string{"b": "", "b-copy": "b-copy"}[name])
		if err != nil {
			t.Fatalf("RestoreKey(%s): %v", name, err)
		}
		if k.LatestVersion != 2 || k.Name != name {
			t.Fatalf("restored %s: latest %d name %s", name, k.LatestVersion, k.Name)
		}
		for i, v := range k.Versions {
			if v.GetReserved() < before.Versions[i].GetReserved() {
				t.Fatalf("restored v%d count %d < %d before backup", v.Version, v.GetReserved(), before.Versions[i].GetReserved())
			}
		}
		for want, ct := range map[string][]byte{"v1": ct1, "v2": ct2} {
			if got, c := f.decrypt(name, ct, nil, nil); c != codes.OK || string(got) != want {
				t.Fatalf("restored %s decrypts %q %v, want %s", name, got, c, want)
			}
		}
	}
	// hsm keys cannot be backed up; deleting one destroys its objects.
	f.create("h", pb.TransitKeyType_TRANSIT_KEY_TYPE_ECDSA_P256, inHSM, func(r *pb.CreateKeyRequest) { r.DeletionAllowed = true })
	_, err = f.e.BackupKey(ctx, "h")
	wantCode(t, "backup hsm key", err, codes.FailedPrecondition)
	rec, _, _ := f.e.getRecord(ctx, "h")
	if err := f.e.DeleteKey(ctx, "h"); err != nil {
		t.Fatal(err)
	}
	if _, err := f.mod.Signer(ctx, rec.Versions[0].HsmLabel); code(err) != codes.NotFound {
		t.Fatalf("hsm object after delete: %v, want NotFound", err)
	}
}

// TestListKeysAndDataKeys covers paging, data keys and random.
func TestListKeysAndDataKeys(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	for _, n := range []string{"c", "a", "b", "d", "e"} {
		f.create(n, pb.TransitKeyType_TRANSIT_KEY_TYPE_AES256_GCM, wrapped)
	}
	var all []string
	tok := ""
	for i := 0; ; i++ {
		names, next, err := f.e.ListKeys(ctx, 2, tok)
		if err != nil {
			t.Fatal(err)
		}
		all = append(all, names...)
		if next == "" {
			break
		}
		tok = next
		if i > 5 {
			t.Fatal("paging does not end")
		}
	}
	if got := len(all); got != 5 || all[0] != "a" || all[4] != "e" {
		t.Fatalf("ListKeys pages = %v, want a..e", all)
	}
	for _, bits := range []uint32{128, 256, 512} {
		r, err := f.e.GenerateDataKey(ctx, &pb.GenerateDataKeyRequest{Name: "a", Bits: bits, Items: []*pb.DataKeyItem{{AssociatedData: []byte("x"), Reference: "r"}}})
		if err != nil {
			t.Fatal(err)
		}
		res := r.Results[0]
		if len(res.Plaintext) != int(bits/8) || res.Reference != "r" {
			t.Fatalf("data key of %d bits: %d bytes ref %q", bits, len(res.Plaintext), res.Reference)
		}
		if got, c := f.decrypt("a", res.Ciphertext, []byte("x"), nil); c != codes.OK || !bytes.Equal(got, res.Plaintext) {
			t.Fatalf("data key does not decrypt to its plaintext: %v", c)
		}
	}
	r, err := f.e.GenerateDataKey(ctx, &pb.GenerateDataKeyRequest{Name: "a", WrappedOnly: true, Items: []*pb.DataKeyItem{{}}})
	if err != nil || len(r.Results[0].Plaintext) != 0 || len(r.Results[0].Ciphertext) == 0 {
		t.Fatalf("wrapped-only data key: %v %v", err, r.GetResults())
	}
	if got, c := f.decrypt("a", r.Results[0].Ciphertext, nil, nil); c != codes.OK || len(got) != 32 {
		t.Fatalf("wrapped-only data key decrypts to %d bytes, %v", len(got), c)
	}
	b, err := f.e.GenerateRandom(ctx, 48)
	if err != nil || len(b) != 48 {
		t.Fatalf("GenerateRandom: %d bytes %v", len(b), err)
	}
}

package transit

import (
	"bytes"
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/sha512"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/protobuf/types/known/durationpb"

	pb "github.com/hsmgate/hsmgate/proto/hsmgate/v1"
)

// TestRoundTrip runs every key type in both residencies: encryption keys
// encrypt and decrypt, signing keys sign and the signature verifies (with
// the engine and with Go's standard library), HMAC keys MAC and verify.
// Combinations the HSM cannot do are refused with InvalidArgument.
func TestRoundTrip(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	for _, typ := range allTypes {
		for _, res := range []pb.TransitResidency{wrapped, inHSM} {
			ti := keyTypes[typ]
			name := fmt.Sprintf("%s-%d", ti.name, res)
			t.Run(name, func(t *testing.T) {
				_, err := f.e.CreateKey(ctx, &pb.CreateKeyRequest{Name: name, Type: typ, Residency: res})
				if res == inHSM && ti.hsmType == "" {
					wantCode(t, "CreateKey in hsm", err, codes.InvalidArgument)
					return
				}
				if err != nil {
					t.Fatal(err)
				}
				switch ti.kind {
				case kindAEAD:
					pt := []byte("attack at dawn")
					ct := f.encrypt(name, pt, []byte("aad"), nil)
					if bytes.Contains(ct, pt) {
						t.Fatal("ciphertext contains the plaintext")
					}
					got, c := f.decrypt(name, ct, []byte("aad"), nil)
					if c != codes.OK || !bytes.Equal(got, pt) {
						t.Fatalf("Decrypt = %q, %v; want %q", got, c, pt)
					}
					if _, c := f.decrypt(name, ct, []byte("other"), nil); c != codes.InvalidArgument {
						t.Fatalf("Decrypt with wrong AAD: code %v, want InvalidArgument", c)
					}
					empty := f.encrypt(name, nil, nil, nil)
					if got, c := f.decrypt(name, empty, nil, nil); c != codes.OK || len(got) != 0 {
						t.Fatalf("empty plaintext: got %q, %v", got, c)
					}
				case kindHMAC:
					testHMACRoundTrip(t, f, name, ti)
				case kindSign:
					testSignRoundTrip(t, f, name, ti)
				}
			})
		}
	}
}

func testHMACRoundTrip(t *testing.T, f *fixture, name string, ti typeInfo) {
	ctx := context.Background()
	r, err := f.e.ComputeHmac(ctx, &pb.ComputeHmacRequest{Name: name, Items: []*pb.HmacItem{{Input: []byte("msg"), Reference: "a"}}})
	if err != nil {
		t.Fatal(err)
	}
	mac := r.Results[0].Hmac
	if len(mac) != ti.hash.Size() || r.Results[0].Reference != "a" {
		t.Fatalf("hmac of %d bytes ref %q, want %d bytes ref a", len(mac), r.Results[0].Reference, ti.hash.Size())
	}
	bad := bytes.Clone(mac)
	bad[0] ^= 1
	v, err := f.e.VerifyHmac(ctx, &pb.VerifyHmacRequest{Name: name, Items: []*pb.VerifyHmacItem{
		{Input: []byte("msg"), Hmac: mac}, {Input: []byte("msg"), Hmac: bad}, {Input: []byte("msg2"), Hmac: mac}, {Input: []byte("msg"), Hmac: mac[:4]},
	}})
	if err != nil {
		t.Fatal(err)
	}
	for i, want := range []bool{true, false, false, false} {
		if v.Results[i].Valid != want {
			t.Errorf("VerifyHmac item %d: valid %v, want %v", i, v.Results[i].Valid, want)
		}
	}
}

func testSignRoundTrip(t *testing.T, f *fixture, name string, ti typeInfo) {
	ctx := context.Background()
	k, err := f.e.GetKey(ctx, name)
	if err != nil {
		t.Fatal(err)
	}
	blk, _ := pem.Decode([]byte(k.Versions[0].PublicKeyPem))
	if blk == nil {
		t.Fatal("GetKey: no public key PEM")
	}
	pub, err := x509.ParsePKIXPublicKey(blk.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	msg := []byte("the message")
	algs := []pb.TransitSignatureAlgorithm{pb.TransitSignatureAlgorithm_TRANSIT_SIGNATURE_ALGORITHM_UNSPECIFIED}
	hashes := []pb.TransitHashAlgorithm{pb.TransitHashAlgorithm_TRANSIT_HASH_ALGORITHM_UNSPECIFIED}
	if ti.rsaBits != 0 {
		algs = append(algs, pb.TransitSignatureAlgorithm_TRANSIT_SIGNATURE_ALGORITHM_PKCS1V15)
	}
	if ti.name != "ed25519" {
		hashes = append(hashes, pb.TransitHashAlgorithm_TRANSIT_HASH_ALGORITHM_SHA2_512)
	}
	for _, alg := range algs {
		for _, h := range hashes {
			for _, prehashed := range []bool{false, true} {
				if prehashed && ti.name == "ed25519" {
					continue
				}
				hash, _ := hashFor(h, ti.hash)
				in := msg
				if prehashed {
					hh := hash.New()
					hh.Write(msg)
					in = hh.Sum(nil)
				}
				r, err := f.e.SignData(ctx, &pb.SignDataRequest{Name: name, HashAlgorithm: h, Prehashed: prehashed, SignatureAlgorithm: alg, Items: []*pb.SignItem{{Input: in}}})
				if err != nil {
					t.Fatalf("SignData(%v %v prehashed=%v): %v", alg, h, prehashed, err)
				}
				sig := r.Results[0].Signature
				if !stdVerify(pub, hash, msg, sig, alg) {
					t.Fatalf("SignData(%v %v prehashed=%v): Go's crypto rejects the signature", alg, h, prehashed)
				}
				bad := bytes.Clone(sig)
				bad[len(bad)/2] ^= 1
				v, err := f.e.VerifySignature(ctx, &pb.VerifySignatureRequest{Name: name, HashAlgorithm: h, Prehashed: prehashed, SignatureAlgorithm: alg,
					Items: []*pb.VerifyItem{{Input: in, Signature: sig}, {Input: in, Signature: bad}, {Input: in, Signature: nil}}})
				if err != nil {
					t.Fatal(err)
				}
				if !v.Results[0].Valid || v.Results[1].Valid || v.Results[2].Valid {
					t.Fatalf("VerifySignature = %v %v %v, want true false false", v.Results[0].Valid, v.Results[1].Valid, v.Results[2].Valid)
				}
			}
		}
	}
}

func stdVerify(pub crypto.PublicKey, h crypto.Hash, msg, sig []byte, alg pb.TransitSignatureAlgorithm) bool {
	var d []byte
	switch h {
	case crypto.SHA256:
		s := sha256.Sum256(msg)
		d = s[:]
	case crypto.SHA384:
		s := sha512.Sum384(msg)
		d = s[:]
	case crypto.SHA512:
		s := sha512.Sum512(msg)
		d = s[:]
	}
	switch k := pub.(type) {
	case *ecdsa.PublicKey:
		return ecdsa.VerifyASN1(k, d, sig)
	case ed25519.PublicKey:
		return ed25519.Verify(k, msg, sig)
	case *rsa.PublicKey:
		if alg == pb.TransitSignatureAlgorithm_TRANSIT_SIGNATURE_ALGORITHM_PKCS1V15 {
			return rsa.VerifyPKCS1v15(k, h, d, sig) == nil
		}
		return rsa.VerifyPSS(k, h, d, sig, &rsa.PSSOptions{SaltLength: rsa.PSSSaltLengthEqualsHash}) == nil
	}
	return false
}

// TestVersionSemantics is the table of DESIGN's version rules, for an
// encryption key in both residencies.
func TestVersionSemantics(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	for _, res := range []pb.TransitResidency{wrapped, inHSM} {
		name := fmt.Sprintf("ver-%d", res)
		t.Run(name, func(t *testing.T) {
			f.create(name, pb.TransitKeyType_TRANSIT_KEY_TYPE_AES256_GCM, res)
			ct1 := f.encrypt(name, []byte("one"), nil, nil)
			if v, _, _ := ParseVersion(ct1); v != 1 {
				t.Fatalf("first ciphertext names v%d, want v1", v)
			}
			if _, err := f.e.RotateKey(ctx, name); err != nil {
				t.Fatal(err)
			}
			ct2 := f.encrypt(name, []byte("two"), nil, nil)
			if v, _, _ := ParseVersion(ct2); v != 2 {
				t.Fatalf("after rotate: ciphertext names v%d, want v2", v)
			}
			if got, c := f.decrypt(name, ct1, nil, nil); c != codes.OK || string(got) != "one" {
				t.Fatalf("old ciphertext after rotate: %q %v, want one OK", got, c)
			}
			// Encrypt with an explicit old version is allowed while >= min_encryption_version.
			r, err := f.e.Encrypt(ctx, &pb.EncryptRequest{Name: name, KeyVersion: 1, Items: []*pb.EncryptItem{{Plaintext: []byte("x")}}})
			if err != nil || r.Results[0].KeyVersion != 1 {
				t.Fatalf("Encrypt v1: %v", err)
			}
			// Rewrap moves v1 ciphertext to v2.
			rw, err := f.e.Rewrap(ctx, &pb.RewrapRequest{Name: name, Items: []*pb.RewrapItem{{Ciphertext: ct1}}})
			if err != nil || rw.Results[0].Error != nil || rw.Results[0].KeyVersion != 2 {
				t.Fatalf("Rewrap: %v %v", err, rw.GetResults())
			}
			if got, c := f.decrypt(name, rw.Results[0].Ciphertext, nil, nil); c != codes.OK || string(got) != "one" {
				t.Fatalf("rewrapped: %q %v", got, c)
			}
			// min_encryption_version 2 refuses explicit v1 encryption.
			two := uint32(2)
			if _, err := f.e.UpdateKeyConfig(ctx, &pb.UpdateKeyConfigRequest{Name: name, MinEncryptionVersion: &two}); err != nil {
				t.Fatal(err)
			}
			_, err = f.e.Encrypt(ctx, &pb.EncryptRequest{Name: name, KeyVersion: 1, Items: []*pb.EncryptItem{{Plaintext: []byte("x")}}})
			wantCode(t, "Encrypt v1 below min_encryption_version", err, codes.FailedPrecondition)
			// Disable v1: refused; enable: works again.
			if _, err := f.e.SetVersionEnabled(ctx, name, 1, false); err != nil {
				t.Fatal(err)
			}
			if _, c := f.decrypt(name, ct1, nil, nil); c != codes.FailedPrecondition {
				t.Fatalf("disabled version: code %v, want FailedPrecondition", c)
			}
			_, err = f.e.SetVersionEnabled(ctx, name, 2, false)
			wantCode(t, "disable latest", err, codes.FailedPrecondition)
			if _, err := f.e.SetVersionEnabled(ctx, name, 1, true); err != nil {
				t.Fatal(err)
			}
			if _, c := f.decrypt(name, ct1, nil, nil); c != codes.OK {
				t.Fatalf("re-enabled version: code %v", c)
			}
			// Raising min_decryption_version refuses v1.
			if _, err := f.e.UpdateKeyConfig(ctx, &pb.UpdateKeyConfigRequest{Name: name, MinDecryptionVersion: &two}); err != nil {
				t.Fatal(err)
			}
			if _, c := f.decrypt(name, ct1, nil, nil); c != codes.FailedPrecondition {
				t.Fatalf("below min_decryption_version: code %v, want FailedPrecondition", c)
			}
			// Lowering it again works until trimmed.
			one := uint32(1)
			if _, err := f.e.UpdateKeyConfig(ctx, &pb.UpdateKeyConfigRequest{Name: name, MinDecryptionVersion: &one}); err == nil {
				// min_encryption is 2 >= 1: allowed.
				if _, c := f.decrypt(name, ct1, nil, nil); c != codes.OK {
					t.Fatalf("after lowering min_decryption_version: %v", c)
				}
				if _, err := f.e.UpdateKeyConfig(ctx, &pb.UpdateKeyConfigRequest{Name: name, MinDecryptionVersion: &two}); err != nil {
					t.Fatal(err)
				}
			} else {
				t.Fatal(err)
			}
			// Trim above min_decryption_version is refused; at it, destroys v1.
			_, err = f.e.TrimKey(ctx, name, 3)
			wantCode(t, "trim above minimums", err, codes.InvalidArgument)
			var hsmLabel string
			if res == inHSM {
				rec, _, _ := f.e.getRecord(ctx, name)
				hsmLabel = rec.Versions[0].HsmLabel
			}
			k, err := f.e.TrimKey(ctx, name, 2)
			if err != nil {
				t.Fatal(err)
			}
			if s := k.Versions[0].State; s != pb.TransitVersionState_TRANSIT_VERSION_STATE_DESTROYED {
				t.Fatalf("v1 state after trim: %v", s)
			}
			rec, _, _ := f.e.getRecord(ctx, name)
			if len(rec.Versions[0].WrappedMaterial) != 0 || rec.Versions[0].HsmLabel != "" {
				t.Fatal("trimmed version still has material in the record")
			}
			if hsmLabel != "" {
				if _, err := f.mod.AEAD(ctx, hsmLabel); code(err) != codes.NotFound {
					t.Fatalf("trimmed hsm object: AEAD() err %v, want NotFound", err)
				}
			}
			_, err = f.e.UpdateKeyConfig(ctx, &pb.UpdateKeyConfigRequest{Name: name, MinDecryptionVersion: &one})
			wantCode(t, "min_decryption below trimmed", err, codes.InvalidArgument)
			if _, c := f.decrypt(name, ct1, nil, nil); c != codes.FailedPrecondition {
				t.Fatalf("trimmed version: code %v, want FailedPrecondition", c)
			}
			if got, c := f.decrypt(name, ct2, nil, nil); c != codes.OK || string(got) != "two" {
				t.Fatalf("v2 after trim: %q %v", got, c)
			}
		})
	}
}

// TestConfigRules checks Vault's consistency rules for UpdateKeyConfig.
func TestConfigRules(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	f.create("k", pb.TransitKeyType_TRANSIT_KEY_TYPE_AES256_GCM, wrapped)
	for range 3 {
		if _, err := f.e.RotateKey(ctx, "k"); err != nil {
			t.Fatal(err)
		}
	}
	u := func(v uint32) *uint32 { return &v }
	cases := []struct {
		name string
		req  *pb.UpdateKeyConfigRequest
		want codes.Code
	}{
		{"min_dec above latest", &pb.UpdateKeyConfigRequest{MinDecryptionVersion: u(5)}, codes.InvalidArgument},
		{"min_enc above latest", &pb.UpdateKeyConfigRequest{MinEncryptionVersion: u(5)}, codes.InvalidArgument},
		{"min_dec 3", &pb.UpdateKeyConfigRequest{MinDecryptionVersion: u(3)}, codes.OK},
		{"min_enc below min_dec", &pb.UpdateKeyConfigRequest{MinEncryptionVersion: u(2)}, codes.InvalidArgument},
		{"min_enc equal min_dec", &pb.UpdateKeyConfigRequest{MinEncryptionVersion: u(3)}, codes.OK},
		{"min_dec above min_enc", &pb.UpdateKeyConfigRequest{MinDecryptionVersion: u(4)}, codes.InvalidArgument},
		{"both raised", &pb.UpdateKeyConfigRequest{MinDecryptionVersion: u(4), MinEncryptionVersion: u(4)}, codes.OK},
		{"min_enc 0", &pb.UpdateKeyConfigRequest{MinEncryptionVersion: u(0)}, codes.OK},
		{"short period", &pb.UpdateKeyConfigRequest{AutoRotatePeriod: durationOf(60e9)}, codes.InvalidArgument},
		{"exportable on", &pb.UpdateKeyConfigRequest{Exportable: ptr(true)}, codes.OK},
		{"exportable off", &pb.UpdateKeyConfigRequest{Exportable: ptr(false)}, codes.InvalidArgument},
		{"max over 2^32", &pb.UpdateKeyConfigRequest{MaxEncryptionsPerVersion: ptr(uint64(1<<32 + 1))}, codes.InvalidArgument},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			c.req.Name = "k"
			_, err := f.e.UpdateKeyConfig(ctx, c.req)
			wantCode(t, c.name, err, c.want)
		})
	}
	k, _ := f.e.GetKey(ctx, "k")
	if k.MinDecryptionVersion != 4 || k.MinEncryptionVersion != 0 || !k.Exportable {
		t.Fatalf("final config: min_dec %d min_enc %d exportable %v; want 4 0 true", k.MinDecryptionVersion, k.MinEncryptionVersion, k.Exportable)
	}
}

func ptr[T any](v T) *T { return &v }

func durationOf(d time.Duration) *durationpb.Duration { return durationpb.New(d) }

// TestDerivedAndConvergent: derived keys need a context and give different
// ciphertext per context; convergent keys give equal ciphertext for equal
// plaintext+context+AAD.
func TestDerivedAndConvergent(t *testing.T) {
	f := newFixture(t)
	for _, typ := range []pb.TransitKeyType{pb.TransitKeyType_TRANSIT_KEY_TYPE_AES256_GCM, pb.TransitKeyType_TRANSIT_KEY_TYPE_XCHACHA20_POLY1305} {
		ti := keyTypes[typ]
		t.Run(ti.name, func(t *testing.T) {
			d, c := "d-"+ti.name, "c-"+ti.name
			f.create(d, typ, wrapped, func(r *pb.CreateKeyRequest) { r.Derived = true })
			f.create(c, typ, wrapped, func(r *pb.CreateKeyRequest) { r.Derived, r.Convergent = true, true })
			ctxA, ctxB := []byte("tenant-a"), []byte("tenant-b")
			ct := f.encrypt(d, []byte("p"), nil, ctxA)
			if got, code := f.decrypt(d, ct, nil, ctxA); code != codes.OK || string(got) != "p" {
				t.Fatalf("derived round trip: %q %v", got, code)
			}
			if _, code := f.decrypt(d, ct, nil, ctxB); code != codes.InvalidArgument {
				t.Fatalf("derived with other context: %v, want InvalidArgument", code)
			}
			if _, code := f.decrypt(d, ct, nil, nil); code != codes.InvalidArgument {
				t.Fatalf("derived without context: %v, want InvalidArgument", code)
			}
			r, err := f.e.Encrypt(context.Background(), &pb.EncryptRequest{Name: d, Items: []*pb.EncryptItem{{Plaintext: []byte("p")}}})
			if err != nil || r.Results[0].Error == nil || codes.Code(r.Results[0].Error.Code) != codes.InvalidArgument {
				t.Fatalf("derived encrypt without context: %v %v, want item InvalidArgument", err, r.GetResults())
			}
			if bytes.Equal(f.encrypt(d, []byte("p"), nil, ctxA), f.encrypt(d, []byte("p"), nil, ctxA)) {
				t.Fatal("non-convergent derived key gave equal ciphertexts")
			}
			c1, c2 := f.encrypt(c, []byte("p"), []byte("x"), ctxA), f.encrypt(c, []byte("p"), []byte("x"), ctxA)
			if !bytes.Equal(c1, c2) {
				t.Fatal("convergent key gave different ciphertexts for equal input")
			}
			if bytes.Equal(c1, f.encrypt(c, []byte("p"), []byte("y"), ctxA)) || bytes.Equal(c1, f.encrypt(c, []byte("p"), []byte("x"), ctxB)) || bytes.Equal(c1, f.encrypt(c, []byte("q"), []byte("x"), ctxA)) {
				t.Fatal("convergent ciphertext equal across different AAD, context or plaintext")
			}
			if got, code := f.decrypt(c, c1, []byte("x"), ctxA); code != codes.OK || string(got) != "p" {
				t.Fatalf("convergent decrypt: %q %v", got, code)
			}
		})
	}
	_, err := f.e.CreateKey(context.Background(), &pb.CreateKeyRequest{Name: "bad", Type: pb.TransitKeyType_TRANSIT_KEY_TYPE_AES256_GCM, Convergent: true})
	wantCode(t, "convergent without derived", err, codes.InvalidArgument)
	_, err = f.e.CreateKey(context.Background(), &pb.CreateKeyRequest{Name: "bad", Type: pb.TransitKeyType_TRANSIT_KEY_TYPE_ED25519, Derived: true})
	wantCode(t, "derived signing key", err, codes.InvalidArgument)
}

// TestPerItemErrors: bad items fail alone, with their own codes, and the
// other items' results are intact and in order, references echoed.
func TestPerItemErrors(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	f.create("k", pb.TransitKeyType_TRANSIT_KEY_TYPE_AES256_GCM, wrapped)
	f.create("other", pb.TransitKeyType_TRANSIT_KEY_TYPE_AES256_GCM, wrapped)
	good := f.encrypt("k", []byte("good"), []byte("a"), nil)
	foreign := f.encrypt("other", []byte("x"), nil, nil)
	tampered := bytes.Clone(good)
	tampered[len(tampered)-1] ^= 1
	future := bytes.Clone(good)
	future[1] = 9
	for _, n := range []int{1, 300} { // 300 runs the parallel path
		var items []*pb.DecryptItem
		type want struct {
			code codes.Code
			pt   string
		}
		var wants []want
		for i := 0; i < n; i++ {
			items = append(items,
				&pb.DecryptItem{Ciphertext: good, AssociatedData: []byte("a"), Reference: fmt.Sprint("g", i)},
				&pb.DecryptItem{Ciphertext: tampered, AssociatedData: []byte("a"), Reference: fmt.Sprint("t", i)},
				&pb.DecryptItem{Ciphertext: good, AssociatedData: []byte("b"), Reference: fmt.Sprint("a", i)},
				&pb.DecryptItem{Ciphertext: good[:10], Reference: fmt.Sprint("s", i)},
				&pb.DecryptItem{Ciphertext: nil, Reference: fmt.Sprint("n", i)},
				&pb.DecryptItem{Ciphertext: future, AssociatedData: []byte("a"), Reference: fmt.Sprint("f", i)},
				&pb.DecryptItem{Ciphertext: foreign, Reference: fmt.Sprint("o", i)},
			)
			wants = append(wants, want{codes.OK, "good"}, want{codes.InvalidArgument, ""}, want{codes.InvalidArgument, ""},
				want{codes.InvalidArgument, ""}, want{codes.InvalidArgument, ""}, want{codes.InvalidArgument, ""}, want{codes.InvalidArgument, ""})
		}
		r, err := f.e.Decrypt(ctx, &pb.DecryptRequest{Name: "k", Items: items})
		if err != nil {
			t.Fatal(err)
		}
		for i, w := range wants {
			res := r.Results[i]
			got := codes.OK
			if res.Error != nil {
				got = codes.Code(res.Error.Code)
			}
			if got != w.code || string(res.Plaintext) != w.pt || res.Reference != items[i].Reference {
				t.Fatalf("item %d (%s): code %v pt %q ref %q; want %v %q %s", i, items[i].Reference, got, res.Plaintext, res.Reference, w.code, w.pt, items[i].Reference)
			}
		}
	}
}

// TestBadInput: whole-call refusals with DESIGN's codes, changing nothing.
func TestBadInput(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	f.create("aes", pb.TransitKeyType_TRANSIT_KEY_TYPE_AES256_GCM, wrapped)
	f.create("ed", pb.TransitKeyType_TRANSIT_KEY_TYPE_ED25519, wrapped)
	f.create("mac", pb.TransitKeyType_TRANSIT_KEY_TYPE_HMAC_SHA256, wrapped)
	f.create("ec", pb.TransitKeyType_TRANSIT_KEY_TYPE_ECDSA_P256, wrapped)
	item := []*pb.EncryptItem{{Plaintext: []byte("x")}}
	cases := []struct {
		name string
		call func() error
		want codes.Code
	}{
		{"unknown key", func() error { _, err := f.e.Encrypt(ctx, &pb.EncryptRequest{Name: "nope", Items: item}); return err }, codes.NotFound},
		{"bad name", func() error { _, err := f.e.Encrypt(ctx, &pb.EncryptRequest{Name: "../x", Items: item}); return err }, codes.InvalidArgument},
		{"encrypt with signing key", func() error { _, err := f.e.Encrypt(ctx, &pb.EncryptRequest{Name: "ed", Items: item}); return err }, codes.InvalidArgument},
		{"sign with aes key", func() error {
			_, err := f.e.SignData(ctx, &pb.SignDataRequest{Name: "aes", Items: []*pb.SignItem{{Input: []byte("x")}}})
			return err
		}, codes.InvalidArgument},
		{"hmac with ec key", func() error {
			_, err := f.e.ComputeHmac(ctx, &pb.ComputeHmacRequest{Name: "ec", Items: []*pb.HmacItem{{Input: []byte("x")}}})
			return err
		}, codes.InvalidArgument},
		{"encrypt above latest", func() error {
			_, err := f.e.Encrypt(ctx, &pb.EncryptRequest{Name: "aes", KeyVersion: 5, Items: item})
			return err
		}, codes.InvalidArgument},
		{"ed25519 prehashed", func() error {
			_, err := f.e.SignData(ctx, &pb.SignDataRequest{Name: "ed", Prehashed: true, Items: []*pb.SignItem{{Input: make([]byte, 32)}}})
			return err
		}, codes.InvalidArgument},
		{"pkcs1 on ecdsa", func() error {
			_, err := f.e.SignData(ctx, &pb.SignDataRequest{Name: "ec", SignatureAlgorithm: pb.TransitSignatureAlgorithm_TRANSIT_SIGNATURE_ALGORITHM_PKCS1V15, Items: []*pb.SignItem{{Input: []byte("x")}}})
			return err
		}, codes.InvalidArgument},
		{"bad datakey bits", func() error {
			_, err := f.e.GenerateDataKey(ctx, &pb.GenerateDataKeyRequest{Name: "aes", Bits: 100, Items: []*pb.DataKeyItem{{}}})
			return err
		}, codes.InvalidArgument},
		{"create exists", func() error {
			_, err := f.e.CreateKey(ctx, &pb.CreateKeyRequest{Name: "aes", Type: pb.TransitKeyType_TRANSIT_KEY_TYPE_AES256_GCM})
			return err
		}, codes.AlreadyExists},
		{"create no type", func() error { _, err := f.e.CreateKey(ctx, &pb.CreateKeyRequest{Name: "z"}); return err }, codes.InvalidArgument},
		{"hsm xchacha", func() error {
			_, err := f.e.CreateKey(ctx, &pb.CreateKeyRequest{Name: "z", Type: pb.TransitKeyType_TRANSIT_KEY_TYPE_XCHACHA20_POLY1305, Residency: inHSM})
			return err
		}, codes.InvalidArgument},
		{"hsm exportable", func() error {
			_, err := f.e.CreateKey(ctx, &pb.CreateKeyRequest{Name: "z", Type: pb.TransitKeyType_TRANSIT_KEY_TYPE_AES256_GCM, Residency: inHSM, Exportable: true})
			return err
		}, codes.InvalidArgument},
		{"delete not allowed", func() error { return f.e.DeleteKey(ctx, "aes") }, codes.FailedPrecondition},
		{"export not exportable", func() error { _, err := f.e.ExportKey(ctx, "aes", 0); return err }, codes.FailedPrecondition},
		{"trim 0", func() error { _, err := f.e.TrimKey(ctx, "aes", 0); return err }, codes.InvalidArgument},
		{"disable unknown version", func() error { _, err := f.e.SetVersionEnabled(ctx, "aes", 7, false); return err }, codes.InvalidArgument},
		{"random 0", func() error { _, err := f.e.GenerateRandom(ctx, 0); return err }, codes.InvalidArgument},
		{"random too many", func() error { _, err := f.e.GenerateRandom(ctx, 1<<20); return err }, codes.InvalidArgument},
		{"restore garbage", func() error { _, err := f.e.RestoreKey(ctx, []byte("garbage"), ""); return err }, codes.InvalidArgument},
		{"import garbage", func() error {
			_, err := f.e.ImportKey(ctx, &pb.ImportKeyRequest{Name: "imp", Type: pb.TransitKeyType_TRANSIT_KEY_TYPE_AES256_GCM, WrappedMaterial: make([]byte, 600)})
			return err
		}, codes.InvalidArgument},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) { wantCode(t, c.name, c.call(), c.want) })
	}
	// Nothing changed: the key still has one version and works.
	k, err := f.e.GetKey(ctx, "aes")
	if err != nil || k.LatestVersion != 1 {
		t.Fatalf("after bad input: %v latest %d", err, k.GetLatestVersion())
	}
	// Prehashed digest of the wrong size fails that item only.
	r, err := f.e.SignData(ctx, &pb.SignDataRequest{Name: "ec", Prehashed: true, Items: []*pb.SignItem{{Input: make([]byte, 31)}, {Input: make([]byte, 32)}}})
	if err != nil || r.Results[0].Error == nil || r.Results[1].Error != nil {
		t.Fatalf("prehashed sizes: %v %v", err, r.GetResults())
	}
	// Text form works with decrypt.
	ct := f.encrypt("aes", []byte("hi"), nil, nil)
	s, err := FormatText(ct)
	if err != nil || !strings.HasPrefix(s, "hsmgate:v1:") {
		t.Fatalf("FormatText = %q %v", s, err)
	}
	back, _ := ParseText(s)
	if got, c := f.decrypt("aes", back, nil, nil); c != codes.OK || string(got) != "hi" {
		t.Fatalf("text round trip: %q %v", got, c)
	}
}

package transit

import (
	"context"
	"fmt"
	"testing"

	"google.golang.org/grpc/codes"

	pb "github.com/hsmgate/hsmgate/proto/hsmgate/v1"
)

// artifact is what a key produces: a ciphertext, signature or MAC, with
// the version that made it.
type artifact struct {
	v    uint32
	data []byte
}

// invalid stands for "checked, and not valid" (a signature or MAC that
// does not verify).
const invalid = codes.Code(100)

// ops gives, for a key type, how to produce an artifact with the latest
// version and how to check one: the item's code, or OK / invalid.
func ops(t *testing.T, f *fixture, name string, ti typeInfo) (produce func() artifact, check func(artifact) codes.Code) {
	ctx := context.Background()
	msg := []byte("message")
	itemCode := func(s interface{ GetCode() int32 }) codes.Code { return codes.Code(s.GetCode()) }
	switch ti.kind {
	case kindAEAD:
		return func() artifact {
				ct := f.encrypt(name, msg, nil, nil)
				v, _, _ := ParseVersion(ct)
				return artifact{v, ct}
			}, func(a artifact) codes.Code {
				_, c := f.decrypt(name, a.data, nil, nil)
				return c
			}
	case kindHMAC:
		return func() artifact {
				r, err := f.e.ComputeHmac(ctx, &pb.ComputeHmacRequest{Name: name, Items: []*pb.HmacItem{{Input: msg}}})
				if err != nil {
					t.Fatal(err)
				}
				return artifact{r.Results[0].KeyVersion, r.Results[0].Hmac}
			}, func(a artifact) codes.Code {
				r, err := f.e.VerifyHmac(ctx, &pb.VerifyHmacRequest{Name: name, Items: []*pb.VerifyHmacItem{{Input: msg, Hmac: a.data, KeyVersion: a.v}}})
				if err != nil {
					t.Fatal(err)
				}
				if e := r.Results[0].Error; e != nil {
					return itemCode(e)
				}
				if !r.Results[0].Valid {
					return invalid
				}
				return codes.OK
			}
	default:
		return func() artifact {
				r, err := f.e.SignData(ctx, &pb.SignDataRequest{Name: name, Items: []*pb.SignItem{{Input: msg}}})
				if err != nil {
					t.Fatal(err)
				}
				return artifact{r.Results[0].KeyVersion, r.Results[0].Signature}
			}, func(a artifact) codes.Code {
				r, err := f.e.VerifySignature(ctx, &pb.VerifySignatureRequest{Name: name, Items: []*pb.VerifyItem{{Input: msg, Signature: a.data, KeyVersion: a.v}}})
				if err != nil {
					t.Fatal(err)
				}
				if e := r.Results[0].Error; e != nil {
					return itemCode(e)
				}
				if !r.Results[0].Valid {
					return invalid
				}
				return codes.OK
			}
	}
}

// TestVersionSemanticsAllTypes runs DESIGN's version rules for every key
// type in every residency it supports: after a rotation the new version is
// used and the old artifact still checks; a disabled version refuses; a
// raised min_decryption_version refuses; trim destroys the version (and its
// HSM object).
func TestVersionSemanticsAllTypes(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	for _, typ := range allTypes {
		ti := keyTypes[typ]
		for _, res := range []pb.TransitResidency{wrapped, inHSM} {
			if res == inHSM && ti.hsmType == "" {
				continue
			}
			name := fmt.Sprintf("vs-%s-%s", ti.name, resName(res))
			t.Run(name, func(t *testing.T) {
				f.create(name, typ, res)
				produce, check := ops(t, f, name, ti)
				a1 := produce()
				if a1.v != 1 {
					t.Fatalf("first artifact v%d, want v1", a1.v)
				}
				if _, err := f.e.RotateKey(ctx, name); err != nil {
					t.Fatal(err)
				}
				a2 := produce()
				steps := []struct {
					what   string
					do     func() error
					a1, a2 codes.Code
				}{
					{"after rotate", func() error { return nil }, codes.OK, codes.OK},
					{"v1 disabled", func() error { _, err := f.e.SetVersionEnabled(ctx, name, 1, false); return err }, codes.FailedPrecondition, codes.OK},
					{"v1 enabled", func() error { _, err := f.e.SetVersionEnabled(ctx, name, 1, true); return err }, codes.OK, codes.OK},
					{"min_decryption_version 2", func() error {
						_, err := f.e.UpdateKeyConfig(ctx, &pb.UpdateKeyConfigRequest{Name: name, MinDecryptionVersion: ptr(uint32(2))})
						return err
					}, codes.FailedPrecondition, codes.OK},
					{"trimmed below 2", func() error { _, err := f.e.TrimKey(ctx, name, 2); return err }, codes.FailedPrecondition, codes.OK},
				}
				if a2.v != 2 {
					t.Fatalf("after rotate: artifact v%d, want v2", a2.v)
				}
				var v1Label string
				for _, s := range steps {
					if s.what == "trimmed below 2" {
						rec, _, _ := f.e.getRecord(ctx, name)
						v1Label = rec.Versions[0].HsmLabel
					}
					if err := s.do(); err != nil {
						t.Fatalf("%s: %v", s.what, err)
					}
					if got := check(a1); got != s.a1 {
						t.Fatalf("%s: v1 artifact checks %v, want %v", s.what, got, s.a1)
					}
					if got := check(a2); got != s.a2 {
						t.Fatalf("%s: v2 artifact checks %v, want %v", s.what, got, s.a2)
					}
				}
				rec, _, _ := f.e.getRecord(ctx, name)
				if v := rec.Versions[0]; v.State != pb.TransitVersionState_TRANSIT_VERSION_STATE_DESTROYED || len(v.WrappedMaterial) != 0 || v.HsmLabel != "" {
					t.Fatalf("v1 after trim: %v", v)
				}
				if v1Label != "" {
					var err error
					if ti.kind == kindAEAD {
						_, err = f.mod.AEAD(ctx, v1Label)
					} else {
						_, err = f.mod.Signer(ctx, v1Label)
					}
					if code(err) != codes.NotFound {
						t.Fatalf("trimmed hsm object %s: %v, want NotFound", v1Label, err)
					}
				}
			})
		}
	}
}

package transithsm_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/sha256"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"path/filepath"
	"testing"

	"github.com/hsmgate/hsmgate/hsm"
	"github.com/hsmgate/hsmgate/hsm/hsmtest"
	"github.com/hsmgate/hsmgate/keystore/bbolt"
	pb "github.com/hsmgate/hsmgate/proto/hsmgate/v1"
	"github.com/hsmgate/hsmgate/transit"
	"github.com/hsmgate/hsmgate/transit/transithsm"
)

// TestCreateKeyAdoptsHSMKey: transit keys created with key_uri and
// residency hsm use existing HSM keys (made outside hsmgate) for encryption
// and signing; deleting the transit key leaves the HSM key in place.
func TestCreateKeyAdoptsHSMKey(t *testing.T) {
	ctx := context.Background()
	m := hsmtest.Module(t)
	kek, _, err := m.EnsureKEK(ctx, "kek")
	if err != nil {
		t.Fatal(err)
	}
	s, err := bbolt.Open(filepath.Join(t.TempDir(), "s.db"), bbolt.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	e, err := transit.New(transit.Config{Store: s, KEK: kek, HSM: transithsm.New(m)})
	if err != nil {
		t.Fatal(err)
	}
	defer e.Close()
	token := m.TokenLabel()
	hsmtest.ForeignAESKey(t, token, "payments-kek", []byte{0xa1})
	hsmtest.ForeignECKey(t, token, "release-signing", []byte{0xb1}, false)
	hsmResident := pb.TransitResidency_TRANSIT_RESIDENCY_HSM

	t.Run("AES-256-GCM", func(t *testing.T) {
		k, err := e.CreateKey(ctx, &pb.CreateKeyRequest{
			Name: "payments", Type: pb.TransitKeyType_TRANSIT_KEY_TYPE_AES256_GCM, Residency: hsmResident,
			DeletionAllowed: true, KeyUri: "pkcs11:token=" + token + ";object=payments-kek;id=%A1",
		})
		if err != nil {
			t.Fatalf("CreateKey with key_uri: %v", err)
		}
		if k.GetResidency() != hsmResident {
			t.Fatalf("residency: got %v, want hsm", k.GetResidency())
		}
		r, err := e.Encrypt(ctx, &pb.EncryptRequest{Name: "payments", Items: []*pb.EncryptItem{{Plaintext: []byte("card")}}})
		if err != nil || r.Results[0].GetError() != nil {
			t.Fatalf("encrypt: %v %v", err, r.GetResults())
		}
		d, err := e.Decrypt(ctx, &pb.DecryptRequest{Name: "payments", Items: []*pb.DecryptItem{{Ciphertext: r.Results[0].Ciphertext}}})
		if err != nil || string(d.Results[0].GetPlaintext()) != "card" {
			t.Fatalf("decrypt: got %v %v, want card", err, d.GetResults())
		}
		if err := e.DeleteKey(ctx, "payments"); err != nil {
			t.Fatalf("DeleteKey: %v", err)
		}
		if _, err := m.AdoptKey(ctx, "pkcs11:object=payments-kek;id=%A1", hsm.AES256); err != nil {
			t.Fatalf("adopted key gone after DeleteKey: %v", err)
		}
	})
	t.Run("ECDSA P-256 signing", func(t *testing.T) {
		if _, err := e.CreateKey(ctx, &pb.CreateKeyRequest{
			Name: "release", Type: pb.TransitKeyType_TRANSIT_KEY_TYPE_ECDSA_P256, Residency: hsmResident,
			KeyUri: "pkcs11:object=release-signing",
		}); err != nil {
			t.Fatalf("CreateKey with key_uri: %v", err)
		}
		msg := []byte("release v1.0")
		r, err := e.SignData(ctx, &pb.SignDataRequest{Name: "release", Items: []*pb.SignItem{{Input: msg}}})
		if err != nil || r.Results[0].GetError() != nil {
			t.Fatalf("sign: %v %v", err, r.GetResults())
		}
		hs, err := m.Signer(ctx, "pkcs11:object=release-signing")
		if err != nil {
			t.Fatal(err)
		}
		digest := sha256.Sum256(msg)
		if !ecdsa.VerifyASN1(hs.Public().(*ecdsa.PublicKey), digest[:], r.Results[0].GetSignature()) {
			t.Fatalf("transit's signature does not verify with the adopted key")
		}
		k, err := e.GetKey(ctx, "release")
		if err != nil {
			t.Fatal(err)
		}
		blk, _ := pem.Decode([]byte(k.GetVersions()[0].GetPublicKeyPem()))
		if blk == nil {
			t.Fatalf("no public key PEM in %v", k.GetVersions()[0])
		}
		pub, err := x509.ParsePKIXPublicKey(blk.Bytes)
		if err != nil || !pub.(*ecdsa.PublicKey).Equal(hs.Public()) {
			t.Fatalf("published public key: got %v (%v), want the adopted key's", pub, err)
		}
	})
	t.Run("refusals", func(t *testing.T) {
		cases := []struct {
			name string
			req  *pb.CreateKeyRequest
			want error
		}{
			{"wrapped residency", &pb.CreateKeyRequest{Name: "w", Type: pb.TransitKeyType_TRANSIT_KEY_TYPE_AES256_GCM, KeyUri: "pkcs11:object=payments-kek"}, transit.ErrInvalid},
			{"type mismatch", &pb.CreateKeyRequest{Name: "m", Type: pb.TransitKeyType_TRANSIT_KEY_TYPE_AES256_GCM, Residency: hsmResident, KeyUri: "pkcs11:object=release-signing"}, hsm.ErrUnsupported},
			{"other token", &pb.CreateKeyRequest{Name: "o", Type: pb.TransitKeyType_TRANSIT_KEY_TYPE_AES256_GCM, Residency: hsmResident, KeyUri: "pkcs11:token=x;object=payments-kek"}, hsm.ErrInvalidInput},
		}
		for _, c := range cases {
			t.Run(c.name, func(t *testing.T) {
				if _, err := e.CreateKey(ctx, c.req); !errors.Is(err, c.want) {
					t.Fatalf("got %v, want %v", err, c.want)
				}
				if _, err := e.GetKey(ctx, c.req.Name); !errors.Is(err, transit.ErrKeyNotFound) {
					t.Fatalf("GetKey after the refusal: got %v, want ErrKeyNotFound", err)
				}
			})
		}
	})
}

package transithsm_test

import (
	"context"
	"path/filepath"
	"testing"

	"github.com/hsmgate/hsmgate/hsm/hsmtest"
	"github.com/hsmgate/hsmgate/keystore/bbolt"
	pb "github.com/hsmgate/hsmgate/proto/hsmgate/v1"
	"github.com/hsmgate/hsmgate/transit"
	"github.com/hsmgate/hsmgate/transit/transithsm"
)

// TestWiring wires transit as the server does: a real module, its KEK and
// the adapter, then an hsm-resident round trip.
func TestWiring(t *testing.T) {
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
	if _, err := e.CreateKey(ctx, &pb.CreateKeyRequest{Name: "k", Type: pb.TransitKeyType_TRANSIT_KEY_TYPE_AES256_GCM, Residency: pb.TransitResidency_TRANSIT_RESIDENCY_HSM}); err != nil {
		t.Fatal(err)
	}
	r, err := e.Encrypt(ctx, &pb.EncryptRequest{Name: "k", Items: []*pb.EncryptItem{{Plaintext: []byte("hi")}}})
	if err != nil {
		t.Fatal(err)
	}
	d, err := e.Decrypt(ctx, &pb.DecryptRequest{Name: "k", Items: []*pb.DecryptItem{{Ciphertext: r.Results[0].Ciphertext}}})
	if err != nil || string(d.Results[0].Plaintext) != "hi" {
		t.Fatalf("round trip: %v %v", err, d.GetResults())
	}
}

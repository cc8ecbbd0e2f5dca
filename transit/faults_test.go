package transit

import (
	"context"
	"testing"
	"time"

	"google.golang.org/grpc/codes"

	pb "github.com/hsmgate/hsmgate/proto/hsmgate/v1"
)

// TestInternalFaults: an HSM or store that is down fails the whole call
// with Unavailable (never a per-item error), while wrapped keys already in
// memory keep working without the HSM.
func TestInternalFaults(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	f.create("w", pb.TransitKeyType_TRANSIT_KEY_TYPE_AES256_GCM, wrapped)
	f.create("h", pb.TransitKeyType_TRANSIT_KEY_TYPE_AES256_GCM, inHSM)
	f.create("s", pb.TransitKeyType_TRANSIT_KEY_TYPE_ECDSA_P256, inHSM)
	f.create("m", pb.TransitKeyType_TRANSIT_KEY_TYPE_HMAC_SHA256, inHSM)
	mac, err := f.e.ComputeHmac(ctx, &pb.ComputeHmacRequest{Name: "m", Items: []*pb.HmacItem{{Input: []byte("x")}}})
	if err != nil {
		t.Fatal(err)
	}
	ctW := f.encrypt("w", []byte("w"), nil, nil)
	ctH := f.encrypt("h", []byte("h"), nil, nil)
	f.mod.Close() // the HSM goes away

	if got, c := f.decrypt("w", ctW, nil, nil); c != codes.OK || string(got) != "w" {
		t.Fatalf("wrapped key in memory without the HSM: %q %v", got, c)
	}
	items := []*pb.EncryptItem{{Plaintext: []byte("a")}, {Plaintext: []byte("b")}}
	_, err = f.e.Encrypt(ctx, &pb.EncryptRequest{Name: "h", Items: items})
	wantCode(t, "hsm encrypt with the HSM away", err, codes.Unavailable)
	_, err = f.e.Decrypt(ctx, &pb.DecryptRequest{Name: "h", Items: []*pb.DecryptItem{{Ciphertext: ctH}}})
	wantCode(t, "hsm decrypt with the HSM away", err, codes.Unavailable)
	_, err = f.e.SignData(ctx, &pb.SignDataRequest{Name: "s", Items: []*pb.SignItem{{Input: []byte("x")}}})
	wantCode(t, "hsm sign with the HSM away", err, codes.Unavailable)
	_, err = f.e.ComputeHmac(ctx, &pb.ComputeHmacRequest{Name: "m", Items: []*pb.HmacItem{{Input: []byte("x")}, {Input: []byte("y")}}})
	wantCode(t, "hsm hmac with the HSM away", err, codes.Unavailable)
	_, err = f.e.VerifyHmac(ctx, &pb.VerifyHmacRequest{Name: "m", Items: []*pb.VerifyHmacItem{{Input: []byte("x"), Hmac: mac.Results[0].Hmac}}})
	wantCode(t, "hsm hmac verify with the HSM away", err, codes.Unavailable)
	_, err = f.e.RotateKey(ctx, "w")
	wantCode(t, "rotate with the HSM away", err, codes.Unavailable)
	_, err = f.e.GenerateRandom(ctx, 16)
	wantCode(t, "random with the HSM away", err, codes.Unavailable)

	// A key not yet in memory cannot be unwrapped without the HSM.
	f2 := newFixture(t)
	f2.create("w", pb.TransitKeyType_TRANSIT_KEY_TYPE_AES256_GCM, wrapped)
	f2.reopen()
	f2.mod.Close()
	_, err = f2.e.Encrypt(ctx, &pb.EncryptRequest{Name: "w", Items: items})
	wantCode(t, "first use of a wrapped key with the HSM away", err, codes.Unavailable)

	// The store goes away: an uncached key is Unavailable; cached ones work
	// for the cache's grace period (degraded), none without one.
	for _, grace := range []time.Duration{time.Hour, 0} {
		f3 := newFixture(t, func(c *Config) { c.Cache.Grace = grace })
		f3.create("cached", pb.TransitKeyType_TRANSIT_KEY_TYPE_AES256_GCM, wrapped)
		f3.encrypt("cached", nil, nil, nil) // reserves a block of the count
		f3.store.Close()
		_, err = f3.e.Encrypt(ctx, &pb.EncryptRequest{Name: "other", Items: items})
		wantCode(t, "uncached key with the store away", err, codes.Unavailable)
		_, err = f3.e.GetKey(ctx, "cached")
		wantCode(t, "GetKey with the store away", err, codes.Unavailable)
		if grace > 0 {
			r, err := f3.e.Encrypt(ctx, &pb.EncryptRequest{Name: "cached", Items: items})
			if err != nil || r.Results[0].Error != nil {
				t.Fatalf("cached key with the store away, within grace (block reserved): %v", err)
			}
			continue
		}
		for deadline := time.Now().Add(20 * time.Second); ; time.Sleep(5 * time.Millisecond) {
			_, err = f3.e.Encrypt(ctx, &pb.EncryptRequest{Name: "cached", Items: items})
			if err != nil || time.Now().After(deadline) {
				break
			}
		}
		wantCode(t, "cached key with the store away, no grace period", err, codes.Unavailable)
	}
}

// TestWithoutHSM: with only a KEK (Config.HSM nil), wrapped keys work with
// material from Config.Rand and hsm residency is refused.
func TestWithoutHSM(t *testing.T) {
	f := newFixture(t, func(c *Config) { c.HSM = nil })
	ctx := context.Background()
	_, err := f.e.CreateKey(ctx, &pb.CreateKeyRequest{Name: "h", Type: pb.TransitKeyType_TRANSIT_KEY_TYPE_AES256_GCM, Residency: inHSM})
	wantCode(t, "hsm residency without an HSM", err, codes.InvalidArgument)
	f.create("w", pb.TransitKeyType_TRANSIT_KEY_TYPE_ECDSA_P384, wrapped)
	r, err := f.e.SignData(ctx, &pb.SignDataRequest{Name: "w", Items: []*pb.SignItem{{Input: []byte("x")}}})
	if err != nil || r.Results[0].Error != nil {
		t.Fatalf("sign: %v", err)
	}
	if b, err := f.e.GenerateRandom(ctx, 8); err != nil || len(b) != 8 {
		t.Fatalf("random: %v", err)
	}
}

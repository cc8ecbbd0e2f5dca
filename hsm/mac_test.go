package hsm_test

import (
	"bytes"
	"crypto"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"testing"

	"github.com/miekg/pkcs11"

	"github.com/hsmgate/hsmgate/hsm"
	"github.com/hsmgate/hsmgate/hsm/hsmtest"
)

func unhex(t *testing.T, s string) []byte {
	t.Helper()
	b, err := hex.DecodeString(s)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// TestMACVectors checks the HSM's HMAC-SHA-256 and HMAC-SHA-512 against
// RFC 4231 (test cases 2 and 4; keys imported with known values: the
// generated keys cannot be read).
func TestMACVectors(t *testing.T) {
	m := hsmtest.Module(t)
	cases := []struct {
		name, key, data string
		h               crypto.Hash
		want            string
	}{
		{"RFC 4231 case 2 SHA-256", hex.EncodeToString([]byte("Jefe")), hex.EncodeToString([]byte("what do ya want for nothing?")), crypto.SHA256,
			"5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"},
		{"RFC 4231 case 4 SHA-512", "0102030405060708090a0b0c0d0e0f10111213141516171819",
			"cdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcd", crypto.SHA512,
			"b0ba465637458c6990e5a8c5f61d4af7e576d97ff94b872de76f8050361ee3dba91ca5c11aa25eb4d679275cc5788063a5f19741120c4f2de2adebeb10a298dd"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			key := unhex(t, c.key)
			// A known key of the hash's length for MAC's check, padded as
			// HMAC pads (a key shorter than the block is zero-padded: same MAC).
			padded := append(key, make([]byte, c.h.Size()-len(key))...)
			if err := hsm.ImportHMACKey(ctx, m, c.name, padded); err != nil {
				t.Fatal(err)
			}
			mac, err := m.MAC(ctx, c.name, c.h)
			if err != nil {
				t.Fatal(err)
			}
			got, err := mac.SumContext(ctx, unhex(t, c.data))
			if err != nil {
				t.Fatal(err)
			}
			if want := unhex(t, c.want); !bytes.Equal(got, want) {
				t.Fatalf("got %x, want %x", got, want)
			}
		})
	}
}

// TestMACGenerated: generated HMAC keys are secret and never leave the
// HSM, MAC deterministically, differ from each other, and are refused for
// the wrong hash or as another kind of key.
func TestMACGenerated(t *testing.T) {
	m := hsmtest.Module(t)
	for _, l := range []string{"a", "b"} {
		if err := m.GenerateKey(ctx, l, hsm.HMACSHA256); err != nil {
			t.Fatal(err)
		}
	}
	if err := m.GenerateKey(ctx, "big", hsm.HMACSHA512); err != nil {
		t.Fatal(err)
	}
	a, err := m.MAC(ctx, "a", crypto.SHA256)
	if err != nil {
		t.Fatal(err)
	}
	b, err := m.MAC(ctx, "b", crypto.SHA256)
	if err != nil {
		t.Fatal(err)
	}
	msg := []byte("the message")
	a1, err1 := a.SumContext(ctx, msg)
	a2, err2 := a.SumContext(ctx, msg)
	b1, err3 := b.SumContext(ctx, msg)
	if err := errors.Join(err1, err2, err3); err != nil {
		t.Fatal(err)
	}
	if len(a1) != sha256.Size || !hmac.Equal(a1, a2) || hmac.Equal(a1, b1) {
		t.Fatalf("a %x, a again %x, b %x: want 32 bytes, a == a again, a != b", a1, a2, b1)
	}
	big, err := m.MAC(ctx, "big", crypto.SHA512)
	if err != nil {
		t.Fatal(err)
	}
	if s, err := big.SumContext(ctx, msg); err != nil || len(s) != 64 {
		t.Fatalf("HMAC-SHA-512: %d bytes, %v", len(s), err)
	}
	for name, f := range map[string]func() error{
		"SHA-512 with a 32-byte key": func() error { _, err := m.MAC(ctx, "a", crypto.SHA512); return err },
		"SHA-1":                      func() error { _, err := m.MAC(ctx, "a", crypto.SHA1); return err },
	} {
		if err := f(); !errors.Is(err, hsm.ErrUnsupported) {
			t.Errorf("%s: got %v, want ErrUnsupported", name, err)
		}
	}
	if _, err := m.AEAD(ctx, "a"); !errors.Is(err, hsm.ErrUnsupported) {
		t.Errorf("HMAC key as AEAD: got %v, want ErrUnsupported", err)
	}
	if _, err := m.MAC(ctx, "missing", crypto.SHA256); !errors.Is(err, hsm.ErrKeyNotFound) {
		t.Errorf("missing key: got %v, want ErrKeyNotFound", err)
	}
	p, s := userSession(t, m)
	for name, token := range map[string]bool{"token object": true, "session copy": false} {
		h := findOneOf(t, p, s, "a", pkcs11.CKO_SECRET_KEY, token)
		if _, err := p.GetAttributeValue(s, h, []*pkcs11.Attribute{pkcs11.NewAttribute(pkcs11.CKA_VALUE, nil)}); err != pkcs11.Error(pkcs11.CKR_ATTRIBUTE_SENSITIVE) {
			t.Errorf("%s: read CKA_VALUE: got %v, want CKR_ATTRIBUTE_SENSITIVE", name, err)
		}
	}
}

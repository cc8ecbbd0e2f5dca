package hsm_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"testing"

	"github.com/miekg/pkcs11"

	"github.com/hsmgate/hsmgate/hsm"
	"github.com/hsmgate/hsmgate/hsm/hsmtest"
)

var ctx = context.Background()

func TestKEK(t *testing.T) {
	m := hsmtest.Module(t)
	kek, created, err := m.EnsureKEK(ctx, "kek")
	if err != nil || !created {
		t.Fatalf("EnsureKEK: got created=%v err=%v, want true, nil", created, err)
	}
	t.Run("ensure again finds it", func(t *testing.T) {
		k2, created, err := m.EnsureKEK(ctx, "kek")
		if err != nil || created || k2.Label() != "kek" {
			t.Fatalf("EnsureKEK again: got created=%v err=%v, want false, nil", created, err)
		}
	})
	t.Run("value is not readable and key not extractable", func(t *testing.T) {
		p, s := userSession(t, m)
		if _, err := kek.Wrap(ctx, []byte("make sure a session copy exists")); err != nil {
			t.Fatal(err)
		}
		for name, token := range map[string]bool{"token object": true, "session copy": false} {
			t.Run(name, func(t *testing.T) {
				h := findOneOf(t, p, s, "kek", pkcs11.CKO_SECRET_KEY, token)
				_, err = p.GetAttributeValue(s, h, []*pkcs11.Attribute{pkcs11.NewAttribute(pkcs11.CKA_VALUE, nil)})
				if err != pkcs11.Error(pkcs11.CKR_ATTRIBUTE_SENSITIVE) {
					t.Errorf("read CKA_VALUE: got %v, want CKR_ATTRIBUTE_SENSITIVE", err)
				}
				a, err := p.GetAttributeValue(s, h, []*pkcs11.Attribute{
					pkcs11.NewAttribute(pkcs11.CKA_EXTRACTABLE, nil),
					pkcs11.NewAttribute(pkcs11.CKA_SENSITIVE, nil),
					pkcs11.NewAttribute(pkcs11.CKA_NEVER_EXTRACTABLE, nil),
					pkcs11.NewAttribute(pkcs11.CKA_ENCRYPT, nil),
					pkcs11.NewAttribute(pkcs11.CKA_WRAP, nil),
				})
				if err != nil {
					t.Fatal(err)
				}
				for i, want := range []bool{false, true, true, false, true} {
					if got := a[i].Value[0] != 0; got != want {
						t.Errorf("attribute %#x: got %v, want %v", a[i].Type, got, want)
					}
				}
			})
		}
	})
	t.Run("wrap and unwrap", func(t *testing.T) {
		for _, n := range []int{1, 7, 8, 16, 32, 33, 64, 1217} {
			t.Run(fmt.Sprint(n), func(t *testing.T) {
				key := make([]byte, n)
				rand.Read(key)
				blob, err := kek.Wrap(ctx, key)
				if err != nil {
					t.Fatal(err)
				}
				if n >= 8 && bytes.Contains(blob, key) {
					t.Fatalf("blob contains the raw key bytes")
				}
				got, err := kek.Unwrap(ctx, blob)
				if err != nil {
					t.Fatal(err)
				}
				if !bytes.Equal(got, key) {
					t.Fatalf("Unwrap: got %x, want %x", got, key)
				}
			})
		}
	})
	t.Run("bad blobs", func(t *testing.T) {
		blob, err := kek.Wrap(ctx, bytes.Repeat([]byte{7}, 32))
		if err != nil {
			t.Fatal(err)
		}
		flipped := bytes.Clone(blob)
		flipped[10] ^= 1
		other, _, err := m.EnsureKEK(ctx, "kek2")
		if err != nil {
			t.Fatal(err)
		}
		otherBlob, err := other.Wrap(ctx, bytes.Repeat([]byte{7}, 32))
		if err != nil {
			t.Fatal(err)
		}
		for name, b := range map[string][]byte{
			"empty":         nil,
			"short":         blob[:8],
			"not 8-aligned": blob[:len(blob)-1],
			"truncated":     blob[:len(blob)-8],
			"bit flipped":   flipped,
			"other KEK":     otherBlob,
			"garbage":       bytes.Repeat([]byte{0x42}, 40),
		} {
			t.Run(name, func(t *testing.T) {
				_, err := kek.Unwrap(ctx, b)
				if !errors.Is(err, hsm.ErrInvalidInput) {
					t.Fatalf("Unwrap: got %v, want ErrInvalidInput", err)
				}
			})
		}
	})
	t.Run("empty plaintext refused", func(t *testing.T) {
		if _, err := kek.Wrap(ctx, nil); !errors.Is(err, hsm.ErrInvalidInput) {
			t.Fatalf("Wrap(nil): got %v, want ErrInvalidInput", err)
		}
	})
	t.Run("missing KEK", func(t *testing.T) {
		if _, err := m.KEK(ctx, "nope"); !errors.Is(err, hsm.ErrKeyNotFound) {
			t.Fatalf("KEK(nope): got %v, want ErrKeyNotFound", err)
		}
	})
}

// findOne finds the token object with this label and class.
func findOne(t *testing.T, p *pkcs11.Ctx, s pkcs11.SessionHandle, label string, class uint) pkcs11.ObjectHandle {
	t.Helper()
	return findOneOf(t, p, s, label, class, true)
}

// findOneOf finds the token object (token) or the session copy (!token).
func findOneOf(t *testing.T, p *pkcs11.Ctx, s pkcs11.SessionHandle, label string, class uint, token bool) pkcs11.ObjectHandle {
	t.Helper()
	if err := p.FindObjectsInit(s, []*pkcs11.Attribute{
		pkcs11.NewAttribute(pkcs11.CKA_LABEL, label), pkcs11.NewAttribute(pkcs11.CKA_CLASS, class),
		pkcs11.NewAttribute(pkcs11.CKA_TOKEN, token),
	}); err != nil {
		t.Fatal(err)
	}
	hs, _, err := p.FindObjects(s, 2)
	p.FindObjectsFinal(s)
	if err != nil || len(hs) != 1 {
		t.Fatalf("find %q: got %d objects, %v; want 1", label, len(hs), err)
	}
	return hs[0]
}

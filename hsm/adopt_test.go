package hsm_test

import (
	"bytes"
	"crypto"
	"errors"
	"strings"
	"testing"

	"github.com/miekg/pkcs11"

	"github.com/hsmgate/hsmgate/hsm"
	"github.com/hsmgate/hsmgate/hsm/hsmtest"
)

// makeSecret creates a token secret key from outside the Module, as another
// tool would (a second session of the process: the token is logged in).
func makeSecret(t *testing.T, cfg hsm.Config, label string, id []byte, keyType uint, n int, sensitive, extractable, private bool) {
	t.Helper()
	p, slot := hsmtest.Slot(t, cfg.TokenLabel)
	s, err := p.OpenSession(slot, pkcs11.CKF_SERIAL_SESSION|pkcs11.CKF_RW_SESSION)
	if err != nil {
		t.Fatal(err)
	}
	defer p.CloseSession(s)
	mech := uint(pkcs11.CKM_AES_KEY_GEN)
	usage := []*pkcs11.Attribute{pkcs11.NewAttribute(pkcs11.CKA_ENCRYPT, true), pkcs11.NewAttribute(pkcs11.CKA_DECRYPT, true)}
	if keyType == pkcs11.CKK_GENERIC_SECRET {
		mech = pkcs11.CKM_GENERIC_SECRET_KEY_GEN
		usage = []*pkcs11.Attribute{pkcs11.NewAttribute(pkcs11.CKA_SIGN, true), pkcs11.NewAttribute(pkcs11.CKA_VERIFY, true)}
	}
	_, err = p.GenerateKey(s, []*pkcs11.Mechanism{pkcs11.NewMechanism(mech, nil)}, append([]*pkcs11.Attribute{
		pkcs11.NewAttribute(pkcs11.CKA_CLASS, pkcs11.CKO_SECRET_KEY),
		pkcs11.NewAttribute(pkcs11.CKA_KEY_TYPE, keyType),
		pkcs11.NewAttribute(pkcs11.CKA_VALUE_LEN, n),
		pkcs11.NewAttribute(pkcs11.CKA_LABEL, label),
		pkcs11.NewAttribute(pkcs11.CKA_ID, id),
		pkcs11.NewAttribute(pkcs11.CKA_TOKEN, true),
		pkcs11.NewAttribute(pkcs11.CKA_PRIVATE, private),
		pkcs11.NewAttribute(pkcs11.CKA_SENSITIVE, sensitive),
		pkcs11.NewAttribute(pkcs11.CKA_EXTRACTABLE, extractable),
	}, usage...))
	if err != nil {
		t.Fatalf("make %q: %v", label, err)
	}
}

func TestAdoptSecretKeys(t *testing.T) {
	cfg := hsmtest.Config(t)
	m := openModule(t, cfg)
	makeSecret(t, cfg, "aes-ceremony", []byte{1}, pkcs11.CKK_AES, 32, true, false, true)
	makeSecret(t, cfg, "hmac-ceremony", []byte{2}, pkcs11.CKK_GENERIC_SECRET, 32, true, false, true)
	makeSecret(t, cfg, "aes-public", []byte{3}, pkcs11.CKK_AES, 32, true, false, false)
	makeSecret(t, cfg, "aes-extractable", []byte{4}, pkcs11.CKK_AES, 32, true, true, true)
	makeSecret(t, cfg, "aes-readable", []byte{5}, pkcs11.CKK_AES, 32, false, false, true)
	makeSecret(t, cfg, "twin", []byte{6}, pkcs11.CKK_AES, 32, true, false, true)
	makeSecret(t, cfg, "twin", []byte{7}, pkcs11.CKK_AES, 32, true, false, true)
	makeSecret(t, cfg, "aes-128", []byte{8}, pkcs11.CKK_AES, 16, true, false, true)

	t.Run("AES-256 adopted and used as AEAD", func(t *testing.T) {
		a, err := m.AdoptKey(ctx, "pkcs11:object=aes-ceremony;id=%01", hsm.AES256)
		if err != nil || a.KeyType != hsm.AES256 {
			t.Fatalf("AdoptKey: got %+v, %v; want aes256", a, err)
		}
		aead, err := m.AEAD(ctx, a.Ref)
		if err != nil {
			t.Fatal(err)
		}
		nonce := make([]byte, 12)
		ct, err := aead.SealContext(ctx, nil, nonce, []byte("hello"), nil)
		if err != nil {
			t.Fatal(err)
		}
		pt, err := aead.OpenContext(ctx, nil, nonce, ct, nil)
		if err != nil || string(pt) != "hello" {
			t.Fatalf("open: got %q, %v; want hello", pt, err)
		}
	})
	t.Run("HMAC key adopted and used as MAC", func(t *testing.T) {
		a, err := m.AdoptKey(ctx, "pkcs11:object=hmac-ceremony", hsm.HMACSHA256)
		if err != nil || a.KeyType != hsm.HMACSHA256 {
			t.Fatalf("AdoptKey: got %+v, %v; want hmac-sha256", a, err)
		}
		mac, err := m.MAC(ctx, a.Ref, crypto.SHA256)
		if err != nil {
			t.Fatal(err)
		}
		x, err1 := mac.SumContext(ctx, []byte("m"))
		y, err2 := mac.SumContext(ctx, []byte("m"))
		if err1 != nil || err2 != nil || len(x) != 32 || !bytes.Equal(x, y) {
			t.Fatalf("MAC: got %x, %x (%v, %v)", x, y, err1, err2)
		}
	})
	refusals := []struct{ name, uri, attr string }{
		{"not private", "pkcs11:object=aes-public", "CKA_PRIVATE"},
		{"extractable", "pkcs11:object=aes-extractable", "CKA_EXTRACTABLE"},
		{"not sensitive", "pkcs11:object=aes-readable", "CKA_SENSITIVE"},
	}
	for _, c := range refusals {
		t.Run(c.name+" refused", func(t *testing.T) {
			_, err := m.AdoptKey(ctx, c.uri)
			if !errors.Is(err, hsm.ErrNotAdoptable) || !strings.Contains(err.Error(), c.attr) {
				t.Fatalf("got %v, want ErrNotAdoptable naming %s", err, c.attr)
			}
		})
	}
	t.Run("AES-128 unsupported", func(t *testing.T) {
		if _, err := m.AdoptKey(ctx, "pkcs11:object=aes-128"); !errors.Is(err, hsm.ErrUnsupported) {
			t.Fatalf("got %v, want ErrUnsupported", err)
		}
	})
	t.Run("ambiguous URI refused", func(t *testing.T) {
		if _, err := m.AdoptKey(ctx, "pkcs11:object=twin"); !errors.Is(err, hsm.ErrInvalidInput) {
			t.Fatalf("got %v, want ErrInvalidInput", err)
		}
	})
	t.Run("missing key", func(t *testing.T) {
		if _, err := m.AdoptKey(ctx, "pkcs11:object=nobody"); !errors.Is(err, hsm.ErrKeyNotFound) {
			t.Fatalf("got %v, want ErrKeyNotFound", err)
		}
	})
	t.Run("a twin added after adoption is never used in its place", func(t *testing.T) {
		a, err := m.AdoptKey(ctx, "pkcs11:object=sub;id=%09", hsm.AES256)
		if !errors.Is(err, hsm.ErrKeyNotFound) {
			t.Fatalf("AdoptKey before the key exists: got %+v, %v", a, err)
		}
		makeSecret(t, cfg, "sub", []byte{9}, pkcs11.CKK_AES, 32, true, false, true)
		if a, err = m.AdoptKey(ctx, "pkcs11:object=sub;id=%09", hsm.AES256); err != nil {
			t.Fatal(err)
		}
		makeSecret(t, cfg, "sub", []byte{9}, pkcs11.CKK_AES, 32, true, false, true)
		if _, err := m.AEAD(ctx, a.Ref); !errors.Is(err, hsm.ErrInvalidInput) {
			t.Fatalf("AEAD with two matching objects: got %v, want ErrInvalidInput", err)
		}
	})
	t.Run("generate refuses reference labels", func(t *testing.T) {
		if err := m.GenerateKey(ctx, "pkcs11:object=aes-ceremony", hsm.AES256); !errors.Is(err, hsm.ErrInvalidInput) {
			t.Fatalf("got %v, want ErrInvalidInput", err)
		}
	})
}

// TestAdoptRefusesForeignPublicHalf: a public key object that carries the
// private key's label and id but is another key's half (planted so that a
// CA certificate would name a key the CA cannot sign with) is refused.
func TestAdoptRefusesForeignPublicHalf(t *testing.T) {
	cfg := hsmtest.Config(t)
	m := openModule(t, cfg)
	hsmtest.ForeignECKey(t, cfg.TokenLabel, "real", []byte{1}, false)
	hsmtest.ForeignECKey(t, cfg.TokenLabel, "other", []byte{2}, false)
	p, slot := hsmtest.Slot(t, cfg.TokenLabel)
	s, err := p.OpenSession(slot, pkcs11.CKF_SERIAL_SESSION|pkcs11.CKF_RW_SESSION)
	if err != nil {
		t.Fatal(err)
	}
	defer p.CloseSession(s)
	pubOf := func(label string) pkcs11.ObjectHandle {
		if err := p.FindObjectsInit(s, []*pkcs11.Attribute{
			pkcs11.NewAttribute(pkcs11.CKA_CLASS, pkcs11.CKO_PUBLIC_KEY), pkcs11.NewAttribute(pkcs11.CKA_LABEL, label),
		}); err != nil {
			t.Fatal(err)
		}
		hs, _, err := p.FindObjects(s, 2)
		_ = p.FindObjectsFinal(s)
		if err != nil || len(hs) != 1 {
			t.Fatalf("public key %q: %d objects, %v", label, len(hs), err)
		}
		return hs[0]
	}
	if err := p.DestroyObject(s, pubOf("real")); err != nil {
		t.Fatal(err)
	}
	if err := p.SetAttributeValue(s, pubOf("other"), []*pkcs11.Attribute{
		pkcs11.NewAttribute(pkcs11.CKA_LABEL, "real"), pkcs11.NewAttribute(pkcs11.CKA_ID, []byte{1}),
	}); err != nil {
		t.Fatal(err)
	}
	_, err = m.AdoptKey(ctx, "pkcs11:object=real;id=%01")
	if !errors.Is(err, hsm.ErrNotAdoptable) || !strings.Contains(err.Error(), "does not verify") {
		t.Fatalf("got %v, want ErrNotAdoptable: the public key does not verify", err)
	}
}

// TestAdoptRefusesOwnKeys: a key that hsmgate made (another tenant's
// transit key, another issuer's key) cannot be taken over by naming it in
// a URI, and the KEK (wrap only) is no AES data key.
func TestAdoptRefusesOwnKeys(t *testing.T) {
	cfg := hsmtest.Config(t)
	m := openModule(t, cfg)
	for _, kt := range []hsm.KeyType{hsm.AES256, hsm.ECDSAP256, hsm.HMACSHA256} {
		label := "mine-" + string(kt)
		if err := m.GenerateKey(ctx, label, kt); err != nil {
			t.Fatal(err)
		}
		t.Run(string(kt), func(t *testing.T) {
			_, err := m.AdoptKey(ctx, "pkcs11:object="+label)
			if !errors.Is(err, hsm.ErrNotAdoptable) || !strings.Contains(err.Error(), "hsmgate made") {
				t.Fatalf("got %v, want ErrNotAdoptable: hsmgate made it", err)
			}
		})
	}
	t.Run("wrap-only AES key", func(t *testing.T) {
		p, slot := hsmtest.Slot(t, cfg.TokenLabel)
		s, err := p.OpenSession(slot, pkcs11.CKF_SERIAL_SESSION|pkcs11.CKF_RW_SESSION)
		if err != nil {
			t.Fatal(err)
		}
		defer p.CloseSession(s)
		if _, err := p.GenerateKey(s, []*pkcs11.Mechanism{pkcs11.NewMechanism(pkcs11.CKM_AES_KEY_GEN, nil)}, []*pkcs11.Attribute{
			pkcs11.NewAttribute(pkcs11.CKA_CLASS, pkcs11.CKO_SECRET_KEY), pkcs11.NewAttribute(pkcs11.CKA_KEY_TYPE, pkcs11.CKK_AES),
			pkcs11.NewAttribute(pkcs11.CKA_VALUE_LEN, 32), pkcs11.NewAttribute(pkcs11.CKA_LABEL, "old-kek"),
			pkcs11.NewAttribute(pkcs11.CKA_TOKEN, true), pkcs11.NewAttribute(pkcs11.CKA_PRIVATE, true),
			pkcs11.NewAttribute(pkcs11.CKA_SENSITIVE, true), pkcs11.NewAttribute(pkcs11.CKA_EXTRACTABLE, false),
			pkcs11.NewAttribute(pkcs11.CKA_ENCRYPT, false), pkcs11.NewAttribute(pkcs11.CKA_DECRYPT, false),
			pkcs11.NewAttribute(pkcs11.CKA_WRAP, true), pkcs11.NewAttribute(pkcs11.CKA_UNWRAP, true),
		}); err != nil {
			t.Fatal(err)
		}
		_, err = m.AdoptKey(ctx, "pkcs11:object=old-kek")
		if !errors.Is(err, hsm.ErrNotAdoptable) || !strings.Contains(err.Error(), "CKA_ENCRYPT") {
			t.Fatalf("got %v, want ErrNotAdoptable naming CKA_ENCRYPT", err)
		}
	})
}

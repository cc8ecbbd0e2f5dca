package hsm

import (
	"bytes"
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/rsa"
	"crypto/sha256"
	"fmt"
	"slices"
	"strings"

	"github.com/miekg/pkcs11"

	"github.com/hsmgate/hsmgate/internal/errs"
)

// ErrNotAdoptable: the key named by a PKCS#11 URI exists but may not be
// adopted (extractable, not sensitive, public, not usable for signing, or a
// public half that does not match). The server answers FailedPrecondition.
var ErrNotAdoptable = errs.New(errs.FailedPrecondition, "hsm: key cannot be adopted")

// ownIDPrefix starts the CKA_ID of every key that GenerateKey makes (then
// 16 random bytes): AdoptKey refuses such keys, so that a caller allowed
// to create one key cannot take over another key of hsmgate's (another
// tenant's transit key, another issuer's key, the KEK) by naming it in a
// URI. Keys made before the prefix existed have a bare 16-byte random ID;
// the usage checks (CKA_SIGN, CKA_ENCRYPT/CKA_DECRYPT) still keep the KEK
// out.
var ownIDPrefix = []byte("hsmgate:")

// refPrefix starts every reference to an adopted key. GenerateKey refuses
// labels with this prefix, so a reference never names a key hsmgate made.
const refPrefix = "pkcs11:"

// IsRef reports whether label is the reference of an adopted key (what
// AdoptKey returns in Adopted.Ref) rather than the label of a key hsmgate
// made. Callers record it so as never to destroy an adopted key; DestroyKey
// refuses references too.
func IsRef(label string) bool { return strings.HasPrefix(label, refPrefix) }

// Adopted describes a key that exists on the token, made by another tool
// (a key ceremony), and that hsmgate uses without owning it.
type Adopted struct {
	// Ref is what Signer, AEAD and MAC take in place of a label: a
	// PKCS#11 URI with the object's label and/or CKA_ID as the adopting URI
	// gave them ("pkcs11:object=root;id=%01"). Each use finds exactly one
	// object of the class with those attributes, or fails.
	Ref     string
	KeyType KeyType
	Label   string // CKA_LABEL of the key ("" if it has none)
	ID      []byte // CKA_ID of the key
}

// AdoptKey finds the existing key that the RFC 7512 URI names on this
// module's token and checks that hsmgate can use it safely:
//
//   - the URI's token (and manufacturer, model, serial if given) is this
//     module's token (ErrInvalidInput otherwise);
//   - exactly one private or secret key matches the URI's object and id
//     (ErrKeyNotFound for none, ErrInvalidInput for several);
//   - it is CKA_SENSITIVE=true, CKA_EXTRACTABLE=false and CKA_PRIVATE=true
//     (a key that is not private can be used without logging in), and a
//     private key has CKA_SIGN=true; ErrNotAdoptable naming the attribute
//     otherwise;
//   - it is of a supported type (ECDSA P-256/P-384, RSA 2048/3072/4096,
//     Ed25519 with exactly one public key of the same object and id that
//     matches it, checked with a test signature; AES-256; a 32- or 64-byte
//     generic secret for HMAC-SHA256/512), and one of allowed when allowed
//     is not empty (ErrUnsupported otherwise).
//
// The key is left as it is: AdoptKey changes nothing on the token.
func (m *Module) AdoptKey(ctx context.Context, uri string, allowed ...KeyType) (Adopted, error) {
	u, err := ParseURI(uri)
	if err != nil {
		return Adopted{}, err
	}
	if u.Token != "" && u.Token != m.cfg.TokenLabel {
		return Adopted{}, fmt.Errorf("hsm: adopt: the URI names token %q, not this module's token %q: %w", clip(u.Token), m.cfg.TokenLabel, ErrInvalidInput)
	}
	ref := URI{Object: u.Object, ID: u.ID}.String()
	a := Adopted{Ref: ref, Label: u.Object, ID: u.ID}
	var class uint
	err = m.do(ctx, func(s *session) error {
		if err := m.checkTokenInfo(u); err != nil {
			return err
		}
		if err := m.checkLogin(s); err != nil {
			return err
		}
		var h pkcs11.ObjectHandle
		var err error
		if h, class, err = m.findAdoptable(s, u); err != nil {
			return err
		}
		a.KeyType, err = m.vetKey(s, h, class, URI{Object: u.Object, ID: u.ID})
		return err
	})
	if err != nil {
		return Adopted{}, fmt.Errorf("hsm: adopt %s: %w", ref, err)
	}
	if len(allowed) > 0 && !slices.Contains(allowed, a.KeyType) {
		return Adopted{}, fmt.Errorf("hsm: adopt %s: key is %s, want one of %v: %w", ref, a.KeyType, allowed, ErrUnsupported)
	}
	if class == pkcs11.CKO_PRIVATE_KEY {
		if err := m.testSign(ctx, ref); err != nil {
			return Adopted{}, fmt.Errorf("hsm: adopt %s: %w", ref, err)
		}
	}
	return a, nil
}

// checkTokenInfo compares the URI's manufacturer, model and serial with the token's.
func (m *Module) checkTokenInfo(u URI) error {
	if u.Manufacturer == "" && u.Model == "" && u.Serial == "" {
		return nil
	}
	ti, err := m.p.GetTokenInfo(m.currentSlot())
	if err != nil {
		return fmt.Errorf("%w: %w", errTokenGone, err)
	}
	for _, c := range []struct{ name, want, got string }{
		{"manufacturer", u.Manufacturer, ti.ManufacturerID},
		{"model", u.Model, ti.Model},
		{"serial", u.Serial, ti.SerialNumber},
	} {
		if c.want != "" && c.want != strings.TrimRight(c.got, " \x00") {
			return fmt.Errorf("the URI's %s %q is not the token's: %w", c.name, clip(c.want), ErrInvalidInput)
		}
	}
	return nil
}

// findAdoptable returns the one private or secret key that the URI names.
func (m *Module) findAdoptable(s *session, u URI) (pkcs11.ObjectHandle, uint, error) {
	classes := []uint{pkcs11.CKO_PRIVATE_KEY, pkcs11.CKO_SECRET_KEY}
	switch u.Type {
	case "private":
		classes = classes[:1]
	case "secret-key":
		classes = classes[1:]
	}
	var found []pkcs11.ObjectHandle
	var class uint
	for _, c := range classes {
		hs, err := m.findAll(s, refTemplate(u, c))
		if err != nil {
			return 0, 0, err
		}
		if len(hs) > 0 {
			class = c
		}
		found = append(found, hs...)
	}
	switch {
	case len(found) == 0:
		if err := m.checkToken(); err != nil {
			return 0, 0, err
		}
		return 0, 0, ErrKeyNotFound
	case len(found) > 1:
		return 0, 0, fmt.Errorf("the URI matches %d keys; name one with object= and id=: %w", len(found), ErrInvalidInput)
	}
	return found[0], class, nil
}

// refTemplate is the search template of the URI's object for one class.
func refTemplate(u URI, class uint) []*pkcs11.Attribute {
	t := []*pkcs11.Attribute{attr(pkcs11.CKA_CLASS, class), attr(pkcs11.CKA_TOKEN, true)}
	if u.Object != "" {
		t = append(t, attr(pkcs11.CKA_LABEL, u.Object))
	}
	if u.ID != nil {
		t = append(t, attr(pkcs11.CKA_ID, u.ID))
	}
	return t
}

// vetKey checks the key's protection attributes and returns its type.
func (m *Module) vetKey(s *session, h pkcs11.ObjectHandle, class uint, u URI) (KeyType, error) {
	a, err := m.p.GetAttributeValue(s.h, h, []*pkcs11.Attribute{
		attr(pkcs11.CKA_SENSITIVE, nil), attr(pkcs11.CKA_EXTRACTABLE, nil), attr(pkcs11.CKA_PRIVATE, nil),
		attr(pkcs11.CKA_KEY_TYPE, nil), attr(pkcs11.CKA_ID, nil),
	})
	if err != nil {
		return "", err
	}
	switch {
	case bytes.HasPrefix(a[4].Value, ownIDPrefix):
		return "", fmt.Errorf("the key is one that hsmgate made (CKA_ID starts with %q); its own keys are not adopted again: %w", ownIDPrefix, ErrNotAdoptable)
	case !boolAttr(a[0].Value):
		return "", fmt.Errorf("CKA_SENSITIVE is false (the key's value can be read): %w", ErrNotAdoptable)
	case boolAttr(a[1].Value):
		return "", fmt.Errorf("CKA_EXTRACTABLE is true (the key can be wrapped out of the HSM): %w", ErrNotAdoptable)
	case !boolAttr(a[2].Value):
		return "", fmt.Errorf("CKA_PRIVATE is false (the key can be used without logging in): %w", ErrNotAdoptable)
	}
	keyType := ulong(a[3].Value)
	if class == pkcs11.CKO_SECRET_KEY {
		return m.secretType(s, h, keyType)
	}
	sign, err := m.p.GetAttributeValue(s.h, h, []*pkcs11.Attribute{attr(pkcs11.CKA_SIGN, nil)})
	if err != nil {
		return "", err
	}
	if !boolAttr(sign[0].Value) {
		return "", fmt.Errorf("CKA_SIGN is false: %w", ErrNotAdoptable)
	}
	pubs, err := m.findAll(s, refTemplate(u, pkcs11.CKO_PUBLIC_KEY))
	if err != nil {
		return "", err
	}
	if len(pubs) != 1 {
		return "", fmt.Errorf("%d public keys match the URI, want exactly 1 (hsmgate reads the public key from it): %w", len(pubs), ErrNotAdoptable)
	}
	pa, err := m.p.GetAttributeValue(s.h, pubs[0], []*pkcs11.Attribute{attr(pkcs11.CKA_KEY_TYPE, nil)})
	if err != nil {
		return "", err
	}
	if ulong(pa[0].Value) != keyType {
		return "", fmt.Errorf("the public key is of another key type: %w", ErrNotAdoptable)
	}
	kt, _, err := m.readPublic(s, pubs[0], keyType)
	return kt, err
}

// secretType names the secret key's type: AES-256 or an HMAC key.
func (m *Module) secretType(s *session, h pkcs11.ObjectHandle, keyType uint) (KeyType, error) {
	a, err := m.p.GetAttributeValue(s.h, h, []*pkcs11.Attribute{
		attr(pkcs11.CKA_VALUE_LEN, nil), attr(pkcs11.CKA_ENCRYPT, nil), attr(pkcs11.CKA_DECRYPT, nil), attr(pkcs11.CKA_SIGN, nil),
	})
	if err != nil {
		return "", err
	}
	n := ulong(a[0].Value)
	crypt, sign := boolAttr(a[1].Value) && boolAttr(a[2].Value), boolAttr(a[3].Value)
	switch {
	case keyType == pkcs11.CKK_AES && n == 32 && !crypt:
		return "", fmt.Errorf("AES key without CKA_ENCRYPT and CKA_DECRYPT: %w", ErrNotAdoptable)
	case keyType == pkcs11.CKK_AES && n == 32:
		return AES256, nil
	case keyType == pkcs11.CKK_GENERIC_SECRET && (n == 32 || n == 64) && !sign:
		return "", fmt.Errorf("HMAC key without CKA_SIGN: %w", ErrNotAdoptable)
	case keyType == pkcs11.CKK_GENERIC_SECRET && n == 32:
		return HMACSHA256, nil
	case keyType == pkcs11.CKK_GENERIC_SECRET && n == 64:
		return HMACSHA512, nil
	}
	return "", fmt.Errorf("secret key of type %#x and %d bytes: %w", keyType, n, ErrUnsupported)
}

// testSign signs a fixed message with the adopted private key and checks
// the signature with the public key read from the token, so that a public
// key that is not the private key's half is refused before any
// certificate names it.
func (m *Module) testSign(ctx context.Context, ref string) error {
	sg, err := m.Signer(ctx, ref)
	if err != nil {
		return err
	}
	msg := []byte("hsmgate: adopt: test signature")
	digest := sha256.Sum256(msg)
	var ok bool
	switch pub := sg.Public().(type) {
	case *ecdsa.PublicKey:
		sig, err := sg.SignContext(ctx, digest[:], crypto.SHA256)
		if err != nil {
			return err
		}
		ok = ecdsa.VerifyASN1(pub, digest[:], sig)
	case *rsa.PublicKey:
		sig, err := sg.SignContext(ctx, digest[:], crypto.SHA256)
		if err != nil {
			return err
		}
		ok = rsa.VerifyPKCS1v15(pub, crypto.SHA256, digest[:], sig) == nil
	case ed25519.PublicKey:
		sig, err := sg.SignContext(ctx, msg, crypto.Hash(0))
		if err != nil {
			return err
		}
		ok = ed25519.Verify(pub, msg, sig)
	}
	if !ok {
		return fmt.Errorf("the public key does not verify the private key's signature: %w", ErrNotAdoptable)
	}
	return nil
}

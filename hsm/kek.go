package hsm

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"

	"github.com/miekg/pkcs11"
)

// KEK is the deployment's key-encryption key inside the HSM: an AES-256
// token object that can wrap and unwrap, and do nothing else.
type KEK struct {
	m     *Module
	label string
}

// EnsureKEK finds the AES-256 key-encryption key with this label, or creates
// it (CKA_TOKEN, CKA_PRIVATE, CKA_SENSITIVE, CKA_EXTRACTABLE=false,
// CKA_WRAP/CKA_UNWRAP=true, no encrypt/decrypt/sign). created reports whether
// it was made now. ErrKeyExists if the label belongs to another kind of key.
func (m *Module) EnsureKEK(ctx context.Context, label string) (kek *KEK, created bool, err error) {
	k, err := m.KEK(ctx, label)
	switch {
	case err == nil:
		return k, false, nil
	case errors.Is(err, ErrUnsupported):
		return nil, false, fmt.Errorf("hsm: KEK %q: label taken by another kind of key: %w", label, ErrKeyExists)
	case !errors.Is(err, ErrKeyNotFound):
		return nil, false, err
	}
	err = m.create(ctx, label, func(m *Module, s *session, label string, id []byte) error {
		return m.genAES(s, label, id, aesUseWrap)
	})
	switch {
	case errors.Is(err, ErrKeyExists):
		// made by a concurrent caller, or the label is some other object's
		k, err := m.KEK(ctx, label)
		if err != nil {
			return nil, false, fmt.Errorf("hsm: KEK %q: label taken: %w", label, ErrKeyExists)
		}
		return k, false, nil
	case err != nil:
		return nil, false, fmt.Errorf("hsm: create KEK %q: %w", label, err)
	}
	return &KEK{m: m, label: label}, true, nil
}

// KEK finds an existing KEK by label; ErrKeyNotFound if absent,
// ErrUnsupported if the object with that label cannot wrap and unwrap.
func (m *Module) KEK(ctx context.Context, label string) (*KEK, error) {
	err := m.do(ctx, func(s *session) error {
		h, err := m.find(s, label, pkcs11.CKO_SECRET_KEY)
		if err != nil {
			return err
		}
		a, err := m.p.GetAttributeValue(s.h, h, []*pkcs11.Attribute{
			attr(pkcs11.CKA_KEY_TYPE, nil), attr(pkcs11.CKA_WRAP, nil), attr(pkcs11.CKA_UNWRAP, nil),
		})
		if err != nil {
			return err
		}
		if ulong(a[0].Value) != pkcs11.CKK_AES || !boolAttr(a[1].Value) || !boolAttr(a[2].Value) {
			return fmt.Errorf("not an AES wrapping key: %w", ErrUnsupported)
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("hsm: KEK %q: %w", label, err)
	}
	return &KEK{m: m, label: label}, nil
}

// Label names the KEK; stored blobs record it.
func (k *KEK) Label() string { return k.label }

var kwp = []*pkcs11.Mechanism{pkcs11.NewMechanism(pkcs11.CKM_AES_KEY_WRAP_PAD, nil)}

// Wrap encrypts key material under the KEK with CKM_AES_KEY_WRAP_PAD
// (RFC 5649). The plaintext is first padded ISO/IEC 7816-4 style (0x80 then
// zeros) to a multiple of 8 bytes, so that KWP itself adds no padding: SoftHSM
// 2.6.1 returns KWP unwraps with their padding still attached, and this
// framing makes Unwrap exact on every token. The material enters the HSM as a
// short-lived session object, which is destroyed after the wrap.
// ErrInvalidInput for empty plaintext.
func (k *KEK) Wrap(ctx context.Context, plaintext []byte) ([]byte, error) {
	if len(plaintext) == 0 {
		return nil, fmt.Errorf("hsm: wrap: empty plaintext: %w", ErrInvalidInput)
	}
	padded := pad8(plaintext)
	defer clear(padded)
	var out []byte
	err := k.m.do(ctx, func(s *session) error {
		kek, err := k.m.find(s, k.label, pkcs11.CKO_SECRET_KEY)
		if err != nil {
			return err
		}
		tmp, err := k.m.p.CreateObject(s.h, []*pkcs11.Attribute{
			attr(pkcs11.CKA_CLASS, pkcs11.CKO_SECRET_KEY),
			attr(pkcs11.CKA_KEY_TYPE, pkcs11.CKK_GENERIC_SECRET),
			attr(pkcs11.CKA_TOKEN, false),
			attr(pkcs11.CKA_PRIVATE, true),
			attr(pkcs11.CKA_SENSITIVE, true),
			attr(pkcs11.CKA_EXTRACTABLE, true),
			attr(pkcs11.CKA_VALUE, padded),
		})
		if err != nil {
			return err
		}
		defer k.m.p.DestroyObject(s.h, tmp)
		out, err = k.m.p.WrapKey(s.h, kwp, kek, tmp)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("hsm: wrap under %q: %w", k.label, err)
	}
	return out, nil
}

// Unwrap reverses Wrap; ErrInvalidInput if the blob does not authenticate
// or is malformed.
func (k *KEK) Unwrap(ctx context.Context, wrapped []byte) ([]byte, error) {
	if len(wrapped) < 16 || len(wrapped)%8 != 0 {
		return nil, fmt.Errorf("hsm: unwrap: blob of %d bytes: %w", len(wrapped), ErrInvalidInput)
	}
	var out []byte
	err := k.m.do(ctx, func(s *session) error {
		kek, err := k.m.find(s, k.label, pkcs11.CKO_SECRET_KEY)
		if err != nil {
			return err
		}
		tmp, err := k.m.p.UnwrapKey(s.h, kwp, kek, wrapped, []*pkcs11.Attribute{
			attr(pkcs11.CKA_CLASS, pkcs11.CKO_SECRET_KEY),
			attr(pkcs11.CKA_KEY_TYPE, pkcs11.CKK_GENERIC_SECRET),
			attr(pkcs11.CKA_TOKEN, false),
			attr(pkcs11.CKA_PRIVATE, true),
			attr(pkcs11.CKA_SENSITIVE, false),
			attr(pkcs11.CKA_EXTRACTABLE, true),
		})
		if err != nil {
			if badBlob(err) {
				return fmt.Errorf("%w: %w", ErrInvalidInput, err)
			}
			return err
		}
		defer k.m.p.DestroyObject(s.h, tmp)
		a, err := k.m.p.GetAttributeValue(s.h, tmp, []*pkcs11.Attribute{attr(pkcs11.CKA_VALUE, nil)})
		if err != nil {
			return err
		}
		v := a[0].Value
		defer clear(v)
		out, err = unpad8(v)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("hsm: unwrap under %q: %w", k.label, err)
	}
	return out, nil
}

// badBlob: the errors SoftHSM and others give for a blob that does not
// authenticate (SoftHSM 2.6.1 answers CKR_GENERAL_ERROR to a failed
// integrity check).
func badBlob(err error) bool {
	rv, ok := rvOf(err)
	if !ok {
		return false
	}
	switch rv {
	case pkcs11.CKR_WRAPPED_KEY_INVALID, pkcs11.CKR_WRAPPED_KEY_LEN_RANGE,
		pkcs11.CKR_ENCRYPTED_DATA_INVALID, pkcs11.CKR_ENCRYPTED_DATA_LEN_RANGE,
		pkcs11.CKR_GENERAL_ERROR:
		return true
	}
	return false
}

// pad8 appends 0x80 and zeros up to a multiple of 8 (ISO/IEC 7816-4).
func pad8(b []byte) []byte {
	n := (len(b)/8 + 1) * 8
	out := make([]byte, n)
	copy(out, b)
	out[len(b)] = 0x80
	return out
}

// unpad8 removes pad8's padding, tolerating extra zeros that a token left
// behind; ErrInvalidInput if the padding is not there.
func unpad8(b []byte) ([]byte, error) {
	i := len(b) - 1
	for i >= 0 && b[i] == 0 {
		i--
	}
	if i < 0 || b[i] != 0x80 {
		return nil, fmt.Errorf("bad padding in unwrapped blob: %w", ErrInvalidInput)
	}
	return append([]byte(nil), b[:i]...), nil
}

// ulong decodes a CK_ULONG attribute (native byte order, as the C library wrote it).
func ulong(b []byte) uint {
	switch len(b) {
	case 8:
		return uint(binary.NativeEndian.Uint64(b))
	case 4:
		return uint(binary.NativeEndian.Uint32(b))
	}
	return ^uint(0)
}

func boolAttr(b []byte) bool { return len(b) == 1 && b[0] != 0 }

package hsm

import (
	"context"
	"crypto/cipher"
	"fmt"

	"github.com/miekg/pkcs11"
)

const (
	gcmNonceSize = 12
	gcmTagSize   = 16
)

// AEAD is an HSM-resident AES-GCM key. It implements cipher.AEAD (the methods
// without ctx use a background context bounded by Config.WaitTimeout and
// panic like crypto/cipher on a bad nonce length; Seal also panics if the HSM
// fails, since cipher.AEAD's Seal cannot return an error); prefer the Context
// forms, which return ErrInvalidNonce and HSM errors instead.
//
// The nonce is always the caller's: exactly 12 bytes, checked before the HSM
// is called (SoftHSM would accept an empty IV, a silent nonce reuse).
type AEAD struct {
	m     *Module
	label string
}

var _ cipher.AEAD = (*AEAD)(nil)

// AEAD returns the AES-256 key with this label as an AES-GCM AEAD with
// 12-byte nonces and 16-byte tags. ErrKeyNotFound if absent, ErrUnsupported
// if the key is not a 32-byte AES key that can encrypt and decrypt.
func (m *Module) AEAD(ctx context.Context, label string) (*AEAD, error) {
	err := m.do(ctx, func(s *session) error {
		h, err := m.find(s, label, pkcs11.CKO_SECRET_KEY)
		if err != nil {
			return err
		}
		a, err := m.p.GetAttributeValue(s.h, h, []*pkcs11.Attribute{
			attr(pkcs11.CKA_KEY_TYPE, nil), attr(pkcs11.CKA_VALUE_LEN, nil),
			attr(pkcs11.CKA_ENCRYPT, nil), attr(pkcs11.CKA_DECRYPT, nil),
		})
		if err != nil {
			return err
		}
		if ulong(a[0].Value) != pkcs11.CKK_AES || ulong(a[1].Value) != 32 || !boolAttr(a[2].Value) || !boolAttr(a[3].Value) {
			return fmt.Errorf("not an AES-256 encryption key: %w", ErrUnsupported)
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("hsm: AEAD %q: %w", label, err)
	}
	return &AEAD{m: m, label: label}, nil
}

// NonceSize is 12.
func (a *AEAD) NonceSize() int { return gcmNonceSize }

// Overhead is the 16-byte tag.
func (a *AEAD) Overhead() int { return gcmTagSize }

// Seal is cipher.AEAD's Seal; see SealContext.
func (a *AEAD) Seal(dst, nonce, plaintext, additionalData []byte) []byte {
	if len(nonce) != gcmNonceSize {
		panic("hsm: incorrect nonce length given to GCM")
	}
	ctx, cancel := context.WithTimeout(context.Background(), a.m.cfg.WaitTimeout)
	defer cancel()
	out, err := a.SealContext(ctx, dst, nonce, plaintext, additionalData)
	if err != nil {
		panic(err)
	}
	return out
}

// Open is cipher.AEAD's Open; see OpenContext.
func (a *AEAD) Open(dst, nonce, ciphertext, additionalData []byte) ([]byte, error) {
	if len(nonce) != gcmNonceSize {
		panic("hsm: incorrect nonce length given to GCM")
	}
	ctx, cancel := context.WithTimeout(context.Background(), a.m.cfg.WaitTimeout)
	defer cancel()
	return a.OpenContext(ctx, dst, nonce, ciphertext, additionalData)
}

// SealContext appends the GCM encryption of plaintext (ciphertext||tag) to dst.
// The nonce is made by the caller and must be exactly 12 bytes (ErrInvalidNonce).
func (a *AEAD) SealContext(ctx context.Context, dst, nonce, plaintext, aad []byte) ([]byte, error) {
	if len(nonce) != gcmNonceSize {
		return nil, fmt.Errorf("hsm: seal: %d-byte nonce: %w", len(nonce), ErrInvalidNonce)
	}
	out, err := a.crypt(ctx, true, nonce, plaintext, aad)
	if err != nil {
		return nil, fmt.Errorf("hsm: seal with %q: %w", a.label, err)
	}
	return append(dst, out...), nil
}

// OpenContext reverses SealContext; ErrInvalidInput if authentication
// fails, ErrInvalidNonce for a nonce that is not 12 bytes.
func (a *AEAD) OpenContext(ctx context.Context, dst, nonce, ciphertext, aad []byte) ([]byte, error) {
	if len(nonce) != gcmNonceSize {
		return nil, fmt.Errorf("hsm: open: %d-byte nonce: %w", len(nonce), ErrInvalidNonce)
	}
	if len(ciphertext) < gcmTagSize {
		return nil, fmt.Errorf("hsm: open: ciphertext shorter than a tag: %w", ErrInvalidInput)
	}
	out, err := a.crypt(ctx, false, nonce, ciphertext, aad)
	if err != nil {
		return nil, fmt.Errorf("hsm: open with %q: %w", a.label, err)
	}
	return append(dst, out...), nil
}

func (a *AEAD) crypt(ctx context.Context, seal bool, nonce, in, aad []byte) ([]byte, error) {
	var out []byte
	err := a.m.do(ctx, func(s *session) error {
		h, err := a.m.find(s, a.label, pkcs11.CKO_SECRET_KEY)
		if err != nil {
			return err
		}
		params := pkcs11.NewGCMParams(nonce, aad, gcmTagSize*8)
		defer params.Free()
		mech := []*pkcs11.Mechanism{pkcs11.NewMechanism(pkcs11.CKM_AES_GCM, params)}
		if seal {
			if err := a.m.p.EncryptInit(s.h, mech, h); err != nil {
				return err
			}
			out, err = a.m.p.Encrypt(s.h, in)
			return err
		}
		if err := a.m.p.DecryptInit(s.h, mech, h); err != nil {
			return err
		}
		out, err = a.m.p.Decrypt(s.h, in)
		if err != nil && (isRV(err, pkcs11.CKR_ENCRYPTED_DATA_INVALID) || isRV(err, pkcs11.CKR_GENERAL_ERROR) ||
			isRV(err, pkcs11.CKR_ENCRYPTED_DATA_LEN_RANGE)) {
			return fmt.Errorf("message authentication failed: %w", ErrInvalidInput)
		}
		return err
	})
	return out, err
}

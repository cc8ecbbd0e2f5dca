package hsm

import (
	"context"
	"crypto"
	"fmt"

	"github.com/miekg/pkcs11"
)

// MAC is an HSM-resident HMAC key (a generic secret of HMACSHA256 or
// HMACSHA512): every MAC is a PKCS#11 call (CKM_SHA256_HMAC or
// CKM_SHA512_HMAC); the key never leaves the HSM.
type MAC struct {
	m     *Module
	label string
	hash  crypto.Hash
	mech  uint
}

// MAC returns the HMAC key with this label for the hash h (SHA-256 or
// SHA-512). ErrKeyNotFound if absent; ErrUnsupported for another hash, or
// if the key is not a generic secret of the hash's output length (what
// RFC 2104 recommends, and what GenerateKey makes) that can sign.
func (m *Module) MAC(ctx context.Context, label string, h crypto.Hash) (*MAC, error) {
	mac := &MAC{m: m, label: label, hash: h}
	switch h {
	case crypto.SHA256:
		mac.mech = pkcs11.CKM_SHA256_HMAC
	case crypto.SHA512:
		mac.mech = pkcs11.CKM_SHA512_HMAC
	default:
		return nil, fmt.Errorf("hsm: MAC %q: HMAC with %v: %w", label, h, ErrUnsupported)
	}
	err := m.do(ctx, func(s *session) error {
		k, err := m.find(s, label, pkcs11.CKO_SECRET_KEY)
		if err != nil {
			return err
		}
		a, err := m.p.GetAttributeValue(s.h, k, []*pkcs11.Attribute{
			attr(pkcs11.CKA_KEY_TYPE, nil), attr(pkcs11.CKA_VALUE_LEN, nil), attr(pkcs11.CKA_SIGN, nil),
		})
		if err != nil {
			return err
		}
		if ulong(a[0].Value) != pkcs11.CKK_GENERIC_SECRET || int(ulong(a[1].Value)) != h.Size() || !boolAttr(a[2].Value) {
			return fmt.Errorf("not a %d-byte HMAC key: %w", h.Size(), ErrUnsupported)
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("hsm: MAC %q: %w", label, err)
	}
	return mac, nil
}

// SumContext returns the HMAC of msg.
func (c *MAC) SumContext(ctx context.Context, msg []byte) ([]byte, error) {
	var out []byte
	err := c.m.do(ctx, func(s *session) error {
		k, err := c.m.find(s, c.label, pkcs11.CKO_SECRET_KEY)
		if err != nil {
			return err
		}
		if err := c.m.p.SignInit(s.h, []*pkcs11.Mechanism{pkcs11.NewMechanism(c.mech, nil)}, k); err != nil {
			return err
		}
		out, err = c.m.p.Sign(s.h, msg)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("hsm: MAC with %q: %w", c.label, err)
	}
	if len(out) != c.hash.Size() {
		return nil, fmt.Errorf("hsm: MAC with %q: %d bytes, want %d", c.label, len(out), c.hash.Size())
	}
	return out, nil
}

// genHMAC makes a non-extractable generic secret of n bytes that can only
// sign and verify (HMAC).
func (m *Module) genHMAC(s *session, label string, id []byte, n int, extractable bool) error {
	_, err := m.p.GenerateKey(s.h, []*pkcs11.Mechanism{pkcs11.NewMechanism(pkcs11.CKM_GENERIC_SECRET_KEY_GEN, nil)}, []*pkcs11.Attribute{
		attr(pkcs11.CKA_CLASS, pkcs11.CKO_SECRET_KEY),
		attr(pkcs11.CKA_KEY_TYPE, pkcs11.CKK_GENERIC_SECRET),
		attr(pkcs11.CKA_VALUE_LEN, n),
		attr(pkcs11.CKA_LABEL, label),
		attr(pkcs11.CKA_ID, id),
		attr(pkcs11.CKA_TOKEN, true),
		attr(pkcs11.CKA_PRIVATE, true),
		attr(pkcs11.CKA_SENSITIVE, !extractable),
		attr(pkcs11.CKA_EXTRACTABLE, extractable),
		attr(pkcs11.CKA_SIGN, true),
		attr(pkcs11.CKA_VERIFY, true),
		attr(pkcs11.CKA_ENCRYPT, false),
		attr(pkcs11.CKA_DECRYPT, false),
		attr(pkcs11.CKA_WRAP, false),
		attr(pkcs11.CKA_UNWRAP, false),
		attr(pkcs11.CKA_DERIVE, false),
	})
	return err
}

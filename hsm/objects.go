package hsm

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"

	"github.com/miekg/pkcs11"
)

// PKCS#11 3.0 names that miekg/pkcs11 v1.1.2 lacks.
const (
	ckkECEdwards           = 0x00000040 // CKK_EC_EDWARDS
	ckmECEdwardsKeyPairGen = 0x00001055 // CKM_EC_EDWARDS_KEY_PAIR_GEN
	ckmEdDSA               = 0x00001057 // CKM_EDDSA
)

// DER of the named-curve OIDs put in CKA_EC_PARAMS.
var (
	oidP256    = mustHex("06082a8648ce3d030107") // 1.2.840.10045.3.1.7
	oidP384    = mustHex("06052b81040022")       // 1.3.132.0.34
	oidEd25519 = mustHex("06032b6570")           // 1.3.101.112 (RFC 8410); SoftHSM also takes PrintableString "edwards25519"
)

func mustHex(s string) []byte {
	b, err := hex.DecodeString(s)
	if err != nil {
		panic(err)
	}
	return b
}

func attr(t uint, v any) *pkcs11.Attribute { return pkcs11.NewAttribute(t, v) }

// findAll returns the handles of the objects matching the template.
func (m *Module) findAll(s *session, tmpl []*pkcs11.Attribute) ([]pkcs11.ObjectHandle, error) {
	if err := m.p.FindObjectsInit(s.h, tmpl); err != nil {
		return nil, err
	}
	var all []pkcs11.ObjectHandle
	for {
		hs, _, err := m.p.FindObjects(s.h, 16)
		if err != nil {
			_ = m.p.FindObjectsFinal(s.h)
			return nil, err
		}
		all = append(all, hs...)
		if len(hs) < 16 {
			break
		}
	}
	if err := m.p.FindObjectsFinal(s.h); err != nil {
		return nil, err
	}
	return all, nil
}

// find returns the handle of the object of this class and label, from the
// cache of handles when it can. ErrKeyNotFound if there is none; errNotLoggedIn
// if there is none because the session lost its login (private objects
// vanish from a public session); errTokenGone if the token does not answer.
//
// The handle cached is that of a session-object copy of the token object
// (C_CopyObject with CKA_TOKEN=false; the copy keeps CKA_SENSITIVE and
// CKA_EXTRACTABLE=false) when the token allows it: SoftHSM re-reads a token
// object's file on each use, and its operations on a session copy are 1.3x
// (ECDSA) to 2.5x (AES-GCM) faster. The copy is made in the keeper session
// (see cached); if that session goes, the handle turns stale and is found
// and copied again.
func (m *Module) find(s *session, label string, class uint) (pkcs11.ObjectHandle, error) {
	key := handleKey{label, class}
	s.used = append(s.used, key)
	m.mu.Lock()
	h, ok := m.handles[key]
	m.mu.Unlock()
	if ok {
		return h, nil
	}
	tmpl := []*pkcs11.Attribute{
		attr(pkcs11.CKA_CLASS, class),
		attr(pkcs11.CKA_LABEL, label),
		attr(pkcs11.CKA_TOKEN, true),
	}
	ref := IsRef(label)
	if ref {
		// An adopted key: found by the label and/or CKA_ID of its reference.
		u, err := ParseURI(label)
		if err != nil {
			return 0, err
		}
		tmpl = refTemplate(u, class)
	}
	hs, err := m.findAll(s, tmpl)
	if err != nil {
		return 0, err
	}
	if ref && len(hs) > 1 {
		// Another tool added an object with the same label and id: never
		// guess which one is the key that was adopted.
		return 0, fmt.Errorf("hsm: %q: %d objects match: %w", label, len(hs), ErrInvalidInput)
	}
	if len(hs) == 0 {
		// Before saying "not found", make sure that the token is there and
		// that we see its private objects; then search once more, since
		// the token may have been logged in again (by another goroutine)
		// between the search and the check.
		if err := m.checkLogin(s); err != nil {
			return 0, err
		}
		if err := m.checkToken(); err != nil {
			return 0, err
		}
		if hs, err = m.findAll(s, tmpl); err != nil {
			return 0, err
		}
		if len(hs) == 0 {
			if err := m.checkLogin(s); err != nil {
				return 0, err
			}
			return 0, fmt.Errorf("hsm: %q: %w", label, ErrKeyNotFound)
		}
	}
	return m.cached(key, hs[0]), nil
}

// checkLogin returns errNotLoggedIn if the session is not in the user state.
func (m *Module) checkLogin(s *session) error {
	info, err := m.p.GetSessionInfo(s.h)
	if err != nil {
		return err
	}
	if info.State != pkcs11.CKS_RW_USER_FUNCTIONS {
		return errNotLoggedIn
	}
	return nil
}

// checkToken returns errTokenGone if the token does not answer C_GetTokenInfo.
func (m *Module) checkToken() error {
	m.mu.Lock()
	slot := m.slot
	m.mu.Unlock()
	if _, err := m.p.GetTokenInfo(slot); err != nil {
		return fmt.Errorf("%w: %w", errTokenGone, err)
	}
	return nil
}

// labelTaken reports whether any object carries this label.
func (m *Module) labelTaken(s *session, label string) (bool, error) {
	if err := m.checkLogin(s); err != nil {
		return false, err
	}
	if err := m.checkToken(); err != nil {
		return false, err
	}
	hs, err := m.findAll(s, []*pkcs11.Attribute{attr(pkcs11.CKA_LABEL, label), attr(pkcs11.CKA_TOKEN, true)})
	return len(hs) > 0, err
}

// GenerateKey makes a non-extractable token key (or key pair) of type kt with
// this label: one object per key version. ErrKeyExists if the label is taken,
// ErrUnsupported for an unknown key type.
func (m *Module) GenerateKey(ctx context.Context, label string, kt KeyType) error {
	if label == "" {
		return fmt.Errorf("hsm: generate: empty label: %w", ErrInvalidInput)
	}
	if IsRef(label) {
		return fmt.Errorf("hsm: generate %q: labels starting with %q name adopted keys: %w", label, refPrefix, ErrInvalidInput)
	}
	gen, ok := generators[kt]
	if !ok {
		return fmt.Errorf("hsm: generate %q: key type %q: %w", label, kt, ErrUnsupported)
	}
	if err := m.create(ctx, label, gen); err != nil {
		return fmt.Errorf("hsm: generate %s %q: %w", kt, label, err)
	}
	return nil
}

// create runs gen under the label after checking that the label is free.
// Creation is serialised within the Module so that the check holds.
func (m *Module) create(ctx context.Context, label string, gen func(m *Module, s *session, label string, id []byte) error) error {
	id := make([]byte, len(ownIDPrefix)+16)
	copy(id, ownIDPrefix)
	if _, err := rand.Read(id[len(ownIDPrefix):]); err != nil {
		return err
	}
	return m.do(ctx, func(s *session) error {
		// Locked in the operation, not around do: a call abandoned at its
		// deadline keeps the lock until the library returns.
		m.genMu.Lock()
		defer m.genMu.Unlock()
		taken, err := m.labelTaken(s, label)
		if err != nil {
			return err
		}
		if taken {
			return ErrKeyExists
		}
		return gen(m, s, label, id)
	})
}

var generators = map[KeyType]func(m *Module, s *session, label string, id []byte) error{
	AES256:    func(m *Module, s *session, label string, id []byte) error { return m.genAES(s, label, id, aesUseData) },
	ECDSAP256: func(m *Module, s *session, label string, id []byte) error { return m.genEC(s, label, id, oidP256) },
	ECDSAP384: func(m *Module, s *session, label string, id []byte) error { return m.genEC(s, label, id, oidP384) },
	RSA2048:   func(m *Module, s *session, label string, id []byte) error { return m.genRSA(s, label, id, 2048) },
	RSA3072:   func(m *Module, s *session, label string, id []byte) error { return m.genRSA(s, label, id, 3072) },
	RSA4096:   func(m *Module, s *session, label string, id []byte) error { return m.genRSA(s, label, id, 4096) },
	Ed25519:   func(m *Module, s *session, label string, id []byte) error { return m.genEd25519(s, label, id) },
	HMACSHA256: func(m *Module, s *session, label string, id []byte) error {
		return m.genHMAC(s, label, id, 32, false)
	},
	HMACSHA512: func(m *Module, s *session, label string, id []byte) error {
		return m.genHMAC(s, label, id, 64, false)
	},
}

type aesUse int

const (
	aesUseData        aesUse = iota // encrypt/decrypt, non-extractable
	aesUseWrap                      // wrap/unwrap only (KEK), non-extractable
	aesUseExtractable               // encrypt/decrypt, readable: tests only
)

func (m *Module) genAES(s *session, label string, id []byte, use aesUse) error {
	data, wrap := use != aesUseWrap, use == aesUseWrap
	secret := use != aesUseExtractable
	_, err := m.p.GenerateKey(s.h, []*pkcs11.Mechanism{pkcs11.NewMechanism(pkcs11.CKM_AES_KEY_GEN, nil)}, []*pkcs11.Attribute{
		attr(pkcs11.CKA_CLASS, pkcs11.CKO_SECRET_KEY),
		attr(pkcs11.CKA_KEY_TYPE, pkcs11.CKK_AES),
		attr(pkcs11.CKA_VALUE_LEN, 32),
		attr(pkcs11.CKA_LABEL, label),
		attr(pkcs11.CKA_ID, id),
		attr(pkcs11.CKA_TOKEN, true),
		attr(pkcs11.CKA_PRIVATE, true),
		attr(pkcs11.CKA_SENSITIVE, secret),
		attr(pkcs11.CKA_EXTRACTABLE, !secret),
		attr(pkcs11.CKA_ENCRYPT, data),
		attr(pkcs11.CKA_DECRYPT, data),
		attr(pkcs11.CKA_WRAP, wrap),
		attr(pkcs11.CKA_UNWRAP, wrap),
		attr(pkcs11.CKA_SIGN, false),
		attr(pkcs11.CKA_VERIFY, false),
		attr(pkcs11.CKA_DERIVE, false),
	})
	return err
}

// privateTemplate is shared by every private key.
func privateTemplate(keyType uint, label string, id []byte) []*pkcs11.Attribute {
	return []*pkcs11.Attribute{
		attr(pkcs11.CKA_CLASS, pkcs11.CKO_PRIVATE_KEY),
		attr(pkcs11.CKA_KEY_TYPE, keyType),
		attr(pkcs11.CKA_LABEL, label),
		attr(pkcs11.CKA_ID, id),
		attr(pkcs11.CKA_TOKEN, true),
		attr(pkcs11.CKA_PRIVATE, true),
		attr(pkcs11.CKA_SENSITIVE, true),
		attr(pkcs11.CKA_EXTRACTABLE, false),
		attr(pkcs11.CKA_SIGN, true),
		attr(pkcs11.CKA_DECRYPT, false),
		attr(pkcs11.CKA_UNWRAP, false),
		attr(pkcs11.CKA_DERIVE, false),
	}
}

func publicTemplate(keyType uint, label string, id []byte, more ...*pkcs11.Attribute) []*pkcs11.Attribute {
	return append([]*pkcs11.Attribute{
		attr(pkcs11.CKA_CLASS, pkcs11.CKO_PUBLIC_KEY),
		attr(pkcs11.CKA_KEY_TYPE, keyType),
		attr(pkcs11.CKA_LABEL, label),
		attr(pkcs11.CKA_ID, id),
		attr(pkcs11.CKA_TOKEN, true),
		attr(pkcs11.CKA_PRIVATE, false),
		attr(pkcs11.CKA_VERIFY, true),
		attr(pkcs11.CKA_ENCRYPT, false),
		attr(pkcs11.CKA_WRAP, false),
	}, more...)
}

func (m *Module) genPair(s *session, mech uint, pub, priv []*pkcs11.Attribute) error {
	_, _, err := m.p.GenerateKeyPair(s.h, []*pkcs11.Mechanism{pkcs11.NewMechanism(mech, nil)}, pub, priv)
	return err
}

func (m *Module) genEC(s *session, label string, id, curve []byte) error {
	return m.genPair(s, pkcs11.CKM_EC_KEY_PAIR_GEN,
		publicTemplate(pkcs11.CKK_EC, label, id, attr(pkcs11.CKA_EC_PARAMS, curve)),
		privateTemplate(pkcs11.CKK_EC, label, id))
}

func (m *Module) genRSA(s *session, label string, id []byte, bits int) error {
	return m.genPair(s, pkcs11.CKM_RSA_PKCS_KEY_PAIR_GEN,
		publicTemplate(pkcs11.CKK_RSA, label, id,
			attr(pkcs11.CKA_MODULUS_BITS, bits),
			attr(pkcs11.CKA_PUBLIC_EXPONENT, []byte{1, 0, 1})),
		privateTemplate(pkcs11.CKK_RSA, label, id))
}

func (m *Module) genEd25519(s *session, label string, id []byte) error {
	return m.genPair(s, ckmECEdwardsKeyPairGen,
		publicTemplate(ckkECEdwards, label, id, attr(pkcs11.CKA_EC_PARAMS, oidEd25519)),
		privateTemplate(ckkECEdwards, label, id))
}

// DestroyKey deletes the key (both halves of a pair, and this process's
// session copies) with this label; ErrKeyNotFound if absent.
//
// A reference to an adopted key (IsRef) is refused with ErrUnsupported: a
// key that hsmgate did not make is never destroyed by it.
func (m *Module) DestroyKey(ctx context.Context, label string) error {
	if IsRef(label) {
		return fmt.Errorf("hsm: destroy %q: an adopted key is not hsmgate's to destroy: %w", label, ErrUnsupported)
	}
	err := m.do(ctx, func(s *session) error {
		if err := m.checkLogin(s); err != nil {
			return err
		}
		if err := m.checkToken(); err != nil {
			return err
		}
		hs, err := m.findAll(s, []*pkcs11.Attribute{attr(pkcs11.CKA_LABEL, label)})
		if err != nil {
			return err
		}
		if len(hs) == 0 {
			return ErrKeyNotFound
		}
		m.forget(label)
		for _, h := range hs {
			if err := m.p.DestroyObject(s.h, h); err != nil {
				return err
			}
		}
		return nil
	})
	m.forget(label)
	if err != nil {
		return fmt.Errorf("hsm: destroy %q: %w", label, err)
	}
	return nil
}

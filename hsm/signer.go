package hsm

import (
	"bytes"
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rsa"
	"encoding/asn1"
	"fmt"
	"io"
	"math/big"

	"github.com/miekg/pkcs11"
	"golang.org/x/crypto/cryptobyte"
	cbasn1 "golang.org/x/crypto/cryptobyte/asn1"
)

// Signer is an HSM-resident private key used as a crypto.Signer. Its public
// key is read once, when the Signer is made.
type Signer struct {
	m     *Module
	label string
	kt    KeyType
	pub   crypto.PublicKey
}

var _ crypto.Signer = (*Signer)(nil)

// Signer returns the private key with this label as a crypto.Signer
// (ECDSA: ASN.1 DER signatures over a digest; RSA: PKCS#1 v1.5, or PSS when
// opts is *rsa.PSSOptions; Ed25519: pure Ed25519 over the message,
// opts.HashFunc() == 0). ErrKeyNotFound if there is no private key or no
// public key with this label; ErrUnsupported for another key type.
func (m *Module) Signer(ctx context.Context, label string) (*Signer, error) {
	s := &Signer{m: m, label: label}
	err := m.do(ctx, func(ss *session) error {
		priv, err := m.find(ss, label, pkcs11.CKO_PRIVATE_KEY)
		if err != nil {
			return err
		}
		a, err := m.p.GetAttributeValue(ss.h, priv, []*pkcs11.Attribute{attr(pkcs11.CKA_KEY_TYPE, nil)})
		if err != nil {
			return err
		}
		pubH, err := m.find(ss, label, pkcs11.CKO_PUBLIC_KEY)
		if err != nil {
			return err
		}
		s.kt, s.pub, err = m.readPublic(ss, pubH, ulong(a[0].Value))
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("hsm: signer %q: %w", label, err)
	}
	return s, nil
}

func (m *Module) readPublic(s *session, h pkcs11.ObjectHandle, keyType uint) (KeyType, crypto.PublicKey, error) {
	switch keyType {
	case pkcs11.CKK_RSA:
		a, err := m.p.GetAttributeValue(s.h, h, []*pkcs11.Attribute{
			attr(pkcs11.CKA_MODULUS, nil), attr(pkcs11.CKA_PUBLIC_EXPONENT, nil),
		})
		if err != nil {
			return "", nil, err
		}
		n := new(big.Int).SetBytes(a[0].Value)
		e := new(big.Int).SetBytes(a[1].Value)
		if !e.IsInt64() || e.Int64() > 1<<31-1 {
			return "", nil, fmt.Errorf("RSA public exponent too large: %w", ErrUnsupported)
		}
		pub := &rsa.PublicKey{N: n, E: int(e.Int64())}
		switch n.BitLen() {
		case 2048:
			return RSA2048, pub, nil
		case 3072:
			return RSA3072, pub, nil
		case 4096:
			return RSA4096, pub, nil
		}
		return "", nil, fmt.Errorf("RSA-%d: %w", n.BitLen(), ErrUnsupported)
	case pkcs11.CKK_EC, ckkECEdwards:
		a, err := m.p.GetAttributeValue(s.h, h, []*pkcs11.Attribute{
			attr(pkcs11.CKA_EC_PARAMS, nil), attr(pkcs11.CKA_EC_POINT, nil),
		})
		if err != nil {
			return "", nil, err
		}
		point := a[1].Value
		var inner []byte // CKA_EC_POINT is an OCTET STRING; some tokens give it bare
		if rest, err := asn1.Unmarshal(point, &inner); err == nil && len(rest) == 0 {
			point = inner
		}
		params := a[0].Value
		switch {
		case bytes.Equal(params, oidP256) || bytes.Equal(params, oidP384):
			kt, curve := ECDSAP256, elliptic.P256()
			if bytes.Equal(params, oidP384) {
				kt, curve = ECDSAP384, elliptic.P384()
			}
			pub, err := ecdsa.ParseUncompressedPublicKey(curve, point)
			if err != nil {
				return "", nil, fmt.Errorf("EC point: %w", err)
			}
			return kt, pub, nil
		case keyType == ckkECEdwards && len(point) == ed25519.PublicKeySize:
			return Ed25519, ed25519.PublicKey(bytes.Clone(point)), nil
		}
		return "", nil, fmt.Errorf("EC parameters %x: %w", params, ErrUnsupported)
	}
	return "", nil, fmt.Errorf("key type %#x: %w", keyType, ErrUnsupported)
}

// Public returns the public key: *ecdsa.PublicKey, *rsa.PublicKey or ed25519.PublicKey.
func (s *Signer) Public() crypto.PublicKey { return s.pub }

// KeyType of the signer.
func (s *Signer) KeyType() KeyType { return s.kt }

// Label of the key.
func (s *Signer) Label() string { return s.label }

// Sign is crypto.Signer's Sign, with a background context bounded by
// Config.WaitTimeout. rand is ignored: the HSM uses its own RNG.
func (s *Signer) Sign(_ io.Reader, digest []byte, opts crypto.SignerOpts) ([]byte, error) {
	ctx, cancel := context.WithTimeout(context.Background(), s.m.cfg.WaitTimeout)
	defer cancel()
	return s.SignContext(ctx, digest, opts)
}

// SignContext is Sign with a context; opts nil means SHA-256 for ECDSA/RSA.
// For RSA PSS, a salt length of PSSSaltLengthAuto or PSSSaltLengthEqualsHash
// gives a salt as long as the hash (what verifiers with either setting
// accept). ErrInvalidInput if the digest's length does not match the hash,
// ErrUnsupported for a hash or option the key type cannot use.
func (s *Signer) SignContext(ctx context.Context, digest []byte, opts crypto.SignerOpts) ([]byte, error) {
	sig, err := s.SignRawContext(ctx, digest, opts)
	if err != nil {
		return nil, err
	}
	if s.kt == ECDSAP256 || s.kt == ECDSAP384 {
		return ecdsaDER(sig)
	}
	return sig, nil
}

// SignRawContext is SignContext, except that an ECDSA signature is what the
// token gives (CKM_ECDSA): r and s, each as long as the curve's order,
// concatenated; for callers that want neither ASN.1 nor big integers
// (SSH's mpint pair). Other key types sign as with SignContext.
func (s *Signer) SignRawContext(ctx context.Context, digest []byte, opts crypto.SignerOpts) ([]byte, error) {
	mech, input, err := s.mechanism(digest, opts)
	if err != nil {
		return nil, fmt.Errorf("hsm: sign with %q: %w", s.label, err)
	}
	var sig []byte
	err = s.m.do(ctx, func(ss *session) error {
		h, err := s.m.find(ss, s.label, pkcs11.CKO_PRIVATE_KEY)
		if err != nil {
			return err
		}
		if err := s.m.p.SignInit(ss.h, []*pkcs11.Mechanism{mech}, h); err != nil {
			return err
		}
		sig, err = s.m.p.Sign(ss.h, input)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("hsm: sign with %q: %w", s.label, err)
	}
	if (s.kt == ECDSAP256 || s.kt == ECDSAP384) && (len(sig) == 0 || len(sig)%2 != 0) {
		return nil, fmt.Errorf("hsm: sign with %q: ECDSA signature of %d bytes", s.label, len(sig))
	}
	return sig, nil
}

// mechanism picks the mechanism and the bytes to sign.
func (s *Signer) mechanism(digest []byte, opts crypto.SignerOpts) (*pkcs11.Mechanism, []byte, error) {
	if s.kt == Ed25519 {
		if opts != nil && opts.HashFunc() != 0 {
			return nil, nil, fmt.Errorf("Ed25519ph (hash %v): %w", opts.HashFunc(), ErrUnsupported)
		}
		if o, ok := opts.(*ed25519.Options); ok && o.Context != "" {
			return nil, nil, fmt.Errorf("Ed25519ctx: %w", ErrUnsupported)
		}
		return pkcs11.NewMechanism(ckmEdDSA, nil), digest, nil
	}
	hash := crypto.SHA256
	if opts != nil {
		hash = opts.HashFunc()
	}
	if hash == 0 || !hash.Available() {
		return nil, nil, fmt.Errorf("hash %v: %w", hash, ErrUnsupported)
	}
	if len(digest) != hash.Size() {
		return nil, nil, fmt.Errorf("%d-byte digest for %v: %w", len(digest), hash, ErrInvalidInput)
	}
	switch s.kt {
	case ECDSAP256, ECDSAP384:
		return pkcs11.NewMechanism(pkcs11.CKM_ECDSA, nil), digest, nil
	}
	if pss, ok := opts.(*rsa.PSSOptions); ok {
		h, ok := pssHashes[hash]
		if !ok {
			return nil, nil, fmt.Errorf("PSS with %v: %w", hash, ErrUnsupported)
		}
		salt := pss.SaltLength
		if salt == rsa.PSSSaltLengthAuto || salt == rsa.PSSSaltLengthEqualsHash {
			salt = hash.Size()
		}
		if salt < 0 {
			return nil, nil, fmt.Errorf("PSS salt length %d: %w", salt, ErrInvalidInput)
		}
		return pkcs11.NewMechanism(pkcs11.CKM_RSA_PKCS_PSS, pkcs11.NewPSSParams(h.mech, h.mgf, uint(salt))), digest, nil
	}
	prefix, ok := digestInfoPrefixes[hash]
	if !ok {
		return nil, nil, fmt.Errorf("PKCS#1 v1.5 with %v: %w", hash, ErrUnsupported)
	}
	return pkcs11.NewMechanism(pkcs11.CKM_RSA_PKCS, nil), append(append([]byte(nil), prefix...), digest...), nil
}

var pssHashes = map[crypto.Hash]struct{ mech, mgf uint }{
	crypto.SHA256: {pkcs11.CKM_SHA256, pkcs11.CKG_MGF1_SHA256},
	crypto.SHA384: {pkcs11.CKM_SHA384, pkcs11.CKG_MGF1_SHA384},
	crypto.SHA512: {pkcs11.CKM_SHA512, pkcs11.CKG_MGF1_SHA512},
}

// DER DigestInfo prefixes of PKCS#1 v1.5 (RFC 8017 section 9.2, note 1).
var digestInfoPrefixes = map[crypto.Hash][]byte{
	crypto.SHA224: {0x30, 0x2d, 0x30, 0x0d, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02, 0x04, 0x05, 0x00, 0x04, 0x1c},
	crypto.SHA256: {0x30, 0x31, 0x30, 0x0d, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02, 0x01, 0x05, 0x00, 0x04, 0x20},
	crypto.SHA384: {0x30, 0x41, 0x30, 0x0d, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02, 0x02, 0x05, 0x00, 0x04, 0x30},
	crypto.SHA512: {0x30, 0x51, 0x30, 0x0d, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02, 0x03, 0x05, 0x00, 0x04, 0x40},
}

// ecdsaDER turns PKCS#11's r||s into an ASN.1 ECDSA-Sig-Value.
func ecdsaDER(raw []byte) ([]byte, error) {
	if len(raw) == 0 || len(raw)%2 != 0 {
		return nil, fmt.Errorf("hsm: ECDSA signature of %d bytes", len(raw))
	}
	r := new(big.Int).SetBytes(raw[:len(raw)/2])
	s := new(big.Int).SetBytes(raw[len(raw)/2:])
	var b cryptobyte.Builder
	b.AddASN1(cbasn1.SEQUENCE, func(b *cryptobyte.Builder) {
		b.AddASN1BigInt(r)
		b.AddASN1BigInt(s)
	})
	return b.Bytes()
}

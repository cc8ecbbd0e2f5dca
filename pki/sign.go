package pki

import (
	"bytes"
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"fmt"
	"io"
	"math/big"
	"slices"
	"sync"

	"golang.org/x/crypto/cryptobyte"
	cbasn1 "golang.org/x/crypto/cryptobyte/asn1"

	pb "github.com/hsmgate/hsmgate/proto/hsmgate/v1"
)

// issuerRT is an issuer ready to sign: its parsed certificate, its HSM
// signer and what linting needs.
type issuerRT struct {
	rec      *pb.Issuer
	rev      int64
	cert     *x509.Certificate
	chainDER [][]byte
	signer   crypto.Signer
	// sigAlg is the issuer's signature algorithm, set on every template.
	sigAlg x509.SignatureAlgorithm
	// lintSig stands in for the signature in the certificate that is linted
	// before the HSM signs (placeholderSignature: the size of a real one).
	lintSig []byte
	// chainOut is the chain returned with each certificate: this issuer's
	// certificate and those above it (built once; callers must not modify it).
	chainOut [][]byte
	// sigLinted holds, per signature lint (signatureLints), its verdict on
	// this issuer's key: lint name -> error (nil: passed).
	sigLinted sync.Map
	// chain parsed, for name constraints.
	chain []*x509.Certificate
	// ocspCert/ocspSigner sign OCSP responses: the delegated responder, or the issuer itself.
	ocspCert   *x509.Certificate
	ocspSigner crypto.Signer
}

type issuerCache struct {
	mu sync.Mutex
	m  map[string]*issuerRT
}

// loadIssuer returns the runtime issuer for name ("" or "default": the
// default issuer), rebuilt when its stored record changed.
func (s *Service) loadIssuer(ctx context.Context, name string) (*issuerRT, error) {
	rec, rev, err := s.getIssuerRecord(ctx, name)
	if err != nil {
		return nil, err
	}
	s.issuers.mu.Lock()
	defer s.issuers.mu.Unlock()
	old := s.issuers.m[rec.Name]
	if old != nil && old.rev == rev {
		return old, nil
	}
	rt, err := s.buildIssuer(ctx, rec, rev, old)
	if err != nil {
		return nil, err
	}
	s.issuers.m[rec.Name] = rt
	return rt, nil
}

func (s *Service) forgetIssuer(name string) {
	s.issuers.mu.Lock()
	defer s.issuers.mu.Unlock()
	delete(s.issuers.m, name)
}

func (s *Service) buildIssuer(ctx context.Context, rec *pb.Issuer, rev int64, old *issuerRT) (*issuerRT, error) {
	rt := &issuerRT{rec: rec, rev: rev, chainDER: rec.Chain}
	if rec.State != pb.IssuerState_ISSUER_STATE_ACTIVE {
		return rt, nil
	}
	cert, err := x509.ParseCertificate(rec.Certificate)
	if err != nil {
		return nil, fmt.Errorf("pki: issuer %q: parse certificate: %v", rec.Name, err)
	}
	rt.cert = cert
	for _, d := range rec.Chain {
		c, err := x509.ParseCertificate(d)
		if err != nil {
			return nil, fmt.Errorf("pki: issuer %q: parse chain: %v", rec.Name, err)
		}
		rt.chain = append(rt.chain, c)
	}
	if old != nil && old.cert != nil && bytes.Equal(old.rec.Certificate, rec.Certificate) &&
		bytes.Equal(old.rec.OcspCertificate, rec.OcspCertificate) {
		rt.signer, rt.sigAlg, rt.lintSig = old.signer, old.sigAlg, old.lintSig
		rt.chainOut = append([][]byte{cert.Raw}, rec.Chain...)
		rt.ocspCert, rt.ocspSigner = old.ocspCert, old.ocspSigner
		return rt, nil
	}
	if rt.signer, err = s.cfg.Keys.SigningKey(ctx, rec.KeyLabel); err != nil {
		return nil, fmt.Errorf("pki: issuer %q: key %q: %w", rec.Name, rec.KeyLabel, err)
	}
	if rt.sigAlg, err = issuerSignatureAlgorithm(cert.PublicKey); err != nil {
		return nil, fmt.Errorf("pki: issuer %q: %w", rec.Name, err)
	}
	rt.lintSig = placeholderSignature(cert.PublicKey)
	rt.chainOut = append([][]byte{cert.Raw}, rec.Chain...)
	rt.ocspCert, rt.ocspSigner = cert, rt.signer
	if len(rec.OcspCertificate) > 0 {
		oc, err := x509.ParseCertificate(rec.OcspCertificate)
		if err != nil {
			return nil, fmt.Errorf("pki: issuer %q: parse OCSP certificate: %v", rec.Name, err)
		}
		os, err := s.cfg.Keys.SigningKey(ctx, rec.OcspKeyLabel)
		if err != nil {
			return nil, fmt.Errorf("pki: issuer %q: OCSP key: %w", rec.Name, err)
		}
		rt.ocspCert, rt.ocspSigner = oc, os
	}
	return rt, nil
}

// constraintCAs are the issuer's certificate and those above it.
func (rt *issuerRT) constraintCAs() []*x509.Certificate {
	return append([]*x509.Certificate{rt.cert}, rt.chain...)
}

// issuerSignatureAlgorithm is the algorithm Go's x509 signs with for an
// issuer public key (the one certificates were signed with before it was
// set explicitly).
func issuerSignatureAlgorithm(pub crypto.PublicKey) (x509.SignatureAlgorithm, error) {
	switch k := pub.(type) {
	case *ecdsa.PublicKey:
		switch k.Curve {
		case elliptic.P256():
			return x509.ECDSAWithSHA256, nil
		case elliptic.P384():
			return x509.ECDSAWithSHA384, nil
		case elliptic.P521():
			return x509.ECDSAWithSHA512, nil
		}
	case *rsa.PublicKey:
		return x509.SHA256WithRSA, nil
	case ed25519.PublicKey:
		return x509.PureEd25519, nil
	}
	return 0, fmt.Errorf("%w: issuer public key %T", ErrInvalid, pub)
}

// signTBS signs a TBSCertificate with signer the way x509.CreateCertificate
// does for alg: the digest with the algorithm's hash, or the message itself
// for Ed25519.
func signTBS(signer crypto.Signer, rnd io.Reader, alg x509.SignatureAlgorithm, tbs []byte) ([]byte, error) {
	var h crypto.Hash
	switch alg {
	case x509.ECDSAWithSHA256, x509.SHA256WithRSA:
		h = crypto.SHA256
	case x509.ECDSAWithSHA384, x509.SHA384WithRSA:
		h = crypto.SHA384
	case x509.ECDSAWithSHA512, x509.SHA512WithRSA:
		h = crypto.SHA512
	case x509.PureEd25519:
		return signer.Sign(rnd, tbs, crypto.Hash(0))
	default:
		return nil, fmt.Errorf("unsupported signature algorithm %s", alg)
	}
	d := h.New()
	d.Write(tbs)
	return signer.Sign(rnd, d.Sum(nil), h)
}

// splitCertificate returns the TBSCertificate and the signatureAlgorithm
// elements of a DER certificate.
func splitCertificate(der []byte) (tbs, sigAlg []byte, ok bool) {
	in := cryptobyte.String(der)
	var cert, t, a cryptobyte.String
	if !in.ReadASN1(&cert, cbasn1.SEQUENCE) || !in.Empty() ||
		!cert.ReadASN1Element(&t, cbasn1.SEQUENCE) || !cert.ReadASN1Element(&a, cbasn1.SEQUENCE) {
		return nil, nil, false
	}
	return t, a, true
}

// Serial numbers are 16 bytes: serialTag, the issue time in milliseconds
// since the Unix epoch (6 bytes, big-endian), then serialRandom bytes from
// the service's randomness. The tag keeps them positive and their hex a
// fixed 31 digits, so the store's keys (pki/certs/<hex>) sort by issue
// time: a new record lands at the end of the store's key space instead of
// at a random place in it, and a commit of a group of records writes one
// or two leaf pages instead of one page per record (BenchmarkCertRecordKeys
// in keystore/bbolt: per record, about half the CPU and under half the
// bytes written at 8 writers, a third and a quarter at 32). The 72 random
// bits are more than the 64 the CA/Browser Forum's Baseline Requirements
// ask for (7.1), and the serials are not sequential; what the time part
// tells, the certificate's NotBefore tells too.
const (
	serialTag    = 0x01
	serialRandom = 9
)

// randomSerial returns a new serial number, issued at now (see serialTag).
func (s *Service) randomSerial() (*big.Int, error) {
	var b [1 + 6 + serialRandom]byte
	b[0] = serialTag
	ms := uint64(s.cfg.Now().UnixMilli())
	for i := 6; i >= 1; i-- {
		b[i] = byte(ms)
		ms >>= 8
	}
	if _, err := io.ReadFull(s.cfg.Rand, b[7:]); err != nil {
		return nil, fmt.Errorf("pki: serial: %w", err)
	}
	return new(big.Int).SetBytes(b[:]), nil
}

func subjectFrom(s *pb.Subject) pkix.Name {
	if s == nil {
		return pkix.Name{}
	}
	return pkix.Name{
		CommonName:         s.CommonName,
		Organization:       slices.Clone(s.Organization),
		OrganizationalUnit: slices.Clone(s.OrganizationalUnit),
		Country:            slices.Clone(s.Country),
	}
}

package pki

import (
	"bytes"
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"fmt"
	"io"
	"math/big"
	"slices"
	"sort"
	"strings"
	"sync"

	zx509 "github.com/zmap/zcrypto/x509"
	_ "github.com/zmap/zlint/v3" // registers every lint in lint.GlobalRegistry
	"github.com/zmap/zlint/v3/lint"
	"golang.org/x/crypto/cryptobyte"
	cbasn1 "golang.org/x/crypto/cryptobyte/asn1"

	"github.com/hsmgate/hsmgate/hsm"
	pb "github.com/hsmgate/hsmgate/proto/hsmgate/v1"
)

// issuerRT is an issuer ready to sign: its parsed certificate, its HSM
// signer and its linting copy.
type issuerRT struct {
	rec      *pb.Issuer
	rev      int64
	cert     *x509.Certificate
	chainDER [][]byte
	signer   crypto.Signer
	// lintCert has the issuer's subject and key identifier and lintKey's public key.
	lintCert *x509.Certificate
	lintKey  crypto.Signer
	// sigAlg is the issuer's signature algorithm, set on every template so
	// that the linting copy's TBSCertificate is the real one's.
	sigAlg x509.SignatureAlgorithm
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
		rt.signer, rt.lintCert, rt.lintKey, rt.sigAlg = old.signer, old.lintCert, old.lintKey, old.sigAlg
		rt.ocspCert, rt.ocspSigner = old.ocspCert, old.ocspSigner
		return rt, nil
	}
	if rt.signer, err = s.cfg.Keys.SigningKey(ctx, rec.KeyLabel); err != nil {
		return nil, fmt.Errorf("pki: issuer %q: key %q: %w", rec.Name, rec.KeyLabel, err)
	}
	if rt.lintCert, rt.lintKey, rt.sigAlg, err = makeLintIssuer(cert); err != nil {
		return nil, fmt.Errorf("pki: issuer %q: linting copy: %w", rec.Name, err)
	}
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

// makeLintIssuer makes the linting copy of an issuer: a certificate with the
// same subject, key identifier and validity, for a throwaway in-process key,
// so that a certificate it signs with the issuer's signature algorithm
// (signCert sets it explicitly) has the same TBSCertificate as one signed by
// the real issuer. The throwaway key is the cheapest of the algorithm's
// family (lintKeyFor), made once per process: the TBSCertificate does not
// depend on it, only the signature of the linting copy, which zlint does not
// check and which never leaves the process.
func makeLintIssuer(real *x509.Certificate) (*x509.Certificate, crypto.Signer, x509.SignatureAlgorithm, error) {
	alg, err := issuerSignatureAlgorithm(real.PublicKey)
	if err != nil {
		return nil, nil, 0, err
	}
	key, err := lintKeyFor(alg)
	if err != nil {
		return nil, nil, 0, err
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		RawSubject:            real.RawSubject,
		SubjectKeyId:          real.SubjectKeyId,
		NotBefore:             real.NotBefore,
		NotAfter:              real.NotAfter,
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign | x509.KeyUsageDigitalSignature,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		return nil, nil, 0, err
	}
	c, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, nil, 0, err
	}
	// The child's authority key identifier is taken from this field: keep the real one (even empty).
	c.SubjectKeyId = real.SubjectKeyId
	return c, key, alg, nil
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

// lintKeys holds one throwaway key per family (signature algorithm's public
// key algorithm): ECDSA P-256 (it signs ecdsa-with-SHA384 as well as
// SHA256, far faster than P-384), RSA-1024 (sha256WithRSAEncryption whatever
// the modulus; several times cheaper to sign with than RSA-3072), Ed25519.
var lintKeys struct {
	once                 [3]sync.Once
	ecdsa, rsa, ed       crypto.Signer
	ecErr, rsaErr, edErr error
}

func lintKeyFor(alg x509.SignatureAlgorithm) (crypto.Signer, error) {
	switch alg {
	case x509.ECDSAWithSHA256, x509.ECDSAWithSHA384, x509.ECDSAWithSHA512:
		lintKeys.once[0].Do(func() { lintKeys.ecdsa, lintKeys.ecErr = ecdsa.GenerateKey(elliptic.P256(), rand.Reader) })
		return lintKeys.ecdsa, lintKeys.ecErr
	case x509.SHA256WithRSA:
		lintKeys.once[1].Do(func() { lintKeys.rsa, lintKeys.rsaErr = rsa.GenerateKey(rand.Reader, 1024) })
		return lintKeys.rsa, lintKeys.rsaErr
	case x509.PureEd25519:
		lintKeys.once[2].Do(func() { _, lintKeys.ed, lintKeys.edErr = ed25519.GenerateKey(rand.Reader) })
		return lintKeys.ed, lintKeys.edErr
	}
	return nil, fmt.Errorf("%w: no linting key for %s", ErrInvalid, alg)
}

// lintOptions selects the zlint lints.
type lintOptions struct {
	sources []string
	exclude []string
}

func (o lintOptions) key() string {
	return strings.Join(o.sources, ",") + "|" + strings.Join(o.exclude, ",")
}

var registries sync.Map // lintOptions.key() → *linter

// linter is a filtered zlint registry with its certificate lints and
// configuration listed once: zlint.LintCertificateEx lists, sorts and maps
// every lint name again for each certificate.
type linter struct {
	lints []*lint.CertificateLint
	cfg   lint.Configuration
}

func (o lintOptions) registry() (*linter, error) {
	k := o.key()
	if r, ok := registries.Load(k); ok {
		return r.(*linter), nil
	}
	var srcs lint.SourceList
	for _, s := range o.sources {
		var src lint.LintSource
		if src.FromString(s); src == lint.UnknownLintSource {
			return nil, fmt.Errorf("%w: unknown lint source %q", ErrInvalid, s)
		}
		srcs = append(srcs, src)
	}
	if len(srcs) == 0 {
		srcs = lint.SourceList{lint.RFC5280}
	}
	r, err := lint.GlobalRegistry().Filter(lint.FilterOptions{IncludeSources: srcs, ExcludeNames: o.exclude})
	if err != nil {
		return nil, fmt.Errorf("%w: lint filter: %v", ErrInvalid, err)
	}
	l := &linter{lints: r.CertificateLints().Lints(), cfg: r.GetConfiguration()}
	if len(l.lints) == 0 { // never lint with nothing (e.g. the lints not linked in)
		return nil, fmt.Errorf("%w: no lint selected by sources %v", ErrInvalid, o.sources)
	}
	registries.Store(k, l)
	return l, nil
}

// lintDER runs the selected lints, each as zlint.LintCertificateEx runs it;
// ErrLint naming each error or fatal finding.
func lintDER(der []byte, o lintOptions) error {
	reg, err := o.registry()
	if err != nil {
		return err
	}
	c, err := zx509.ParseCertificate(der)
	if err != nil {
		return fmt.Errorf("%w: zlint cannot parse the certificate: %v", ErrLint, err)
	}
	var bad []string
	for _, l := range reg.lints {
		r := l.Execute(c, reg.cfg)
		if r.Status == lint.Error || r.Status == lint.Fatal {
			name := l.Name
			if r.Details != "" {
				name += " (" + r.Details + ")"
			}
			bad = append(bad, name)
		}
	}
	if len(bad) > 0 {
		sort.Strings(bad)
		return fmt.Errorf("%w: %s", ErrLint, strings.Join(bad, ", "))
	}
	return nil
}

// signCert signs tmpl for pub with iss: first with the linting copy, which
// zlint must pass; then the HSM key signs that same TBSCertificate, and the
// real certificate's signature is checked with the issuer's public key (as
// x509.CreateCertificate checks its own), so Go builds and encodes each
// certificate once.
func (s *Service) signCert(ctx context.Context, iss *issuerRT, tmpl *x509.Certificate, pub crypto.PublicKey, lo lintOptions) ([]byte, *x509.Certificate, error) {
	if iss.cert == nil {
		return nil, nil, fmt.Errorf("%w: %q is %s", ErrIssuerNotActive, iss.rec.Name, iss.rec.State)
	}
	tmpl.SignatureAlgorithm = iss.sigAlg
	lintDERBytes, err := x509.CreateCertificate(s.cfg.Rand, tmpl, iss.lintCert, pub, iss.lintKey)
	if err != nil {
		return nil, nil, fmt.Errorf("%w: %v", ErrInvalid, err)
	}
	if err := lintDER(lintDERBytes, lo); err != nil {
		return nil, nil, err
	}
	tbs, sigAlg, ok := splitCertificate(lintDERBytes)
	if !ok {
		return nil, nil, errors.New("pki: cannot split the linted certificate")
	}
	sig, err := signTBS(hsm.WithContext(ctx, iss.signer), s.cfg.Rand, iss.sigAlg, tbs)
	if err != nil {
		return nil, nil, fmt.Errorf("pki: sign with issuer %q: %w", iss.rec.Name, err)
	}
	var b cryptobyte.Builder
	b.AddASN1(cbasn1.SEQUENCE, func(b *cryptobyte.Builder) {
		b.AddBytes(tbs)
		b.AddBytes(sigAlg)
		b.AddASN1BitString(sig)
	})
	der, err := b.Bytes()
	if err != nil {
		return nil, nil, fmt.Errorf("pki: encode certificate: %v", err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, nil, fmt.Errorf("pki: parse issued certificate: %v", err)
	}
	if !bytes.Equal(cert.RawTBSCertificate, tbs) || cert.SignatureAlgorithm != iss.sigAlg {
		return nil, nil, errors.New("pki: signed certificate differs from the linted one")
	}
	if err := iss.cert.CheckSignature(cert.SignatureAlgorithm, cert.RawTBSCertificate, cert.Signature); err != nil {
		return nil, nil, fmt.Errorf("pki: signature of issuer %q over the certificate is invalid: %v", iss.rec.Name, err)
	}
	return der, cert, nil
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

// randomSerial returns a positive random 128-bit serial number.
func (s *Service) randomSerial() (*big.Int, error) {
	b := make([]byte, 16)
	for {
		if _, err := s.cfg.Rand.Read(b); err != nil {
			return nil, fmt.Errorf("pki: serial: %w", err)
		}
		n := new(big.Int).SetBytes(b)
		if n.BitLen() > 64 { // never a tiny serial (and never zero)
			return n, nil
		}
	}
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

package pki

import (
	"bytes"
	"context"
	"crypto"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"fmt"
	"math/big"
	"slices"
	"sort"
	"strings"
	"sync"

	zx509 "github.com/zmap/zcrypto/x509"
	"github.com/zmap/zlint/v3"
	"github.com/zmap/zlint/v3/lint"
	"golang.org/x/crypto/cryptobyte"
	cbasn1 "golang.org/x/crypto/cryptobyte/asn1"

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
		rt.signer, rt.lintCert, rt.lintKey = old.signer, old.lintCert, old.lintKey
		rt.ocspCert, rt.ocspSigner = old.ocspCert, old.ocspSigner
		return rt, nil
	}
	if rt.signer, err = s.cfg.Keys.Signer(ctx, rec.KeyLabel); err != nil {
		return nil, fmt.Errorf("pki: issuer %q: key %q: %w", rec.Name, rec.KeyLabel, err)
	}
	if rt.lintCert, rt.lintKey, err = makeLintIssuer(cert, rec.KeyType); err != nil {
		return nil, fmt.Errorf("pki: issuer %q: linting copy: %w", rec.Name, err)
	}
	rt.ocspCert, rt.ocspSigner = cert, rt.signer
	if len(rec.OcspCertificate) > 0 {
		oc, err := x509.ParseCertificate(rec.OcspCertificate)
		if err != nil {
			return nil, fmt.Errorf("pki: issuer %q: parse OCSP certificate: %v", rec.Name, err)
		}
		os, err := s.cfg.Keys.Signer(ctx, rec.OcspKeyLabel)
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
// same subject, key identifier and validity, for a throwaway in-process key
// of the same type, so that a certificate it signs has the same
// TBSCertificate as one signed by the real issuer.
func makeLintIssuer(real *x509.Certificate, kt string) (*x509.Certificate, crypto.Signer, error) {
	key, err := generateKey(kt)
	if err != nil {
		return nil, nil, err
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
	der, err := x509.CreateCertificate(nil, tmpl, tmpl, key.Public(), key)
	if err != nil {
		return nil, nil, err
	}
	c, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, nil, err
	}
	// The child's authority key identifier is taken from this field: keep the real one (even empty).
	c.SubjectKeyId = real.SubjectKeyId
	return c, key, nil
}

// lintOptions selects the zlint lints.
type lintOptions struct {
	sources []string
	exclude []string
}

func (o lintOptions) key() string {
	return strings.Join(o.sources, ",") + "|" + strings.Join(o.exclude, ",")
}

var registries sync.Map // lintOptions.key() → lint.Registry

func (o lintOptions) registry() (lint.Registry, error) {
	k := o.key()
	if r, ok := registries.Load(k); ok {
		return r.(lint.Registry), nil
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
	registries.Store(k, r)
	return r, nil
}

// lintDER runs the selected lints; ErrLint naming each error or fatal finding.
func lintDER(der []byte, o lintOptions) error {
	reg, err := o.registry()
	if err != nil {
		return err
	}
	c, err := zx509.ParseCertificate(der)
	if err != nil {
		return fmt.Errorf("%w: zlint cannot parse the certificate: %v", ErrLint, err)
	}
	rs := zlint.LintCertificateEx(c, reg)
	var bad []string
	for name, r := range rs.Results {
		if r.Status == lint.Error || r.Status == lint.Fatal {
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
// zlint must pass, then with the HSM key; the two TBSCertificates must be equal.
func (s *Service) signCert(ctx context.Context, iss *issuerRT, tmpl *x509.Certificate, pub crypto.PublicKey, lo lintOptions) ([]byte, *x509.Certificate, error) {
	if iss.cert == nil {
		return nil, nil, fmt.Errorf("%w: %q is %s", ErrIssuerNotActive, iss.rec.Name, iss.rec.State)
	}
	lintDERBytes, err := x509.CreateCertificate(s.cfg.Rand, tmpl, iss.lintCert, pub, iss.lintKey)
	if err != nil {
		return nil, nil, fmt.Errorf("%w: %v", ErrInvalid, err)
	}
	if err := lintDER(lintDERBytes, lo); err != nil {
		return nil, nil, err
	}
	der, err := x509.CreateCertificate(s.cfg.Rand, tmpl, iss.cert, pub, withContext(ctx, iss.signer))
	if err != nil {
		return nil, nil, fmt.Errorf("pki: sign with issuer %q: %w", iss.rec.Name, err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, nil, fmt.Errorf("pki: parse issued certificate: %v", err)
	}
	if lintTBS, ok := rawTBS(lintDERBytes); !ok || !bytes.Equal(lintTBS, cert.RawTBSCertificate) {
		return nil, nil, errors.New("pki: signed certificate differs from the linted one")
	}
	return der, cert, nil
}

// rawTBS returns the TBSCertificate element of a DER certificate.
func rawTBS(der []byte) ([]byte, bool) {
	in := cryptobyte.String(der)
	var cert, tbs cryptobyte.String
	if !in.ReadASN1(&cert, cbasn1.SEQUENCE) || !cert.ReadASN1Element(&tbs, cbasn1.SEQUENCE) {
		return nil, false
	}
	return tbs, true
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

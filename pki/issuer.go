package pki

import (
	"bytes"
	"context"
	"crypto"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"net"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/hsmgate/hsmgate/hsm"
	"github.com/hsmgate/hsmgate/keystore"
	pb "github.com/hsmgate/hsmgate/proto/hsmgate/v1"
)

// Issuer defaults.
const (
	DefaultRootTTL         = 10 * 365 * 24 * time.Hour
	DefaultIntermediateTTL = 5 * 365 * 24 * time.Hour
	DefaultRootKeyType     = KeyECDSAP384
	DefaultInterKeyType    = KeyECDSAP256
)

var (
	oidOCSPNoCheck = asn1.ObjectIdentifier{1, 3, 6, 1, 5, 5, 7, 48, 1, 5}
	caLint         = lintOptions{sources: internalLintSources}
)

// adoptIssuerKey adopts the key that uri names for an issuer; kt, if set,
// is the key type the caller wants. It returns the key's reference (its
// label for Keys, recorded as the issuer's KeyLabel: hsm.IsRef tells that
// it was adopted) and its type.
func (s *Service) adoptIssuerKey(ctx context.Context, name, uri, kt string) (string, string, error) {
	var allowed []hsm.KeyType
	for t := range issuerKeyTypes {
		if kt == "" || t == kt {
			allowed = append(allowed, hsm.KeyType(t))
		}
	}
	a, err := s.cfg.Keys.AdoptKey(ctx, uri, allowed...)
	if err != nil {
		return "", "", fmt.Errorf("pki: issuer %q: adopt key: %w", name, err)
	}
	return a.Ref, string(a.KeyType), nil
}

// reserveIssuer writes a pending record so that a concurrent create of the
// same name fails, and makes the issuer's key in the HSM, or adopts the
// existing key that keyURI names (kt, if set, must be its type).
func (s *Service) reserveIssuer(ctx context.Context, name, kt, keyURI string, subj *pb.Subject) (*pb.Issuer, int64, crypto.Signer, error) {
	if err := checkName("issuer", name); err != nil {
		return nil, 0, nil, err
	}
	if name == "default" {
		return nil, 0, nil, fmt.Errorf("%w: issuer name %q is reserved", ErrInvalid, name)
	}
	var adoptedRef string
	if keyURI != "" {
		if kt != "" && !issuerKeyTypes[kt] {
			return nil, 0, nil, fmt.Errorf("%w: issuer key type %q", ErrInvalid, kt)
		}
		var err error
		if adoptedRef, kt, err = s.adoptIssuerKey(ctx, name, keyURI, kt); err != nil {
			return nil, 0, nil, err
		}
	}
	if !issuerKeyTypes[kt] {
		return nil, 0, nil, fmt.Errorf("%w: issuer key type %q", ErrInvalid, kt)
	}
	if subj.GetCommonName() == "" {
		return nil, 0, nil, fmt.Errorf("%w: issuer subject needs a common name", ErrInvalid)
	}
	suffix := make([]byte, 6)
	if _, err := s.cfg.Rand.Read(suffix); err != nil {
		return nil, 0, nil, fmt.Errorf("pki: label: %w", err)
	}
	rec := &pb.Issuer{
		Name: name, KeyType: kt, KeyLabel: s.cfg.KeyLabelPrefix + name + "-" + hex.EncodeToString(suffix),
		State: pb.IssuerState_ISSUER_STATE_PENDING, CreateTime: ts(s.cfg.Now()), CommonName: subj.GetCommonName(),
	}
	if adoptedRef != "" {
		rec.KeyLabel = adoptedRef
	}
	rev, err := putProto(ctx, s.cfg.Store, prefixIssuers+name, rec, keystore.MustNotExist)
	if errors.Is(err, keystore.ErrConflict) {
		return nil, 0, nil, fmt.Errorf("%w: %q", ErrIssuerExists, name)
	}
	if err != nil {
		return nil, 0, nil, err
	}
	if adoptedRef == "" {
		if err := s.cfg.Keys.GenerateKey(ctx, rec.KeyLabel, hsm.KeyType(kt)); err != nil {
			s.abandonIssuer(ctx, rec, false)
			return nil, 0, nil, fmt.Errorf("pki: issuer %q: generate key: %w", name, err)
		}
	}
	signer, err := s.cfg.Keys.SigningKey(ctx, rec.KeyLabel)
	if err != nil {
		s.abandonIssuer(ctx, rec, true)
		return nil, 0, nil, fmt.Errorf("pki: issuer %q: key: %w", name, err)
	}
	return rec, rev, signer, nil
}

// abandonIssuer undoes reserveIssuer after a failure (best effort). An
// adopted key is never destroyed.
func (s *Service) abandonIssuer(ctx context.Context, rec *pb.Issuer, key bool) {
	ctx = context.WithoutCancel(ctx)
	if key && !hsm.IsRef(rec.KeyLabel) {
		if err := s.cfg.Keys.DestroyKey(ctx, rec.KeyLabel); err != nil {
			s.cfg.Logger.Warn("pki: destroy abandoned issuer key", "issuer", rec.Name, "err", err)
		}
	}
	if err := s.cfg.Store.Delete(ctx, prefixIssuers+rec.Name, keystore.AnyRevision); err != nil {
		s.cfg.Logger.Warn("pki: delete abandoned issuer", "issuer", rec.Name, "err", err)
	}
}

// activate stores the issuer with its certificate, makes its delegated OCSP
// responder if needed, and makes it the default if asked or if there is none.
func (s *Service) activate(ctx context.Context, rec *pb.Issuer, rev int64, cert *x509.Certificate, chain [][]byte, makeDefault bool) (*pb.Issuer, error) {
	rec.State = pb.IssuerState_ISSUER_STATE_ACTIVE
	rec.Certificate, rec.Chain, rec.Csr = cert.Raw, chain, nil
	rec.NotBefore, rec.NotAfter, rec.Serial = ts(cert.NotBefore), ts(cert.NotAfter), serialHex(cert.SerialNumber)
	rev, err := putProto(ctx, s.cfg.Store, prefixIssuers+rec.Name, rec, rev)
	if err != nil {
		return nil, err
	}
	if rec.KeyType == KeyEd25519 || s.cfg.DelegatedOCSP {
		if rec, err = s.makeOCSPResponder(ctx, rec.Name); err != nil {
			return nil, err
		}
	}
	if _, err := s.defaultIssuer(ctx); makeDefault || errors.Is(err, ErrIssuerNotFound) {
		if err := s.setDefaultIssuer(ctx, rec.Name); err != nil {
			return nil, err
		}
	}
	return s.present(ctx, rec), nil
}

// present marks the default issuer in a copy of rec.
func (s *Service) present(ctx context.Context, rec *pb.Issuer) *pb.Issuer {
	out := proto.Clone(rec).(*pb.Issuer)
	def, _ := s.defaultIssuer(ctx)
	out.IsDefault = def == rec.Name
	return out
}

func caTemplate(subj *pb.Subject, now time.Time, ttl time.Duration, maxPathLen int32, leavesOnly bool) *x509.Certificate {
	t := &x509.Certificate{
		Subject:               subjectFrom(subj),
		NotBefore:             now.Add(-DefaultBackdate),
		NotAfter:              now.Add(ttl),
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign | x509.KeyUsageDigitalSignature,
		MaxPathLen:            -1,
	}
	switch {
	case maxPathLen > 0:
		t.MaxPathLen = int(maxPathLen)
	case maxPathLen == 0 && leavesOnly:
		t.MaxPathLen, t.MaxPathLenZero = 0, true
	}
	return t
}

// parsePolicies reads certificate policy OIDs (ErrInvalid naming a bad one).
func parsePolicies(in []string) ([]x509.OID, error) {
	var out []x509.OID
	for _, p := range in {
		oid, err := x509.ParseOID(p)
		if err != nil {
			return nil, fmt.Errorf("%w: policy identifier %.64q", ErrInvalid, p)
		}
		out = append(out, oid)
	}
	return out, nil
}

// CreateRootIssuer makes a key in the HSM and a self-signed root.
func (s *Service) CreateRootIssuer(ctx context.Context, req *pb.CreateRootIssuerRequest) (*pb.CreateRootIssuerResponse, error) {
	if _, err := parsePolicies(req.GetPolicyIdentifiers()); err != nil {
		return nil, err
	}
	kt := req.GetKeyType()
	if kt == "" && req.GetKeyUri() == "" {
		kt = DefaultRootKeyType
	}
	ttl := DefaultRootTTL
	if req.GetTtl() != nil {
		ttl = req.GetTtl().AsDuration()
	}
	if ttl <= 0 {
		return nil, fmt.Errorf("%w: ttl %s", ErrInvalid, ttl)
	}
	rec, rev, signer, err := s.reserveIssuer(ctx, req.GetName(), kt, req.GetKeyUri(), req.GetSubject())
	if err != nil {
		return nil, err
	}
	cert, err := s.selfSign(req, hsm.WithContext(ctx, signer), ttl)
	if err != nil {
		s.abandonIssuer(ctx, rec, true)
		return nil, err
	}
	out, err := s.activate(ctx, rec, rev, cert, nil, req.GetMakeDefault())
	if err != nil {
		return nil, err
	}
	return &pb.CreateRootIssuerResponse{Issuer: out}, nil
}

func (s *Service) selfSign(req *pb.CreateRootIssuerRequest, signer crypto.Signer, ttl time.Duration) (*x509.Certificate, error) {
	tmpl := caTemplate(req.GetSubject(), s.cfg.Now().UTC().Truncate(time.Second), ttl, req.GetMaxPathLen(), false)
	tmpl.Policies, _ = parsePolicies(req.GetPolicyIdentifiers()) // checked by CreateRootIssuer
	serial, err := s.randomSerial()
	if err != nil {
		return nil, err
	}
	tmpl.SerialNumber = serial
	der, err := x509.CreateCertificate(s.cfg.Rand, tmpl, tmpl, signer.Public(), signer)
	if err != nil {
		return nil, fmt.Errorf("pki: self-sign root: %w", err)
	}
	// A root is linted after its signature: it reaches nobody until stored.
	if err := lintDER(der, caLint); err != nil {
		return nil, err
	}
	return x509.ParseCertificate(der)
}

// CreateIntermediateIssuer makes a key in the HSM and has it signed by
// parent, or returns its CSR when parent is empty.
func (s *Service) CreateIntermediateIssuer(ctx context.Context, req *pb.CreateIntermediateIssuerRequest) (*pb.CreateIntermediateIssuerResponse, error) {
	policies, err := parsePolicies(req.GetPolicyIdentifiers())
	if err != nil {
		return nil, err
	}
	kt := req.GetKeyType()
	if kt == "" && req.GetKeyUri() == "" {
		kt = DefaultInterKeyType
	}
	ttl := DefaultIntermediateTTL
	if req.GetTtl() != nil {
		ttl = req.GetTtl().AsDuration()
	}
	if ttl <= 0 {
		return nil, fmt.Errorf("%w: ttl %s", ErrInvalid, ttl)
	}
	nc, err := nameConstraints(req.GetNameConstraints())
	if err != nil {
		return nil, err
	}
	var parent *issuerRT
	tmpl := caTemplate(req.GetSubject(), s.cfg.Now().UTC().Truncate(time.Second), ttl, req.GetMaxPathLen(), true)
	tmpl.Policies = policies
	nc.apply(tmpl)
	if req.GetParent() != "" {
		if parent, err = s.loadIssuer(ctx, req.GetParent()); err != nil {
			return nil, err
		}
		if err := s.checkCanSign(parent); err != nil {
			return nil, err
		}
		if err := fitCAUnder(tmpl, parent.constraintCAs()); err != nil {
			return nil, fmt.Errorf("pki: intermediate %q under %q: %w", req.GetName(), parent.rec.Name, err)
		}
	}
	rec, rev, signer, err := s.reserveIssuer(ctx, req.GetName(), kt, req.GetKeyUri(), req.GetSubject())
	if err != nil {
		return nil, err
	}
	if parent == nil {
		csrDER, err := x509.CreateCertificateRequest(s.cfg.Rand, &x509.CertificateRequest{Subject: subjectFrom(req.GetSubject())}, hsm.WithContext(ctx, signer))
		if err != nil {
			s.abandonIssuer(ctx, rec, true)
			return nil, fmt.Errorf("pki: intermediate CSR: %w", err)
		}
		rec.Csr = csrDER
		if _, err := putProto(ctx, s.cfg.Store, prefixIssuers+rec.Name, rec, rev); err != nil {
			return nil, err
		}
		return &pb.CreateIntermediateIssuerResponse{Issuer: s.present(ctx, rec), Csr: csrDER}, nil
	}
	cert, err := s.signCA(ctx, parent, tmpl, signer.Public(), "")
	if err != nil {
		s.abandonIssuer(ctx, rec, true)
		return nil, err
	}
	rec.Parent = parent.rec.Name
	chain := append([][]byte{parent.cert.Raw}, parent.chainDER...)
	out, err := s.activate(ctx, rec, rev, cert, chain, req.GetMakeDefault())
	if err != nil {
		return nil, err
	}
	return &pb.CreateIntermediateIssuerResponse{Issuer: out}, nil
}

// signCA signs a CA (or responder) certificate with parent, capped at the
// parent's validity, with the parent's AIA and CRL URLs, and records it
// under the parent so that it can be revoked.
func (s *Service) signCA(ctx context.Context, parent *issuerRT, tmpl *x509.Certificate, pub crypto.PublicKey, role string) (*x509.Certificate, error) {
	if err := fitCAUnder(tmpl, parent.constraintCAs()); err != nil {
		return nil, fmt.Errorf("pki: CA certificate under %q: %w", parent.rec.Name, err)
	}
	if tmpl.NotBefore.Before(parent.cert.NotBefore) {
		tmpl.NotBefore = parent.cert.NotBefore
	}
	if tmpl.NotAfter.After(parent.cert.NotAfter) {
		tmpl.NotAfter = parent.cert.NotAfter
	}
	tmpl.IssuingCertificateURL = []string{s.issuerURL(parent.rec.Name, "der")}
	if role != roleOCSPResponder {
		tmpl.OCSPServer = []string{s.cfg.BaseURL + "/pki/ocsp"}
		tmpl.CRLDistributionPoints = []string{s.issuerURL(parent.rec.Name, "crl")}
	}
	for range maxSerialAttempts {
		serial, err := s.randomSerial()
		if err != nil {
			return nil, err
		}
		tmpl.SerialNumber = serial
		der, cert, err := s.signCert(ctx, parent, tmpl, pub, lintOptions{sources: caLint.sources, exclude: s.cfg.LintExclude})
		if err != nil {
			return nil, err
		}
		rec := &pb.CertificateRecord{
			Serial: serialHex(serial), Issuer: parent.rec.Name, Role: role, Certificate: der,
			NotAfter: ts(cert.NotAfter), CommonName: cert.Subject.CommonName, IssueTime: ts(s.cfg.Now()),
		}
		_, err = putProto(ctx, s.cfg.Store, prefixCerts+rec.Serial, rec, keystore.MustNotExist)
		if errors.Is(err, keystore.ErrConflict) {
			continue
		}
		if err != nil {
			return nil, err
		}
		return cert, nil
	}
	return nil, fmt.Errorf("pki: no free serial after %d attempts", maxSerialAttempts)
}

type constraints struct {
	permDNS, exclDNS, permURI []string
	permIP, exclIP            []*net.IPNet
	critical, any             bool
}

func nameConstraints(nc *pb.NameConstraints) (*constraints, error) {
	c := &constraints{}
	if nc == nil {
		return c, nil
	}
	c.permDNS, c.exclDNS, c.permURI = nc.PermittedDnsDomains, nc.ExcludedDnsDomains, nc.PermittedUriDomains
	for _, l := range []struct {
		in  []string
		out *[]*net.IPNet
	}{{nc.PermittedIpRanges, &c.permIP}, {nc.ExcludedIpRanges, &c.exclIP}} {
		for _, r := range l.in {
			_, n, err := net.ParseCIDR(r)
			if err != nil {
				return nil, fmt.Errorf("%w: name constraint IP range %q", ErrInvalid, r)
			}
			*l.out = append(*l.out, n)
		}
	}
	c.critical = !nc.NotCritical
	c.any = len(c.permDNS)+len(c.exclDNS)+len(c.permURI)+len(c.permIP)+len(c.exclIP) > 0
	return c, nil
}

func (c *constraints) apply(t *x509.Certificate) {
	if !c.any {
		return
	}
	t.PermittedDNSDomains, t.ExcludedDNSDomains, t.PermittedURIDomains = c.permDNS, c.exclDNS, c.permURI
	t.PermittedIPRanges, t.ExcludedIPRanges = c.permIP, c.exclIP
	t.PermittedDNSDomainsCritical = c.critical
}

// ImportIssuerCertificate completes a pending intermediate.
func (s *Service) ImportIssuerCertificate(ctx context.Context, req *pb.ImportIssuerCertificateRequest) (*pb.ImportIssuerCertificateResponse, error) {
	rec, rev, err := s.getIssuerRecord(ctx, req.GetName())
	if err != nil {
		return nil, err
	}
	if rec.State != pb.IssuerState_ISSUER_STATE_PENDING {
		return nil, fmt.Errorf("%w: %q is not pending", ErrIssuerNotActive, rec.Name)
	}
	certs, err := parseCerts(req.GetCertificate())
	if err != nil {
		return nil, err
	}
	for _, d := range req.GetChain() {
		c, err := x509.ParseCertificate(d)
		if err != nil {
			return nil, fmt.Errorf("%w: chain certificate: %v", ErrInvalid, err)
		}
		certs = append(certs, c)
	}
	cert := certs[0]
	signer, err := s.cfg.Keys.SigningKey(ctx, rec.KeyLabel)
	if err != nil {
		return nil, fmt.Errorf("pki: issuer %q: key: %w", rec.Name, err)
	}
	if !publicKeysEqual(cert.PublicKey, signer.Public()) {
		return nil, fmt.Errorf("%w: the certificate is not for this issuer's key", ErrInvalid)
	}
	if !cert.IsCA || !cert.BasicConstraintsValid {
		return nil, fmt.Errorf("%w: the certificate is not a CA certificate", ErrInvalid)
	}
	var chain [][]byte
	for i, c := range certs[1:] {
		if err := certs[i].CheckSignatureFrom(c); err != nil {
			return nil, fmt.Errorf("%w: chain certificate %d did not sign the one before it: %v", ErrInvalid, i+1, err)
		}
		chain = append(chain, c.Raw)
	}
	if err := checkCAChain(cert, certs[1:]); err != nil {
		return nil, fmt.Errorf("pki: import %q: %w", rec.Name, err)
	}
	out, err := s.activate(ctx, rec, rev, cert, chain, req.GetMakeDefault())
	if err != nil {
		return nil, err
	}
	return &pb.ImportIssuerCertificateResponse{Issuer: out}, nil
}

func parseCerts(b []byte) ([]*x509.Certificate, error) {
	var out []*x509.Certificate
	if bytes.Contains(b, []byte("-----BEGIN")) {
		for {
			var blk *pem.Block
			blk, b = pem.Decode(b)
			if blk == nil {
				break
			}
			if blk.Type != "CERTIFICATE" {
				continue
			}
			c, err := x509.ParseCertificate(blk.Bytes)
			if err != nil {
				return nil, fmt.Errorf("%w: certificate: %v", ErrInvalid, err)
			}
			out = append(out, c)
		}
	} else if len(b) > 0 {
		c, err := x509.ParseCertificate(b)
		if err != nil {
			return nil, fmt.Errorf("%w: certificate: %v", ErrInvalid, err)
		}
		out = append(out, c)
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("%w: no certificate", ErrInvalid)
	}
	return out, nil
}

func publicKeysEqual(a, b crypto.PublicKey) bool {
	k, ok := a.(interface{ Equal(crypto.PublicKey) bool })
	return ok && k.Equal(b)
}

// CrossSignIssuer certifies issuer name's subject and key with issuer signer.
func (s *Service) CrossSignIssuer(ctx context.Context, req *pb.CrossSignIssuerRequest) (*pb.CrossSignIssuerResponse, error) {
	target, err := s.loadIssuer(ctx, req.GetName())
	if err != nil {
		return nil, err
	}
	if target.cert == nil {
		return nil, fmt.Errorf("%w: %q is pending", ErrIssuerNotActive, target.rec.Name)
	}
	signer, err := s.loadIssuer(ctx, req.GetSigner())
	if err != nil {
		return nil, err
	}
	if err := s.checkCanSign(signer); err != nil {
		return nil, err
	}
	if signer.rec.Name == target.rec.Name {
		return nil, fmt.Errorf("%w: an issuer cannot cross-sign itself", ErrInvalid)
	}
	tc := target.cert
	now := s.cfg.Now().UTC().Truncate(time.Second)
	tmpl := &x509.Certificate{
		RawSubject: tc.RawSubject, SubjectKeyId: tc.SubjectKeyId,
		NotBefore: now.Add(-DefaultBackdate), NotAfter: tc.NotAfter,
		IsCA: true, BasicConstraintsValid: true, KeyUsage: tc.KeyUsage,
		MaxPathLen: tc.MaxPathLen, MaxPathLenZero: tc.MaxPathLenZero,
		PermittedDNSDomains: tc.PermittedDNSDomains, ExcludedDNSDomains: tc.ExcludedDNSDomains,
		PermittedIPRanges: tc.PermittedIPRanges, ExcludedIPRanges: tc.ExcludedIPRanges,
		PermittedURIDomains: tc.PermittedURIDomains, PermittedDNSDomainsCritical: tc.PermittedDNSDomainsCritical,
	}
	if tmpl.MaxPathLen == 0 && !tmpl.MaxPathLenZero {
		tmpl.MaxPathLen = -1
	}
	if req.GetTtl() != nil {
		if end := now.Add(req.GetTtl().AsDuration()); end.Before(tmpl.NotAfter) {
			tmpl.NotAfter = end
		}
	}
	cert, err := s.signCA(ctx, signer, tmpl, tc.PublicKey, "")
	if err != nil {
		return nil, err
	}
	for {
		rec, rev, err := s.getIssuerRecord(ctx, target.rec.Name)
		if err != nil {
			return nil, err
		}
		rec.CrossSigned = append(rec.CrossSigned, cert.Raw)
		_, err = putProto(ctx, s.cfg.Store, prefixIssuers+rec.Name, rec, rev)
		if errors.Is(err, keystore.ErrConflict) {
			continue
		}
		if err != nil {
			return nil, err
		}
		return &pb.CrossSignIssuerResponse{Certificate: cert.Raw, Issuer: s.present(ctx, rec)}, nil
	}
}

// roleOCSPResponder marks the certificate records of delegated OCSP responders.
const roleOCSPResponder = "ocsp-responder"

// makeOCSPResponder gives the issuer a delegated OCSP responder: a key in
// the HSM (ECDSA P-256, made on first use and kept across renewals) and a
// short-lived certificate for it (Config.OCSPResponderValidity), signed by
// the issuer, with no CRL distribution point (id-pkix-ocsp-nocheck: nobody
// checks a responder's revocation).
func (s *Service) makeOCSPResponder(ctx context.Context, name string) (*pb.Issuer, error) {
	iss, err := s.loadIssuer(ctx, name)
	if err != nil {
		return nil, err
	}
	label := iss.rec.OcspKeyLabel
	if label == "" {
		label = iss.rec.KeyLabel + "-ocsp"
		if hsm.IsRef(iss.rec.KeyLabel) {
			// An adopted issuer key: the responder key is hsmgate's own.
			suffix := make([]byte, 6)
			if _, err := s.cfg.Rand.Read(suffix); err != nil {
				return nil, fmt.Errorf("pki: issuer %q: OCSP key label: %w", name, err)
			}
			label = s.cfg.KeyLabelPrefix + name + "-ocsp-" + hex.EncodeToString(suffix)
		}
		if err := s.cfg.Keys.GenerateKey(ctx, label, hsm.ECDSAP256); err != nil {
			return nil, fmt.Errorf("pki: issuer %q: OCSP key: %w", name, err)
		}
	}
	signer, err := s.cfg.Keys.SigningKey(ctx, label)
	if err != nil {
		return nil, fmt.Errorf("pki: issuer %q: OCSP key: %w", name, err)
	}
	now := s.cfg.Now().UTC().Truncate(time.Second)
	tmpl := &x509.Certificate{
		Subject:               pkix.Name{CommonName: iss.cert.Subject.CommonName + " OCSP responder"},
		NotBefore:             now.Add(-DefaultBackdate),
		NotAfter:              now.Add(s.cfg.OCSPResponderValidity),
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageDigitalSignature,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageOCSPSigning},
		ExtraExtensions:       []pkix.Extension{{Id: oidOCSPNoCheck, Value: []byte{0x05, 0x00}}},
	}
	cert, err := s.signCA(ctx, iss, tmpl, signer.Public(), roleOCSPResponder)
	if err != nil {
		return nil, err
	}
	rec, rev, err := s.getIssuerRecord(ctx, name)
	if err != nil {
		return nil, err
	}
	rec.OcspCertificate, rec.OcspKeyLabel = cert.Raw, label
	if _, err := putProto(ctx, s.cfg.Store, prefixIssuers+name, rec, rev); err != nil {
		return nil, err
	}
	return rec, nil
}

// responderDue reports whether the issuer's delegated OCSP certificate has
// a third or less of its lifetime left (or cannot be read).
func (s *Service) responderDue(rec *pb.Issuer) bool {
	if len(rec.OcspCertificate) == 0 {
		return false
	}
	c, err := x509.ParseCertificate(rec.OcspCertificate)
	if err != nil {
		return true
	}
	left := c.NotAfter.Sub(s.cfg.Now())
	return left <= c.NotAfter.Sub(c.NotBefore)/3
}

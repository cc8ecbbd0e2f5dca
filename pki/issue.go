package pki

import (
	"context"
	"crypto"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"net"
	"net/url"
	"slices"
	"time"

	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/hsmgate/hsmgate/keystore"
	pb "github.com/hsmgate/hsmgate/proto/hsmgate/v1"
)

// maxCSRSize bounds a CSR accepted by Sign.
const maxCSRSize = 64 << 10

// maxSerialAttempts bounds the retries after a serial collision.
const maxSerialAttempts = 5

// request is what Issue and Sign have in common once parsed.
type request struct {
	role  *pb.Role
	cn    string
	dns   []string
	ips   []string
	uris  []string
	ttl   *durationpb.Duration
	pub   crypto.PublicKey
	extra []pkix.Extension
}

type issued struct {
	der      []byte
	notAfter time.Time
	// chain is shared by every certificate of the issuer: read only.
	chain  [][]byte
	serial string
	issuer string
}

// Issue makes a key pair in process and a certificate for it.
func (s *Service) Issue(ctx context.Context, req *pb.IssueRequest) (_ *pb.IssueResponse, err error) {
	var role *pb.Role
	defer func() { s.metrics.observe(role, err) }()
	role, _, err = s.getRole(ctx, req.GetRole())
	if err != nil {
		return nil, err
	}
	kt := req.GetKeyType()
	if kt == "" {
		kt = role.KeyType
	}
	if kt != role.KeyType && !slices.Contains(role.AllowedKeyTypes, kt) {
		return nil, fmt.Errorf("%w: key type %q", ErrNotAllowed, kt)
	}
	key, err := generateKey(kt)
	if err != nil {
		return nil, err
	}
	pkcs8, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, fmt.Errorf("pki: encode private key: %v", err)
	}
	out, err := s.issue(ctx, &request{
		role: role, cn: req.GetCommonName(), dns: req.GetDnsNames(), ips: req.GetIpAddresses(),
		uris: req.GetUris(), ttl: req.GetTtl(), pub: key.Public(),
	})
	if err != nil {
		return nil, err
	}
	return &pb.IssueResponse{
		Certificate: out.der, Chain: out.chain, PrivateKey: pkcs8, Serial: out.serial,
		Issuer: out.issuer, NotAfter: timestamppb.New(out.notAfter),
	}, nil
}

// Sign issues a certificate for a CSR's public key; names come from the
// request, or from the CSR when the request has none; all are checked
// against the role.
func (s *Service) Sign(ctx context.Context, req *pb.SignRequest) (_ *pb.SignResponse, err error) {
	var role *pb.Role
	defer func() { s.metrics.observe(role, err) }()
	role, _, err = s.getRole(ctx, req.GetRole())
	if err != nil {
		return nil, err
	}
	csr, err := parseCSR(req.GetCsr())
	if err != nil {
		return nil, err
	}
	r, err := requestFromCSR(role, csr)
	if err != nil {
		return nil, err
	}
	r.ttl = req.GetTtl()
	if req.GetCommonName() != "" || len(req.GetDnsNames())+len(req.GetIpAddresses())+len(req.GetUris()) > 0 {
		r.cn, r.dns, r.ips, r.uris = req.GetCommonName(), req.GetDnsNames(), req.GetIpAddresses(), req.GetUris()
	}
	out, err := s.issue(ctx, r)
	if err != nil {
		return nil, err
	}
	return &pb.SignResponse{
		Certificate: out.der, Chain: out.chain, Serial: out.serial, Issuer: out.issuer,
		NotAfter: timestamppb.New(out.notAfter),
	}, nil
}

// parseCSR decodes a PEM or DER CSR and checks its signature.
func parseCSR(b []byte) (*x509.CertificateRequest, error) {
	if len(b) == 0 || len(b) > maxCSRSize {
		return nil, fmt.Errorf("%w: CSR of %d bytes", ErrInvalid, len(b))
	}
	if blk, _ := pem.Decode(b); blk != nil {
		if blk.Type != "CERTIFICATE REQUEST" && blk.Type != "NEW CERTIFICATE REQUEST" {
			return nil, fmt.Errorf("%w: PEM block %q is not a CSR", ErrInvalid, blk.Type)
		}
		b = blk.Bytes
	}
	csr, err := x509.ParseCertificateRequest(b)
	if err != nil {
		return nil, fmt.Errorf("%w: CSR: %v", ErrInvalid, err)
	}
	if err := csr.CheckSignature(); err != nil {
		return nil, fmt.Errorf("%w: CSR signature: %v", ErrInvalid, err)
	}
	return csr, nil
}

// requestFromCSR takes the key, the names and the allowed extensions from a CSR.
func requestFromCSR(role *pb.Role, csr *x509.CertificateRequest) (*request, error) {
	kt, err := keyTypeOf(csr.PublicKey)
	if err != nil {
		return nil, err
	}
	if !slices.Contains(role.AllowedKeyTypes, kt) && kt != role.KeyType {
		return nil, fmt.Errorf("%w: CSR key type %q", ErrNotAllowed, kt)
	}
	if len(csr.EmailAddresses) > 0 {
		return nil, fmt.Errorf("%w: email SANs", ErrNotAllowed)
	}
	r := &request{role: role, cn: csr.Subject.CommonName, dns: csr.DNSNames, pub: csr.PublicKey}
	for _, ip := range csr.IPAddresses {
		r.ips = append(r.ips, ip.String())
	}
	for _, u := range csr.URIs {
		r.uris = append(r.uris, u.String())
	}
	for _, e := range csr.Extensions {
		o := e.Id.String()
		if !controlledExtensions[o] && slices.Contains(role.AllowedCsrExtensions, o) {
			r.extra = append(r.extra, e)
		}
	}
	return r, nil
}

// issue checks the request against the role, signs and records the certificate.
func (s *Service) issue(ctx context.Context, r *request) (*issued, error) {
	iss, err := s.loadIssuer(ctx, r.role.Issuer)
	if err != nil {
		return nil, err
	}
	if err := s.checkCanSign(iss); err != nil {
		return nil, err
	}
	tmpl, err := s.leafTemplate(r, iss)
	if err != nil {
		return nil, err
	}
	lo := roleLintOptions(r.role)
	if len(s.cfg.LintExclude) > 0 {
		lo.exclude = append(slices.Clone(lo.exclude), s.cfg.LintExclude...)
	}
	reg, err := lo.registry()
	if err != nil {
		return nil, err
	}
	tmpl.Policies = rolePolicies(r.role, lo)
	for range maxSerialAttempts {
		serial, err := s.randomSerial()
		if err != nil {
			return nil, err
		}
		tmpl.SerialNumber = serial
		der, err := s.signDER(ctx, iss, tmpl, r.pub, reg)
		if err != nil {
			return nil, err
		}
		// The certificate is not parsed again: what the record and the
		// response need are the template's (x509.CreateCertificate encodes
		// them as they are; the validity is whole seconds, in UTC).
		hex := serialHex(serial)
		rec := &pb.CertificateRecord{
			Serial: hex, Issuer: iss.rec.Name, Role: r.role.Name, NotAfter: timestamppb.New(tmpl.NotAfter),
			CommonName: tmpl.Subject.CommonName, IssueTime: timestamppb.New(s.cfg.Now()),
		}
		if !r.role.NoStore {
			rec.Certificate = der
		}
		_, err = putProto(ctx, s.cfg.Store, prefixCerts+hex, rec, keystore.MustNotExist)
		if errors.Is(err, keystore.ErrConflict) {
			s.cfg.Logger.Warn("pki: serial collision, signing again", "serial", hex)
			continue
		}
		if err != nil {
			return nil, err
		}
		return &issued{der: der, notAfter: tmpl.NotAfter, chain: iss.chainOut, serial: hex, issuer: iss.rec.Name}, nil
	}
	return nil, fmt.Errorf("pki: no free serial after %d attempts", maxSerialAttempts)
}

func (s *Service) checkCanSign(iss *issuerRT) error {
	switch {
	case iss.cert == nil:
		return fmt.Errorf("%w: %q is pending", ErrIssuerNotActive, iss.rec.Name)
	case iss.rec.Retired:
		return fmt.Errorf("%w: %q is retired", ErrIssuerNotActive, iss.rec.Name)
	case !s.cfg.Now().Before(iss.cert.NotAfter):
		return fmt.Errorf("%w: %q has expired", ErrIssuerNotActive, iss.rec.Name)
	}
	return nil
}

// leafTemplate builds the certificate from the role and the checked request.
func (s *Service) leafTemplate(r *request, iss *issuerRT) (*x509.Certificate, error) {
	role := r.role
	kt, err := keyTypeOf(r.pub)
	if err != nil {
		return nil, err
	}
	cnIsDNS, err := checkCommonName(role, r.cn)
	if err != nil {
		return nil, err
	}
	tmpl := &x509.Certificate{
		Subject:               pkix.Name{CommonName: r.cn, Organization: slices.Clone(role.Organization)},
		BasicConstraintsValid: true,
		OCSPServer:            []string{s.cfg.BaseURL + "/pki/ocsp"},
		IssuingCertificateURL: []string{s.issuerURL(iss.rec.Name, "der")},
		CRLDistributionPoints: []string{s.issuerURL(iss.rec.Name, "crl")},
		ExtraExtensions:       r.extra,
	}
	seen := map[string]bool{}
	addDNS := func(n string) error {
		n = normalizeDNS(n)
		if seen[n] {
			return nil
		}
		if err := checkDNSName(role, n); err != nil {
			return err
		}
		seen[n] = true
		tmpl.DNSNames = append(tmpl.DNSNames, n)
		return nil
	}
	if cnIsDNS {
		if err := addDNS(r.cn); err != nil {
			return nil, err
		}
		tmpl.Subject.CommonName = normalizeDNS(r.cn)
	}
	for _, n := range r.dns {
		if err := addDNS(n); err != nil {
			return nil, err
		}
	}
	ips := r.ips
	if ip := net.ParseIP(r.cn); ip != nil {
		ips = append([]string{r.cn}, ips...)
	}
	for _, a := range ips {
		ip, err := checkIP(role, a)
		if err != nil {
			return nil, err
		}
		if !slices.ContainsFunc(tmpl.IPAddresses, ip.Equal) {
			tmpl.IPAddresses = append(tmpl.IPAddresses, ip)
		}
	}
	for _, u := range r.uris {
		pu, err := checkURI(role, u)
		if err != nil {
			return nil, err
		}
		if !slices.ContainsFunc(tmpl.URIs, func(x *url.URL) bool { return x.String() == pu.String() }) {
			tmpl.URIs = append(tmpl.URIs, pu)
		}
	}
	if r.cn == "" && len(tmpl.DNSNames)+len(tmpl.IPAddresses)+len(tmpl.URIs) == 0 {
		return nil, fmt.Errorf("%w: no common name and no SAN", ErrInvalid)
	}
	if err := checkNameConstraints(tmpl, iss.constraintCAs()); err != nil {
		return nil, err
	}
	if err := s.setValidity(tmpl, role, r.ttl, iss); err != nil {
		return nil, err
	}
	tmpl.KeyUsage = leafKeyUsage(role, kt)
	if role.ServerFlag {
		tmpl.ExtKeyUsage = append(tmpl.ExtKeyUsage, x509.ExtKeyUsageServerAuth)
	}
	if role.ClientFlag {
		tmpl.ExtKeyUsage = append(tmpl.ExtKeyUsage, x509.ExtKeyUsageClientAuth)
	}
	for _, e := range role.ExtKeyUsage {
		if u := extKeyUsages[e]; !slices.Contains(tmpl.ExtKeyUsage, u) {
			tmpl.ExtKeyUsage = append(tmpl.ExtKeyUsage, u)
		}
	}
	return tmpl, nil
}

func (s *Service) setValidity(tmpl *x509.Certificate, role *pb.Role, ttlReq *durationpb.Duration, iss *issuerRT) error {
	ttl := role.Ttl.AsDuration()
	if ttlReq != nil {
		ttl = ttlReq.AsDuration()
		if ttl <= 0 {
			return fmt.Errorf("%w: ttl %s", ErrInvalid, ttl)
		}
		if ttl > role.MaxTtl.AsDuration() {
			return fmt.Errorf("%w: ttl %s is over the role's max_ttl %s", ErrNotAllowed, ttl, role.MaxTtl.AsDuration())
		}
	}
	now := s.cfg.Now().UTC().Truncate(time.Second)
	tmpl.NotBefore = now.Add(-role.NotBeforeBackdate.AsDuration())
	if tmpl.NotBefore.Before(iss.cert.NotBefore) {
		tmpl.NotBefore = iss.cert.NotBefore
	}
	tmpl.NotAfter = now.Add(ttl)
	if tmpl.NotAfter.After(iss.cert.NotAfter) {
		tmpl.NotAfter = iss.cert.NotAfter
	}
	if !tmpl.NotAfter.After(now) {
		return fmt.Errorf("%w: %q expires now", ErrIssuerNotActive, iss.rec.Name)
	}
	return nil
}

// leafKeyUsage is the role's key usage fitted to the key type: key
// encipherment only for RSA, key agreement never for RSA or Ed25519. The
// default is digital signature, plus key encipherment for RSA keys of
// server certificates (TLS RSA key exchange); clientAuth alone with key
// encipherment is inconsistent (zlint e_key_usage_and_extended_key_usage_inconsistent).
func leafKeyUsage(role *pb.Role, kt string) x509.KeyUsage {
	names := role.KeyUsage
	if len(names) == 0 {
		names = []string{"digital_signature"}
		if role.ServerFlag || slices.Contains(role.ExtKeyUsage, "server_auth") {
			names = append(names, "key_encipherment")
		}
	}
	var ku x509.KeyUsage
	for _, n := range names {
		u := keyUsages[n]
		if (u == x509.KeyUsageKeyEncipherment || u == x509.KeyUsageDataEncipherment) && !isRSA(kt) {
			continue
		}
		if u == x509.KeyUsageKeyAgreement && (isRSA(kt) || kt == KeyEd25519) {
			continue
		}
		ku |= u
	}
	if ku == 0 {
		ku = x509.KeyUsageDigitalSignature
	}
	return ku
}

func (s *Service) issuerURL(name, what string) string {
	return s.cfg.BaseURL + "/pki/issuer/" + url.PathEscape(name) + "/" + what
}

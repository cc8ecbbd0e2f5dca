package pki

import (
	"context"
	"fmt"
	"net"
	"net/url"
	"time"

	pb "github.com/hsmgate/hsmgate/proto/hsmgate/v1"
)

// SignIntermediateRequest asks an issuer to certify a CSR's key as a
// subordinate CA (Vault's root/sign-intermediate, what cert-manager's Vault
// issuer calls for isCA certificates). The key stays with the caller.
type SignIntermediateRequest struct {
	// Issuer that signs ("" or "default": the default issuer).
	Issuer string
	// CSR, PEM or DER; its signature is checked.
	CSR []byte
	// CommonName of the new CA ("" : the CSR's; one of them is required).
	CommonName string
	// SANs put into the CA certificate (none is usual).
	DNSNames    []string
	IPAddresses []net.IP
	URIs        []*url.URL
	// TTL (0: DefaultIntermediateTTL), capped at the issuer's own validity.
	TTL time.Duration
	// MaxPathLen: 0 signs only leaves; negative or unset with
	// UnlimitedPathLen: no limit; positive: that many CAs below it.
	MaxPathLen       int32
	UnlimitedPathLen bool
}

// SignedIntermediate is the new CA certificate.
type SignedIntermediate struct {
	Certificate []byte   // DER
	Chain       [][]byte // the issuer first, ending at the root
	Serial      string   // lowercase hex
	Issuer      string   // the signing issuer's name
	NotAfter    time.Time
}

// SignIntermediate certifies the CSR's key as a CA under req.Issuer: linted
// as every CA certificate, recorded under the issuer (so that it can be
// revoked), never past the issuer's own validity. Errors: ErrInvalid for a
// bad CSR or request, ErrIssuerNotActive, the store's and the HSM's.
func (s *Service) SignIntermediate(ctx context.Context, req SignIntermediateRequest) (*SignedIntermediate, error) {
	csr, err := parseCSR(req.CSR)
	if err != nil {
		return nil, err
	}
	if _, err := keyTypeOf(csr.PublicKey); err != nil {
		return nil, err
	}
	cn := req.CommonName
	if cn == "" {
		cn = csr.Subject.CommonName
	}
	if cn == "" {
		return nil, fmt.Errorf("%w: a CA certificate needs a common name", ErrInvalid)
	}
	ttl := req.TTL
	if ttl == 0 {
		ttl = DefaultIntermediateTTL
	}
	if ttl < 0 {
		return nil, fmt.Errorf("%w: ttl %s", ErrInvalid, ttl)
	}
	parent, err := s.loadIssuer(ctx, req.Issuer)
	if err != nil {
		return nil, err
	}
	if err := s.checkCanSign(parent); err != nil {
		return nil, err
	}
	subj := &pb.Subject{
		CommonName: cn, Organization: csr.Subject.Organization,
		OrganizationalUnit: csr.Subject.OrganizationalUnit, Country: csr.Subject.Country,
	}
	maxPath := req.MaxPathLen
	if req.UnlimitedPathLen {
		maxPath = -1
	}
	tmpl := caTemplate(subj, s.cfg.Now().UTC().Truncate(time.Second), ttl, maxPath, true)
	tmpl.DNSNames, tmpl.IPAddresses, tmpl.URIs = req.DNSNames, req.IPAddresses, req.URIs
	cert, err := s.signCA(ctx, parent, tmpl, csr.PublicKey, "")
	if err != nil {
		return nil, err
	}
	return &SignedIntermediate{
		Certificate: cert.Raw,
		Chain:       append([][]byte{parent.cert.Raw}, parent.chainDER...),
		Serial:      serialHex(cert.SerialNumber),
		Issuer:      parent.rec.Name,
		NotAfter:    cert.NotAfter,
	}, nil
}

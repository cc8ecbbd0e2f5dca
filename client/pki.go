package client

import (
	"context"
	"crypto"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"net"
	"net/url"
	"strconv"
	"strings"
	"time"

	"google.golang.org/protobuf/types/known/durationpb"

	pb "github.com/hsmgate/hsmgate/proto/hsmgate/v1"
)

// PKI is the client of the X.509 CA.
type PKI struct{ c pb.PKIServiceClient }

// Stub is the generated client, for issuer and role management.
func (p *PKI) Stub() pb.PKIServiceClient { return p.c }

// CertificateRequest describes a certificate to issue under a role.
type CertificateRequest struct {
	Role        string
	CommonName  string
	DNSNames    []string
	IPAddresses []net.IP
	URIs        []*url.URL
	TTL         time.Duration // 0: the role's default
	// KeyType of the key Issue generates locally (see GenerateKey; default
	// ecdsa-p256). SignCSR ignores it.
	KeyType string
}

// SplitSANs sorts subject alternative names given as strings into DNS
// names, IP addresses and URIs (a string with "://" is a URI, one that
// parses as an IP is an address, anything else a DNS name).
func SplitSANs(sans []string) (dns []string, ips []net.IP, uris []*url.URL, err error) {
	for _, s := range sans {
		switch {
		case strings.Contains(s, "://"):
			u, err := url.Parse(s)
			if err != nil {
				return nil, nil, nil, fmt.Errorf("client: SAN URI %q: %w", s, ErrInvalidArgument)
			}
			uris = append(uris, u)
		case net.ParseIP(s) != nil:
			ips = append(ips, net.ParseIP(s))
		default:
			dns = append(dns, s)
		}
	}
	return dns, ips, uris, nil
}

// Certificate is an issued certificate with its issuer chain.
type Certificate struct {
	Leaf *x509.Certificate
	// Chain is the issuer chain above Leaf, up to and including the root.
	Chain []*x509.Certificate
	// PrivateKey is the key Issue generated (nil from SignCSR).
	PrivateKey crypto.Signer
	Serial     string // hex
	Issuer     string // issuer name in hsmgate
}

// CertPEM is the leaf certificate in PEM.
func (c *Certificate) CertPEM() []byte { return certsPEM(c.Leaf) }

// ChainPEM is the issuer chain in PEM (intermediate first, root last).
func (c *Certificate) ChainPEM() []byte { return certsPEM(c.Chain...) }

// FullChainPEM is the leaf then its chain, what a TLS server presents.
func (c *Certificate) FullChainPEM() []byte { return append(c.CertPEM(), c.ChainPEM()...) }

// KeyPEM is the private key as PKCS#8 PEM (nil without a key). Write it
// with mode 0600.
func (c *Certificate) KeyPEM() ([]byte, error) {
	if c.PrivateKey == nil {
		return nil, nil
	}
	der, err := x509.MarshalPKCS8PrivateKey(c.PrivateKey)
	if err != nil {
		return nil, fmt.Errorf("client: %w", err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), nil
}

// TLSCertificate is the leaf, its intermediates (not the root) and the
// private key, ready for tls.Config.Certificates.
func (c *Certificate) TLSCertificate() (tls.Certificate, error) {
	if c.PrivateKey == nil {
		return tls.Certificate{}, fmt.Errorf("client: certificate has no private key")
	}
	tc := tls.Certificate{Certificate: [][]byte{c.Leaf.Raw}, PrivateKey: c.PrivateKey, Leaf: c.Leaf}
	for i, ca := range c.Chain {
		if i == len(c.Chain)-1 && isSelfSigned(ca) {
			break
		}
		tc.Certificate = append(tc.Certificate, ca.Raw)
	}
	return tc, nil
}

// Roots is a pool of the root of the chain (the last certificate).
func (c *Certificate) Roots() *x509.CertPool {
	pool := x509.NewCertPool()
	if n := len(c.Chain); n > 0 {
		pool.AddCert(c.Chain[n-1])
	}
	return pool
}

func isSelfSigned(c *x509.Certificate) bool {
	return c.CheckSignatureFrom(c) == nil
}

func certsPEM(cs ...*x509.Certificate) []byte {
	var out []byte
	for _, c := range cs {
		out = append(out, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c.Raw})...)
	}
	return out
}

func parseCerts(ders ...[]byte) ([]*x509.Certificate, error) {
	out := make([]*x509.Certificate, len(ders))
	for i, d := range ders {
		c, err := x509.ParseCertificate(d)
		if err != nil {
			return nil, fmt.Errorf("client: server sent a certificate that does not parse: %w", err)
		}
		out[i] = c
	}
	return out, nil
}

// Issue generates a key locally (req.KeyType), builds a CSR for req and
// has the CA sign it under req.Role: the private key never leaves the
// process. The result holds the key.
func (p *PKI) Issue(ctx context.Context, req CertificateRequest) (*Certificate, error) {
	key, err := GenerateKey(req.KeyType)
	if err != nil {
		return nil, err
	}
	return p.IssueForKey(ctx, key, req)
}

// IssueForKey is Issue for a key the caller has, for instance one read
// with ParsePrivateKey: it builds and signs the CSR here, so only the
// public key is sent. req.KeyType is ignored.
func (p *PKI) IssueForKey(ctx context.Context, key crypto.Signer, req CertificateRequest) (*Certificate, error) {
	csr, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{
		Subject:  pkix.Name{CommonName: req.CommonName},
		DNSNames: req.DNSNames, IPAddresses: req.IPAddresses, URIs: req.URIs,
	}, key)
	if err != nil {
		return nil, fmt.Errorf("client: pki issue: CSR: %w", err)
	}
	c, err := p.SignCSR(ctx, csr, req)
	if err != nil {
		return nil, err
	}
	// A server that answered with a certificate for another key (a bug, or
	// an attacker in its place) must not pair that certificate with our key.
	if pub, ok := c.Leaf.PublicKey.(interface{ Equal(crypto.PublicKey) bool }); !ok || !pub.Equal(key.Public()) {
		return nil, fmt.Errorf("client: pki issue: the certificate returned is not for the key sent: %w", ErrInternal)
	}
	c.PrivateKey = key
	return c, nil
}

// SignCSR has the CA sign a CSR (PEM or DER) under req.Role. The names of
// req, when set, are the names asked for (the role decides what is
// allowed); otherwise the CSR's are used.
func (p *PKI) SignCSR(ctx context.Context, csr []byte, req CertificateRequest) (*Certificate, error) {
	if blk, _ := pem.Decode(csr); blk != nil {
		if blk.Type != "CERTIFICATE REQUEST" && blk.Type != "NEW CERTIFICATE REQUEST" {
			return nil, fmt.Errorf("client: pki sign: PEM block %q, want CERTIFICATE REQUEST: %w", blk.Type, ErrInvalidArgument)
		}
		csr = blk.Bytes
	}
	r := &pb.SignRequest{Role: req.Role, Csr: csr, CommonName: req.CommonName, DnsNames: req.DNSNames}
	for _, ip := range req.IPAddresses {
		r.IpAddresses = append(r.IpAddresses, ip.String())
	}
	for _, u := range req.URIs {
		r.Uris = append(r.Uris, u.String())
	}
	if req.TTL > 0 {
		r.Ttl = durationpb.New(req.TTL)
	}
	resp, err := p.c.Sign(ctx, r)
	if err != nil {
		return nil, err
	}
	certs, err := parseCerts(append([][]byte{resp.GetCertificate()}, resp.GetChain()...)...)
	if err != nil {
		return nil, err
	}
	return &Certificate{Leaf: certs[0], Chain: certs[1:], Serial: resp.GetSerial(), Issuer: resp.GetIssuer()}, nil
}

// Chain returns the certificate of an issuer ("" for the default issuer)
// followed by the chain above it, up to and including the root.
func (p *PKI) Chain(ctx context.Context, issuer string) ([]*x509.Certificate, error) {
	if issuer == "" {
		l, err := p.c.ListIssuers(ctx, &pb.ListIssuersRequest{})
		if err != nil {
			return nil, err
		}
		if issuer = l.GetDefaultIssuer(); issuer == "" {
			return nil, fmt.Errorf("client: pki: no default issuer: %w", ErrNotFound)
		}
	}
	r, err := p.c.GetIssuer(ctx, &pb.GetIssuerRequest{Name: issuer})
	if err != nil {
		return nil, err
	}
	return parseCerts(append([][]byte{r.GetIssuer().GetCertificate()}, r.GetIssuer().GetChain()...)...)
}

// RootPool returns a pool holding the root above issuer ("" for the
// default issuer), fetched through the authenticated gRPC connection: what
// a TLS client of the issued certificates trusts.
func (p *PKI) RootPool(ctx context.Context, issuer string) (*x509.CertPool, error) {
	chain, err := p.Chain(ctx, issuer)
	if err != nil {
		return nil, err
	}
	pool := x509.NewCertPool()
	pool.AddCert(chain[len(chain)-1])
	return pool, nil
}

// RevocationReason is an RFC 5280 CRLReason.
type RevocationReason int32

// The RFC 5280 reasons (7 is unused).
const (
	ReasonUnspecified          RevocationReason = 0
	ReasonKeyCompromise        RevocationReason = 1
	ReasonCACompromise         RevocationReason = 2
	ReasonAffiliationChanged   RevocationReason = 3
	ReasonSuperseded           RevocationReason = 4
	ReasonCessationOfOperation RevocationReason = 5
	ReasonCertificateHold      RevocationReason = 6
	ReasonRemoveFromCRL        RevocationReason = 8
	ReasonPrivilegeWithdrawn   RevocationReason = 9
	ReasonAACompromise         RevocationReason = 10
)

var reasonNames = map[RevocationReason]string{
	ReasonUnspecified: "unspecified", ReasonKeyCompromise: "keyCompromise", ReasonCACompromise: "cACompromise",
	ReasonAffiliationChanged: "affiliationChanged", ReasonSuperseded: "superseded",
	ReasonCessationOfOperation: "cessationOfOperation", ReasonCertificateHold: "certificateHold",
	ReasonRemoveFromCRL: "removeFromCRL", ReasonPrivilegeWithdrawn: "privilegeWithdrawn", ReasonAACompromise: "aACompromise",
}

// String is the RFC 5280 name (keyCompromise), or the number.
func (r RevocationReason) String() string {
	if n, ok := reasonNames[r]; ok {
		return n
	}
	return strconv.Itoa(int(r))
}

// ParseRevocationReason reads a reason by RFC 5280 name, in any case and
// with or without dashes or underscores (keyCompromise, key-compromise,
// KEY_COMPROMISE), or by number.
func ParseRevocationReason(s string) (RevocationReason, error) {
	if n, err := strconv.Atoi(s); err == nil {
		if _, ok := reasonNames[RevocationReason(n)]; ok {
			return RevocationReason(n), nil
		}
	}
	norm := strings.ToLower(strings.NewReplacer("-", "", "_", "").Replace(s))
	for r, n := range reasonNames {
		if strings.ToLower(n) == norm {
			return r, nil
		}
	}
	return 0, fmt.Errorf("client: revocation reason %q: want a number or a name such as keyCompromise, superseded: %w", s, ErrInvalidArgument)
}

// Revoke revokes a certificate by serial (hex, colons allowed) and returns
// the revocation time.
func (p *PKI) Revoke(ctx context.Context, serial string, reason RevocationReason) (time.Time, error) {
	r, err := p.c.Revoke(ctx, &pb.RevokeRequest{Serial: serial, Reason: int32(reason)})
	if err != nil {
		return time.Time{}, err
	}
	return r.GetRevocationTime().AsTime(), nil
}

package auth

import (
	"bytes"
	"context"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"time"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/hsmgate/hsmgate/keystore"
	hsmgatev1 "github.com/hsmgate/hsmgate/proto/hsmgate/v1"
)

// Client-certificate login (Vault's cert method, POST /v1/auth/cert/login over
// mTLS): the client's certificate chain is verified again here against the
// server's client CAs (whatever the TLS layer did: a caller that hands in
// unverified peer certificates gets nothing), then matched against a cert
// role. Each allowed_* list the role sets must match (a glob list: one of the
// certificate's names must match one glob); a role's ca_pem, when set, must
// hold a certificate of the verified chain, so a role can be tied to one of
// several client CAs. Without a role name, the first role (by name) that
// matches is used.
//
// Store layout: auth/cert/roles/<name> (hsmgate.v1.CertRole).
const (
	CertRolePrefix  = "auth/cert/roles/"
	maxCertChainLen = 8
	maxCertRoleCAs  = 16
)

// CertAuthConfig configures CertAuth.
type CertAuthConfig struct {
	// ClientCAs are the roots client chains must verify to (the server's
	// tls.client_ca). Nil turns certificate login off.
	ClientCAs *x509.CertPool
	// Now is the clock (default time.Now).
	Now func() time.Time
}

// CertAuth manages certificate roles and logs certificates in.
type CertAuth struct {
	store  keystore.Store
	tokens *Tokens
	roles  records[*hsmgatev1.CertRole]
	cfg    CertAuthConfig
}

// NewCertAuth returns the certificate method over store, issuing tokens with tokens.
func NewCertAuth(cfg CertAuthConfig, store keystore.Store, tokens *Tokens) (*CertAuth, error) {
	if store == nil || tokens == nil {
		return nil, fmt.Errorf("auth: cert auth needs a store and tokens")
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	return &CertAuth{
		store: store, tokens: tokens, cfg: cfg,
		roles: records[*hsmgatev1.CertRole]{store: store, prefix: CertRolePrefix, what: "cert role", newT: func() *hsmgatev1.CertRole { return &hsmgatev1.CertRole{} }},
	}, nil
}

// parseCertsPEM decodes every CERTIFICATE block of a PEM bundle.
func parseCertsPEM(b []byte) ([]*x509.Certificate, error) {
	var out []*x509.Certificate
	for len(b) > 0 {
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
			return nil, err
		}
		out = append(out, c)
	}
	return out, nil
}

func validateCertRole(r *hsmgatev1.CertRole) (*hsmgatev1.CertRole, error) {
	if r == nil {
		return nil, fmt.Errorf("%w: role is required", ErrInvalid)
	}
	if err := checkRoleName(r.GetName()); err != nil {
		return nil, err
	}
	if len(r.GetAllowedCommonNames())+len(r.GetAllowedDnsSans())+len(r.GetAllowedUriSans()) == 0 {
		return nil, fmt.Errorf("%w: set at least one of allowed common names, DNS SANs, URI SANs (\"*\" for any)", ErrInvalid)
	}
	for what, gs := range map[string][]string{"allowed common names": r.GetAllowedCommonNames(), "allowed DNS SANs": r.GetAllowedDnsSans(), "allowed URI SANs": r.GetAllowedUriSans()} {
		if err := checkGlobs(what, gs); err != nil {
			return nil, err
		}
	}
	if p := r.GetCaPem(); p != "" {
		cas, err := parseCertsPEM([]byte(p))
		if err != nil || len(cas) == 0 || len(cas) > maxCertRoleCAs {
			return nil, fmt.Errorf("%w: ca_pem must hold 1..%d PEM certificates", ErrInvalid, maxCertRoleCAs)
		}
	}
	if err := checkPolicies(r.GetPolicies()); err != nil {
		return nil, err
	}
	if err := checkTTLs(r.GetTokenTtl(), r.GetTokenMaxTtl()); err != nil {
		return nil, err
	}
	return proto.Clone(r).(*hsmgatev1.CertRole), nil
}

// WriteRole creates or replaces a certificate role.
func (c *CertAuth) WriteRole(ctx context.Context, r *hsmgatev1.CertRole) (*hsmgatev1.CertRole, error) {
	r, err := validateCertRole(r)
	if err != nil {
		return nil, err
	}
	r.UpdateTime = timestamppb.New(c.cfg.Now())
	if err := c.roles.put(ctx, r.GetName(), r, keystore.AnyRevision); err != nil {
		return nil, err
	}
	return r, nil
}

// ReadRole returns a role; ErrNotFound if absent.
func (c *CertAuth) ReadRole(ctx context.Context, name string) (*hsmgatev1.CertRole, error) {
	if err := checkRoleName(name); err != nil {
		return nil, err
	}
	r, _, err := c.roles.get(ctx, name)
	return r, err
}

// ListRoles returns the role names, sorted.
func (c *CertAuth) ListRoles(ctx context.Context) ([]string, error) { return c.roles.list(ctx) }

// DeleteRole removes a role; ErrNotFound if absent.
func (c *CertAuth) DeleteRole(ctx context.Context, name string) error {
	if err := checkRoleName(name); err != nil {
		return err
	}
	return c.roles.delete(ctx, name, keystore.AnyRevision)
}

// verify verifies chain (leaf first, then intermediates) against the client
// CAs for client authentication and returns the verified chains.
func (c *CertAuth) verify(chain []*x509.Certificate) ([][]*x509.Certificate, error) {
	if c.cfg.ClientCAs == nil {
		return nil, fmt.Errorf("%w: certificate login is not configured (no client CAs)", ErrUnauthenticated)
	}
	if len(chain) == 0 || chain[0] == nil {
		return nil, fmt.Errorf("%w: no client certificate", ErrUnauthenticated)
	}
	if len(chain) > maxCertChainLen {
		return nil, fmt.Errorf("%w: client chain longer than %d", ErrUnauthenticated, maxCertChainLen)
	}
	inter := x509.NewCertPool()
	for _, ic := range chain[1:] {
		if ic != nil {
			inter.AddCert(ic)
		}
	}
	chains, err := chain[0].Verify(x509.VerifyOptions{
		Roots:         c.cfg.ClientCAs,
		Intermediates: inter,
		CurrentTime:   c.cfg.Now(),
		KeyUsages:     []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	})
	if err != nil {
		return nil, fmt.Errorf("%w: client certificate does not verify against the client CAs", ErrUnauthenticated)
	}
	return chains, nil
}

// certMatches reports whether role r accepts the leaf of the verified chains.
func certMatches(r *hsmgatev1.CertRole, chains [][]*x509.Certificate) bool {
	leaf := chains[0][0]
	if gs := r.GetAllowedCommonNames(); len(gs) > 0 && !matchAny(gs, leaf.Subject.CommonName) {
		return false
	}
	if gs := r.GetAllowedDnsSans(); len(gs) > 0 && !anyMatches(gs, leaf.DNSNames) {
		return false
	}
	if gs := r.GetAllowedUriSans(); len(gs) > 0 {
		uris := make([]string, len(leaf.URIs))
		for i, u := range leaf.URIs {
			uris[i] = u.String()
		}
		if !anyMatches(gs, uris) {
			return false
		}
	}
	if p := r.GetCaPem(); p != "" {
		cas, err := parseCertsPEM([]byte(p))
		if err != nil {
			return false
		}
		return chainHoldsAny(chains, cas)
	}
	return true
}

func anyMatches(globs, names []string) bool {
	for _, n := range names {
		if n != "" && matchAny(globs, n) {
			return true
		}
	}
	return false
}

// chainHoldsAny reports whether a CA certificate (not the leaf) of one of the
// verified chains is one of cas.
func chainHoldsAny(chains [][]*x509.Certificate, cas []*x509.Certificate) bool {
	for _, ch := range chains {
		for _, cert := range ch[1:] {
			for _, ca := range cas {
				if bytes.Equal(cert.Raw, ca.Raw) {
					return true
				}
			}
		}
	}
	return false
}

// Login verifies the client's certificate chain (leaf first) and logs it in
// under the role named role (or, when role is empty, the first role by name
// that accepts it). The token's identity is the leaf's first URI SAN, else
// its subject CN. A chain that does not verify is ErrUnauthenticated; a
// certificate no (or not the named) role accepts is ErrPermissionDenied.
func (c *CertAuth) Login(ctx context.Context, chain []*x509.Certificate, role string) (*Login, error) {
	chains, err := c.verify(chain)
	if err != nil {
		return nil, err
	}
	leaf := chains[0][0]
	var r *hsmgatev1.CertRole
	if role != "" {
		if !ValidName(role) {
			return nil, fmt.Errorf("%w: invalid role name", ErrPermissionDenied)
		}
		r, _, err = c.roles.get(ctx, role)
		if errors.Is(err, ErrNotFound) {
			return nil, fmt.Errorf("%w: invalid role name", ErrPermissionDenied)
		}
		if err != nil {
			return nil, err
		}
		if !certMatches(r, chains) {
			return nil, fmt.Errorf("%w: certificate is not accepted by role %q", ErrPermissionDenied, role)
		}
	} else {
		names, err := c.roles.list(ctx)
		if err != nil {
			return nil, err
		}
		for _, n := range names {
			cand, _, err := c.roles.get(ctx, n)
			if errors.Is(err, ErrNotFound) {
				continue
			}
			if err != nil {
				return nil, err
			}
			if certMatches(cand, chains) {
				r = cand
				break
			}
		}
		if r == nil {
			return nil, fmt.Errorf("%w: no cert role accepts the certificate", ErrPermissionDenied)
		}
	}
	entity := leaf.Subject.CommonName
	if len(leaf.URIs) > 0 {
		entity = leaf.URIs[0].String()
	}
	if entity == "" {
		return nil, fmt.Errorf("%w: client certificate has neither a URI SAN nor a CN", ErrPermissionDenied)
	}
	meta := map[string]string{
		"cert_subject": truncate(leaf.Subject.String(), maxMetaValue),
		"cert_serial":  leaf.SerialNumber.Text(16),
		"cert_issuer":  truncate(leaf.Issuer.String(), maxMetaValue),
		"common_name":  truncate(leaf.Subject.CommonName, maxMetaValue),
	}
	return issueLogin(ctx, c.tokens, grant{
		method: "cert", role: r.GetName(), entity: truncate(entity, 250),
		policies: r.GetPolicies(), ttl: r.GetTokenTtl().AsDuration(), maxTTL: r.GetTokenMaxTtl().AsDuration(),
		vouched: meta,
	})
}

package pki

import (
	"bytes"
	"context"
	"crypto/x509"
	"fmt"
)

// CheckNames says whether role allows every DNS name and IP address, as
// issuance would (syntax, wildcards, allowed domains, IP SANs and ranges);
// ErrNotAllowed (wrapped) naming the first refused one. The ACME server
// calls it at newOrder, so that a name outside the role is refused before
// any authorization is made (rejectedIdentifier); Sign checks again.
func (s *Service) CheckNames(ctx context.Context, role string, dns, ips []string) error {
	r, _, err := s.getRole(ctx, role)
	if err != nil {
		return err
	}
	for _, n := range dns {
		if err := checkDNSName(r, normalizeDNS(n)); err != nil {
			return fmt.Errorf("pki: role %q: %w", role, err)
		}
	}
	for _, a := range ips {
		if _, err := checkIP(r, a); err != nil {
			return fmt.Errorf("pki: role %q: %w", role, err)
		}
	}
	return nil
}

// AlternateChains returns, for each certificate that cross-signs the named
// issuer (its key and subject signed by another of our issuers), the chain
// a relying party that trusts the other CA needs: the cross-signed
// certificate, then its signer's certificate and chain. The ACME server
// offers them as alternate chains (RFC 8555 7.4.2, Link rel="alternate").
// Cross certificates whose signer is not (or no longer) one of our issuers
// are skipped.
func (s *Service) AlternateChains(ctx context.Context, issuer string) ([][][]byte, error) {
	rec, _, err := s.getIssuerRecord(ctx, issuer)
	if err != nil {
		return nil, err
	}
	if len(rec.CrossSigned) == 0 {
		return nil, nil
	}
	all, err := s.listIssuerRecords(ctx)
	if err != nil {
		return nil, err
	}
	var out [][][]byte
	for _, der := range rec.CrossSigned {
		cross, err := x509.ParseCertificate(der)
		if err != nil {
			continue
		}
		for _, r := range all {
			signer, err := x509.ParseCertificate(r.Certificate)
			if err != nil || !bytes.Equal(signer.SubjectKeyId, cross.AuthorityKeyId) || cross.CheckSignatureFrom(signer) != nil {
				continue
			}
			chain := append([][]byte{der, r.Certificate}, r.Chain...)
			out = append(out, chain)
			break
		}
	}
	return out, nil
}

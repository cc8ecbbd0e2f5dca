package pki

import (
	"context"
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

package pki

import (
	"crypto/x509"
	"fmt"
	"net"
	"net/url"
	"strings"
)

// checkNameConstraints refuses names that the issuer's certificate, or any
// certificate above it, excludes by name constraints (RFC 5280 4.2.1.10), so
// that a CA with constraints never signs a certificate that relying parties
// would reject.
func checkNameConstraints(tmpl *x509.Certificate, cas []*x509.Certificate) error {
	for _, ca := range cas {
		for _, n := range tmpl.DNSNames {
			if err := dnsConstrained(ca, n); err != nil {
				return err
			}
		}
		for _, ip := range tmpl.IPAddresses {
			if err := ipConstrained(ca, ip); err != nil {
				return err
			}
		}
		for _, u := range tmpl.URIs {
			if err := uriConstrained(ca, u); err != nil {
				return err
			}
		}
	}
	return nil
}

// dnsConstraintMatch: "example.com" matches itself and its subdomains,
// ".example.com" only its subdomains. A wildcard name is treated as a subdomain.
func dnsConstraintMatch(constraint, name string) bool {
	c := strings.ToLower(constraint)
	if c == "" {
		return true
	}
	if strings.HasPrefix(c, ".") {
		return strings.HasSuffix(name, c)
	}
	return name == c || strings.HasSuffix(name, "."+c)
}

func dnsConstrained(ca *x509.Certificate, n string) error {
	for _, c := range ca.ExcludedDNSDomains {
		if dnsConstraintMatch(c, n) {
			return fmt.Errorf("%w: DNS name %q excluded by %q's name constraints", ErrNotAllowed, n, ca.Subject.CommonName)
		}
	}
	if len(ca.PermittedDNSDomains) == 0 {
		return nil
	}
	for _, c := range ca.PermittedDNSDomains {
		if dnsConstraintMatch(c, n) {
			return nil
		}
	}
	return fmt.Errorf("%w: DNS name %q outside %q's name constraints", ErrNotAllowed, n, ca.Subject.CommonName)
}

func ipConstrained(ca *x509.Certificate, ip net.IP) error {
	for _, r := range ca.ExcludedIPRanges {
		if r.Contains(ip) {
			return fmt.Errorf("%w: IP %s excluded by %q's name constraints", ErrNotAllowed, ip, ca.Subject.CommonName)
		}
	}
	if len(ca.PermittedIPRanges) == 0 {
		return nil
	}
	for _, r := range ca.PermittedIPRanges {
		if r.Contains(ip) {
			return nil
		}
	}
	return fmt.Errorf("%w: IP %s outside %q's name constraints", ErrNotAllowed, ip, ca.Subject.CommonName)
}

func uriConstrained(ca *x509.Certificate, u *url.URL) error {
	host := strings.ToLower(u.Hostname())
	for _, c := range ca.ExcludedURIDomains {
		if dnsConstraintMatch(c, host) {
			return fmt.Errorf("%w: URI %s excluded by %q's name constraints", ErrNotAllowed, u, ca.Subject.CommonName)
		}
	}
	if len(ca.PermittedURIDomains) == 0 {
		return nil
	}
	for _, c := range ca.PermittedURIDomains {
		if dnsConstraintMatch(c, host) {
			return nil
		}
	}
	return fmt.Errorf("%w: URI %s outside %q's name constraints", ErrNotAllowed, u, ca.Subject.CommonName)
}

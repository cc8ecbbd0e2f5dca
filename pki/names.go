package pki

import (
	"fmt"
	"net"
	"net/netip"
	"net/url"
	"path"
	"strings"

	"golang.org/x/net/idna"

	pb "github.com/hsmgate/hsmgate/proto/hsmgate/v1"
)

// normalizeDNS lowercases a DNS name and drops one trailing dot.
func normalizeDNS(n string) string {
	return strings.TrimSuffix(strings.ToLower(strings.TrimSpace(n)), ".")
}

// checkDNSSyntax accepts LDH labels of 1-63 characters, 253 in all, with an
// optional leftmost "*" label (wildcard reports it). It refuses IP addresses.
func checkDNSSyntax(n string) (wildcard bool, err error) {
	if n == "" || len(n) > 253 {
		return false, fmt.Errorf("%w: DNS name %q: empty or longer than 253", ErrNotAllowed, n)
	}
	labels := strings.Split(n, ".")
	for i, l := range labels {
		if l == "*" && i == 0 && len(labels) > 2 {
			wildcard = true
			continue
		}
		if l == "" || len(l) > 63 || l[0] == '-' || l[len(l)-1] == '-' {
			return false, fmt.Errorf("%w: DNS name %q: bad label %q", ErrNotAllowed, n, l)
		}
		for _, c := range []byte(l) {
			if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-') {
				return false, fmt.Errorf("%w: DNS name %q: bad character %q", ErrNotAllowed, n, c)
			}
		}
		if err := checkALabel(l); err != nil {
			return false, fmt.Errorf("%w: DNS name %q: %v", ErrNotAllowed, n, err)
		}
	}
	if _, err := netip.ParseAddr(n); err == nil {
		return false, fmt.Errorf("%w: %q is an IP address, not a DNS name", ErrNotAllowed, n)
	}
	last := labels[len(labels)-1]
	if strings.Trim(last, "0123456789") == "" {
		return false, fmt.Errorf("%w: DNS name %q: all-numeric top-level label", ErrNotAllowed, n)
	}
	return wildcard, nil
}

// checkALabel refuses labels with "--" in the third and fourth positions
// (reserved, RFC 5891 4.2.3.1) unless they are IDNA2008 A-labels: "xn--"
// and a Punycode string that decodes to a valid U-label and encodes back
// to the same label.
func checkALabel(l string) error {
	if len(l) < 4 || l[2:4] != "--" {
		return nil
	}
	if !strings.HasPrefix(l, "xn--") {
		return fmt.Errorf("label %q: reserved (\"--\" in positions 3-4 without xn--)", l)
	}
	u, err := idna.Registration.ToUnicode(l)
	if err != nil {
		return fmt.Errorf("label %q: not an IDNA2008 A-label: %v", l, err)
	}
	if a, err := idna.Registration.ToASCII(u); err != nil || a != l {
		return fmt.Errorf("label %q: not an IDNA2008 A-label (does not round-trip)", l)
	}
	return nil
}

// globMatch matches a DNS name against a glob whose '*' matches within one label.
func globMatch(glob, name string) bool {
	ok, err := path.Match(strings.ReplaceAll(glob, ".", "/"), strings.ReplaceAll(name, ".", "/"))
	return err == nil && ok
}

// checkDNSName says whether the role allows DNS name n (already normalized).
func checkDNSName(r *pb.Role, n string) error {
	wildcard, err := checkDNSSyntax(n)
	if err != nil {
		return err
	}
	if wildcard && !r.AllowWildcardCertificates {
		return fmt.Errorf("%w: wildcard name %q (allow_wildcard_certificates is off)", ErrNotAllowed, n)
	}
	if r.AllowAnyName {
		return nil
	}
	if n == "localhost" && r.AllowLocalhost {
		return nil
	}
	base := n
	if wildcard {
		base = n[2:]
	}
	for _, d := range r.AllowedDomains {
		d = normalizeDNS(d)
		if strings.Contains(d, "*") {
			// A glob: the wildcard label "*" of n is matched like any other label.
			if r.AllowGlobDomains && globMatch(d, n) {
				return nil
			}
			continue
		}
		switch {
		case wildcard:
			// "*.x" stands for the names directly below x.
			if r.AllowSubdomains && (base == d || strings.HasSuffix(base, "."+d)) {
				return nil
			}
		case n == d:
			if r.AllowBareDomains {
				return nil
			}
		case strings.HasSuffix(n, "."+d):
			if r.AllowSubdomains {
				return nil
			}
		}
	}
	return fmt.Errorf("%w: DNS name %q", ErrNotAllowed, n)
}

// checkIP says whether the role allows IP address ip.
func checkIP(r *pb.Role, s string) (net.IP, error) {
	a, err := netip.ParseAddr(strings.TrimSpace(s))
	if err != nil || a.Zone() != "" {
		return nil, fmt.Errorf("%w: %q is not an IP address", ErrNotAllowed, s)
	}
	a = a.Unmap()
	if !r.AllowIpSans {
		return nil, fmt.Errorf("%w: IP SAN %s (allow_ip_sans is off)", ErrNotAllowed, a)
	}
	if len(r.AllowedIpRanges) > 0 {
		ok := false
		for _, c := range r.AllowedIpRanges {
			if p, err := netip.ParsePrefix(c); err == nil && p.Contains(a) {
				ok = true
				break
			}
		}
		if !ok {
			return nil, fmt.Errorf("%w: IP SAN %s outside allowed_ip_ranges", ErrNotAllowed, a)
		}
	}
	return net.IP(a.AsSlice()), nil
}

// checkURI says whether the role allows URI SAN s.
func checkURI(r *pb.Role, s string) (*url.URL, error) {
	u, err := url.Parse(s)
	if err != nil || u.Scheme == "" || !u.IsAbs() {
		return nil, fmt.Errorf("%w: %q is not an absolute URI", ErrNotAllowed, s)
	}
	for _, g := range r.AllowedUriSans {
		if ok, err := path.Match(g, s); err == nil && ok {
			return u, nil
		}
	}
	return nil, fmt.Errorf("%w: URI SAN %q", ErrNotAllowed, s)
}

// checkCommonName says whether the role allows common name cn; it reports
// whether cn is a DNS name (so it belongs in the SANs too).
func checkCommonName(r *pb.Role, cn string) (dns bool, err error) {
	if cn == "" {
		if r.RequireCn {
			return false, fmt.Errorf("%w: a common name is required", ErrNotAllowed)
		}
		return false, nil
	}
	if _, err := netip.ParseAddr(cn); err == nil {
		if _, err := checkIP(r, cn); err != nil {
			return false, err
		}
		return false, nil
	}
	n := normalizeDNS(cn)
	if _, err := checkDNSSyntax(n); err == nil {
		return true, checkDNSName(r, n)
	}
	if r.AllowAnyName {
		return false, nil
	}
	return false, fmt.Errorf("%w: common name %q is not a DNS name", ErrNotAllowed, cn)
}

package pki

import (
	"bytes"
	"crypto/x509"
	"fmt"
	"net"
	"strings"
)

// A CA certificate is only worth making if relying parties will accept the
// chains through it: RFC 5280 6.1.4 (k) and (l) count the CA certificates
// below each pathLenConstraint, and 6.1.4 (g) intersects the name
// constraints down the path. fitCAUnder checks a new CA certificate against
// the CAs above it (parent first, then up to the root) before it is signed,
// and lowers an unlimited path length to what the chain allows.

// constrainedPathLen reports a CA certificate's pathLenConstraint, if it has one.
func constrainedPathLen(c *x509.Certificate) (int, bool) {
	switch {
	case !c.BasicConstraintsValid || !c.IsCA:
		return 0, false
	case c.MaxPathLen > 0:
		return c.MaxPathLen, true
	case c.MaxPathLen == 0 && c.MaxPathLenZero:
		return 0, true
	}
	return 0, false
}

// selfIssued: subject and issuer are the same name (RFC 5280 6.1: such
// certificates do not count against path lengths).
func selfIssued(c *x509.Certificate) bool {
	return bytes.Equal(c.RawSubject, c.RawIssuer)
}

// pathLenLimit is the largest pathLenConstraint a new CA certificate placed
// directly under cas[0] may carry, or -1 when no CA above limits it. It
// fails when some CA above allows no further CA level at all.
func pathLenLimit(cas []*x509.Certificate) (int, error) {
	limit := -1
	below := 1 // CA certificates between cas[i] and a leaf of the new CA: the new CA itself...
	for i, ca := range cas {
		if i > 0 && !selfIssued(cas[i-1]) {
			below++ // ...and each non-self-issued CA between them
		}
		n, ok := constrainedPathLen(ca)
		if !ok {
			continue
		}
		left := n - below
		if left < 0 {
			return 0, fmt.Errorf("%w: %q has pathlen:%d, which allows no CA %d level(s) below it",
				ErrParentConstraint, ca.Subject.CommonName, n, below)
		}
		if limit < 0 || left < limit {
			limit = left
		}
	}
	return limit, nil
}

// fitCAUnder checks a CA certificate template against the CAs above it
// (cas[0] its issuer): their path length constraints must allow one more CA
// level, a path length the template asks for must fit, an unlimited one is
// lowered to what they allow, and the template's permitted name subtrees must
// lie inside theirs and outside their excluded ones. Errors wrap
// ErrParentConstraint.
func fitCAUnder(tmpl *x509.Certificate, cas []*x509.Certificate) error {
	if !tmpl.IsCA {
		return nil
	}
	limit, err := pathLenLimit(cas)
	if err != nil {
		return err
	}
	if limit >= 0 {
		want, set := constrainedPathLen(tmpl)
		switch {
		case !set:
			tmpl.MaxPathLen, tmpl.MaxPathLenZero = limit, limit == 0
		case want > limit:
			return fmt.Errorf("%w: pathlen:%d asked, but the CAs above allow at most pathlen:%d here",
				ErrParentConstraint, want, limit)
		}
	}
	return nameConstraintsWithin(tmpl, cas)
}

// checkCAChain checks a CA certificate (an imported one) against its chain,
// without changing it.
func checkCAChain(cert *x509.Certificate, chain []*x509.Certificate) error {
	if len(chain) == 0 {
		return nil
	}
	limit, err := pathLenLimit(chain)
	if err != nil {
		return err
	}
	if n, set := constrainedPathLen(cert); limit >= 0 && (!set || n > limit) {
		got := "no pathlen"
		if set {
			got = fmt.Sprintf("pathlen:%d", n)
		}
		return fmt.Errorf("%w: the certificate has %s, but its chain allows at most pathlen:%d", ErrParentConstraint, got, limit)
	}
	return nameConstraintsWithin(cert, chain)
}

// nameConstraintsWithin refuses permitted subtrees of c that a CA above
// does not permit, or excludes.
func nameConstraintsWithin(c *x509.Certificate, cas []*x509.Certificate) error {
	for _, ca := range cas {
		for _, d := range c.PermittedDNSDomains {
			if err := domainWithin("DNS", d, ca.PermittedDNSDomains, ca.ExcludedDNSDomains, ca); err != nil {
				return err
			}
		}
		for _, d := range c.PermittedURIDomains {
			if err := domainWithin("URI", d, ca.PermittedURIDomains, ca.ExcludedURIDomains, ca); err != nil {
				return err
			}
		}
		for _, r := range c.PermittedIPRanges {
			if err := rangeWithin(r, ca); err != nil {
				return err
			}
		}
	}
	return nil
}

// domainInside reports whether every name matched by constraint sub is
// matched by constraint super ("example.com": itself and its subdomains;
// ".example.com": its subdomains only).
func domainInside(sub, super string) bool {
	sub, super = strings.ToLower(sub), strings.ToLower(super)
	if super == "" {
		return true
	}
	if strings.HasPrefix(super, ".") {
		return strings.HasSuffix(sub, super) && sub != super[1:] || sub == super
	}
	base := strings.TrimPrefix(sub, ".")
	return base == super || strings.HasSuffix(base, "."+super)
}

func domainWithin(kind, d string, permitted, excluded []string, ca *x509.Certificate) error {
	for _, e := range excluded {
		if domainInside(d, e) {
			return fmt.Errorf("%w: permitted %s subtree %q is excluded by %q (%q)", ErrParentConstraint, kind, d, ca.Subject.CommonName, e)
		}
	}
	if len(permitted) == 0 {
		return nil
	}
	for _, p := range permitted {
		if domainInside(d, p) {
			return nil
		}
	}
	return fmt.Errorf("%w: permitted %s subtree %q is outside %q's permitted subtrees %q", ErrParentConstraint, kind, d, ca.Subject.CommonName, permitted)
}

// rangeInside reports whether network sub lies inside network super.
func rangeInside(sub, super *net.IPNet) bool {
	so, sb := sub.Mask.Size()
	po, pb := super.Mask.Size()
	return sb == pb && so >= po && super.Contains(sub.IP)
}

// rangesMeet reports whether two networks of one family overlap.
func rangesMeet(a, b *net.IPNet) bool {
	_, ab := a.Mask.Size()
	_, bb := b.Mask.Size()
	return ab == bb && (a.Contains(b.IP) || b.Contains(a.IP))
}

func rangeWithin(r *net.IPNet, ca *x509.Certificate) error {
	for _, e := range ca.ExcludedIPRanges {
		if rangesMeet(r, e) {
			return fmt.Errorf("%w: permitted IP range %s overlaps %s, excluded by %q", ErrParentConstraint, r, e, ca.Subject.CommonName)
		}
	}
	same := false // the CA permits ranges of this family
	_, rb := r.Mask.Size()
	for _, p := range ca.PermittedIPRanges {
		if _, pb := p.Mask.Size(); pb == rb {
			same = true
			if rangeInside(r, p) {
				return nil
			}
		}
	}
	if !same {
		return nil
	}
	return fmt.Errorf("%w: permitted IP range %s is outside %q's permitted ranges", ErrParentConstraint, r, ca.Subject.CommonName)
}

package acme

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"crypto/tls"
	"encoding/asn1"
	"errors"
	"net"
	"net/netip"
	"slices"
	"strconv"
	"strings"
)

// oidACMEIdentifier is id-pe-acmeIdentifier (RFC 8737 6.1).
var oidACMEIdentifier = asn1.ObjectIdentifier{1, 3, 6, 1, 5, 5, 7, 1, 31}

// maxTXTRecords bounds the TXT records looked at for dns-01.
const maxTXTRecords = 32

// validateTLSALPN01 (RFC 8737): a TLS handshake with the identifier on
// port 443, ALPN acme-tls/1, SNI the name (or the reverse-DNS name of an IP
// address, RFC 8738 6), must show one self-signed certificate naming
// exactly the identifier with a critical acmeIdentifier extension holding
// SHA-256 of the key authorization.
func (s *Server) validateTLSALPN01(ctx context.Context, id Ident, keyAuth string) *Problem {
	sni, host := id.Value, id.Value
	if id.Type == "ip" {
		a, _ := netip.ParseAddr(id.Value)
		sni = reverseName(a)
	}
	raw, err := s.dialContext(ctx, "tcp", net.JoinHostPort(host, "443"))
	if err != nil {
		return errConnection("tls-alpn-01: connecting to %s: %s", id.Value, truncate(err.Error()))
	}
	conn := tls.Client(raw, &tls.Config{
		ServerName: sni, NextProtos: []string{"acme-tls/1"}, MinVersion: tls.VersionTLS12,
		InsecureSkipVerify: true, //nolint:gosec // RFC 8737: the certificate is checked below, not against roots
	})
	defer conn.Close()
	if err := conn.HandshakeContext(ctx); err != nil {
		return errTLS("tls-alpn-01: handshake with %s: %s", id.Value, truncate(err.Error()))
	}
	st := conn.ConnectionState()
	if st.NegotiatedProtocol != "acme-tls/1" {
		return errUnauthorized("tls-alpn-01: %s did not negotiate acme-tls/1", id.Value)
	}
	if len(st.PeerCertificates) == 0 {
		return errUnauthorized("tls-alpn-01: no certificate from %s", id.Value)
	}
	c := st.PeerCertificates[0]
	switch id.Type {
	case "dns":
		if len(c.DNSNames) != 1 || !strings.EqualFold(c.DNSNames[0], id.Value) || len(c.IPAddresses) > 0 {
			return errUnauthorized("tls-alpn-01: certificate must name exactly %s", id.Value)
		}
	case "ip":
		want := net.ParseIP(id.Value)
		if len(c.IPAddresses) != 1 || !c.IPAddresses[0].Equal(want) || len(c.DNSNames) > 0 {
			return errUnauthorized("tls-alpn-01: certificate must name exactly %s", id.Value)
		}
	}
	sum := sha256.Sum256([]byte(keyAuth))
	for _, e := range c.Extensions {
		if !e.Id.Equal(oidACMEIdentifier) {
			continue
		}
		if !e.Critical {
			return errUnauthorized("tls-alpn-01: acmeIdentifier extension is not critical")
		}
		var got []byte
		if rest, err := asn1.Unmarshal(e.Value, &got); err != nil || len(rest) > 0 {
			return errUnauthorized("tls-alpn-01: acmeIdentifier is not an OCTET STRING")
		}
		if subtle.ConstantTimeCompare(got, sum[:]) != 1 {
			return errIncorrectResponse("tls-alpn-01: acmeIdentifier is not the key authorization's digest")
		}
		return nil
	}
	return errUnauthorized("tls-alpn-01: certificate has no acmeIdentifier extension")
}

// reverseName is the in-addr.arpa / ip6.arpa name of an address.
func reverseName(a netip.Addr) string {
	b := a.AsSlice()
	var parts []string
	if a.Is4() {
		for i := len(b) - 1; i >= 0; i-- {
			parts = append(parts, strconv.Itoa(int(b[i])))
		}
		return strings.Join(parts, ".") + ".in-addr.arpa"
	}
	const hex = "0123456789abcdef"
	for i := len(b) - 1; i >= 0; i-- {
		parts = append(parts, string(hex[b[i]&0xf]), string(hex[b[i]>>4]))
	}
	return strings.Join(parts, ".") + ".ip6.arpa"
}

// validateDNS01 (RFC 8555 8.4): a TXT record at _acme-challenge.<name>,
// looked up through Config.DNSResolver (the system's resolver when empty),
// must hold base64url(SHA-256(key authorization)).
func (s *Server) validateDNS01(ctx context.Context, id Ident, keyAuth string) *Problem {
	if id.Type != "dns" {
		return errMalformed("dns-01 validates DNS names only")
	}
	r := net.DefaultResolver
	if addr := s.cfg.DNSResolver; addr != "" {
		r = &net.Resolver{PreferGo: true, Dial: func(ctx context.Context, network, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, network, addr)
		}}
	}
	name := "_acme-challenge." + id.Value + "."
	txts, err := r.LookupTXT(ctx, name)
	if err != nil {
		var de *net.DNSError
		if errors.As(err, &de) && de.IsNotFound {
			return errUnauthorized("dns-01: no TXT record at %s", name)
		}
		return errDNS("dns-01: looking up %s: %s", name, truncate(err.Error()))
	}
	sum := sha256.Sum256([]byte(keyAuth))
	want := []byte(b64.EncodeToString(sum[:]))
	if len(txts) > maxTXTRecords {
		txts = txts[:maxTXTRecords]
	}
	if slices.ContainsFunc(txts, func(t string) bool { return subtle.ConstantTimeCompare([]byte(strings.TrimSpace(t)), want) == 1 }) {
		return nil
	}
	return errIncorrectResponse("dns-01: no TXT record at %s holds the key authorization's digest", name)
}

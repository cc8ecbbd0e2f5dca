package vaultdoor

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/rsa"
	"crypto/x509"
	"encoding/base64"
	"encoding/pem"
	"net"
	"net/http"
	"net/url"
	"strings"
	"time"

	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/hsmgate/hsmgate/internal/errs"
	"github.com/hsmgate/hsmgate/pki"
	pb "github.com/hsmgate/hsmgate/proto/hsmgate/v1"
)

// pkiEngine is what the door calls on the PKI service directly: the
// public reads (CA certificates, CRLs, issued certificates, all public in
// Vault too) and SignIntermediate (through the interceptor, under the door's
// own rule).
type pkiEngine interface {
	GetIssuer(ctx context.Context, req *pb.GetIssuerRequest) (*pb.GetIssuerResponse, error)
	CRL(ctx context.Context, issuer string, delta bool) ([]byte, error)
	GetCertificate(ctx context.Context, req *pb.GetCertificateRequest) (*pb.GetCertificateResponse, error)
	SignIntermediate(ctx context.Context, req pki.SignIntermediateRequest) (*pki.SignedIntermediate, error)
}

var _ pkiEngine = (*pki.Service)(nil)

func (d *Door) pkiEngine() (pkiEngine, error) {
	_, impl, ok := d.cfg.Registry.RegisteredService(pb.PKIService_ServiceDesc.ServiceName)
	p, isPKI := impl.(pkiEngine)
	if !ok || !isPKI {
		return nil, errs.New(errs.Unimplemented, "vaultdoor: the PKI engine is not served here")
	}
	return p, nil
}

func issuerName(s string) string {
	if s == "" {
		return "default"
	}
	return s
}

// issuerCerts returns the mount's issuer certificate and the chain above it.
func (d *Door) issuerCerts(ctx context.Context, issuer string) ([]byte, [][]byte, error) {
	p, err := d.pkiEngine()
	if err != nil {
		return nil, nil, err
	}
	resp, err := p.GetIssuer(ctx, &pb.GetIssuerRequest{Name: issuerName(issuer)})
	if err != nil {
		return nil, nil, err
	}
	iss := resp.GetIssuer()
	if len(iss.GetCertificate()) == 0 {
		return nil, nil, errs.New(errs.NotFound, "vaultdoor: the issuer has no certificate yet")
	}
	return iss.GetCertificate(), iss.GetChain(), nil
}

func pemCert(der []byte) string {
	return string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}))
}

func pemChain(ders [][]byte) string {
	var b strings.Builder
	for _, d := range ders {
		b.WriteString(pemCert(d))
	}
	return b.String()
}

func writeRaw(w http.ResponseWriter, ctype string, b []byte) {
	w.Header().Set("Content-Type", ctype)
	w.WriteHeader(http.StatusOK)
	_, _ = w.Write(b)
}

func (d *Door) pkiCA(asPEM bool) handler {
	return func(w http.ResponseWriter, c *call, _ *fields, args []string) error {
		cert, _, err := d.issuerCerts(c.r.Context(), args[0])
		if err != nil {
			return err
		}
		if asPEM {
			writeRaw(w, "application/pem-certificate-chain", []byte(pemCert(cert)))
		} else {
			writeRaw(w, "application/pkix-cert", cert)
		}
		return nil
	}
}

func (d *Door) pkiCAChain(w http.ResponseWriter, c *call, _ *fields, args []string) error {
	cert, chain, err := d.issuerCerts(c.r.Context(), args[0])
	if err != nil {
		return err
	}
	all := append([][]byte{cert}, chain...)
	if strings.HasSuffix(c.r.URL.Path, "/cert/ca_chain") {
		list := make([]string, len(all))
		for i, d := range all {
			list[i] = pemCert(d)
		}
		writeData(w, c, http.StatusOK, map[string]any{
			"certificate": strings.TrimSpace(pemChain(all)), "ca_chain": list,
			"revocation_time": 0, "revocation_time_rfc3339": "",
		})
		return nil
	}
	writeRaw(w, "application/pem-certificate-chain", []byte(pemChain(all)))
	return nil
}

func (d *Door) pkiCertCA(w http.ResponseWriter, c *call, _ *fields, args []string) error {
	cert, _, err := d.issuerCerts(c.r.Context(), args[0])
	if err != nil {
		return err
	}
	writeData(w, c, http.StatusOK, map[string]any{
		"certificate": pemCert(cert), "revocation_time": 0, "revocation_time_rfc3339": "",
	})
	return nil
}

func (d *Door) pkiCRL(asPEM bool) handler {
	return func(w http.ResponseWriter, c *call, _ *fields, args []string) error {
		p, err := d.pkiEngine()
		if err != nil {
			return err
		}
		crl, err := p.CRL(c.r.Context(), issuerName(args[0]), false)
		if err != nil {
			return err
		}
		if asPEM {
			writeRaw(w, "application/x-pem-file", pem.EncodeToMemory(&pem.Block{Type: "X509 CRL", Bytes: crl}))
		} else {
			writeRaw(w, "application/pkix-crl", crl)
		}
		return nil
	}
}

func (d *Door) pkiCert(w http.ResponseWriter, c *call, _ *fields, args []string) error {
	p, err := d.pkiEngine()
	if err != nil {
		return err
	}
	resp, err := p.GetCertificate(c.r.Context(), &pb.GetCertificateRequest{Serial: args[1]})
	if err != nil {
		return err
	}
	rec := resp.GetCertificate()
	if len(rec.GetCertificate()) == 0 {
		return errs.New(errs.NotFound, "vaultdoor: the certificate was not stored (role no_store)")
	}
	data := map[string]any{
		"certificate": pemCert(rec.GetCertificate()), "revocation_time": 0, "revocation_time_rfc3339": "",
		"serial_number": colonHex(rec.GetSerial()),
	}
	if rec.GetRevoked() {
		t := rec.GetRevocationTime().AsTime()
		data["revocation_time"], data["revocation_time_rfc3339"] = t.Unix(), t.UTC().Format(time.RFC3339Nano)
	}
	writeData(w, c, http.StatusOK, data)
	return nil
}

// colonHex turns hsmgate's serial (lowercase hex) into Vault's form
// ("1f:0a:...", an even number of digits).
func colonHex(h string) string {
	if len(h)%2 == 1 {
		h = "0" + h
	}
	var b strings.Builder
	for i := 0; i < len(h); i += 2 {
		if i > 0 {
			b.WriteByte(':')
		}
		b.WriteString(h[i : i+2])
	}
	return b.String()
}

// certRequest holds the fields sign and issue share, as Vault names them.
type certRequest struct {
	cn, format, keyFormat string
	dns, ips, uris        []string
	ttl                   time.Duration
	removeRoots           bool
}

func (d *Door) readCertRequest(f *fields, issuer string) (*certRequest, error) {
	r := &certRequest{
		cn: f.String("common_name"), dns: f.List("alt_names"), ips: f.List("ip_sans"), uris: f.List("uri_sans"),
		ttl: f.Duration("ttl"), format: f.String("format"), removeRoots: f.Bool("remove_roots_from_chain"),
	}
	// exclude_cn_from_sans is accepted; a common name that is a DNS name is
	// always among the SANs here (CA/B BR 7.1.4.3), as cert-manager's own
	// requests have it.
	_ = f.Bool("exclude_cn_from_sans")
	if len(f.List("other_sans")) > 0 {
		return nil, invalidf("other_sans are not supported")
	}
	if len(f.List("user_ids")) > 0 {
		return nil, invalidf("user_ids are not supported")
	}
	if s := f.String("serial_number"); s != "" {
		return nil, invalidf("a subject serial_number is not supported")
	}
	if ref := f.String("issuer_ref"); ref != "" && ref != "default" && ref != issuerName(issuer) {
		return nil, invalidf("issuer_ref %q: this mount signs with its role's issuer", ref)
	}
	if na := f.String("not_after"); na != "" {
		t, err := time.Parse(time.RFC3339, na)
		if err != nil {
			return nil, invalidf("not_after: want YYYY-MM-ddTHH:MM:SSZ")
		}
		if r.ttl != 0 {
			return nil, invalidf("ttl and not_after are mutually exclusive")
		}
		now := d.cfg.Now().UTC().Truncate(time.Second)
		if r.ttl = t.Sub(now); r.ttl <= 0 {
			return nil, invalidf("not_after is in the past")
		}
	}
	switch r.format {
	case "":
		r.format = "pem"
	case "pem", "der", "pem_bundle":
	default:
		return nil, invalidf("format %q: want pem, der or pem_bundle", r.format)
	}
	return r, nil
}

func (r *certRequest) pbTTL() *durationpb.Duration {
	if r.ttl == 0 {
		return nil
	}
	return durationpb.New(r.ttl)
}

// certData shapes a certificate answer as Vault does.
func (r *certRequest) certData(cert []byte, chain [][]byte, serial string, notAfter time.Time) map[string]any {
	if r.removeRoots {
		kept := chain[:0:0]
		for _, c := range chain {
			if x, err := x509.ParseCertificate(c); err == nil && bytes.Equal(x.RawIssuer, x.RawSubject) && x.CheckSignatureFrom(x) == nil {
				continue
			}
			kept = append(kept, c)
		}
		chain = kept
	}
	enc := func(der []byte) string {
		if r.format == "der" {
			return base64.StdEncoding.EncodeToString(der)
		}
		return strings.TrimSpace(pemCert(der))
	}
	caChain := make([]string, len(chain))
	for i, c := range chain {
		caChain[i] = enc(c)
	}
	certificate := enc(cert)
	if r.format == "pem_bundle" {
		certificate = strings.TrimSpace(pemCert(cert) + pemChain(chain))
	}
	issuing := ""
	if len(chain) > 0 {
		issuing = caChain[0]
	}
	return map[string]any{
		"certificate": certificate, "issuing_ca": issuing, "ca_chain": caChain,
		"serial_number": colonHex(serial), "expiration": notAfter.Unix(),
	}
}

func (d *Door) pkiSign(w http.ResponseWriter, c *call, f *fields, args []string) error {
	csr := f.String("csr")
	r, err := d.readCertRequest(f, args[0])
	if err != nil {
		return err
	}
	if err := f.done(); err != nil {
		return err
	}
	if csr == "" {
		return invalidf("csr is required")
	}
	out, err := d.invoke(c.r.Context(), c, pb.PKIService_Sign_FullMethodName, &pb.SignRequest{
		Role: args[1], Csr: []byte(csr), CommonName: r.cn, DnsNames: r.dns, IpAddresses: r.ips, Uris: r.uris, Ttl: r.pbTTL(),
	}, nil)
	if err != nil {
		return err
	}
	resp := out.(*pb.SignResponse)
	writeData(w, c, http.StatusOK, r.certData(resp.GetCertificate(), resp.GetChain(), resp.GetSerial(), resp.GetNotAfter().AsTime()))
	return nil
}

func (d *Door) pkiIssue(w http.ResponseWriter, c *call, f *fields, args []string) error {
	r, err := d.readCertRequest(f, args[0])
	if err != nil {
		return err
	}
	r.keyFormat = f.String("private_key_format")
	if err := f.done(); err != nil {
		return err
	}
	if r.keyFormat != "" && r.keyFormat != "der" && r.keyFormat != "pem" && r.keyFormat != "pkcs8" {
		return invalidf("private_key_format %q: want der, pem or pkcs8", r.keyFormat)
	}
	out, err := d.invoke(c.r.Context(), c, pb.PKIService_Issue_FullMethodName, &pb.IssueRequest{
		Role: args[1], CommonName: r.cn, DnsNames: r.dns, IpAddresses: r.ips, Uris: r.uris, Ttl: r.pbTTL(),
	}, nil)
	if err != nil {
		return err
	}
	resp := out.(*pb.IssueResponse)
	data := r.certData(resp.GetCertificate(), resp.GetChain(), resp.GetSerial(), resp.GetNotAfter().AsTime())
	key, typ, err := r.privateKey(resp.GetPrivateKey())
	if err != nil {
		return err
	}
	data["private_key"], data["private_key_type"] = key, typ
	writeData(w, c, http.StatusOK, data)
	return nil
}

// privateKey encodes the issued PKCS#8 key as Vault does: SEC1 or PKCS#1
// unless private_key_format is pkcs8 (Ed25519 is always PKCS#8), PEM or
// base64 DER following format.
func (r *certRequest) privateKey(p8 []byte) (string, string, error) {
	k, err := x509.ParsePKCS8PrivateKey(p8)
	if err != nil {
		return "", "", errs.New(errs.Unavailable, "vaultdoor: issued key unreadable")
	}
	der, typ, block := p8, "", "PRIVATE KEY"
	switch k := k.(type) {
	case *ecdsa.PrivateKey:
		typ = "ec"
		if r.keyFormat != "pkcs8" {
			if der, err = x509.MarshalECPrivateKey(k); err != nil {
				return "", "", err
			}
			block = "EC PRIVATE KEY"
		}
	case *rsa.PrivateKey:
		typ = "rsa"
		if r.keyFormat != "pkcs8" {
			der, block = x509.MarshalPKCS1PrivateKey(k), "RSA PRIVATE KEY"
		}
	case ed25519.PrivateKey:
		typ = "ed25519"
	}
	if r.format == "der" {
		return base64.StdEncoding.EncodeToString(der), typ, nil
	}
	return strings.TrimSpace(string(pem.EncodeToMemory(&pem.Block{Type: block, Bytes: der}))), typ, nil
}

// MethodSignIntermediate is the door's own operation for
// root/sign-intermediate: a CA certificate for a caller's key, signed with
// an issuer's key. Its rule (AuthTable) asks "update" on
// pki/issuers/<issuer>, as cross-signing does.
const MethodSignIntermediate = "/hsmgate.v1.VaultDoor/SignIntermediate"

func (d *Door) pkiSignIntermediate(w http.ResponseWriter, c *call, f *fields, args []string) error {
	csr := f.String("csr")
	r, err := d.readCertRequest(f, args[0])
	if err != nil {
		return err
	}
	// max_path_length: absent or -1 (Vault's default) is no limit.
	unlimited, maxPath := true, int64(0)
	if v, ok := f.scalar("max_path_length"); ok && v != "-1" {
		unlimited, maxPath = false, f.Int("max_path_length", 16)
	}
	_ = f.Bool("use_csr_values")
	if err := f.done(); err != nil {
		return err
	}
	if csr == "" {
		return invalidf("csr is required")
	}
	req := pki.SignIntermediateRequest{
		Issuer: args[0], CSR: []byte(csr), CommonName: r.cn, DNSNames: r.dns, TTL: r.ttl,
		MaxPathLen: clampInt32(maxPath), UnlimitedPathLen: unlimited,
	}
	for _, s := range r.ips {
		ip := net.ParseIP(s)
		if ip == nil {
			return invalidf("ip_sans: %q is not an IP address", s)
		}
		req.IPAddresses = append(req.IPAddresses, ip)
	}
	for _, s := range r.uris {
		u, err := url.Parse(s)
		if err != nil || u.Scheme == "" {
			return invalidf("uri_sans: %q is not a URI", s)
		}
		req.URIs = append(req.URIs, u)
	}
	p, err := d.pkiEngine()
	if err != nil {
		return err
	}
	out, err := d.invoke(c.r.Context(), c, MethodSignIntermediate, issuerResource(args[0]),
		func(ctx context.Context, _ any) (any, error) { return p.SignIntermediate(ctx, req) })
	if err != nil {
		return err
	}
	s := out.(*pki.SignedIntermediate)
	writeData(w, c, http.StatusOK, r.certData(s.Certificate, s.Chain, s.Serial, s.NotAfter))
	return nil
}

func (d *Door) pkiRevoke(w http.ResponseWriter, c *call, f *fields, _ []string) error {
	serial := f.String("serial_number")
	certPEM := f.String("certificate")
	if err := f.done(); err != nil {
		return err
	}
	if (serial == "") == (certPEM == "") {
		return invalidf("give one of serial_number and certificate")
	}
	if certPEM != "" {
		blk, _ := pem.Decode([]byte(certPEM))
		if blk == nil || blk.Type != "CERTIFICATE" {
			return invalidf("certificate: want one PEM certificate")
		}
		x, err := x509.ParseCertificate(blk.Bytes)
		if err != nil {
			return invalidf("certificate: %v", err)
		}
		serial = x.SerialNumber.Text(16)
	}
	out, err := d.invoke(c.r.Context(), c, pb.PKIService_Revoke_FullMethodName, &pb.RevokeRequest{Serial: serial}, nil)
	if err != nil {
		return err
	}
	t := out.(*pb.RevokeResponse).GetRevocationTime().AsTime()
	writeData(w, c, http.StatusOK, map[string]any{
		"revocation_time": t.Unix(), "revocation_time_rfc3339": t.UTC().Format(time.RFC3339Nano), "state": "revoked",
	})
	return nil
}

// issuerResource carries the issuer name to the door's rule.
func issuerResource(issuer string) *wrapperspb.StringValue {
	return wrapperspb.String(issuerName(issuer))
}

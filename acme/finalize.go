package acme

import (
	"bytes"
	"context"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"net/http"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"time"

	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/hsmgate/hsmgate/internal/errs"
	"github.com/hsmgate/hsmgate/keystore"
	pb "github.com/hsmgate/hsmgate/proto/hsmgate/v1"
)

// finalize checks the CSR against the order and issues through the
// directory's PKI role (RFC 8555 7.4).
func (s *Server) finalize(ctx context.Context, rq *request, id string) (int, any, error) {
	var p struct {
		CSR string `json:"csr"`
	}
	if err := decodePayload(rq.jws.Payload, &p); err != nil {
		return 0, nil, err
	}
	o, rev, err := s.loadOrder(ctx, rq, id)
	if err != nil {
		return 0, nil, err
	}
	if o.Status != "ready" {
		return 0, nil, errOrderNotReady("order is %s", o.Status)
	}
	der, err := b64.DecodeString(p.CSR)
	if err != nil {
		return 0, nil, errBadCSR("csr is not base64url DER")
	}
	csr, err := checkCSR(der, o, rq.acct.Thumbprint)
	if err != nil {
		return 0, nil, err
	}
	key := prefixOrders + rq.dir.Name + "/" + id
	o.Status, o.Finalizing = "processing", s.cfg.Now().UTC()
	if rev, err = s.put(ctx, key, o, rev); err != nil {
		if errors.Is(err, keystore.ErrConflict) {
			return 0, nil, errOrderNotReady("order changed meanwhile")
		}
		return 0, nil, err
	}
	req := &pb.SignRequest{Role: rq.dir.Role, Csr: der, CommonName: csr.Subject.CommonName}
	for _, idn := range o.Identifiers {
		if idn.Type == "dns" {
			req.DnsNames = append(req.DnsNames, idn.Value)
		} else {
			req.IpAddresses = append(req.IpAddresses, idn.Value)
		}
	}
	if !o.NotAfter.IsZero() {
		req.Ttl = durationpb.New(o.NotAfter.Sub(s.cfg.Now()).Truncate(time.Second))
	}
	resp, signErr := s.cfg.CA.Sign(ctx, req)
	if signErr != nil {
		// Back to ready (the client may send another CSR), then report.
		s.backToReady(ctx, key, o, rev)
		if errors.Is(signErr, errs.InvalidArgument) {
			return 0, nil, errBadCSR("%s", truncate(signErr.Error()))
		}
		return 0, nil, signErr
	}
	// The order names its certificate before the certificate record is
	// written, so that whoever reads the order later can settle it from
	// that record (settleProcessing) whatever happens to this request.
	o.Cert = resp.Serial
	if rev, err = s.put(ctx, key, o, rev); err != nil {
		s.backToReady(ctx, key, o, rev)
		return 0, nil, fmt.Errorf("acme: order %s: name certificate %s: %w", id, resp.Serial, err)
	}
	cr := &certRecord{Serial: resp.Serial, Account: rq.acct.ID, Order: id, Chain: pemChain(resp.Certificate, resp.Chain), DER: resp.Certificate}
	if alts, err := s.cfg.CA.AlternateChains(ctx, resp.Issuer); err != nil {
		// The certificate is issued; only the alternates are missing.
		s.cfg.Logger.Warn("acme: alternate chains", "order", id, "issuer", resp.Issuer, "err", err)
	} else {
		for _, alt := range alts {
			cr.Alternates = append(cr.Alternates, pemChain(resp.Certificate, alt))
		}
	}
	// The certificate record is the commit point of issuance.
	if _, err := s.put(ctx, prefixCerts+rq.dir.Name+"/"+resp.Serial, cr, keystore.MustNotExist); err != nil {
		// An ambiguous failure (a store timeout) may have committed: look.
		committed := false
		if got := new(certRecord); !errors.Is(err, keystore.ErrConflict) {
			_, found, gerr := s.get(context.WithoutCancel(ctx), prefixCerts+rq.dir.Name+"/"+resp.Serial, got)
			committed = gerr == nil && found && got.Order == id
			if gerr == nil && !found {
				s.backToReady(ctx, key, o, rev)
			}
		}
		if !committed {
			// Otherwise the order stays processing and names the serial;
			// settleProcessing makes it valid if the record lands after
			// all, or ready again once stale.
			return 0, nil, fmt.Errorf("acme: order %s: record certificate %s: %w", id, resp.Serial, err)
		}
	}
	// Committed: from here on the answer is success. Marking the order
	// valid is retried; if it still fails, the order stays processing with
	// its serial and the next read of it settles it (settleProcessing).
	o.Status = "valid"
	if err := s.markValid(context.WithoutCancel(ctx), key, o, rev); err != nil {
		s.cfg.Logger.Error("acme: certificate recorded, order not yet marked valid (settled on its next read)",
			"order", id, "serial", resp.Serial, "err", err)
	} else {
		s.closeOrder(ctx, rq.dir.Name, o)
	}
	rq.w.Header().Set("Location", s.url(rq.dir.Name, "order", id))
	return http.StatusOK, s.orderObject(rq.dir.Name, o), nil
}

// markValidAttempts bounds the writes that mark a finalized order valid.
const markValidAttempts = 5

// markValid writes o (status valid, Cert set) over revision rev, retrying
// failed writes; on a conflict it re-reads the order and applies the change
// only if the order is still processing with the same certificate.
func (s *Server) markValid(ctx context.Context, key string, o *order, rev int64) error {
	var err error
	for attempt := range markValidAttempts {
		if attempt > 0 {
			select {
			case <-ctx.Done():
				return ctx.Err()
			case <-time.After(time.Duration(attempt) * 50 * time.Millisecond):
			}
		}
		if _, err = s.put(ctx, key, o, rev); err == nil {
			return nil
		}
		if !errors.Is(err, keystore.ErrConflict) {
			continue
		}
		cur := new(order)
		r, found, gerr := s.get(ctx, key, cur)
		switch {
		case gerr != nil:
			err = gerr
			continue
		case !found:
			return fmt.Errorf("acme: order vanished: %w", err)
		case cur.Status == "valid" && cur.Cert == o.Cert:
			return nil // settled by a reader meanwhile
		case cur.Status != "processing" || cur.Cert != o.Cert:
			return fmt.Errorf("acme: order is %s with certificate %q: %w", cur.Status, cur.Cert, err)
		}
		rev = r
	}
	return err
}

// backToReady puts a processing order that recorded no certificate back to
// ready (best effort: a stale one is settled by settleProcessing).
func (s *Server) backToReady(ctx context.Context, key string, o *order, rev int64) {
	o.Status, o.Cert = "ready", ""
	if _, err := s.put(context.WithoutCancel(ctx), key, o, rev); err != nil {
		s.cfg.Logger.Error("acme: order back to ready", "order", o.ID, "err", err)
	}
}

// finalizeStale is how long an order may stay processing before a reader
// settles it as failed (ready again): longer than any finalize request.
const finalizeStale = 5 * time.Minute

// settleProcessing returns the status a processing order really has: valid
// when the certificate it names was recorded (finalize committed, then
// could not mark the order valid), ready when it has been processing longer
// than finalizeStale without a recorded certificate, else processing.
func (s *Server) settleProcessing(ctx context.Context, dir string, o *order, now time.Time) (string, error) {
	if o.Cert != "" {
		cr := new(certRecord)
		_, found, err := s.get(ctx, prefixCerts+dir+"/"+o.Cert, cr)
		if err != nil {
			return "", err
		}
		if found && cr.Order == o.ID && cr.Account == o.Account {
			return "valid", nil
		}
	}
	if !o.Finalizing.IsZero() && now.Sub(o.Finalizing) > finalizeStale {
		return "ready", nil
	}
	return "processing", nil
}

// checkCSR parses a CSR and checks that its names are exactly the order's
// identifiers (the common name, if any, one of them) and that its key is
// not the account key.
func checkCSR(der []byte, o *order, accountTP string) (*x509.CertificateRequest, error) {
	csr, err := x509.ParseCertificateRequest(der)
	if err != nil {
		return nil, errBadCSR("CSR does not parse: %s", truncate(err.Error()))
	}
	if err := csr.CheckSignature(); err != nil {
		return nil, errBadCSR("CSR signature is invalid")
	}
	if len(csr.EmailAddresses) > 0 || len(csr.URIs) > 0 {
		return nil, errBadCSR("CSR carries email or URI names")
	}
	var names []Ident
	add := func(id Ident) {
		if !slices.Contains(names, id) {
			names = append(names, id)
		}
	}
	for _, n := range csr.DNSNames {
		id, err := normalizeIdent(Ident{Type: "dns", Value: n})
		if err != nil {
			return nil, errBadCSR("CSR name %q", truncate(n))
		}
		add(id)
	}
	for _, ip := range csr.IPAddresses {
		id, err := normalizeIdent(Ident{Type: "ip", Value: ip.String()})
		if err != nil {
			return nil, errBadCSR("CSR address %s", ip)
		}
		add(id)
	}
	if cn := csr.Subject.CommonName; cn != "" {
		typ := "dns"
		if _, e := netip.ParseAddr(cn); e == nil {
			typ = "ip"
		}
		id, err := normalizeIdent(Ident{Type: typ, Value: cn})
		if err != nil || !slices.Contains(names, id) {
			return nil, errBadCSR("CSR common name %q is not one of its SANs", truncate(cn))
		}
	}
	for _, n := range names {
		if !slices.Contains(o.Identifiers, n) {
			return nil, errBadCSR("CSR names %s %q, which the order does not", n.Type, truncate(n.Value))
		}
	}
	for _, n := range o.Identifiers {
		if !slices.Contains(names, n) {
			return nil, errBadCSR("CSR lacks the order's %s %q", n.Type, n.Value)
		}
	}
	if k, err := keyThumbprint(csr.PublicKey); err == nil && k == accountTP {
		return nil, errBadCSR("the certificate key must not be the account key")
	}
	return csr, nil
}

// pemChain is the PEM of leaf then chain.
func pemChain(leaf []byte, chain [][]byte) []byte {
	var b bytes.Buffer
	for _, c := range append([][]byte{leaf}, chain...) {
		pem.Encode(&b, &pem.Block{Type: "CERTIFICATE", Bytes: c})
	}
	return b.Bytes()
}

// getCert serves the PEM chain to the account that ordered it: id is the
// serial (the default chain) or serial/<n> (alternate n, 1-based); every
// other chain is named in a Link rel="alternate" header (RFC 8555 7.4.2).
func (s *Server) getCert(ctx context.Context, rq *request, id string) (int, any, error) {
	if len(rq.jws.Payload) != 0 {
		return 0, nil, errMalformed("a certificate is read with POST-as-GET (empty payload)")
	}
	serial, alt, hasAlt := strings.Cut(id, "/")
	n := 0
	if hasAlt {
		v, err := strconv.Atoi(alt)
		if err != nil || v < 1 || strconv.Itoa(v) != alt {
			return 0, nil, errNotFound("no such certificate")
		}
		n = v
	}
	cr := new(certRecord)
	_, found, err := s.get(ctx, prefixCerts+rq.dir.Name+"/"+serial, cr)
	if err != nil {
		return 0, nil, err
	}
	if !found || cr.Account != rq.acct.ID {
		return 0, nil, errNotFound("no such certificate")
	}
	rq.audit.order = cr.Order
	if n > len(cr.Alternates) {
		return 0, nil, errNotFound("no such certificate chain")
	}
	body := cr.Chain
	if n > 0 {
		body = cr.Alternates[n-1]
		rq.w.Header().Add("Link", fmt.Sprintf("<%s>;rel=\"alternate\"", s.url(rq.dir.Name, "cert", serial)))
	}
	for i := range cr.Alternates {
		if i+1 != n {
			rq.w.Header().Add("Link", fmt.Sprintf("<%s>;rel=\"alternate\"", s.url(rq.dir.Name, "cert", serial, strconv.Itoa(i+1))))
		}
	}
	rq.w.Header().Set("Content-Type", "application/pem-certificate-chain")
	return http.StatusOK, body, nil
}

// revocationReasons are the CRLReason codes an ACME client may give
// (RFC 8555 7.6; cACompromise and the rest are for administrators).
var revocationReasons = []int32{0, 1, 3, 4, 5, 9}

// revokeCert (RFC 8555 7.6): by the account that ordered the certificate
// (kid), or by the certificate's own key (jwk).
func (s *Server) revokeCert(ctx context.Context, rq *request) (int, any, error) {
	var p struct {
		Certificate string `json:"certificate"`
		Reason      *int32 `json:"reason"`
	}
	if err := decodePayload(rq.jws.Payload, &p); err != nil {
		return 0, nil, err
	}
	der, err := b64.DecodeString(p.Certificate)
	if err != nil {
		return 0, nil, errMalformed("certificate is not base64url DER")
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return 0, nil, errMalformed("certificate does not parse")
	}
	var reason int32
	if p.Reason != nil {
		reason = *p.Reason
	}
	if !slices.Contains(revocationReasons, reason) {
		return 0, nil, errBadRevocationReason("reason %d is not accepted", reason)
	}
	serial := cert.SerialNumber.Text(16)
	cr := new(certRecord)
	_, found, err := s.get(ctx, prefixCerts+rq.dir.Name+"/"+serial, cr)
	if err != nil {
		return 0, nil, err
	}
	if !found || !bytes.Equal(cr.DER, der) {
		return 0, nil, errNotFound("no certificate issued by this directory")
	}
	rq.audit.order = cr.Order
	switch {
	case rq.acct != nil:
		if cr.Account != rq.acct.ID {
			return 0, nil, errUnauthorized("this account did not order the certificate")
		}
	default:
		want, err1 := keyThumbprint(cert.PublicKey)
		got, err2 := thumbprint(rq.jws.JWK)
		if err1 != nil || err2 != nil || want != got {
			return 0, nil, errUnauthorized("the JWS key is not the certificate's key")
		}
	}
	rec, err := s.cfg.CA.GetCertificate(ctx, &pb.GetCertificateRequest{Serial: serial})
	if err != nil {
		return 0, nil, err
	}
	if rec.GetCertificate().GetRevoked() {
		return 0, nil, errAlreadyRevoked("certificate is already revoked")
	}
	if _, err := s.cfg.CA.Revoke(ctx, &pb.RevokeRequest{Serial: serial, Reason: reason}); err != nil {
		return 0, nil, err
	}
	return http.StatusOK, nil, nil
}

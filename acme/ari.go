package acme

import (
	"bytes"
	"context"
	"crypto/x509"
	"errors"
	"math/big"
	"net/http"
	"strings"
	"time"

	"github.com/hsmgate/hsmgate/keystore"
	pb "github.com/hsmgate/hsmgate/proto/hsmgate/v1"
)

// ARI (RFC 9773): GET <dir>/renewal-info/<certID> suggests when to renew a
// certificate this directory issued: in the last third of its lifetime, or
// now (a window already open) once it is revoked. newOrder's "replaces"
// names the certificate an order renews; each certificate is replaced once.

// parseCertID splits an ARI certID: base64url(AKI keyIdentifier) "."
// base64url(DER serial content bytes).
func parseCertID(id string) (aki []byte, serial string, err error) {
	a, s, ok := strings.Cut(id, ".")
	if !ok || len(id) > 256 {
		return nil, "", errMalformed("certID is not <aki>.<serial>")
	}
	aki, err1 := b64.DecodeString(a)
	sb, err2 := b64.DecodeString(s)
	if err1 != nil || err2 != nil || len(sb) == 0 || len(sb) > 21 || sb[0]&0x80 != 0 {
		return nil, "", errMalformed("certID is not base64url AKI and positive serial")
	}
	return aki, new(big.Int).SetBytes(sb).Text(16), nil
}

// certByID finds this directory's certificate record for an ARI certID.
func (s *Server) certByID(ctx context.Context, dir, id string) (*certRecord, int64, *x509.Certificate, error) {
	aki, serial, err := parseCertID(id)
	if err != nil {
		return nil, 0, nil, err
	}
	cr := new(certRecord)
	rev, found, err := s.get(ctx, prefixCerts+dir+"/"+serial, cr)
	if err != nil {
		return nil, 0, nil, err
	}
	if !found {
		return nil, 0, nil, errNotFound("no certificate %s in this directory", truncate(id))
	}
	c, err := x509.ParseCertificate(cr.DER)
	if err != nil {
		return nil, 0, nil, err
	}
	if !bytes.Equal(c.AuthorityKeyId, aki) {
		return nil, 0, nil, errNotFound("no certificate %s in this directory", truncate(id))
	}
	return cr, rev, c, nil
}

// renewalInfo answers GET <dir>/renewal-info/<certID> (unauthenticated).
func (s *Server) renewalInfo(ctx context.Context, dir, id string) (int, any, http.Header, error) {
	_, _, c, err := s.certByID(ctx, dir, id)
	if err != nil {
		return 0, nil, nil, err
	}
	rec, err := s.cfg.CA.GetCertificate(ctx, &pb.GetCertificateRequest{Serial: c.SerialNumber.Text(16)})
	if err != nil {
		return 0, nil, nil, err
	}
	now := s.cfg.Now().UTC().Truncate(time.Second)
	var start, end time.Time
	if rec.GetCertificate().GetRevoked() {
		start, end = now.Add(-time.Hour), now
	} else {
		life := c.NotAfter.Sub(c.NotBefore)
		start, end = c.NotAfter.Add(-life/3), c.NotAfter.Add(-life/6)
	}
	h := http.Header{}
	h.Set("Retry-After", "21600")
	return http.StatusOK, map[string]any{"suggestedWindow": map[string]string{
		"start": start.Format(time.RFC3339), "end": end.Format(time.RFC3339),
	}}, h, nil
}

// claimReplaces checks newOrder's "replaces" (RFC 9773 5): a certificate
// of this account, not replaced yet, sharing an identifier with the order;
// it is then marked replaced by orderID.
func (s *Server) claimReplaces(ctx context.Context, rq *request, id string, o *order) error {
	cr, rev, c, err := s.certByID(ctx, rq.dir.Name, id)
	if err != nil {
		if p := (*Problem)(nil); errors.As(err, &p) {
			return errMalformed("replaces: %s", p.Detail)
		}
		return err
	}
	if cr.Account != rq.acct.ID {
		return errUnauthorized("replaces: not a certificate of this account")
	}
	if cr.ReplacedBy != "" {
		return problem("alreadyReplaced", http.StatusConflict, "certificate already replaced by order %s", cr.ReplacedBy)
	}
	shared := false
	for _, idn := range o.Identifiers {
		for _, n := range c.DNSNames {
			shared = shared || (idn.Type == "dns" && strings.EqualFold(n, idn.Value))
		}
		for _, a := range c.IPAddresses {
			shared = shared || (idn.Type == "ip" && a.String() == idn.Value)
		}
	}
	if !shared {
		return errMalformed("replaces: the order shares no identifier with that certificate")
	}
	cr.ReplacedBy = o.ID
	if _, err := s.put(ctx, prefixCerts+rq.dir.Name+"/"+cr.Serial, cr, rev); err != nil {
		if errors.Is(err, keystore.ErrConflict) {
			return problem("alreadyReplaced", http.StatusConflict, "certificate replaced meanwhile")
		}
		return err
	}
	return nil
}

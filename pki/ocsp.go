package pki

import (
	"bytes"
	"context"
	"crypto"
	"crypto/x509"
	"encoding/asn1"
	"errors"
	"fmt"
	"time"

	"golang.org/x/crypto/ocsp"

	"github.com/hsmgate/hsmgate/hsm"
	pb "github.com/hsmgate/hsmgate/proto/hsmgate/v1"
)

// maxOCSPRequest bounds an OCSP request body.
const maxOCSPRequest = 8 << 10

// parseOCSPRequest parses an untrusted DER OCSP request (RFC 6960 4.1).
func parseOCSPRequest(der []byte) (*ocsp.Request, error) {
	if len(der) == 0 || len(der) > maxOCSPRequest {
		return nil, fmt.Errorf("%w: OCSP request of %d bytes", ErrInvalid, len(der))
	}
	req, err := ocsp.ParseRequest(der)
	if err != nil {
		return nil, fmt.Errorf("%w: OCSP request: %v", ErrInvalid, err)
	}
	if req.SerialNumber == nil || req.SerialNumber.Sign() <= 0 {
		return nil, fmt.Errorf("%w: OCSP request without a positive serial", ErrInvalid)
	}
	switch req.HashAlgorithm {
	case crypto.SHA1, crypto.SHA256, crypto.SHA384, crypto.SHA512:
	default:
		return nil, fmt.Errorf("%w: OCSP hash algorithm %v", ErrInvalid, req.HashAlgorithm)
	}
	return req, nil
}

// OCSPResponse answers a parsed OCSP request: a signed good, revoked or
// unknown response, or ocsp.UnauthorizedErrorResponse when no issuer of ours
// matches the request's issuer hashes. nonce, the value of the request's
// nonce extension (nil: none), is echoed in the response's extensions.
func (s *Service) OCSPResponse(ctx context.Context, req *ocsp.Request, nonce []byte) ([]byte, error) {
	iss, err := s.issuerForOCSP(ctx, req)
	if err != nil {
		return nil, err
	}
	if iss == nil {
		return ocsp.UnauthorizedErrorResponse, nil
	}
	// Seconds, as the response encodes them: thisUpdate is then never
	// before a revocation (also recorded in seconds) that it reports.
	now := s.cfg.Now().UTC().Truncate(time.Second)
	tmpl := ocsp.Response{
		SerialNumber: req.SerialNumber, Status: ocsp.Unknown, IssuerHash: req.HashAlgorithm,
		ThisUpdate: now, NextUpdate: now.Add(s.cfg.OCSPValidity),
	}
	rec, _, err := s.getCertRecord(ctx, serialHex(req.SerialNumber))
	switch {
	case errors.Is(err, ErrCertNotFound):
	case err != nil:
		return nil, err
	case rec.Issuer != iss.rec.Name:
	case rec.Revoked:
		tmpl.Status, tmpl.RevokedAt, tmpl.RevocationReason = ocsp.Revoked, rec.RevocationTime.AsTime(), int(rec.RevocationReason)
	default:
		tmpl.Status = ocsp.Good
	}
	if iss.ocspCert != iss.cert {
		tmpl.Certificate = iss.ocspCert
	}
	der, err := createOCSPResponse(iss.cert, iss.ocspCert, tmpl, nonce, s.cfg.Now(), hsm.WithContext(ctx, iss.ocspSigner))
	if err != nil {
		return nil, fmt.Errorf("pki: sign OCSP response for %q: %w", iss.rec.Name, err)
	}
	return der, nil
}

// issuerForOCSP finds the active issuer whose name and key hash match the
// request (nil if none). Hashes of known issuers are cached; a miss lists
// the issuers again.
func (s *Service) issuerForOCSP(ctx context.Context, req *ocsp.Request) (*issuerRT, error) {
	k := ocspKey(req.HashAlgorithm, req.IssuerNameHash, req.IssuerKeyHash)
	if v, ok := s.ocspIndex.Load(k); ok {
		iss, err := s.loadIssuer(ctx, v.(string))
		if err != nil && !errors.Is(err, ErrIssuerNotFound) {
			return nil, err
		}
		if err == nil && iss.cert != nil {
			// The name may have been reused for another certificate: check again.
			if nh, kh, err := issuerHashes(iss.cert, req.HashAlgorithm); err == nil &&
				bytes.Equal(nh, req.IssuerNameHash) && bytes.Equal(kh, req.IssuerKeyHash) {
				return iss, nil
			}
		}
		s.ocspIndex.Delete(k)
	}
	recs, err := s.listIssuerRecords(ctx)
	if err != nil {
		return nil, err
	}
	for _, r := range recs {
		if r.State != pb.IssuerState_ISSUER_STATE_ACTIVE {
			continue
		}
		c, err := x509.ParseCertificate(r.Certificate)
		if err != nil {
			continue
		}
		nameHash, keyHash, err := issuerHashes(c, req.HashAlgorithm)
		if err != nil {
			return nil, err
		}
		if bytes.Equal(nameHash, req.IssuerNameHash) && bytes.Equal(keyHash, req.IssuerKeyHash) {
			s.ocspIndex.Store(k, r.Name)
			return s.loadIssuer(ctx, r.Name)
		}
	}
	return nil, nil
}

func issuerHashes(c *x509.Certificate, h crypto.Hash) (name, key []byte, err error) {
	var spki struct {
		Algorithm asn1.RawValue
		PublicKey asn1.BitString
	}
	if _, err := asn1.Unmarshal(c.RawSubjectPublicKeyInfo, &spki); err != nil {
		return nil, nil, fmt.Errorf("pki: issuer public key: %v", err)
	}
	hh := h.New()
	hh.Write(c.RawSubject)
	name = hh.Sum(nil)
	hh.Reset()
	hh.Write(spki.PublicKey.RightAlign())
	return name, hh.Sum(nil), nil
}

func ocspKey(h crypto.Hash, nameHash, keyHash []byte) string {
	return fmt.Sprintf("%d|%x|%x", h, nameHash, keyHash)
}

package pki

import (
	"context"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"errors"
	"fmt"
	"math/big"
	"slices"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/hsmgate/hsmgate/hsm"
	"github.com/hsmgate/hsmgate/keystore"
	pb "github.com/hsmgate/hsmgate/proto/hsmgate/v1"
)

var (
	oidDeltaCRLIndicator = asn1.ObjectIdentifier{2, 5, 29, 27}
	oidFreshestCRL       = asn1.ObjectIdentifier{2, 5, 29, 46}
)

// revocationReasons are the RFC 5280 CRLReason values Revoke accepts
// (7 is unused; 8, removeFromCRL, only appears in delta CRLs).
var revocationReasons = []int32{0, 1, 2, 3, 4, 5, 6, 9, 10}

// Revoke marks a certificate revoked and rebuilds its issuer's CRLs.
// Revoking a revoked certificate changes nothing and returns the first revocation time.
func (s *Service) Revoke(ctx context.Context, req *pb.RevokeRequest) (*pb.RevokeResponse, error) {
	serial, err := parseSerial(req.GetSerial())
	if err != nil {
		return nil, err
	}
	if !slices.Contains(revocationReasons, req.GetReason()) {
		return nil, fmt.Errorf("%w: revocation reason %d", ErrInvalid, req.GetReason())
	}
	for {
		rec, rev, err := s.getCertRecord(ctx, serial)
		if err != nil {
			return nil, err
		}
		if rec.Revoked {
			return &pb.RevokeResponse{RevocationTime: rec.RevocationTime}, nil
		}
		rec.Revoked, rec.RevocationTime, rec.RevocationReason = true, ts(s.cfg.Now().UTC().Truncate(time.Second)), req.GetReason()
		_, err = putProto(ctx, s.cfg.Store, prefixCerts+serial, rec, rev)
		if errors.Is(err, keystore.ErrConflict) {
			continue
		}
		if err != nil {
			return nil, err
		}
		idx := proto.Clone(rec).(*pb.CertificateRecord)
		idx.Certificate = nil
		if _, err := putProto(ctx, s.cfg.Store, prefixRevoked+rec.Issuer+"/"+serial, idx, keystore.AnyRevision); err != nil {
			return nil, err
		}
		if err := s.rebuildCRLs(ctx, rec.Issuer, !s.cfg.DeltaCRLOnRevoke); err != nil {
			return nil, err
		}
		return &pb.RevokeResponse{RevocationTime: rec.RevocationTime}, nil
	}
}

// crlState returns the stored CRL state of an issuer (a new one if none).
func (s *Service) crlState(ctx context.Context, issuer string) (*pb.CRLState, int64, error) {
	st := &pb.CRLState{Issuer: issuer}
	rev, err := getProto(ctx, s.cfg.Store, prefixCRL+issuer, st, keystore.ErrNotFound)
	if errors.Is(err, keystore.ErrNotFound) {
		return st, keystore.MustNotExist, nil
	}
	return st, rev, err
}

// rebuildCRLs signs a new delta CRL for the issuer, and a new full CRL
// first if full is set or there is none yet.
func (s *Service) rebuildCRLs(ctx context.Context, issuer string, full bool) error {
	s.crlMu.Lock()
	defer s.crlMu.Unlock()
	for {
		iss, err := s.loadIssuer(ctx, issuer)
		if err != nil {
			return err
		}
		if iss.cert == nil {
			return fmt.Errorf("%w: %q is pending", ErrIssuerNotActive, issuer)
		}
		st, rev, err := s.crlState(ctx, issuer)
		if err != nil {
			return err
		}
		entries, err := s.revokedEntries(ctx, issuer)
		if err != nil {
			return err
		}
		now := s.cfg.Now().UTC().Truncate(time.Second)
		if full || len(st.Full) == 0 {
			st.Number++
			der, err := s.signCRL(ctx, iss, st.Number, now, now.Add(s.cfg.CRLValidity), entries, []pkix.Extension{freshestCRL(s.issuerURL(issuer, "crl/delta"))})
			if err != nil {
				return err
			}
			st.Full, st.BaseNumber, st.BaseTime, st.FullNextUpdate = der, st.Number, ts(now), ts(now.Add(s.cfg.CRLValidity))
			st.Bases = append(st.Bases, &pb.CRLBase{Number: st.Number, ThisUpdate: ts(now), NextUpdate: ts(now.Add(s.cfg.CRLValidity))})
		}
		base := deltaBase(st, now)
		var delta []x509.RevocationListEntry
		cutoff := base.GetThisUpdate().AsTime().Add(-deltaMargin)
		for _, e := range entries {
			if !e.RevocationTime.Before(cutoff) {
				delta = append(delta, e)
			}
		}
		st.Number++
		ind, _ := asn1.Marshal(big.NewInt(base.GetNumber()))
		der, err := s.signCRL(ctx, iss, st.Number, now, now.Add(s.cfg.DeltaCRLValidity), delta, []pkix.Extension{{Id: oidDeltaCRLIndicator, Critical: true, Value: ind}})
		if err != nil {
			return err
		}
		st.Delta, st.DeltaNextUpdate = der, ts(now.Add(s.cfg.DeltaCRLValidity))
		_, err = putProto(ctx, s.cfg.Store, prefixCRL+issuer, st, rev)
		if errors.Is(err, keystore.ErrConflict) {
			continue // another replica rebuilt meanwhile; number again
		}
		return err
	}
}

// deltaMargin widens a delta CRL back before its base's thisUpdate: a
// revocation recorded while another replica built that full CRL may be
// missing from it. Listing a serial the base already has is harmless.
const deltaMargin = 5 * time.Minute

// deltaBase is the full CRL delta CRLs are made against: the oldest one
// still within its validity (a relying party may hold it), which it drops
// from st.Bases once they are past their nextUpdate; the current full CRL
// for a state from before the history was kept.
func deltaBase(st *pb.CRLState, now time.Time) *pb.CRLBase {
	live := st.Bases[:0]
	for _, b := range st.Bases {
		if b.GetNextUpdate().AsTime().After(now) {
			live = append(live, b)
		}
	}
	st.Bases = live
	if len(live) == 0 {
		return &pb.CRLBase{Number: st.BaseNumber, ThisUpdate: st.BaseTime}
	}
	return live[0]
}

func (s *Service) revokedEntries(ctx context.Context, issuer string) ([]x509.RevocationListEntry, error) {
	es, err := s.cfg.Store.List(ctx, prefixRevoked+issuer+"/")
	if err != nil {
		return nil, fmt.Errorf("pki: list revoked: %w", err)
	}
	out := make([]x509.RevocationListEntry, 0, len(es))
	for _, e := range es {
		rec := new(pb.CertificateRecord)
		if err := proto.Unmarshal(e.Value, rec); err != nil {
			return nil, fmt.Errorf("pki: decode %s: %v", e.Key, err)
		}
		n, ok := new(big.Int).SetString(rec.Serial, 16)
		if !ok {
			return nil, fmt.Errorf("pki: bad serial in %s", e.Key)
		}
		out = append(out, x509.RevocationListEntry{
			SerialNumber: n, RevocationTime: rec.RevocationTime.AsTime(), ReasonCode: int(rec.RevocationReason),
		})
	}
	return out, nil
}

func (s *Service) signCRL(ctx context.Context, iss *issuerRT, number int64, this, next time.Time, entries []x509.RevocationListEntry, ext []pkix.Extension) ([]byte, error) {
	der, err := x509.CreateRevocationList(s.cfg.Rand, &x509.RevocationList{
		Number: big.NewInt(number), ThisUpdate: this, NextUpdate: next,
		RevokedCertificateEntries: entries, ExtraExtensions: ext,
	}, iss.cert, hsm.WithContext(ctx, iss.signer))
	if err != nil {
		return nil, fmt.Errorf("pki: sign CRL of %q: %w", iss.rec.Name, err)
	}
	return der, nil
}

// freshestCRL is the Freshest CRL extension (RFC 5280 5.2.6) naming the delta CRL's URL.
func freshestCRL(url string) pkix.Extension {
	type dpName struct {
		FullName []asn1.RawValue `asn1:"optional,tag:0"`
	}
	type dp struct {
		Name dpName `asn1:"optional,tag:0"`
	}
	v, _ := asn1.Marshal([]dp{{Name: dpName{FullName: []asn1.RawValue{{Tag: 6, Class: asn1.ClassContextSpecific, Bytes: []byte(url)}}}}})
	return pkix.Extension{Id: oidFreshestCRL, Value: v}
}

// Maintain rebuilds each unexpired issuer's CRLs that are past half their
// validity (so they are always replaced before nextUpdate), and renews
// delegated OCSP responder certificates with a third of their life left.
// Run calls it.
func (s *Service) Maintain(ctx context.Context) error {
	recs, err := s.listIssuerRecords(ctx)
	if err != nil {
		return err
	}
	now := s.cfg.Now()
	var errs []error
	for _, r := range recs {
		if r.State != pb.IssuerState_ISSUER_STATE_ACTIVE || !now.Before(r.NotAfter.AsTime()) {
			continue
		}
		if s.responderDue(r) {
			if _, err := s.makeOCSPResponder(ctx, r.Name); err != nil {
				errs = append(errs, fmt.Errorf("pki: renew OCSP responder of %q: %w", r.Name, err))
			}
		}
		st, _, err := s.crlState(ctx, r.Name)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		full := len(st.Full) == 0 || !now.Before(st.FullNextUpdate.AsTime().Add(-s.cfg.CRLValidity/2))
		delta := len(st.Delta) == 0 || !now.Before(st.DeltaNextUpdate.AsTime().Add(-s.cfg.DeltaCRLValidity/2))
		if full || delta {
			if err := s.rebuildCRLs(ctx, r.Name, full); err != nil {
				errs = append(errs, err)
			}
		}
	}
	return errors.Join(errs...)
}

// CRL returns the issuer's current full (or delta) CRL in DER, building it
// first if there is none or it is past its nextUpdate.
func (s *Service) CRL(ctx context.Context, issuer string, delta bool) ([]byte, error) {
	rec, _, err := s.getIssuerRecord(ctx, issuer)
	if err != nil {
		return nil, err
	}
	for attempt := 0; ; attempt++ {
		st, _, err := s.crlState(ctx, rec.Name)
		if err != nil {
			return nil, err
		}
		der, next := st.Full, st.FullNextUpdate
		if delta {
			der, next = st.Delta, st.DeltaNextUpdate
		}
		if len(der) > 0 && s.cfg.Now().Before(next.AsTime()) || attempt > 0 {
			return der, nil
		}
		if err := s.rebuildCRLs(ctx, rec.Name, len(st.Full) == 0 || !delta); err != nil {
			return nil, err
		}
	}
}

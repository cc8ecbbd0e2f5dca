package pki

import (
	"context"
	"errors"
	"fmt"

	"google.golang.org/protobuf/proto"

	"github.com/hsmgate/hsmgate/hsm"
	"github.com/hsmgate/hsmgate/keystore"
	pb "github.com/hsmgate/hsmgate/proto/hsmgate/v1"
)

// GetIssuer returns an issuer ("default" or "": the default one).
func (s *Service) GetIssuer(ctx context.Context, req *pb.GetIssuerRequest) (*pb.GetIssuerResponse, error) {
	rec, _, err := s.getIssuerRecord(ctx, req.GetName())
	if err != nil {
		return nil, err
	}
	return &pb.GetIssuerResponse{Issuer: s.present(ctx, rec)}, nil
}

// ListIssuers returns every issuer.
func (s *Service) ListIssuers(ctx context.Context, _ *pb.ListIssuersRequest) (*pb.ListIssuersResponse, error) {
	recs, err := s.listIssuerRecords(ctx)
	if err != nil {
		return nil, err
	}
	def, _ := s.defaultIssuer(ctx)
	out := &pb.ListIssuersResponse{DefaultIssuer: def}
	for _, r := range recs {
		r.IsDefault = r.Name == def
		out.Issuers = append(out.Issuers, r)
	}
	return out, nil
}

func (s *Service) listIssuerRecords(ctx context.Context) ([]*pb.Issuer, error) {
	es, err := s.cfg.Store.List(ctx, prefixIssuers)
	if err != nil {
		return nil, fmt.Errorf("pki: list issuers: %w", err)
	}
	out := make([]*pb.Issuer, 0, len(es))
	for _, e := range es {
		r := new(pb.Issuer)
		if err := proto.Unmarshal(e.Value, r); err != nil {
			return nil, fmt.Errorf("pki: decode %s: %v", e.Key, err)
		}
		out = append(out, r)
	}
	return out, nil
}

// UpdateIssuer makes an issuer the default and/or sets its retirement. The
// default issuer cannot be retired, and a retired or pending one cannot
// become the default.
func (s *Service) UpdateIssuer(ctx context.Context, req *pb.UpdateIssuerRequest) (*pb.UpdateIssuerResponse, error) {
	if err := checkName("issuer", req.GetName()); err != nil {
		return nil, err
	}
	for {
		rec, rev, err := s.getIssuerRecord(ctx, req.GetName())
		if err != nil {
			return nil, err
		}
		def, _ := s.defaultIssuer(ctx)
		retired := rec.Retired
		if req.Retired != nil {
			retired = req.GetRetired()
		}
		if retired && (req.GetMakeDefault() || def == rec.Name) {
			return nil, fmt.Errorf("%w: %q is (to be) the default issuer; make another the default first", ErrInUse, rec.Name)
		}
		if req.GetMakeDefault() && rec.State != pb.IssuerState_ISSUER_STATE_ACTIVE {
			return nil, fmt.Errorf("%w: %q is pending", ErrIssuerNotActive, rec.Name)
		}
		if retired != rec.Retired {
			rec.Retired = retired
			if _, err := putProto(ctx, s.cfg.Store, prefixIssuers+rec.Name, rec, rev); err != nil {
				if errors.Is(err, keystore.ErrConflict) {
					continue
				}
				return nil, err
			}
		}
		if req.GetMakeDefault() {
			if err := s.setDefaultIssuer(ctx, rec.Name); err != nil {
				return nil, err
			}
		}
		return &pb.UpdateIssuerResponse{Issuer: s.present(ctx, rec)}, nil
	}
}

// DeleteIssuer removes an issuer that is not the default and has no
// unexpired certificate recorded (ErrInUse otherwise), with its CRLs and,
// if asked, its HSM keys.
func (s *Service) DeleteIssuer(ctx context.Context, req *pb.DeleteIssuerRequest) (*pb.DeleteIssuerResponse, error) {
	rec, rev, err := s.getIssuerRecord(ctx, req.GetName())
	if err != nil {
		return nil, err
	}
	if def, _ := s.defaultIssuer(ctx); def == rec.Name {
		return nil, fmt.Errorf("%w: %q is the default issuer", ErrInUse, rec.Name)
	}
	es, err := s.cfg.Store.List(ctx, prefixCerts)
	if err != nil {
		return nil, fmt.Errorf("pki: delete issuer: %w", err)
	}
	now := s.cfg.Now()
	for _, e := range es {
		c := new(pb.CertificateRecord)
		if err := proto.Unmarshal(e.Value, c); err != nil {
			return nil, fmt.Errorf("pki: decode %s: %v", e.Key, err)
		}
		if c.Issuer == rec.Name && c.Role != roleOCSPResponder && c.NotAfter.AsTime().After(now) {
			return nil, fmt.Errorf("%w: %q issued %s, valid until %s", ErrInUse, rec.Name, c.Serial, c.NotAfter.AsTime())
		}
	}
	if err := s.cfg.Store.Delete(ctx, prefixIssuers+rec.Name, rev); err != nil {
		return nil, fmt.Errorf("pki: delete issuer: %w", err)
	}
	s.forgetIssuer(rec.Name)
	keys := []string{prefixCRL + rec.Name}
	revoked, err := s.cfg.Store.List(ctx, prefixRevoked+rec.Name+"/")
	if err != nil {
		return nil, fmt.Errorf("pki: delete issuer: %w", err)
	}
	for _, e := range revoked {
		keys = append(keys, e.Key)
	}
	for _, k := range keys {
		if err := s.cfg.Store.Delete(ctx, k, keystore.AnyRevision); err != nil && !errors.Is(err, keystore.ErrNotFound) {
			return nil, fmt.Errorf("pki: delete issuer: %w", err)
		}
	}
	if req.GetDestroyKey() {
		for _, l := range []string{rec.KeyLabel, rec.OcspKeyLabel} {
			if l == "" || hsm.IsRef(l) {
				continue // an adopted key is never destroyed
			}
			if err := s.cfg.Keys.DestroyKey(ctx, l); err != nil && !errors.Is(err, hsm.ErrKeyNotFound) {
				return nil, fmt.Errorf("pki: destroy key of %q: %w", rec.Name, err)
			}
		}
	}
	return &pb.DeleteIssuerResponse{}, nil
}

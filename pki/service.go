package pki

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/hsmgate/hsmgate/keystore"
	pb "github.com/hsmgate/hsmgate/proto/hsmgate/v1"
)

// Service is the PKI engine and its gRPC service. Its methods return domain
// errors (this package's sentinels, keystore's and hsm's, wrapped); the
// server turns them into status codes.
type Service struct {
	pb.UnimplementedPKIServiceServer
	cfg     Config
	issuers issuerCache
	crlMu   sync.Mutex // serialises CRL rebuilds in this process (the store's CAS covers replicas)
	// ocspIndex maps ocspKey(hash, name hash, key hash) → issuer name.
	ocspIndex sync.Map
	metrics   *metrics // metrics.go
}

var _ pb.PKIServiceServer = (*Service)(nil)

// New returns a Service over cfg.
func New(cfg Config) (*Service, error) {
	c, err := cfg.withDefaults()
	if err != nil {
		return nil, err
	}
	return &Service{cfg: c, issuers: issuerCache{m: map[string]*issuerRT{}}, metrics: newMetrics()}, nil
}

// MaintainInterval is how often Maintain should run: Run's default, and
// the interval of the server's leader-run "pki-crl" job.
const MaintainInterval = time.Minute

// Run keeps CRLs fresh: every interval (default MaintainInterval) it calls
// Maintain, until ctx is done. Errors are logged and retried at the next
// tick. A server with replicas runs Maintain as a job of internal/leader's
// Runner instead, on the elected replica only: Maintain is idempotent (a
// CRL is rebuilt by compare-and-swap on its record when past half its
// validity), so a pass killed midway is simply run again by the next
// leader, and CRL() still builds a CRL that is past its nextUpdate on any
// replica when asked.
func (s *Service) Run(ctx context.Context, interval time.Duration) {
	if interval <= 0 {
		interval = MaintainInterval
	}
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		if err := s.Maintain(ctx); err != nil && ctx.Err() == nil {
			s.cfg.Logger.Error("pki: maintain CRLs", "err", err)
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// GetCertificate returns a certificate's record; ErrCertNotFound if absent.
func (s *Service) GetCertificate(ctx context.Context, req *pb.GetCertificateRequest) (*pb.GetCertificateResponse, error) {
	serial, err := parseSerial(req.GetSerial())
	if err != nil {
		return nil, err
	}
	rec, _, err := s.getCertRecord(ctx, serial)
	if err != nil {
		return nil, err
	}
	rec.Status = s.certStatus(rec)
	return &pb.GetCertificateResponse{Certificate: rec}, nil
}

// certStatus is a record's status now: revoked, else expired or valid by the clock.
func (s *Service) certStatus(rec *pb.CertificateRecord) pb.CertificateStatus {
	switch {
	case rec.Revoked:
		return pb.CertificateStatus_CERTIFICATE_STATUS_REVOKED
	case !s.cfg.Now().Before(rec.NotAfter.AsTime()):
		return pb.CertificateStatus_CERTIFICATE_STATUS_EXPIRED
	}
	return pb.CertificateStatus_CERTIFICATE_STATUS_VALID
}

// ListCertificates pages through records in serial order, without their DER.
func (s *Service) ListCertificates(ctx context.Context, req *pb.ListCertificatesRequest) (*pb.ListCertificatesResponse, error) {
	size := int(req.GetPageSize())
	if size <= 0 {
		size = 100
	}
	size = min(size, 1000)
	es, err := s.cfg.Store.List(ctx, prefixCerts)
	if err != nil {
		return nil, fmt.Errorf("pki: list certificates: %w", err)
	}
	out := &pb.ListCertificatesResponse{}
	for _, e := range es {
		serial := e.Key[len(prefixCerts):]
		if req.GetPageToken() != "" && serial <= req.GetPageToken() {
			continue
		}
		rec := new(pb.CertificateRecord)
		if err := proto.Unmarshal(e.Value, rec); err != nil {
			return nil, fmt.Errorf("pki: decode %s: %v", e.Key, err)
		}
		if (req.GetIssuer() != "" && rec.Issuer != req.GetIssuer()) || (req.GetRevokedOnly() && !rec.Revoked) {
			continue
		}
		if len(out.Certificates) == size {
			out.NextPageToken = out.Certificates[size-1].Serial
			break
		}
		rec.Certificate, rec.Status = nil, s.certStatus(rec)
		out.Certificates = append(out.Certificates, rec)
	}
	return out, nil
}

// Tidy removes the records of certificates that expired more than
// safety_buffer (default 72h) ago, then rebuilds the CRLs of issuers that
// lost revoked entries.
func (s *Service) Tidy(ctx context.Context, req *pb.TidyRequest) (*pb.TidyResponse, error) {
	buffer := 72 * time.Hour
	if req.GetSafetyBuffer() != nil {
		buffer = req.GetSafetyBuffer().AsDuration()
	}
	if buffer < 0 {
		return nil, fmt.Errorf("%w: negative safety_buffer", ErrInvalid)
	}
	cutoff := s.cfg.Now().Add(-buffer)
	es, err := s.cfg.Store.List(ctx, prefixCerts)
	if err != nil {
		return nil, fmt.Errorf("pki: tidy: %w", err)
	}
	out := &pb.TidyResponse{}
	touched := map[string]bool{}
	for _, e := range es {
		rec := new(pb.CertificateRecord)
		if err := proto.Unmarshal(e.Value, rec); err != nil {
			return nil, fmt.Errorf("pki: decode %s: %v", e.Key, err)
		}
		if !rec.NotAfter.AsTime().Before(cutoff) {
			continue
		}
		if rec.Revoked {
			err := s.cfg.Store.Delete(ctx, prefixRevoked+rec.Issuer+"/"+rec.Serial, keystore.AnyRevision)
			if err != nil && !errors.Is(err, keystore.ErrNotFound) {
				return nil, fmt.Errorf("pki: tidy: %w", err)
			}
			touched[rec.Issuer] = true
			out.RevokedRemoved++
		}
		if err := s.cfg.Store.Delete(ctx, e.Key, e.Revision); err != nil && !errors.Is(err, keystore.ErrNotFound) {
			if errors.Is(err, keystore.ErrConflict) {
				continue // changed meanwhile (e.g. revoked): next tidy
			}
			return nil, fmt.Errorf("pki: tidy: %w", err)
		}
		out.CertificatesRemoved++
	}
	for name := range touched {
		if err := s.rebuildCRLs(ctx, name, true); err != nil && !errors.Is(err, ErrIssuerNotFound) {
			return nil, err
		}
	}
	return out, nil
}

func ts(t time.Time) *timestamppb.Timestamp { return timestamppb.New(t) }

package transit

import (
	"context"
	"errors"
	"fmt"
	"io"

	"github.com/hsmgate/hsmgate/internal/limits"
	pb "github.com/hsmgate/hsmgate/proto/hsmgate/v1"
)

// DefaultMaxItems is the default limit of items in one data request (or
// one stream message), shared with the other engines and the config file.
const DefaultMaxItems = limits.MaxItemsPerRequest

// ServiceConfig tunes the gRPC service.
type ServiceConfig struct {
	// MaxItems is the most items one request or stream message may carry
	// (default DefaultMaxItems); more is ResourceExhausted.
	MaxItems int
	// MaxItemBytes bounds each item's payload (plaintext, ciphertext,
	// input) in bytes (default DefaultMaxItemBytes); a larger item fails
	// the whole request with ResourceExhausted before any work is done.
	MaxItemBytes int
}

// DefaultMaxItemBytes is the default limit of one item's payload.
const DefaultMaxItemBytes = limits.MaxItemBytes

// Service implements pb.TransitServiceServer over an Engine. Handlers
// return domain errors; the server's interceptor maps them to status codes
// through errs.GRPCStatus. Per-item errors are already google.rpc.Status
// values inside the results.
type Service struct {
	pb.UnimplementedTransitServiceServer
	e            *Engine
	maxItems     int
	maxItemBytes int
}

var _ pb.TransitServiceServer = (*Service)(nil)

// NewService returns the TransitService for e.
func NewService(e *Engine, cfg ServiceConfig) *Service {
	if cfg.MaxItems <= 0 {
		cfg.MaxItems = DefaultMaxItems
	}
	if cfg.MaxItemBytes <= 0 {
		cfg.MaxItemBytes = DefaultMaxItemBytes
	}
	return &Service{e: e, maxItems: cfg.MaxItems, maxItemBytes: cfg.MaxItemBytes}
}

// checkItems enforces the item count and per-item size limits.
func checkItems[T any](s *Service, items []T, size func(T) int) error {
	n := len(items)
	if n == 0 {
		return fmt.Errorf("%w: no items", ErrInvalid)
	}
	if n > s.maxItems {
		return fmt.Errorf("%w: %d items, limit %d", ErrTooMany, n, s.maxItems)
	}
	for i, it := range items {
		if l := size(it); l > s.maxItemBytes {
			return fmt.Errorf("%w: item %d has %d bytes, limit %d", ErrTooMany, i, l, s.maxItemBytes)
		}
	}
	return nil
}

func (s *Service) CreateKey(ctx context.Context, req *pb.CreateKeyRequest) (*pb.CreateKeyResponse, error) {
	k, err := s.e.CreateKey(ctx, req)
	if err != nil {
		return nil, err
	}
	return &pb.CreateKeyResponse{Key: k}, nil
}

func (s *Service) GetKey(ctx context.Context, req *pb.GetKeyRequest) (*pb.GetKeyResponse, error) {
	if err := checkName(req.GetName()); err != nil {
		return nil, err
	}
	k, err := s.e.GetKey(ctx, req.GetName())
	if err != nil {
		return nil, err
	}
	return &pb.GetKeyResponse{Key: k}, nil
}

func (s *Service) ListKeys(ctx context.Context, req *pb.ListKeysRequest) (*pb.ListKeysResponse, error) {
	names, next, err := s.e.ListKeys(ctx, int(req.GetPageSize()), req.GetPageToken())
	if err != nil {
		return nil, err
	}
	return &pb.ListKeysResponse{Names: names, NextPageToken: next}, nil
}

func (s *Service) UpdateKeyConfig(ctx context.Context, req *pb.UpdateKeyConfigRequest) (*pb.UpdateKeyConfigResponse, error) {
	k, err := s.e.UpdateKeyConfig(ctx, req)
	if err != nil {
		return nil, err
	}
	return &pb.UpdateKeyConfigResponse{Key: k}, nil
}

func (s *Service) RotateKey(ctx context.Context, req *pb.RotateKeyRequest) (*pb.RotateKeyResponse, error) {
	k, err := s.e.RotateKey(ctx, req.GetName())
	if err != nil {
		return nil, err
	}
	return &pb.RotateKeyResponse{Key: k}, nil
}

func (s *Service) DisableKeyVersion(ctx context.Context, req *pb.DisableKeyVersionRequest) (*pb.DisableKeyVersionResponse, error) {
	k, err := s.e.SetVersionEnabled(ctx, req.GetName(), req.GetVersion(), false)
	if err != nil {
		return nil, err
	}
	return &pb.DisableKeyVersionResponse{Key: k}, nil
}

func (s *Service) EnableKeyVersion(ctx context.Context, req *pb.EnableKeyVersionRequest) (*pb.EnableKeyVersionResponse, error) {
	k, err := s.e.SetVersionEnabled(ctx, req.GetName(), req.GetVersion(), true)
	if err != nil {
		return nil, err
	}
	return &pb.EnableKeyVersionResponse{Key: k}, nil
}

func (s *Service) TrimKey(ctx context.Context, req *pb.TrimKeyRequest) (*pb.TrimKeyResponse, error) {
	k, err := s.e.TrimKey(ctx, req.GetName(), req.GetMinAvailableVersion())
	if err != nil {
		return nil, err
	}
	return &pb.TrimKeyResponse{Key: k}, nil
}

func (s *Service) DeleteKey(ctx context.Context, req *pb.DeleteKeyRequest) (*pb.DeleteKeyResponse, error) {
	if err := s.e.DeleteKey(ctx, req.GetName()); err != nil {
		return nil, err
	}
	return &pb.DeleteKeyResponse{}, nil
}

func (s *Service) ExportKey(ctx context.Context, req *pb.ExportKeyRequest) (*pb.ExportKeyResponse, error) {
	return s.e.ExportKey(ctx, req.GetName(), req.GetVersion())
}

func (s *Service) BackupKey(ctx context.Context, req *pb.BackupKeyRequest) (*pb.BackupKeyResponse, error) {
	b, err := s.e.BackupKey(ctx, req.GetName())
	if err != nil {
		return nil, err
	}
	return &pb.BackupKeyResponse{Backup: b}, nil
}

func (s *Service) RestoreKey(ctx context.Context, req *pb.RestoreKeyRequest) (*pb.RestoreKeyResponse, error) {
	k, err := s.e.RestoreKey(ctx, req.GetBackup(), req.GetName())
	if err != nil {
		return nil, err
	}
	return &pb.RestoreKeyResponse{Key: k}, nil
}

func (s *Service) GetWrappingKey(ctx context.Context, _ *pb.GetWrappingKeyRequest) (*pb.GetWrappingKeyResponse, error) {
	p, err := s.e.GetWrappingKey(ctx)
	if err != nil {
		return nil, err
	}
	return &pb.GetWrappingKeyResponse{PublicKeyPem: p}, nil
}

func (s *Service) ImportKey(ctx context.Context, req *pb.ImportKeyRequest) (*pb.ImportKeyResponse, error) {
	k, err := s.e.ImportKey(ctx, req)
	if err != nil {
		return nil, err
	}
	return &pb.ImportKeyResponse{Key: k}, nil
}

func (s *Service) Encrypt(ctx context.Context, req *pb.EncryptRequest) (*pb.EncryptResponse, error) {
	if err := checkItems(s, req.GetItems(), func(it *pb.EncryptItem) int {
		return len(it.GetPlaintext()) + len(it.GetAssociatedData()) + len(it.GetContext())
	}); err != nil {
		return nil, err
	}
	return s.e.Encrypt(ctx, req)
}

func (s *Service) Decrypt(ctx context.Context, req *pb.DecryptRequest) (*pb.DecryptResponse, error) {
	if err := checkItems(s, req.GetItems(), func(it *pb.DecryptItem) int {
		return len(it.GetCiphertext()) + len(it.GetAssociatedData()) + len(it.GetContext())
	}); err != nil {
		return nil, err
	}
	return s.e.Decrypt(ctx, req)
}

func (s *Service) Rewrap(ctx context.Context, req *pb.RewrapRequest) (*pb.RewrapResponse, error) {
	if err := checkItems(s, req.GetItems(), func(it *pb.RewrapItem) int {
		return len(it.GetCiphertext()) + len(it.GetAssociatedData()) + len(it.GetContext())
	}); err != nil {
		return nil, err
	}
	return s.e.Rewrap(ctx, req)
}

func (s *Service) GenerateDataKey(ctx context.Context, req *pb.GenerateDataKeyRequest) (*pb.GenerateDataKeyResponse, error) {
	if err := checkItems(s, req.GetItems(), func(it *pb.DataKeyItem) int { return len(it.GetAssociatedData()) + len(it.GetContext()) }); err != nil {
		return nil, err
	}
	return s.e.GenerateDataKey(ctx, req)
}

func (s *Service) SignData(ctx context.Context, req *pb.SignDataRequest) (*pb.SignDataResponse, error) {
	if err := checkItems(s, req.GetItems(), func(it *pb.SignItem) int { return len(it.GetInput()) }); err != nil {
		return nil, err
	}
	return s.e.SignData(ctx, req)
}

func (s *Service) VerifySignature(ctx context.Context, req *pb.VerifySignatureRequest) (*pb.VerifySignatureResponse, error) {
	if err := checkItems(s, req.GetItems(), func(it *pb.VerifyItem) int { return len(it.GetInput()) + len(it.GetSignature()) }); err != nil {
		return nil, err
	}
	return s.e.VerifySignature(ctx, req)
}

func (s *Service) ComputeHmac(ctx context.Context, req *pb.ComputeHmacRequest) (*pb.ComputeHmacResponse, error) {
	if err := checkItems(s, req.GetItems(), func(it *pb.HmacItem) int { return len(it.GetInput()) }); err != nil {
		return nil, err
	}
	return s.e.ComputeHmac(ctx, req)
}

func (s *Service) VerifyHmac(ctx context.Context, req *pb.VerifyHmacRequest) (*pb.VerifyHmacResponse, error) {
	if err := checkItems(s, req.GetItems(), func(it *pb.VerifyHmacItem) int { return len(it.GetInput()) + len(it.GetHmac()) }); err != nil {
		return nil, err
	}
	return s.e.VerifyHmac(ctx, req)
}

func (s *Service) GenerateRandom(ctx context.Context, req *pb.GenerateRandomRequest) (*pb.GenerateRandomResponse, error) {
	b, err := s.e.GenerateRandom(ctx, int(req.GetBytes()))
	if err != nil {
		return nil, err
	}
	return &pb.GenerateRandomResponse{Random: b}, nil
}

// EncryptStream answers each batch message with one response, in order. A
// whole-batch error (unknown key, too many items, internal fault) ends the
// stream with that error; per-item errors are in the results as usual.
func (s *Service) EncryptStream(stream pb.TransitService_EncryptStreamServer) error {
	ctx := stream.Context()
	for {
		m, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return err
		}
		resp, err := s.Encrypt(ctx, m.GetRequest())
		if err != nil {
			return err
		}
		if err := stream.Send(&pb.EncryptStreamResponse{Response: resp}); err != nil {
			return err
		}
	}
}

// DecryptStream is EncryptStream for Decrypt.
func (s *Service) DecryptStream(stream pb.TransitService_DecryptStreamServer) error {
	ctx := stream.Context()
	for {
		m, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return err
		}
		resp, err := s.Decrypt(ctx, m.GetRequest())
		if err != nil {
			return err
		}
		if err := stream.Send(&pb.DecryptStreamResponse{Response: resp}); err != nil {
			return err
		}
	}
}

package sshca

import (
	"context"

	"google.golang.org/protobuf/types/known/timestamppb"

	pb "github.com/hsmgate/hsmgate/proto/hsmgate/v1"
)

// Service is the SSHCAService gRPC front of an Engine. Handlers return the
// engine's domain errors as they are: the auth interceptor maps them to a
// status (errs.GRPCStatus) and logs an Internal one with its cause and the
// request id, which a status made here would have lost.
type Service struct {
	pb.UnimplementedSSHCAServiceServer
	e *Engine
}

var _ pb.SSHCAServiceServer = (*Service)(nil)

// NewService returns the gRPC service over e.
func NewService(e *Engine) *Service { return &Service{e: e} }

func (s *Service) CreateSSHCA(ctx context.Context, req *pb.CreateSSHCARequest) (*pb.CreateSSHCAResponse, error) {
	ca, err := s.e.CreateCA(ctx, req)
	if err != nil {
		return nil, err
	}
	return &pb.CreateSSHCAResponse{Ca: ca}, nil
}

func (s *Service) GetSSHCA(ctx context.Context, req *pb.GetSSHCARequest) (*pb.GetSSHCAResponse, error) {
	ca, err := s.e.GetCA(ctx, req.GetName())
	if err != nil {
		return nil, err
	}
	return &pb.GetSSHCAResponse{Ca: ca}, nil
}

func (s *Service) ListSSHCAs(ctx context.Context, _ *pb.ListSSHCAsRequest) (*pb.ListSSHCAsResponse, error) {
	cas, err := s.e.ListCAs(ctx)
	if err != nil {
		return nil, err
	}
	return &pb.ListSSHCAsResponse{Cas: cas}, nil
}

func (s *Service) RotateSSHCA(ctx context.Context, req *pb.RotateSSHCARequest) (*pb.RotateSSHCAResponse, error) {
	ca, err := s.e.RotateCA(ctx, req.GetName(), req.GetKeyType())
	if err != nil {
		return nil, err
	}
	return &pb.RotateSSHCAResponse{Ca: ca}, nil
}

func (s *Service) RetireSSHCAKey(ctx context.Context, req *pb.RetireSSHCAKeyRequest) (*pb.RetireSSHCAKeyResponse, error) {
	ca, err := s.e.RetireCAKey(ctx, req.GetName(), req.GetVersion())
	if err != nil {
		return nil, err
	}
	return &pb.RetireSSHCAKeyResponse{Ca: ca}, nil
}

func (s *Service) ListSSHCAPublicKeys(ctx context.Context, req *pb.ListSSHCAPublicKeysRequest) (*pb.ListSSHCAPublicKeysResponse, error) {
	keys, err := s.e.PublicKeys(ctx, req.GetName(), req.GetCertType())
	if err != nil {
		return nil, err
	}
	return &pb.ListSSHCAPublicKeysResponse{Keys: keys}, nil
}

func (s *Service) CreateSSHRole(ctx context.Context, req *pb.CreateSSHRoleRequest) (*pb.CreateSSHRoleResponse, error) {
	r, err := s.e.CreateRole(ctx, req.GetRole())
	if err != nil {
		return nil, err
	}
	return &pb.CreateSSHRoleResponse{Role: r}, nil
}

func (s *Service) GetSSHRole(ctx context.Context, req *pb.GetSSHRoleRequest) (*pb.GetSSHRoleResponse, error) {
	r, err := s.e.GetRole(ctx, req.GetName())
	if err != nil {
		return nil, err
	}
	return &pb.GetSSHRoleResponse{Role: r}, nil
}

func (s *Service) UpdateSSHRole(ctx context.Context, req *pb.UpdateSSHRoleRequest) (*pb.UpdateSSHRoleResponse, error) {
	r, err := s.e.UpdateRole(ctx, req.GetRole())
	if err != nil {
		return nil, err
	}
	return &pb.UpdateSSHRoleResponse{Role: r}, nil
}

func (s *Service) DeleteSSHRole(ctx context.Context, req *pb.DeleteSSHRoleRequest) (*pb.DeleteSSHRoleResponse, error) {
	if err := s.e.DeleteRole(ctx, req.GetName()); err != nil {
		return nil, err
	}
	return &pb.DeleteSSHRoleResponse{}, nil
}

func (s *Service) ListSSHRoles(ctx context.Context, _ *pb.ListSSHRolesRequest) (*pb.ListSSHRolesResponse, error) {
	rs, err := s.e.ListRoles(ctx)
	if err != nil {
		return nil, err
	}
	return &pb.ListSSHRolesResponse{Roles: rs}, nil
}

func (s *Service) SignUserKey(ctx context.Context, req *pb.SignUserKeyRequest) (*pb.SignUserKeyResponse, error) {
	res, err := s.e.Sign(ctx, pb.SSHCertType_SSH_CERT_TYPE_USER, req.GetRole(), req.GetItems())
	if err != nil {
		return nil, err
	}
	return &pb.SignUserKeyResponse{Results: res}, nil
}

func (s *Service) SignHostKey(ctx context.Context, req *pb.SignHostKeyRequest) (*pb.SignHostKeyResponse, error) {
	res, err := s.e.Sign(ctx, pb.SSHCertType_SSH_CERT_TYPE_HOST, req.GetRole(), req.GetItems())
	if err != nil {
		return nil, err
	}
	return &pb.SignHostKeyResponse{Results: res}, nil
}

func (s *Service) RevokeSSH(ctx context.Context, req *pb.RevokeSSHRequest) (*pb.RevokeSSHResponse, error) {
	v, err := s.e.Revoke(ctx, req)
	if err != nil {
		return nil, err
	}
	return &pb.RevokeSSHResponse{KrlVersion: v}, nil
}

func (s *Service) GetKRL(ctx context.Context, _ *pb.GetKRLRequest) (*pb.GetKRLResponse, error) {
	data, v, t, err := s.e.KRL(ctx)
	if err != nil {
		return nil, err
	}
	return &pb.GetKRLResponse{Krl: data, KrlVersion: v, GenerateTime: timestamppb.New(t)}, nil
}

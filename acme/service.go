package acme

import (
	"context"
	"fmt"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/hsmgate/hsmgate/internal/auth"
	pb "github.com/hsmgate/hsmgate/proto/hsmgate/v1"
)

// Service is the ACMEService gRPC service (administration) over a Server.
type Service struct {
	pb.UnimplementedACMEServiceServer
	s *Server
}

var _ pb.ACMEServiceServer = (*Service)(nil)

// NewService returns the admin service of s.
func NewService(s *Server) *Service { return &Service{s: s} }

func (v *Service) toPB(d *Directory) *pb.ACMEDirectory {
	return &pb.ACMEDirectory{
		Name: d.Name, Role: d.Role, EabRequired: d.EABRequired, AllowedChallenges: d.AllowedChallenges,
		TermsOfService: d.TermsOfService, Url: v.s.url(d.Name, "directory"),
	}
}

// WriteDirectory creates or replaces a directory.
func (v *Service) WriteDirectory(ctx context.Context, req *pb.WriteDirectoryRequest) (*pb.WriteDirectoryResponse, error) {
	in := req.GetDirectory()
	d := &Directory{
		Name: in.GetName(), Role: in.GetRole(), EABRequired: in.GetEabRequired(),
		AllowedChallenges: in.GetAllowedChallenges(), TermsOfService: in.GetTermsOfService(),
	}
	if err := v.s.WriteDirectory(ctx, d); err != nil {
		return nil, err
	}
	return &pb.WriteDirectoryResponse{Directory: v.toPB(d)}, nil
}

// GetDirectory returns one directory.
func (v *Service) GetDirectory(ctx context.Context, req *pb.GetDirectoryRequest) (*pb.GetDirectoryResponse, error) {
	d, found, err := v.s.GetDirectory(ctx, req.GetName())
	if err != nil {
		return nil, err
	}
	if !found {
		return nil, fmt.Errorf("%w: %q", ErrDirectoryNotFound, truncate(req.GetName()))
	}
	return &pb.GetDirectoryResponse{Directory: v.toPB(d)}, nil
}

// ListDirectories returns every directory.
func (v *Service) ListDirectories(ctx context.Context, _ *pb.ListDirectoriesRequest) (*pb.ListDirectoriesResponse, error) {
	ds, err := v.s.ListDirectories(ctx)
	if err != nil {
		return nil, err
	}
	out := &pb.ListDirectoriesResponse{}
	for _, d := range ds {
		out.Directories = append(out.Directories, v.toPB(d))
	}
	return out, nil
}

// CreateEABKey makes a single-use EAB key.
func (v *Service) CreateEABKey(ctx context.Context, req *pb.CreateEABKeyRequest) (*pb.CreateEABKeyResponse, error) {
	kid, key, err := v.s.CreateEAB(ctx, req.GetDirectory(), &EABPolicy{
		AllowedDomains: req.GetAllowedDomains(), MaxOrdersPerDay: int(req.GetMaxOrdersPerDay()),
	})
	if err != nil {
		return nil, err
	}
	return &pb.CreateEABKeyResponse{KeyId: kid, HmacKey: key, CreateTime: timestamppb.New(v.s.cfg.Now())}, nil
}

// AuthTable maps every ACMEService method to its capability on
// acme/directories/<name>: writing a directory is create (it decides which
// role ACME clients issue from); minting an EAB key is update on the directory.
func AuthTable() auth.Table {
	const svc = "/hsmgate.v1.ACMEService/"
	dir := func(get func(proto.Message) string) func(proto.Message) (string, error) {
		return func(m proto.Message) (string, error) {
			n := get(m)
			if !nameRE.MatchString(n) {
				return "", fmt.Errorf("%w: directory name %q", ErrInvalid, truncate(n))
			}
			return "acme/directories/" + n, nil
		}
	}
	return auth.Table{
		svc + "WriteDirectory": {Capability: auth.CapCreate, Resource: dir(func(m proto.Message) string {
			return m.(*pb.WriteDirectoryRequest).GetDirectory().GetName()
		})},
		svc + "GetDirectory":    {Capability: auth.CapRead, Resource: dir(func(m proto.Message) string { return m.(*pb.GetDirectoryRequest).GetName() })},
		svc + "ListDirectories": {Capability: auth.CapList, Path: "acme/directories"},
		svc + "CreateEABKey":    {Capability: auth.CapUpdate, Resource: dir(func(m proto.Message) string { return m.(*pb.CreateEABKeyRequest).GetDirectory() })},
	}
}

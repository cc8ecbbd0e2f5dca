package auth

import (
	"context"
	"fmt"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/hsmgate/hsmgate/keystore"
	hsmgatev1 "github.com/hsmgate/hsmgate/proto/hsmgate/v1"
)

// MethodsConfig configures the three login methods.
type MethodsConfig struct {
	AppRole    AppRoleConfig
	Kubernetes KubernetesConfig
	Cert       CertAuthConfig
}

// Methods holds the login methods and the AuthMethodService over them.
type Methods struct {
	AppRoles   *AppRoles
	Kubernetes *KubernetesAuth
	Cert       *CertAuth
	Service    *MethodService
}

// NewMethods builds the AppRole, Kubernetes and certificate methods over
// store, issuing tokens with tokens (Auth.Tokens), and their service. ctx
// bounds remote JWKS fetches.
func NewMethods(ctx context.Context, cfg MethodsConfig, store keystore.Store, tokens *Tokens) (*Methods, error) {
	ar, err := NewAppRoles(cfg.AppRole, store, tokens)
	if err != nil {
		return nil, err
	}
	k, err := NewKubernetesAuth(ctx, cfg.Kubernetes, store, tokens)
	if err != nil {
		return nil, err
	}
	c, err := NewCertAuth(cfg.Cert, store, tokens)
	if err != nil {
		return nil, err
	}
	return &Methods{AppRoles: ar, Kubernetes: k, Cert: c, Service: NewMethodService(ar, k, c)}, nil
}

// MethodService implements hsmgate.v1.AuthMethodService. Register it with
// hsmgatev1.RegisterAuthMethodServiceServer and add AuthMethodTable() to the
// interceptor's table.
type MethodService struct {
	hsmgatev1.UnimplementedAuthMethodServiceServer
	approle *AppRoles
	k8s     *KubernetesAuth
	cert    *CertAuth
}

var _ hsmgatev1.AuthMethodServiceServer = (*MethodService)(nil)

// NewMethodService returns the AuthMethodService.
func NewMethodService(a *AppRoles, k *KubernetesAuth, c *CertAuth) *MethodService {
	return &MethodService{approle: a, k8s: k, cert: c}
}

// AuthMethodTable is the rule table of AuthMethodService.
func AuthMethodTable() Table {
	named := func(prefix, suffix string, name func(proto.Message) string) func(proto.Message) (string, error) {
		return func(m proto.Message) (string, error) {
			n := name(m)
			if !ValidName(n) {
				return "", fmt.Errorf("%w: role name %q", ErrInvalid, truncate(n, 64))
			}
			return prefix + n + suffix, nil
		}
	}
	appRole := named("auth/approle/roles/", "", func(m proto.Message) string {
		switch r := m.(type) {
		case *hsmgatev1.WriteAppRoleRequest:
			return r.GetRole().GetName()
		case *hsmgatev1.ReadAppRoleRequest:
			return r.GetName()
		case *hsmgatev1.DeleteAppRoleRequest:
			return r.GetName()
		}
		return ""
	})
	secretID := named("auth/approle/roles/", "/secret-id", func(m proto.Message) string {
		switch r := m.(type) {
		case *hsmgatev1.CreateSecretIDRequest:
			return r.GetRoleName()
		case *hsmgatev1.ListSecretIDsRequest:
			return r.GetRoleName()
		case *hsmgatev1.DestroySecretIDRequest:
			return r.GetRoleName()
		}
		return ""
	})
	k8sRole := named("auth/kubernetes/roles/", "", func(m proto.Message) string {
		switch r := m.(type) {
		case *hsmgatev1.WriteKubernetesRoleRequest:
			return r.GetRole().GetName()
		case *hsmgatev1.ReadKubernetesRoleRequest:
			return r.GetName()
		case *hsmgatev1.DeleteKubernetesRoleRequest:
			return r.GetName()
		}
		return ""
	})
	certRole := named("auth/cert/roles/", "", func(m proto.Message) string {
		switch r := m.(type) {
		case *hsmgatev1.WriteCertRoleRequest:
			return r.GetRole().GetName()
		case *hsmgatev1.ReadCertRoleRequest:
			return r.GetName()
		case *hsmgatev1.DeleteCertRoleRequest:
			return r.GetName()
		}
		return ""
	})
	return Table{
		hsmgatev1.AuthMethodService_WriteAppRole_FullMethodName:    {Capability: CapAdmin, Resource: appRole},
		hsmgatev1.AuthMethodService_ReadAppRole_FullMethodName:     {Capability: CapRead, Resource: appRole},
		hsmgatev1.AuthMethodService_ListAppRoles_FullMethodName:    {Capability: CapList, Path: "auth/approle/roles"},
		hsmgatev1.AuthMethodService_DeleteAppRole_FullMethodName:   {Capability: CapAdmin, Resource: appRole},
		hsmgatev1.AuthMethodService_CreateSecretID_FullMethodName:  {Capability: CapCreate, Resource: secretID},
		hsmgatev1.AuthMethodService_ListSecretIDs_FullMethodName:   {Capability: CapList, Resource: secretID},
		hsmgatev1.AuthMethodService_DestroySecretID_FullMethodName: {Capability: CapDelete, Resource: secretID},

		hsmgatev1.AuthMethodService_WriteKubernetesConfig_FullMethodName: {Capability: CapAdmin, Path: "auth/kubernetes/config"},
		hsmgatev1.AuthMethodService_ReadKubernetesConfig_FullMethodName:  {Capability: CapRead, Path: "auth/kubernetes/config"},
		hsmgatev1.AuthMethodService_WriteKubernetesRole_FullMethodName:   {Capability: CapAdmin, Resource: k8sRole},
		hsmgatev1.AuthMethodService_ReadKubernetesRole_FullMethodName:    {Capability: CapRead, Resource: k8sRole},
		hsmgatev1.AuthMethodService_ListKubernetesRoles_FullMethodName:   {Capability: CapList, Path: "auth/kubernetes/roles"},
		hsmgatev1.AuthMethodService_DeleteKubernetesRole_FullMethodName:  {Capability: CapAdmin, Resource: k8sRole},

		hsmgatev1.AuthMethodService_WriteCertRole_FullMethodName:  {Capability: CapAdmin, Resource: certRole},
		hsmgatev1.AuthMethodService_ReadCertRole_FullMethodName:   {Capability: CapRead, Resource: certRole},
		hsmgatev1.AuthMethodService_ListCertRoles_FullMethodName:  {Capability: CapList, Path: "auth/cert/roles"},
		hsmgatev1.AuthMethodService_DeleteCertRole_FullMethodName: {Capability: CapAdmin, Resource: certRole},
	}
}

// TidyEvery deletes expired and orphaned secret IDs every interval until ctx is done.
func (m *Methods) TidyEvery(ctx context.Context, interval time.Duration) {
	m.AppRoles.TidyEvery(ctx, interval)
}

func (s *MethodService) WriteAppRole(ctx context.Context, req *hsmgatev1.WriteAppRoleRequest) (*hsmgatev1.WriteAppRoleResponse, error) {
	r, err := s.approle.Write(ctx, req.GetRole())
	if err != nil {
		return nil, err
	}
	return &hsmgatev1.WriteAppRoleResponse{Role: r}, nil
}

func (s *MethodService) ReadAppRole(ctx context.Context, req *hsmgatev1.ReadAppRoleRequest) (*hsmgatev1.ReadAppRoleResponse, error) {
	r, err := s.approle.Read(ctx, req.GetName())
	if err != nil {
		return nil, err
	}
	return &hsmgatev1.ReadAppRoleResponse{Role: r}, nil
}

func (s *MethodService) ListAppRoles(ctx context.Context, _ *hsmgatev1.ListAppRolesRequest) (*hsmgatev1.ListAppRolesResponse, error) {
	names, err := s.approle.List(ctx)
	if err != nil {
		return nil, err
	}
	return &hsmgatev1.ListAppRolesResponse{Names: names}, nil
}

func (s *MethodService) DeleteAppRole(ctx context.Context, req *hsmgatev1.DeleteAppRoleRequest) (*hsmgatev1.DeleteAppRoleResponse, error) {
	if err := s.approle.Delete(ctx, req.GetName()); err != nil {
		return nil, err
	}
	return &hsmgatev1.DeleteAppRoleResponse{}, nil
}

func (s *MethodService) CreateSecretID(ctx context.Context, req *hsmgatev1.CreateSecretIDRequest) (*hsmgatev1.CreateSecretIDResponse, error) {
	secret, info, err := s.approle.CreateSecretID(ctx, req.GetRoleName(), req.GetMetadata(), req.GetCidrs())
	if err != nil {
		return nil, err
	}
	return &hsmgatev1.CreateSecretIDResponse{SecretId: secret, Info: info}, nil
}

func (s *MethodService) ListSecretIDs(ctx context.Context, req *hsmgatev1.ListSecretIDsRequest) (*hsmgatev1.ListSecretIDsResponse, error) {
	ids, err := s.approle.ListSecretIDs(ctx, req.GetRoleName())
	if err != nil {
		return nil, err
	}
	return &hsmgatev1.ListSecretIDsResponse{SecretIds: ids}, nil
}

func (s *MethodService) DestroySecretID(ctx context.Context, req *hsmgatev1.DestroySecretIDRequest) (*hsmgatev1.DestroySecretIDResponse, error) {
	if err := s.approle.DestroySecretID(ctx, req.GetRoleName(), req.GetAccessor()); err != nil {
		return nil, err
	}
	return &hsmgatev1.DestroySecretIDResponse{}, nil
}

func (s *MethodService) WriteKubernetesConfig(ctx context.Context, req *hsmgatev1.WriteKubernetesConfigRequest) (*hsmgatev1.WriteKubernetesConfigResponse, error) {
	c, err := s.k8s.WriteConfig(ctx, req.GetConfig())
	if err != nil {
		return nil, err
	}
	return &hsmgatev1.WriteKubernetesConfigResponse{Config: c}, nil
}

func (s *MethodService) ReadKubernetesConfig(ctx context.Context, _ *hsmgatev1.ReadKubernetesConfigRequest) (*hsmgatev1.ReadKubernetesConfigResponse, error) {
	c, err := s.k8s.ReadConfig(ctx)
	if err != nil {
		return nil, err
	}
	return &hsmgatev1.ReadKubernetesConfigResponse{Config: c}, nil
}

func (s *MethodService) WriteKubernetesRole(ctx context.Context, req *hsmgatev1.WriteKubernetesRoleRequest) (*hsmgatev1.WriteKubernetesRoleResponse, error) {
	r, err := s.k8s.WriteRole(ctx, req.GetRole())
	if err != nil {
		return nil, err
	}
	return &hsmgatev1.WriteKubernetesRoleResponse{Role: r}, nil
}

func (s *MethodService) ReadKubernetesRole(ctx context.Context, req *hsmgatev1.ReadKubernetesRoleRequest) (*hsmgatev1.ReadKubernetesRoleResponse, error) {
	r, err := s.k8s.ReadRole(ctx, req.GetName())
	if err != nil {
		return nil, err
	}
	return &hsmgatev1.ReadKubernetesRoleResponse{Role: r}, nil
}

func (s *MethodService) ListKubernetesRoles(ctx context.Context, _ *hsmgatev1.ListKubernetesRolesRequest) (*hsmgatev1.ListKubernetesRolesResponse, error) {
	names, err := s.k8s.ListRoles(ctx)
	if err != nil {
		return nil, err
	}
	return &hsmgatev1.ListKubernetesRolesResponse{Names: names}, nil
}

func (s *MethodService) DeleteKubernetesRole(ctx context.Context, req *hsmgatev1.DeleteKubernetesRoleRequest) (*hsmgatev1.DeleteKubernetesRoleResponse, error) {
	if err := s.k8s.DeleteRole(ctx, req.GetName()); err != nil {
		return nil, err
	}
	return &hsmgatev1.DeleteKubernetesRoleResponse{}, nil
}

func (s *MethodService) WriteCertRole(ctx context.Context, req *hsmgatev1.WriteCertRoleRequest) (*hsmgatev1.WriteCertRoleResponse, error) {
	r, err := s.cert.WriteRole(ctx, req.GetRole())
	if err != nil {
		return nil, err
	}
	return &hsmgatev1.WriteCertRoleResponse{Role: r}, nil
}

func (s *MethodService) ReadCertRole(ctx context.Context, req *hsmgatev1.ReadCertRoleRequest) (*hsmgatev1.ReadCertRoleResponse, error) {
	r, err := s.cert.ReadRole(ctx, req.GetName())
	if err != nil {
		return nil, err
	}
	return &hsmgatev1.ReadCertRoleResponse{Role: r}, nil
}

func (s *MethodService) ListCertRoles(ctx context.Context, _ *hsmgatev1.ListCertRolesRequest) (*hsmgatev1.ListCertRolesResponse, error) {
	names, err := s.cert.ListRoles(ctx)
	if err != nil {
		return nil, err
	}
	return &hsmgatev1.ListCertRolesResponse{Names: names}, nil
}

func (s *MethodService) DeleteCertRole(ctx context.Context, req *hsmgatev1.DeleteCertRoleRequest) (*hsmgatev1.DeleteCertRoleResponse, error) {
	if err := s.cert.DeleteRole(ctx, req.GetName()); err != nil {
		return nil, err
	}
	return &hsmgatev1.DeleteCertRoleResponse{}, nil
}

package auth

import (
	"context"
	"errors"
	"fmt"

	"google.golang.org/protobuf/proto"

	hsmgatev1 "github.com/hsmgate/hsmgate/proto/hsmgate/v1"
)

// Service implements hsmgate.v1.AuthService over the policy and token stores.
// Register it with hsmgatev1.RegisterAuthServiceServer and put AuthTable()
// into the interceptor's table.
type Service struct {
	hsmgatev1.UnimplementedAuthServiceServer
	policies *Policies
	tokens   *Tokens
}

var _ hsmgatev1.AuthServiceServer = (*Service)(nil)

// NewService returns the AuthService.
func NewService(p *Policies, t *Tokens) *Service { return &Service{policies: p, tokens: t} }

// AuthTable is the rule table of AuthService.
func AuthTable() Table {
	policy := func(m proto.Message) (string, error) {
		var name string
		switch r := m.(type) {
		case *hsmgatev1.WritePolicyRequest:
			name = r.GetPolicy().GetName()
		case *hsmgatev1.ReadPolicyRequest:
			name = r.GetName()
		case *hsmgatev1.DeletePolicyRequest:
			name = r.GetName()
		default:
			return "", fmt.Errorf("unexpected %T", m)
		}
		if !ValidName(name) {
			return "", fmt.Errorf("%w: policy name %.64q", ErrInvalid, name)
		}
		return "auth/policies/" + name, nil
	}
	token := func(m proto.Message) (string, error) {
		var acc string
		switch r := m.(type) {
		case *hsmgatev1.LookupTokenRequest:
			acc = r.GetAccessor()
		case *hsmgatev1.RenewTokenRequest:
			acc = r.GetAccessor()
		case *hsmgatev1.RevokeTokenRequest:
			acc = r.GetAccessor()
		default:
			return "", fmt.Errorf("unexpected %T", m)
		}
		if !validAccessor(acc) {
			return "", fmt.Errorf("%w: accessor", ErrInvalid)
		}
		return "auth/tokens/" + acc, nil
	}
	return Table{
		hsmgatev1.AuthService_WritePolicy_FullMethodName:  {Capability: CapAdmin, Resource: policy},
		hsmgatev1.AuthService_ReadPolicy_FullMethodName:   {Capability: CapRead, Resource: policy},
		hsmgatev1.AuthService_ListPolicies_FullMethodName: {Capability: CapList, Path: "auth/policies"},
		hsmgatev1.AuthService_DeletePolicy_FullMethodName: {Capability: CapAdmin, Resource: policy},
		hsmgatev1.AuthService_CreateToken_FullMethodName:  {Capability: CapCreate, Path: "auth/tokens"},
		hsmgatev1.AuthService_ListTokens_FullMethodName:   {Capability: CapList, Path: "auth/tokens"},
		hsmgatev1.AuthService_LookupToken_FullMethodName:  {Capability: CapRead, Resource: token},
		hsmgatev1.AuthService_RenewToken_FullMethodName:   {Capability: CapUpdate, Resource: token},
		hsmgatev1.AuthService_RevokeToken_FullMethodName:  {Capability: CapRevoke, Resource: token},
		hsmgatev1.AuthService_LookupSelf_FullMethodName:   {AuthenticatedOnly: true, Path: "auth/tokens/self"},
		hsmgatev1.AuthService_RenewSelf_FullMethodName:    {AuthenticatedOnly: true, Path: "auth/tokens/self"},
		hsmgatev1.AuthService_RevokeSelf_FullMethodName:   {AuthenticatedOnly: true, Path: "auth/tokens/self"},
	}
}

func caller(ctx context.Context) (*Identity, error) {
	id, ok := FromContext(ctx)
	if !ok {
		return nil, ErrUnauthenticated
	}
	return id, nil
}

func (s *Service) WritePolicy(ctx context.Context, req *hsmgatev1.WritePolicyRequest) (*hsmgatev1.WritePolicyResponse, error) {
	if req.GetPolicy() == nil {
		return nil, fmt.Errorf("%w: policy is required", ErrInvalid)
	}
	p, err := s.policies.Put(ctx, req.GetPolicy())
	if err != nil {
		return nil, err
	}
	return &hsmgatev1.WritePolicyResponse{Policy: p}, nil
}

func (s *Service) ReadPolicy(ctx context.Context, req *hsmgatev1.ReadPolicyRequest) (*hsmgatev1.ReadPolicyResponse, error) {
	p, err := s.policies.Get(ctx, req.GetName())
	if err != nil {
		return nil, err
	}
	return &hsmgatev1.ReadPolicyResponse{Policy: p}, nil
}

func (s *Service) ListPolicies(ctx context.Context, _ *hsmgatev1.ListPoliciesRequest) (*hsmgatev1.ListPoliciesResponse, error) {
	names, err := s.policies.List(ctx)
	if err != nil {
		return nil, err
	}
	return &hsmgatev1.ListPoliciesResponse{Names: names}, nil
}

func (s *Service) DeletePolicy(ctx context.Context, req *hsmgatev1.DeletePolicyRequest) (*hsmgatev1.DeletePolicyResponse, error) {
	if err := s.policies.Delete(ctx, req.GetName()); err != nil {
		return nil, err
	}
	return &hsmgatev1.DeletePolicyResponse{}, nil
}

func (s *Service) CreateToken(ctx context.Context, req *hsmgatev1.CreateTokenRequest) (*hsmgatev1.CreateTokenResponse, error) {
	id, err := caller(ctx)
	if err != nil {
		return nil, err
	}
	tr := TokenRequest{
		DisplayName:    req.GetDisplayName(),
		Policies:       req.GetPolicies(),
		TTL:            req.GetTtl().AsDuration(),
		MaxTTL:         req.GetMaxTtl().AsDuration(),
		Renewable:      req.GetRenewable(),
		Root:           req.GetRoot(),
		Metadata:       req.GetMetadata(),
		Orphan:         req.GetOrphan(),
		Entity:         req.GetEntity(),
		EntityMetadata: req.GetEntityMetadata(),
	}
	if tr.Entity != "" && !id.Root() {
		// Binding an entity is vouching for it: an administrator's act.
		ok, err := s.policies.Allowed(ctx, id.Policies, CapAdmin, EntityResource(tr.Entity))
		if err != nil {
			return nil, fmt.Errorf("auth: read policies: %w", err)
		}
		tr.EntityAdmin = ok
	}
	// A token bound to a policy that does not exist grants nothing, most
	// likely by a typo: refuse it. The grant check comes first, so that a
	// caller learns nothing about policies it does not hold.
	if err := checkGrant(id, tr); err != nil {
		return nil, err
	}
	for _, name := range tr.Policies {
		if _, err := s.policies.Get(ctx, name); errors.Is(err, ErrNotFound) {
			return nil, fmt.Errorf("%w: policy %.64q does not exist (write it first: hsmgate policy write NAME FILE)", ErrInvalid, name)
		} else if err != nil {
			return nil, err
		}
	}
	secret, info, err := s.tokens.Create(ctx, id, tr)
	if err != nil {
		return nil, err
	}
	return &hsmgatev1.CreateTokenResponse{Token: secret, Info: info}, nil
}

func (s *Service) ListTokens(ctx context.Context, _ *hsmgatev1.ListTokensRequest) (*hsmgatev1.ListTokensResponse, error) {
	ts, err := s.tokens.List(ctx)
	if err != nil {
		return nil, err
	}
	return &hsmgatev1.ListTokensResponse{Tokens: ts}, nil
}

func (s *Service) LookupToken(ctx context.Context, req *hsmgatev1.LookupTokenRequest) (*hsmgatev1.LookupTokenResponse, error) {
	info, err := s.tokens.Lookup(ctx, req.GetAccessor())
	if err != nil {
		return nil, err
	}
	return &hsmgatev1.LookupTokenResponse{Info: info}, nil
}

func (s *Service) LookupSelf(ctx context.Context, _ *hsmgatev1.LookupSelfRequest) (*hsmgatev1.LookupSelfResponse, error) {
	id, err := caller(ctx)
	if err != nil {
		return nil, err
	}
	resp := &hsmgatev1.LookupSelfResponse{Name: id.Name, Kind: string(id.Kind), Policies: id.Policies, Metadata: id.Metadata}
	if id.Accessor != "" {
		if resp.Token, err = s.tokens.Lookup(ctx, id.Accessor); err != nil {
			return nil, err
		}
	}
	return resp, nil
}

func (s *Service) RenewToken(ctx context.Context, req *hsmgatev1.RenewTokenRequest) (*hsmgatev1.RenewTokenResponse, error) {
	info, err := s.tokens.Renew(ctx, req.GetAccessor(), req.GetIncrement().AsDuration())
	if err != nil {
		return nil, err
	}
	return &hsmgatev1.RenewTokenResponse{Info: info}, nil
}

func (s *Service) RenewSelf(ctx context.Context, req *hsmgatev1.RenewSelfRequest) (*hsmgatev1.RenewSelfResponse, error) {
	id, err := caller(ctx)
	if err != nil {
		return nil, err
	}
	if id.Accessor == "" {
		return nil, fmt.Errorf("%w: the caller is not a token", ErrNotRenewable)
	}
	info, err := s.tokens.Renew(ctx, id.Accessor, req.GetIncrement().AsDuration())
	if err != nil {
		return nil, err
	}
	return &hsmgatev1.RenewSelfResponse{Info: info}, nil
}

func (s *Service) RevokeToken(ctx context.Context, req *hsmgatev1.RevokeTokenRequest) (*hsmgatev1.RevokeTokenResponse, error) {
	if err := s.tokens.Revoke(ctx, req.GetAccessor()); err != nil {
		return nil, err
	}
	return &hsmgatev1.RevokeTokenResponse{}, nil
}

func (s *Service) RevokeSelf(ctx context.Context, _ *hsmgatev1.RevokeSelfRequest) (*hsmgatev1.RevokeSelfResponse, error) {
	id, err := caller(ctx)
	if err != nil {
		return nil, err
	}
	if id.Accessor == "" {
		return nil, fmt.Errorf("%w: the caller is not a token", ErrInvalid)
	}
	if err := s.tokens.Revoke(ctx, id.Accessor); err != nil {
		return nil, err
	}
	return &hsmgatev1.RevokeSelfResponse{}, nil
}

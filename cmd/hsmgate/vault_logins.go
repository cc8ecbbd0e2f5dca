package main

import (
	"context"
	"crypto/x509"
	"net/netip"

	"github.com/hsmgate/hsmgate/internal/auth"
	"github.com/hsmgate/hsmgate/internal/errs"
	"github.com/hsmgate/hsmgate/vaultdoor"
)

// vaultLogins serves the door's auth/<method>/login with the server's login
// methods (newAuthMethods).
type vaultLogins struct{ m *auth.Methods }

var _ vaultdoor.Logins = vaultLogins{}

func (v vaultLogins) methods() (*auth.Methods, error) {
	if v.m != nil {
		return v.m, nil
	}
	return nil, errs.New(errs.Unavailable, "vaultdoor: login methods not ready")
}

func doorLogin(method string, l *auth.Login, err error) (*vaultdoor.Login, error) {
	if err != nil {
		return nil, err
	}
	return &vaultdoor.Login{Token: l.Token, Accessor: l.Accessor, Policies: l.Policies, TTL: l.TTL,
		Renewable: l.Renewable, Metadata: l.Metadata, Name: method + ":" + l.Entity}, nil
}

func (v vaultLogins) AppRole(ctx context.Context, roleID, secretID string, remote netip.Addr) (*vaultdoor.Login, error) {
	m, err := v.methods()
	if err != nil {
		return nil, err
	}
	l, err := m.AppRoles.Login(ctx, roleID, secretID, remote)
	return doorLogin("approle", l, err)
}

func (v vaultLogins) Kubernetes(ctx context.Context, role, jwt string) (*vaultdoor.Login, error) {
	m, err := v.methods()
	if err != nil {
		return nil, err
	}
	l, err := m.Kubernetes.Login(ctx, role, jwt)
	return doorLogin("kubernetes", l, err)
}

func (v vaultLogins) Cert(ctx context.Context, chain []*x509.Certificate, name string) (*vaultdoor.Login, error) {
	m, err := v.methods()
	if err != nil {
		return nil, err
	}
	l, err := m.Cert.Login(ctx, chain, name)
	return doorLogin("cert", l, err)
}

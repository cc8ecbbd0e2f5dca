//go:build ignore

// The lead: drop the build line above when h-vaultdoor is merged (the
// vaultdoor package exists then), and in setupVaultDoor (vault_wire.go),
// after vaultDoor = door:
//
//	if m := authMethodsFor(d); m != nil { // the auth-methods hook ran first
//		door.SetLogins(doorLogins{m})
//	}
//
// Checked on a scratch merge of h-authmethods, h-identity and h-vaultdoor:
// AppRole login through POST /v1/auth/approle/login against hsmgate dev.

package main

import (
	"context"
	"crypto/x509"
	"net/netip"

	"github.com/hsmgate/hsmgate/internal/auth"
	"github.com/hsmgate/hsmgate/vaultdoor"
)

// doorLogins puts the auth package's login methods behind the Vault door.
type doorLogins struct{ m *auth.Methods }

func doorLogin(method string, l *auth.Login, err error) (*vaultdoor.Login, error) {
	if err != nil {
		return nil, err
	}
	return &vaultdoor.Login{Token: l.Token, Accessor: l.Accessor, Policies: l.Policies, TTL: l.TTL,
		Renewable: l.Renewable, Metadata: l.Metadata, Name: method + ":" + l.Entity}, nil
}

func (d doorLogins) AppRole(ctx context.Context, roleID, secretID string, remote netip.Addr) (*vaultdoor.Login, error) {
	l, err := d.m.AppRoles.Login(ctx, roleID, secretID, remote)
	return doorLogin("approle", l, err)
}

func (d doorLogins) Kubernetes(ctx context.Context, role, jwt string) (*vaultdoor.Login, error) {
	l, err := d.m.Kubernetes.Login(ctx, role, jwt)
	return doorLogin("kubernetes", l, err)
}

func (d doorLogins) Cert(ctx context.Context, chain []*x509.Certificate, name string) (*vaultdoor.Login, error) {
	l, err := d.m.Cert.Login(ctx, chain, name)
	return doorLogin("cert", l, err)
}

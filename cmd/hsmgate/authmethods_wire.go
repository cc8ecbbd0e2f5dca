package main

import (
	"context"
	"fmt"

	"github.com/hsmgate/hsmgate/internal/auth"
	"github.com/hsmgate/hsmgate/internal/leader"
	hsmgatev1 "github.com/hsmgate/hsmgate/proto/hsmgate/v1"
)

// newAuthMethods builds the AppRole, Kubernetes and client-certificate login
// methods over the store and registers AuthMethodService with its rules. The
// methods issue ordinary tokens through a token service of their own over the
// same store (newAuth's token cache sees them through the store's Watch).
// Certificate login trusts tls.client_ca, as the TLS layer does. The Vault
// door's /v1/auth/<method>/login handlers use the same methods.
func newAuthMethods(ctx context.Context, d *deps) (*auth.Methods, error) {
	ctx, cancel := context.WithCancel(ctx)
	d.OnClose(func() error { cancel(); return nil })
	tcfg := d.Config.Auth.Tokens
	tcfg.Cache = cacheOptions(d) // the same grace and logger as newAuth's token cache
	tokens, err := auth.NewTokens(ctx, d.Store, tcfg)
	if err != nil {
		return nil, err
	}
	cas, err := auth.MTLSConfig{ClientCAFile: d.Config.TLS.ClientCAFile}.ClientCAs()
	if err != nil {
		return nil, fmt.Errorf("auth methods: %w", err)
	}
	m, err := auth.NewMethods(ctx, auth.MethodsConfig{
		Cert:       auth.CertAuthConfig{ClientCAs: cas},
		Kubernetes: auth.KubernetesConfig{ReviewerJWT: d.Config.Auth.Kubernetes.Source()},
	}, d.Store, tokens)
	if err != nil {
		return nil, err
	}
	hsmgatev1.RegisterAuthMethodServiceServer(d.Server, m.Service)
	if err := d.AddRules(auth.AuthMethodTable()); err != nil {
		return nil, err
	}
	// Expired and orphaned secret IDs, on the elected replica only (jobs_wire.go).
	if err := d.Jobs.Add(leader.Job{Name: "auth-secret-id-tidy", Interval: auth.TidyInterval, Run: m.AppRoles.Tidy}); err != nil {
		return nil, err
	}
	return m, nil
}

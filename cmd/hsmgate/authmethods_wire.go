package main

import (
	"context"
	"fmt"
	"sync"

	"github.com/hsmgate/hsmgate/internal/auth"
	"github.com/hsmgate/hsmgate/internal/leader"
	hsmgatev1 "github.com/hsmgate/hsmgate/proto/hsmgate/v1"
)

func init() { registerService("auth-methods", wireAuthMethods) }

// loginMethods holds the login methods of each wired server (keyed by its
// deps), for the Vault door's /v1/auth/<method>/login handlers: they look
// them up with authMethodsFor(d) when they are wired, or at request time.
var loginMethods sync.Map // *deps -> *auth.Methods

// authMethodsFor returns the login methods wired for d (nil before
// wireAuthMethods ran or after the server closed).
func authMethodsFor(d *deps) *auth.Methods {
	m, _ := loginMethods.Load(d)
	am, _ := m.(*auth.Methods)
	return am
}

// wireAuthMethods builds the AppRole, Kubernetes and client-certificate login
// methods over the store and registers AuthMethodService with its rules. The
// methods issue ordinary tokens through a token service of their own over the
// same store (the auth hook's token cache sees them through the store's Watch).
// Certificate login trusts tls.client_ca, as the TLS layer does.
func wireAuthMethods(ctx context.Context, d *deps) error {
	ctx, cancel := context.WithCancel(ctx)
	d.OnClose(func() error { cancel(); return nil })
	tokens, err := auth.NewTokens(ctx, d.Store, d.Config.Auth.Tokens)
	if err != nil {
		return err
	}
	cas, err := auth.MTLSConfig{ClientCAFile: d.Config.TLS.ClientCAFile}.ClientCAs()
	if err != nil {
		return fmt.Errorf("auth methods: %w", err)
	}
	m, err := auth.NewMethods(ctx, auth.MethodsConfig{Cert: auth.CertAuthConfig{ClientCAs: cas}}, d.Store, tokens)
	if err != nil {
		return err
	}
	hsmgatev1.RegisterAuthMethodServiceServer(d.Server, m.Service)
	if err := d.AddRules(auth.AuthMethodTable()); err != nil {
		return err
	}
	// Expired and orphaned secret IDs, on the elected replica only (jobs_wire.go).
	if err := d.Jobs.Add(leader.Job{Name: "auth-secret-id-tidy", Interval: auth.TidyInterval, Run: m.AppRoles.Tidy}); err != nil {
		return err
	}
	loginMethods.Store(d, m)
	d.OnClose(func() error { loginMethods.Delete(d); return nil })
	return nil
}

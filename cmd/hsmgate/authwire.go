package main

import (
	"context"
	"fmt"
	"path/filepath"

	"github.com/hsmgate/hsmgate/internal/audit"
	"github.com/hsmgate/hsmgate/internal/auth"
	"github.com/hsmgate/hsmgate/internal/leader"
	hsmgatev1 "github.com/hsmgate/hsmgate/proto/hsmgate/v1"
)

// newAuditLog opens the audit log that every request (gRPC, the Vault door,
// ACME) is written to, from d.Config.Audit: with no audit section and a
// bbolt store, beside the store with an HMAC key made there on first run
// (dev mode, and servers configured without one); with neither, the server
// does not start (every request is audited, and fails when it cannot be).
func newAuditLog(ctx context.Context, d *deps) (*audit.Log, error) {
	acfg := d.Config.Audit.Config
	var key []byte
	var err error
	if acfg.Path == "" && d.Config.Store.Path != "" {
		dir := filepath.Dir(d.Config.Store.Path)
		acfg.Path = filepath.Join(dir, "audit.log")
		if key, err = audit.LoadOrCreateKeyFile(filepath.Join(dir, "audit-hmac-key")); err != nil {
			return nil, err
		}
		if d.DevRootToken == "" {
			d.Log.Warn("no audit section in the config: auditing beside the store", "path", acfg.Path)
		} else {
			d.Log.Info("dev audit log", "path", acfg.Path)
		}
	}
	if acfg.Path == "" {
		return nil, fmt.Errorf("audit.path is required with this store: every request is audited, and fails when it cannot be")
	}
	if key == nil {
		if key, err = audit.LoadHMACKey(acfg); err != nil {
			return nil, err
		}
	}
	return openAuditLog(ctx, d, acfg, key) // cmd/hsmgate/audit.go
}

// newAuth builds authentication, policies and rate limits from
// d.Config.Auth over the store, registers AuthService with its rules, and
// in dev mode makes the server accept d.DevRootToken as root. Its caches'
// watches end before the store closes (closers run in reverse).
func newAuth(ctx context.Context, d *deps) (*auth.Auth, error) {
	ctx, cancel := context.WithCancel(ctx)
	d.OnClose(func() error { cancel(); return nil })
	authCfg := d.Config.Auth.Config
	authCfg.Cache = cacheOptions(d) // cache_wire.go
	a, err := auth.New(ctx, authCfg, d.Store)
	if err != nil {
		return nil, err
	}
	hsmgatev1.RegisterAuthServiceServer(d.Server, a.Service)
	// Expired token records, on the elected replica only (jobs_wire.go).
	if err := d.Jobs.Add(leader.Job{Name: "auth-token-tidy", Interval: auth.TidyInterval, Run: a.Tokens.Tidy}); err != nil {
		return nil, err
	}
	if err := d.AddRules(auth.AuthTable()); err != nil {
		return nil, err
	}
	if d.DevRootToken != "" {
		if err := a.Tokens.EnsureRoot(ctx, d.DevRootToken); err != nil {
			return nil, fmt.Errorf("dev root token: %w", err)
		}
	}
	return a, nil
}

// installInterceptor puts authentication, authorisation and audit in front
// of every RPC, from the rules every service added to d.Rules. It runs once
// every service is registered: a method without a rule stops the start
// (the interceptor would refuse it at run time anyway).
func installInterceptor(d *deps, a *auth.Auth, auditor auth.Auditor) error {
	if err := auth.CheckTableCovers(d.Server, d.Rules); err != nil {
		return err
	}
	// The server's logger, which names the replica: the Internal and
	// Unavailable lines with their cause and request id go there.
	ic, err := auth.NewInterceptor(auth.Options{Table: d.Rules, Authenticator: a.Authenticator, Policies: a.Policies,
		Limiter: a.Limiter, Audit: auditor, Logger: d.Log})
	if err != nil {
		return err
	}
	// hsmgate_auth_refusals_total and the sampled-audit counter.
	if err := d.Server.Metrics().Register(ic); err != nil {
		return fmt.Errorf("auth: metrics: %w", err)
	}
	return d.Server.Use(ic.Unary(), ic.Stream())
}

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

func init() { authHook = wireAuth }

// httpGate wraps engines' non-public HTTP handlers (registered by service
// hooks, before the interceptor exists): d.Server.HandleHTTP(pattern,
// httpGate.Wrap(auth.HTTPRule{...}, h)). wireAuth binds it.
var httpGate auth.HTTPGate

// wireAuth builds authentication, policies, rate limits and the audit log
// from d.Config.Auth and d.Config.Audit, registers AuthService, and installs
// the interceptor over every RPC in d.Rules.
func wireAuth(ctx context.Context, d *deps) error {
	// The caches' watches end before the store closes (closers run in reverse).
	ctx, cancel := context.WithCancel(ctx)
	d.OnClose(func() error { cancel(); return nil })
	a, err := auth.New(ctx, d.Config.Auth.Config, d.Store)
	if err != nil {
		return err
	}
	hsmgatev1.RegisterAuthServiceServer(d.Server, a.Service)
	// Expired token records, on the elected replica only (jobs_wire.go).
	if err := d.Jobs.Add(leader.Job{Name: "auth-token-tidy", Interval: auth.TidyInterval, Run: a.Tokens.Tidy}); err != nil {
		return err
	}
	if err := d.AddRules(auth.AuthTable()); err != nil {
		return err
	}
	if d.DevRootToken != "" {
		if err := a.Tokens.EnsureRoot(ctx, d.DevRootToken); err != nil {
			return fmt.Errorf("dev root token: %w", err)
		}
	}
	var auditor auth.Auditor
	acfg := d.Config.Audit.Config
	var key []byte
	if acfg.Path == "" && d.Config.Store.Path != "" {
		// No audit section: audit beside the bbolt file, with an HMAC key
		// made there on first run (dev mode, and servers configured without one).
		dir := filepath.Dir(d.Config.Store.Path)
		acfg.Path = filepath.Join(dir, "audit.log")
		if key, err = audit.LoadOrCreateKeyFile(filepath.Join(dir, "audit-hmac-key")); err != nil {
			return err
		}
		if d.DevRootToken == "" {
			d.Log.Warn("no audit section in the config: auditing beside the store", "path", acfg.Path)
		} else {
			d.Log.Info("dev audit log", "path", acfg.Path)
		}
	}
	if acfg.Path != "" {
		if key == nil {
			if key, err = audit.LoadHMACKey(acfg); err != nil {
				return err
			}
		}
		l, err := openAuditLog(ctx, d, acfg, key) // cmd/hsmgate/audit.go
		if err != nil {
			return err
		}
		auditor = l
		acmeAudit.Set(l) // ACME (acme_wire.go) audits to the same log
	} else {
		return fmt.Errorf("audit.path is required with this store: every request is audited, and fails when it cannot be")
	}
	// Once the server can list its services, a method without a rule stops
	// the start (the interceptor refuses such a method at run time anyway).
	if p, ok := any(d.Server).(auth.ServiceInfoProvider); ok {
		if err := auth.CheckTableCovers(p, d.Rules); err != nil {
			return err
		}
	}
	ic, err := a.Interceptor(d.Rules, auditor)
	if err != nil {
		return err
	}
	// hsmgate_auth_refusals_total and the sampled-audit counter.
	if err := d.Server.Metrics().Register(ic); err != nil {
		return fmt.Errorf("auth: metrics: %w", err)
	}
	httpGate.Set(ic)
	if d.VaultDoor != nil {
		d.VaultDoor.SetAuditor(auditor) // its login lines
	}
	return d.Server.Use(ic.Unary(), ic.Stream())
}

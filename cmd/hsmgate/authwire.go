package main

import (
	"context"
	"fmt"

	"github.com/hsmgate/hsmgate/internal/audit"
	"github.com/hsmgate/hsmgate/internal/auth"
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
	a, err := auth.New(ctx, d.Config.Auth.Config, d.Store)
	if err != nil {
		return err
	}
	hsmgatev1.RegisterAuthServiceServer(d.Server, a.Service)
	if err := d.AddRules(auth.AuthTable()); err != nil {
		return err
	}
	if d.DevRootToken != "" {
		if err := a.Tokens.EnsureRoot(ctx, d.DevRootToken); err != nil {
			return fmt.Errorf("dev root token: %w", err)
		}
	}
	var auditor auth.Auditor
	if d.Config.Audit.Path != "" {
		key, err := audit.LoadHMACKey(d.Config.Audit.Config)
		if err != nil {
			return err
		}
		l, err := audit.Open(d.Config.Audit.Config, key)
		if err != nil {
			return err
		}
		d.OnClose(l.Close)
		auditor = l
	} else {
		d.Log.Warn("no audit log configured (audit.path): requests are not audited")
	}
	ic, err := a.Interceptor(d.Rules, auditor)
	if err != nil {
		return err
	}
	httpGate.Set(ic)
	return d.Server.Use(ic.Unary(), ic.Stream())
}

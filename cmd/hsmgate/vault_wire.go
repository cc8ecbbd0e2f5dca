package main

import (
	"context"
	"fmt"

	"github.com/hsmgate/hsmgate/internal/auth"
	"github.com/hsmgate/hsmgate/internal/version"
	"github.com/hsmgate/hsmgate/vaultdoor"
)

// setupVaultDoor serves the Vault-compatible door: /v1/ on the HTTPS
// listener, translating Vault's API onto the registered gRPC services
// through the server's own interceptors (same rules, audit and rate
// limits), plus the door's own rule (root/sign-intermediate). Its
// auth/<method>/login handlers use logins, and write their lines to auditor.
// It runs after the services it translates onto are registered.
func setupVaultDoor(d *deps, logins *auth.Methods, auditor vaultdoor.Auditor) error {
	door, err := vaultdoor.New(vaultdoor.Config{
		Registry: d.Server,
		Health: func(ctx context.Context) error {
			if d.HSM != nil {
				if err := d.HSM.Ping(ctx); err != nil {
					return fmt.Errorf("hsm: %w", err)
				}
			}
			return d.Store.Ping(ctx)
		},
		MaxBodyBytes: int64(d.Config.Limits.MaxRecvBytes),
		// batch_input, as the transit service it translates onto.
		MaxBatchItems: d.Config.Limits.MaxItemsPerRequest,
		Version:       version.String(),
		Logger:        d.Log,
		Logins:        vaultLogins{logins},
		Auditor:       auditor,
	})
	if err != nil {
		return err
	}
	for _, p := range door.Patterns() {
		d.Server.HandleHTTP(p, door)
	}
	return d.AddRules(vaultdoor.AuthTable())
}

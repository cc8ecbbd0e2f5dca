package main

import (
	"context"
	"fmt"

	"github.com/hsmgate/hsmgate/internal/version"
	"github.com/hsmgate/hsmgate/vaultdoor"
)

// setupVaultDoor is the Vault-compatible door's hook: /v1/ on the HTTPS
// listener, translating Vault's API onto the registered gRPC services
// through the server's own interceptors (same rules, audit and rate
// limits), plus the door's own rule (root/sign-intermediate).
func setupVaultDoor(_ context.Context, d *deps) error {
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
		Version:      version.String(),
		Logger:       d.Log,
	})
	if err != nil {
		return err
	}
	for _, p := range door.Patterns() {
		d.Server.HandleHTTP(p, door)
	}
	// The login methods are looked up per request (another hook builds
	// them); the auth hook gives the door the audit log (d.VaultDoor).
	door.SetLogins(vaultLogins{d})
	d.VaultDoor = door
	return d.AddRules(vaultdoor.AuthTable())
}

package main

import (
	"context"
	"fmt"

	"github.com/hsmgate/hsmgate/internal/version"
	"github.com/hsmgate/hsmgate/vaultdoor"
)

// vaultDoor is the Vault-compatible door of this process (nil until
// setupVaultDoor ran). The auth wiring gives it the audit log and the login
// methods once they exist: vaultDoor.SetAuditor(auditor) and
// vaultDoor.SetLogins(...).
var vaultDoor *vaultdoor.Door

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
	vaultDoor = door
	return d.AddRules(vaultdoor.AuthTable())
}

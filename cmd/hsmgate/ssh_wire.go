package main

import (
	"context"
	"fmt"

	hsmgatev1 "github.com/hsmgate/hsmgate/proto/hsmgate/v1"
	"github.com/hsmgate/hsmgate/sshca"
)

// setupSSHCA is the SSH CA's service hook: the engine over the process's HSM
// and store, its gRPC service, its public HTTP endpoints under /v1/ssh/ and
// its auth rules. The lead registers it (registerService("sshca",
// setupSSHCA)) together with the CLI (addCommand(func(*globals)
// *cobra.Command { return newSSHCmd() })).
func setupSSHCA(ctx context.Context, d *deps) error {
	e, err := sshca.New(ctx, sshca.Config{Store: d.Store, Keys: sshca.HSMKeys(d.HSM), Logger: d.Log, Cache: cacheOptions(d)})
	if err != nil {
		return fmt.Errorf("sshca: %w", err)
	}
	if err := d.Server.Metrics().Register(e.Collector()); err != nil {
		return fmt.Errorf("sshca: metrics: %w", err)
	}
	d.OnClose(e.Close)
	hsmgatev1.RegisterSSHCAServiceServer(d.Server, sshca.NewService(e))
	d.Server.HandleHTTP("GET /v1/ssh/", e.HTTPHandler())
	return d.AddRules(sshca.AuthTable())
}

package main

import (
	"context"
	"fmt"

	hsmgatev1 "github.com/hsmgate/hsmgate/proto/hsmgate/v1"
	"github.com/hsmgate/hsmgate/sshca"
)

// setupSSHCA serves the SSH CA over the process's HSM and store, from the
// ssh section: its gRPC service (at most limits.max_items_per_request
// certificates per request),
// its public HTTP endpoints under /v1/ssh/, its metrics and auth rules.
func setupSSHCA(ctx context.Context, d *deps) error {
	e, err := sshca.New(ctx, sshca.Config{
		Store:    d.Store,
		Keys:     d.HSM,
		Logger:   d.Log,
		Cache:    cacheOptions(d),
		MaxItems: d.Config.Limits.MaxItemsPerRequest,

		SignConcurrency: d.Config.SSH.SignConcurrency,
	})
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

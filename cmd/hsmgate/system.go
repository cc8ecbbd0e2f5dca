package main

import (
	"github.com/hsmgate/hsmgate/internal/server"
	"github.com/hsmgate/hsmgate/internal/version"
	hsmgatev1 "github.com/hsmgate/hsmgate/proto/hsmgate/v1"
)

// hsmgatev1RegisterSystem registers the status service.
func hsmgatev1RegisterSystem(srv *server.Server, d *deps) {
	hsmgatev1.RegisterSystemServiceServer(srv, server.NewSystemService(server.SystemConfig{
		Version: version.String(),
		HSM:     d.HSM,
		Store:   d.Store,
		Start:   d.Start,
	}))
}

package main

import (
	"context"
	"fmt"

	"github.com/hsmgate/hsmgate/internal/leader"
	hsmgatev1 "github.com/hsmgate/hsmgate/proto/hsmgate/v1"
	"github.com/hsmgate/hsmgate/transit"
	"github.com/hsmgate/hsmgate/transit/transithsm"
)

// setupTransit serves the transit engine: the engine over the process's
// store, KEK and HSM (its metrics on the server's registry), the
// background auto-rotation job, TransitService with the configured limits
// (limits.max_items_per_request, limits.max_item_bytes) and its auth rules.
// On close the rotator stops, then the engine's store watch ends (before the
// store closes: closers run in reverse).
func setupTransit(ctx context.Context, d *deps) error {
	e, err := transit.New(transit.Config{
		Store: d.Store,
		KEK:   d.KEK,
		// Blobs wrapped before a KEK rotation name their KEK by label.
		OldKEK: func(ctx context.Context, label string) (transit.Wrapper, error) {
			k, err := d.HSM.KEK(ctx, label)
			if err != nil {
				return nil, err
			}
			return k, nil
		},
		HSM:           transithsm.New(d.HSM),
		Logger:        d.Log,
		Registerer:    d.Server.Metrics(),
		PerKeyMetrics: d.Config.Metrics.PerKeyLabels,
		Cache:         cacheOptions(d),
		LiveReplicas:  d.Jobs.LiveReplicas, // usage blocks shrink with the replicas
	})
	if err != nil {
		return fmt.Errorf("transit: %w", err)
	}
	d.OnClose(e.Close)
	// Auto-rotation on the elected replica only (jobs_wire.go).
	if err := d.Jobs.Add(leader.Job{Name: "transit-rotate", Interval: e.RotateInterval(), Run: func(ctx context.Context) (int, error) {
		r, err := e.RotateDue(ctx)
		return len(r), err
	}}); err != nil {
		return err
	}
	hsmgatev1.RegisterTransitServiceServer(d.Server, transit.NewService(e, transit.ServiceConfig{
		MaxItems:     d.Config.Limits.MaxItemsPerRequest,
		MaxItemBytes: d.Config.Limits.MaxItemBytes,
	}))
	return d.AddRules(transit.AuthTable())
}

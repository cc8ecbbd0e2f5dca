package main

import (
	"context"
	"errors"

	"github.com/hsmgate/hsmgate/acme"
	"github.com/hsmgate/hsmgate/internal/leader"
	hsmgatev1 "github.com/hsmgate/hsmgate/proto/hsmgate/v1"
)

// setupACME serves ACME under /acme/ on the HTTPS listener, the ACMEService
// admin RPCs and their auth rules, and runs the validation workers. It
// issues through a pki.Service of its own over the same store and HSM as
// setupPKI's (the PKI engine keeps no state outside the store but caches,
// so two instances agree; its issuance is not counted in the PKI engine's
// metrics), so the same role checks, lint gate and certificate records
// apply. Every ACME request is written to auditor (fail closed).
func setupACME(ctx context.Context, d *deps, pkiBase string, auditor acme.Auditor) error {
	if d.KEK == nil {
		return errors.New("acme: no KEK to wrap EAB keys")
	}
	ca, err := newPKI(d, pkiBase)
	if err != nil {
		return err
	}
	base, err := acmeBaseURL(d)
	if err != nil {
		return err
	}
	acfg := acme.Config{Store: d.Store, CA: ca, Wrapper: d.KEK, BaseURL: base, Logger: d.Log, Audit: auditor}
	if t := d.acmeTesting; t != nil {
		acfg.Validation, acfg.Limits = t.validation, t.limits
		d.Log.Warn("acme: TEST-ONLY validation target (bench or test)", "host", t.validation.Host, "http_port", t.validation.HTTPPort)
	}
	srv, err := acme.New(acfg)
	if err != nil {
		return err
	}
	hsmgatev1.RegisterACMEServiceServer(d.Server, acme.NewService(srv))
	d.Server.HandleHTTP("/acme/", srv.Handler())
	runCtx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	done := make(chan struct{})
	go func() { srv.RunWorkers(runCtx); close(done) }()
	d.OnClose(func() error { cancel(); <-done; return nil })
	// Expired nonces, orders and stale challenges, on the elected replica only (jobs_wire.go).
	if err := d.Jobs.Add(leader.Job{Name: "acme-sweep", Interval: acme.SweepInterval, Run: func(ctx context.Context) (int, error) {
		return -1, srv.Sweep(ctx)
	}}); err != nil {
		return err
	}
	return d.AddRules(acme.AuthTable())
}

// acmeTesting is what only the bench and tests may set (runOptions, never
// the config file or flags): challenge validation redirected to loopback
// ports (acme.ValidationTarget is test-only) and the rate limits.
type acmeTesting struct {
	validation acme.ValidationTarget
	limits     acme.Limits
}

// acmeBaseURL is acme.base_url (JWS "url" headers must match it exactly),
// else https:// and the HTTPS listener's address (one machine only).
func acmeBaseURL(d *deps) (string, error) {
	if d.Config.ACME.BaseURL != "" {
		return d.Config.ACME.BaseURL, nil
	}
	return listenerURL(d, "acme", "no HTTPS listener: set acme.base_url")
}

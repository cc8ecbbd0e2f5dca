package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strings"
	"sync/atomic"

	"github.com/hsmgate/hsmgate/acme"
	"github.com/hsmgate/hsmgate/internal/audit"
	"github.com/hsmgate/hsmgate/internal/leader"
	"github.com/hsmgate/hsmgate/pki"
	hsmgatev1 "github.com/hsmgate/hsmgate/proto/hsmgate/v1"
)

// setupACME is the ACME server's service hook: the ACME protocol under
// /acme/ on the HTTPS listener, the ACMEService admin RPCs and their auth
// rules, and the validation workers. It issues through a pki.Service over
// the same store and HSM as setupPKI's (the PKI engine keeps no state
// outside the store but caches, so two instances agree), so the same role
// checks, lint gate and certificate records apply. The lead registers it
// (registerService("acme", setupACME)) with the CLI (addCommand(func(*globals)
// *cobra.Command { return newACMECmd() })).
func setupACME(ctx context.Context, d *deps) error {
	if d.KEK == nil {
		return errors.New("acme: no KEK to wrap EAB keys")
	}
	pkiBase, err := pkiBaseURL(d)
	if err != nil {
		return err
	}
	pcfg := pki.Config{Store: d.Store, Keys: pki.HSMKeys(d.HSM), BaseURL: pkiBase, Logger: d.Log}
	if strings.HasPrefix(pkiBase, "https://") {
		pcfg.LintExclude = pki.HTTPSURLLints
	}
	ca, err := pki.New(pcfg)
	if err != nil {
		return err
	}
	base, err := acmeBaseURL(d)
	if err != nil {
		return err
	}
	srv, err := acme.New(acme.Config{Store: d.Store, CA: ca, Wrapper: d.KEK, BaseURL: base, Logger: d.Log, Audit: &acmeAudit})
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

// acmeAudit is the audit log ACME requests are written to. The auth wiring
// opens the log after the service hooks run and binds it here
// (acmeAudit.Set(l) in authwire.go); until then every ACME request fails
// with 503 (fail closed, as HTTPGate does for the other HTTP endpoints).
var acmeAudit lateAuditor

type lateAuditor struct{ l atomic.Pointer[audit.Log] }

// Set binds the audit log.
func (a *lateAuditor) Set(l *audit.Log) { a.l.Store(l) }

// Write writes to the bound log; audit.ErrUnavailable until Set.
func (a *lateAuditor) Write(e *audit.Entry) error {
	l := a.l.Load()
	if l == nil {
		return fmt.Errorf("acme: %w: no audit log bound", audit.ErrUnavailable)
	}
	return l.Write(e)
}

// acmeBaseURL is acme.base_url (JWS "url" headers must match it exactly),
// else https:// and the HTTPS listener's address (an unspecified host
// becomes localhost: one machine only).
func acmeBaseURL(d *deps) (string, error) {
	if d.Config != nil && d.Config.ACME.BaseURL != "" {
		return d.Config.ACME.BaseURL, nil
	}
	if err := d.Server.Listen(); err != nil {
		return "", err
	}
	addr := d.Server.HTTPAddr()
	if addr == "" {
		return "", fmt.Errorf("acme: no HTTPS listener: set acme.base_url")
	}
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return "", fmt.Errorf("acme: HTTP address %q: %w", addr, err)
	}
	if ip := net.ParseIP(host); host == "" || (ip != nil && ip.IsUnspecified()) {
		host = "localhost"
	}
	return "https://" + net.JoinHostPort(host, port), nil
}

package main

import (
	"context"
	"fmt"
	"net"
	"strings"

	"github.com/hsmgate/hsmgate/internal/leader"
	"github.com/hsmgate/hsmgate/pki"
	hsmgatev1 "github.com/hsmgate/hsmgate/proto/hsmgate/v1"
)

// setupPKI is the PKI engine's service hook: the CA over the process's HSM
// and store, its gRPC service, its public HTTP endpoints under /pki/ (CA
// certificates, CRLs, OCSP: public by nature), its auth rules, and the
// background CRL refresh. The lead registers it (registerService("pki",
// setupPKI)) together with the CLI (addCommand(func(*globals)
// *cobra.Command { return newPKICmd() })).
func setupPKI(ctx context.Context, d *deps) error {
	base, err := pkiBaseURL(d)
	if err != nil {
		return err
	}
	cfg := pki.Config{Store: d.Store, Keys: pki.HSMKeys(d.HSM), BaseURL: base, Logger: d.Log}
	if strings.HasPrefix(base, "https://") {
		// The CA/B BR lints (public profile) want plain-HTTP AIA and CRL
		// URLs; with only the HTTPS listener, skip them (name a plain-HTTP
		// front with pki.base_url: http://...).
		cfg.LintExclude = pki.HTTPSURLLints
		d.Log.Info("pki: AIA and CRL URLs are https; set pki.base_url to an http:// front for them", "base_url", base)
	}
	svc, err := pki.New(cfg)
	if err != nil {
		return err
	}
	if err := d.Server.Metrics().Register(svc.Collector()); err != nil {
		return fmt.Errorf("pki: metrics: %w", err)
	}
	hsmgatev1.RegisterPKIServiceServer(d.Server, svc)
	d.Server.HandleHTTP("/pki/", svc.Handler())
	// CRLs rebuilt before nextUpdate, on the elected replica only (jobs_wire.go).
	if err := d.Jobs.Add(leader.Job{Name: "pki-crl", Interval: pki.MaintainInterval, Run: func(ctx context.Context) (int, error) {
		return -1, svc.Maintain(ctx)
	}}); err != nil {
		return err
	}
	return d.AddRules(pki.AuthTable())
}

// pkiBaseURL is pki.base_url, else https:// and the HTTP listener's address
// (an unspecified host becomes localhost: one machine only).
func pkiBaseURL(d *deps) (string, error) {
	if d.Config != nil && d.Config.PKI.BaseURL != "" {
		return d.Config.PKI.BaseURL, nil
	}
	if err := d.Server.Listen(); err != nil {
		return "", err
	}
	addr := d.Server.HTTPAddr()
	if addr == "" {
		return "", fmt.Errorf("pki: no HTTP listener for CRL and OCSP: set pki.base_url to where they are served")
	}
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return "", fmt.Errorf("pki: HTTP address %q: %w", addr, err)
	}
	if ip := net.ParseIP(host); host == "" || (ip != nil && ip.IsUnspecified()) {
		host = "localhost"
	}
	return "https://" + net.JoinHostPort(host, port), nil
}

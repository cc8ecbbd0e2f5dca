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

// newPKI builds a CA over the process's HSM and store from the pki
// section, with the AIA, CRL and OCSP URLs under base (pkiBaseURL).
func newPKI(d *deps, base string) (*pki.Service, error) {
	pc := d.Config.PKI
	cfg := pki.Config{
		Store:                 d.Store,
		Keys:                  d.HSM,
		BaseURL:               base,
		CRLValidity:           pc.CRLValidity,
		DeltaCRLValidity:      pc.DeltaCRLValidity,
		OCSPValidity:          pc.OCSPValidity,
		OCSPResponderValidity: pc.OCSPResponderValidity,
		Logger:                d.Log,
	}
	if strings.HasPrefix(base, "https://") {
		// The CA/B BR lints (public profile) want plain-HTTP AIA and CRL
		// URLs; with only the HTTPS listener, skip them (name a plain-HTTP
		// front with pki.base_url: http://...).
		cfg.LintExclude = pki.HTTPSURLLints
	}
	return pki.New(cfg)
}

// setupPKI serves the PKI engine: its gRPC service, its public HTTP
// endpoints under /pki/ (CA certificates, CRLs, OCSP: public by nature),
// its metrics and auth rules, and the background CRL refresh (every
// pki.refresh_interval).
func setupPKI(ctx context.Context, d *deps, base string) error {
	svc, err := newPKI(d, base)
	if err != nil {
		return err
	}
	if strings.HasPrefix(base, "https://") {
		d.Log.Info("pki: AIA and CRL URLs are https; set pki.base_url to an http:// front for them", "base_url", base)
	}
	if err := d.Server.Metrics().Register(svc.Collector()); err != nil {
		return fmt.Errorf("pki: metrics: %w", err)
	}
	hsmgatev1.RegisterPKIServiceServer(d.Server, svc)
	public := svc.Handler()
	d.Server.HandleHTTP("/pki/", public)
	d.Server.HandlePKI("/pki/", public) // listen.pki: plain http for pki.base_url
	// OCSP GET's base64 is data in the path: read as sent, not as the mux cleans it.
	d.Server.HandleHTTPPrefix(pki.OCSPGETPrefix, public)
	d.Server.HandlePKIPrefix(pki.OCSPGETPrefix, public)
	// CRLs rebuilt before nextUpdate, on the elected replica only (jobs_wire.go).
	every := d.Config.PKI.RefreshInterval
	if every <= 0 {
		every = pki.MaintainInterval
	}
	if err := d.Jobs.Add(leader.Job{Name: "pki-crl", Interval: every, Run: func(ctx context.Context) (int, error) {
		return -1, svc.Maintain(ctx)
	}}); err != nil {
		return err
	}
	return d.AddRules(pki.AuthTable())
}

// pkiBaseURL is pki.base_url, else https:// and the HTTP listener's address
// (one machine only).
func pkiBaseURL(d *deps) (string, error) {
	if d.Config.PKI.BaseURL != "" {
		return d.Config.PKI.BaseURL, nil
	}
	return listenerURL(d, "pki", "no HTTP listener for CRL and OCSP: set pki.base_url to where they are served")
}

// listenerURL is https:// and the HTTPS listener's address, an unspecified
// host made localhost (one machine only); what and missing name the engine
// and the fix when there is no HTTPS listener.
func listenerURL(d *deps, what, missing string) (string, error) {
	if err := d.Server.Listen(); err != nil {
		return "", err
	}
	addr := d.Server.HTTPAddr()
	if addr == "" {
		return "", fmt.Errorf("%s: %s", what, missing)
	}
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return "", fmt.Errorf("%s: HTTP address %q: %w", what, addr, err)
	}
	if ip := net.ParseIP(host); host == "" || (ip != nil && ip.IsUnspecified()) {
		host = "localhost"
	}
	return "https://" + net.JoinHostPort(host, port), nil
}

package pki

import (
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/url"
	"strings"
	"time"

	"github.com/hsmgate/hsmgate/hsm"
	"github.com/hsmgate/hsmgate/keystore"
)

// HTTPSURLLints are the CA/B Baseline Requirements lints that refuse
// https:// AIA and CRL distribution point URLs (relying parties fetch them
// over plain HTTP). A deployment whose BaseURL is https must skip them
// (Config.LintExclude) or its server roles cannot issue.
var HTTPSURLLints = []string{
	"e_aia_ca_issuers_must_have_http_only",
	"e_aia_ocsp_must_have_http_only",
	"e_crl_distrib_points_not_http",
	"e_sub_cert_crl_distribution_points_does_not_contain_url",
}

// Config is what New needs.
type Config struct {
	// Store keeps issuers, roles, certificate records and CRLs. Required.
	Store keystore.Store
	// Keys makes, adopts and signs with the issuer keys (an *hsm.Module). Required.
	Keys hsm.Keys
	// BaseURL is the public URL of the HTTP handler (e.g.
	// "https://ca.example.net:8443"); issued certificates' AIA and CRL
	// distribution point URLs are under it. Required.
	BaseURL string
	// KeyLabelPrefix prefixes the HSM labels of issuer keys (default "pki-").
	KeyLabelPrefix string
	// DelegatedOCSP makes a delegated OCSP responder key for every new
	// issuer (Ed25519 issuers always get one).
	DelegatedOCSP bool
	// CRLValidity is the span between a full CRL's thisUpdate and nextUpdate (default 24h).
	CRLValidity time.Duration
	// DeltaCRLValidity is the same for delta CRLs (default 1h).
	DeltaCRLValidity time.Duration
	// DeltaCRLOnRevoke makes a revocation rebuild only the delta CRL; the
	// full CRL then follows at its refresh (Maintain). Default: both.
	DeltaCRLOnRevoke bool
	// OCSPValidity is the span between an OCSP response's thisUpdate and nextUpdate (default 1h).
	OCSPValidity time.Duration
	// OCSPResponderValidity is the lifetime of a delegated OCSP responder's
	// certificate (default 7 days; it carries id-pkix-ocsp-nocheck, so
	// relying parties cannot check its revocation: keep it short). Maintain
	// renews it, with the same HSM key, once a third of it is left.
	OCSPResponderValidity time.Duration
	// LintExclude names zlint lints skipped for every certificate, on top of
	// each role's lint_exclude (e.g. HTTPSURLLints when BaseURL is https).
	LintExclude []string
	// Now is the clock (default time.Now).
	Now func() time.Time
	// Rand is the randomness source for serials and in-process keys (default crypto/rand).
	Rand io.Reader
	// Logger (default slog.Default()).
	Logger *slog.Logger
}

func (c Config) withDefaults() (Config, error) {
	if c.Store == nil || c.Keys == nil {
		return c, errors.New("pki: config needs Store and Keys")
	}
	u, err := url.Parse(c.BaseURL)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return c, fmt.Errorf("pki: config BaseURL %q is not an absolute http(s) URL", c.BaseURL)
	}
	c.BaseURL = strings.TrimRight(c.BaseURL, "/")
	if c.KeyLabelPrefix == "" {
		c.KeyLabelPrefix = "pki-"
	}
	if c.CRLValidity <= 0 {
		c.CRLValidity = 24 * time.Hour
	}
	if c.DeltaCRLValidity <= 0 {
		c.DeltaCRLValidity = time.Hour
	}
	if c.OCSPValidity <= 0 {
		c.OCSPValidity = time.Hour
	}
	if c.OCSPResponderValidity <= 0 {
		c.OCSPResponderValidity = 7 * 24 * time.Hour
	}
	if c.Now == nil {
		c.Now = time.Now
	}
	if c.Rand == nil {
		c.Rand = rand.Reader
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	return c, nil
}

package config

import (
	"net/url"
	"strings"
	"time"
)

// PKIFile is the `pki` section. Durations left zero take the CA engine's
// defaults (written beside each field).
type PKIFile struct {
	// BaseURL is the public URL under which the CA's certificates, CRLs
	// and OCSP responder are reached (the AIA, CRL distribution point and
	// OCSP URLs of every certificate start with it), e.g.
	// "http://ca.example.internal". Plain http is normal for these (RFC
	// 5280 practice; the objects are signed). Default: https:// and the
	// HTTP listener's address, which suits one machine only: every replica
	// of a deployment must name the same, stable front.
	BaseURL string `yaml:"base_url"`
	// CRLValidity is the span between a full CRL's thisUpdate and
	// nextUpdate (default 24h); DeltaCRLValidity the same for delta CRLs
	// (default 1h).
	CRLValidity      time.Duration `yaml:"crl_validity"`
	DeltaCRLValidity time.Duration `yaml:"delta_crl_validity"`
	// OCSPValidity is the span between an OCSP response's thisUpdate and
	// nextUpdate (default 1h).
	OCSPValidity time.Duration `yaml:"ocsp_validity"`
	// OCSPResponderValidity is the lifetime of a delegated OCSP responder's
	// certificate (default 168h; it cannot be revoked: keep it short).
	OCSPResponderValidity time.Duration `yaml:"ocsp_responder_validity"`
	// RefreshInterval is how often CRLs are checked and rebuilt before
	// their nextUpdate (default 1m).
	RefreshInterval time.Duration `yaml:"refresh_interval"`
}

// DefaultPKIRefreshInterval is pki.refresh_interval's default.
const DefaultPKIRefreshInterval = time.Minute

// PKI configures the CA engine. A zero validity takes the engine's default.
type PKI struct {
	BaseURL               string // "" : derived from the HTTP listener at start
	CRLValidity           time.Duration
	DeltaCRLValidity      time.Duration
	OCSPValidity          time.Duration
	OCSPResponderValidity time.Duration
	RefreshInterval       time.Duration
}

func (f PKIFile) toPKI() PKI {
	return PKI{
		BaseURL:               strings.TrimRight(f.BaseURL, "/"),
		CRLValidity:           f.CRLValidity,
		DeltaCRLValidity:      f.DeltaCRLValidity,
		OCSPValidity:          f.OCSPValidity,
		OCSPResponderValidity: f.OCSPResponderValidity,
		RefreshInterval:       orDur(f.RefreshInterval, DefaultPKIRefreshInterval),
	}
}

// validatePKI checks the pki section.
func (c *Config) validatePKI(bad func(string, string, ...any)) {
	for _, d := range []struct {
		field string
		v     time.Duration
	}{
		{"pki.crl_validity", c.PKI.CRLValidity},
		{"pki.delta_crl_validity", c.PKI.DeltaCRLValidity},
		{"pki.ocsp_validity", c.PKI.OCSPValidity},
		{"pki.ocsp_responder_validity", c.PKI.OCSPResponderValidity},
	} {
		if d.v != 0 && (d.v < time.Minute || d.v > 365*24*time.Hour) {
			bad(d.field, "%s is out of range 1m..8760h", d.v)
		}
	}
	if c.PKI.RefreshInterval < time.Second || c.PKI.RefreshInterval > 24*time.Hour {
		bad("pki.refresh_interval", "%s is out of range 1s..24h", c.PKI.RefreshInterval)
	}
	if c.PKI.BaseURL == "" {
		return
	}
	u, err := url.Parse(c.PKI.BaseURL)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || u.RawQuery != "" || u.Fragment != "" {
		bad("pki.base_url", "%q: want an absolute http:// or https:// URL without query or fragment", c.PKI.BaseURL)
		return
	}
	if h := u.Hostname(); h == "0.0.0.0" || h == "::" {
		bad("pki.base_url", "%q: %s is not an address a relying party can reach", c.PKI.BaseURL, h)
	}
}

package config

import (
	"net/url"
	"strings"
)

// PKIFile is the `pki` section.
type PKIFile struct {
	// BaseURL is the public URL under which the CA's certificates, CRLs
	// and OCSP responder are reached (the AIA, CRL distribution point and
	// OCSP URLs of every certificate start with it), e.g.
	// "http://ca.example.internal". Plain http is normal for these (RFC
	// 5280 practice; the objects are signed). Default: https:// and the
	// HTTP listener's address, which suits one machine only: every replica
	// of a deployment must name the same, stable front.
	BaseURL string `yaml:"base_url"`
}

// PKI configures the CA engine.
type PKI struct {
	BaseURL string // "" : derived from the HTTP listener at start
}

func (f PKIFile) toPKI() PKI {
	return PKI{BaseURL: strings.TrimRight(f.BaseURL, "/")}
}

// validatePKI checks the pki section.
func (c *Config) validatePKI(bad func(string, string, ...any)) {
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

package config

import (
	"net/url"
	"strings"
)

// ACMEFile is the `acme` section.
type ACMEFile struct {
	// BaseURL is the public https URL of the HTTPS listener that ACME
	// clients reach (the directory and every URL in it start with it, and
	// clients sign it into each request), e.g. "https://ca.example.internal".
	// Default: https:// and the HTTPS listener's address (one machine only).
	BaseURL string `yaml:"base_url"`
}

// ACME configures the ACME server.
type ACME struct {
	BaseURL string // "": derived from the HTTPS listener at start
}

func (f ACMEFile) toACME() ACME { return ACME{BaseURL: strings.TrimRight(f.BaseURL, "/")} }

// validateACME checks the acme section.
func (c *Config) validateACME(bad func(string, string, ...any)) {
	if c.ACME.BaseURL == "" {
		return
	}
	u, err := url.Parse(c.ACME.BaseURL)
	if err != nil || u.Scheme != "https" || u.Host == "" || u.RawQuery != "" || u.Fragment != "" {
		bad("acme.base_url", "%q: want an absolute https:// URL without query or fragment (RFC 8555 requires https)", c.ACME.BaseURL)
	}
}

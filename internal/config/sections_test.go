package config

import (
	"strings"
	"testing"
	"time"
)

// TestPKIAndSSHSections: the pki and ssh sections reach the runtime Config,
// zero fields take their defaults, and values out of range are refused
// naming the field.
func TestPKIAndSSHSections(t *testing.T) {
	t.Run("defaults", func(t *testing.T) {
		c, err := load(t, fixture(t), valid)
		if err != nil {
			t.Fatal(err)
		}
		if got, want := c.PKI, (PKI{RefreshInterval: DefaultPKIRefreshInterval}); got != want {
			t.Errorf("pki: got %+v, want %+v", got, want)
		}
		if got, want := c.SSH, (SSH{}); got != want {
			t.Errorf("ssh: got %+v, want %+v", got, want)
		}
		if got, want := c.Limits.MaxItemsPerRequest, 500; got != want {
			t.Errorf("limits.max_items_per_request: got %d, want %d", got, want)
		}
		if got, want := Default().Limits.MaxItemsPerRequest, DefaultMaxItemsPerRequest; got != want {
			t.Errorf("default max_items_per_request: got %d, want %d", got, want)
		}
	})
	t.Run("set", func(t *testing.T) {
		c, err := load(t, fixture(t), valid+`pki:
  base_url: http://ca.example.internal/
  crl_validity: 48h
  delta_crl_validity: 2h
  ocsp_validity: 30m
  ocsp_responder_validity: 72h
  refresh_interval: 5m
ssh:
  sign_concurrency: 3
`)
		if err != nil {
			t.Fatal(err)
		}
		want := PKI{BaseURL: "http://ca.example.internal", CRLValidity: 48 * time.Hour, DeltaCRLValidity: 2 * time.Hour,
			OCSPValidity: 30 * time.Minute, OCSPResponderValidity: 72 * time.Hour, RefreshInterval: 5 * time.Minute}
		if c.PKI != want {
			t.Errorf("pki: got %+v, want %+v", c.PKI, want)
		}
		if c.SSH.SignConcurrency != 3 {
			t.Errorf("ssh.sign_concurrency: got %d, want 3", c.SSH.SignConcurrency)
		}
	})
	for _, tc := range []struct{ name, section, want string }{
		{"crl validity too short", "pki:\n  crl_validity: 1s\n", "pki.crl_validity: 1s is out of range"},
		{"negative ocsp validity", "pki:\n  ocsp_validity: -1h\n", "pki.ocsp_validity"},
		{"refresh too long", "pki:\n  refresh_interval: 48h\n", "pki.refresh_interval: 48h0m0s is out of range"},
		{"negative sign concurrency", "ssh:\n  sign_concurrency: -1\n", "ssh.sign_concurrency: -1 is out of range"},
		{"unknown ssh field", "ssh:\n  max_items: 5\n", "field max_items not found"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := load(t, fixture(t), valid+tc.section)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("got %v, want an error containing %q", err, tc.want)
			}
		})
	}
}

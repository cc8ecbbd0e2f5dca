package config

import (
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestAuthAndAuditSections(t *testing.T) {
	doc := `
auth:
  mtls:
    mappings:
      - {match: "spiffe://prod/ns/payments/*", policies: [payments]}
  oidc:
    issuer: https://idp.example
    audience: hsmgate
    jwks_file: oidc/jwks.json
    username_claim: email
    group_policies: {eng: [ssh-eng]}
  tokens: {default_ttl: 2h, max_ttl: 48h}
  rate_limits:
    identity: {rate: 1000, burst: 2000}
    policies: {bulk: {rate: 20000, burst: 40000}}
    resources: [{match: "transit/keys/hot-*", rate: 5000, burst: 5000}]
    anonymous: {rate: 2, burst: 4}
  kubernetes:
    token_reviewer_jwt_file: secrets/k8s-token
audit:
  path: logs/audit.log
  max_bytes: 1048576
  hmac_key_file: secrets/audit-key
`
	c, err := Parse([]byte(doc), "/etc/hsmgate")
	if err != nil {
		t.Fatalf("Parse: %v", err)
	}
	a := c.Auth
	if got := a.MTLS.Mappings[0].Policies[0]; got != "payments" {
		t.Errorf("mtls mapping: got %q, want payments", got)
	}
	if a.OIDC == nil || a.OIDC.JWKSFile != filepath.Join("/etc/hsmgate", "oidc/jwks.json") || a.OIDC.UsernameClaim != "email" {
		t.Errorf("oidc: got %+v, want the jwks file resolved against the config dir", a.OIDC)
	}
	if a.Tokens.DefaultTTL != 2*time.Hour || a.Tokens.MaxTTL != 48*time.Hour {
		t.Errorf("tokens: got %v/%v, want 2h/48h", a.Tokens.DefaultTTL, a.Tokens.MaxTTL)
	}
	if a.RateLimits.Identity.Rate != 1000 || a.RateLimits.Policies["bulk"].Burst != 40000 || a.RateLimits.Resources[0].Rate != 5000 {
		t.Errorf("rate limits: got %+v", a.RateLimits)
	}
	if a.RateLimits.Anonymous.Burst != 4 || a.Kubernetes.TokenReviewerJWTFile != "/etc/hsmgate/secrets/k8s-token" {
		t.Errorf("anonymous limit %+v, reviewer token file %q: want burst 4 and the file resolved", a.RateLimits.Anonymous, a.Kubernetes.TokenReviewerJWTFile)
	}
	if c.Audit.Path != "/etc/hsmgate/logs/audit.log" || c.Audit.HMACKeyFile != "/etc/hsmgate/secrets/audit-key" || c.Audit.MaxBytes != 1<<20 {
		t.Errorf("audit: got %+v", c.Audit)
	}
	for _, bad := range []struct{ doc, want string }{
		{"auth:\n  oidc: {issuer: x}\n", "oidc needs"},
		{"auth:\n  mtls:\n    mappings: [{match: a, policies: [\"Bad Name\"]}]\n", "policy name"},
		{"audit:\n  hmac_key_file: k\n", "path is required"},
		{"auth:\n  tokens: {ttl: 1h}\n", "field ttl not found"},
		{"auth:\n  kubernetes: {token_reviewer_jwt_file: f, token_reviewer_jwt_env: E}\n", "at most one"},
	} {
		if _, err := Parse([]byte(bad.doc), "/x"); err == nil || !strings.Contains(err.Error(), bad.want) {
			if err == nil {
				// Validate-time checks.
				c, _ := Parse([]byte(bad.doc), "/x")
				err = c.Validate()
			}
			if err == nil || !strings.Contains(err.Error(), bad.want) {
				t.Errorf("%q: got %v, want an error containing %q", bad.doc, err, bad.want)
			}
		}
	}
}

package config

import (
	"fmt"

	"github.com/hsmgate/hsmgate/internal/auth"
)

// The auth and audit sections. This file belongs to the owners of
// internal/auth and internal/audit.
//
//	auth:
//	  mtls:
//	    mappings:                    # client certificate identity (URI SAN, else CN) -> policies
//	      - {match: "spiffe://prod/ns/payments/*", policies: [payments]}
//	  oidc:                          # optional: JWTs from an OIDC issuer
//	    issuer: https://idp.example
//	    audience: hsmgate
//	    jwks_file: oidc/jwks.json    # or jwks_url: https://idp.example/keys
//	    username_claim: preferred_username
//	    groups_claim: groups
//	    group_policies: {eng: [ssh-eng]}
//	  tokens: {default_ttl: 24h, max_ttl: 768h}
//	  kubernetes:                    # Kubernetes login's TokenReview (token_review_url set by `hsmgate auth kubernetes config`)
//	    token_reviewer_jwt_file: /var/run/secrets/kubernetes.io/serviceaccount/token   # or token_reviewer_jwt_env: NAME
//	  rate_limits:
//	    identity: {rate: 1000, burst: 2000}
//	    policies: {bulk: {rate: 20000, burst: 40000}}
//	    resources: [{match: "transit/keys/hot-*", rate: 5000, burst: 5000}]
//
// The client CAs are tls.client_ca (the TLS layer verifies chains).

// AuthFile is the `auth` section of the file.
type AuthFile struct {
	MTLS struct {
		Mappings []auth.CertMapping `yaml:"mappings"`
	} `yaml:"mtls"`
	OIDC       *auth.OIDCConfig     `yaml:"oidc"`
	Tokens     auth.TokenConfig     `yaml:"tokens"`
	RateLimits auth.RateLimitConfig `yaml:"rate_limits"`
	// Kubernetes: where the server's TokenReview bearer token comes from.
	Kubernetes auth.KubernetesReviewerConfig `yaml:"kubernetes"`
}

// Auth is the runtime form of AuthFile: the config auth.New takes. The server
// sets Config.MTLS.ClientCAFile from TLS.ClientCAFile if it wants auth to load them.
type Auth struct {
	auth.Config
	// Kubernetes is the server's side of Kubernetes login's TokenReview.
	Kubernetes auth.KubernetesReviewerConfig
}

// toAuth converts and checks the auth section; dir resolves relative paths.
func (f AuthFile) toAuth(dir string) (Auth, error) {
	a := Auth{Config: auth.Config{
		MTLS:       auth.MTLSConfig{Mappings: f.MTLS.Mappings},
		Tokens:     f.Tokens,
		RateLimits: f.RateLimits,
	}, Kubernetes: f.Kubernetes}
	if a.Kubernetes.TokenReviewerJWTFile != "" {
		a.Kubernetes.TokenReviewerJWTFile = absPath(dir, a.Kubernetes.TokenReviewerJWTFile)
	}
	if f.OIDC != nil {
		o := *f.OIDC
		o.JWKSFile = absPath(dir, o.JWKSFile)
		a.OIDC = &o
	}
	if err := a.Validate(); err != nil {
		return Auth{}, err
	}
	return a, nil
}

// Validate checks a runtime Auth (also called for configs built in code, e.g. dev mode).
func (a Auth) Validate() error {
	if err := a.Config.Validate(); err != nil {
		return fmt.Errorf("auth: %w", err)
	}
	if err := a.Kubernetes.Validate(); err != nil {
		return fmt.Errorf("auth: %w", err)
	}
	return nil
}

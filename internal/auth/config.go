package auth

import (
	"context"
	"fmt"

	"github.com/hsmgate/hsmgate/keystore"
)

// Config is the auth section of the server config file (secrets are never in
// it: tokens live hashed in the store, JWKS are public keys).
type Config struct {
	MTLS       MTLSConfig      `yaml:"mtls"`
	OIDC       *OIDCConfig     `yaml:"oidc"`
	Tokens     TokenConfig     `yaml:"tokens"`
	RateLimits RateLimitConfig `yaml:"rate_limits"`
	// Cache configures the token and policy caches: the grace period of
	// degraded service while the store is out of reach, the clock.
	Cache keystore.CacheOptions `yaml:"-"`
}

// Validate checks what can be checked without opening files.
func (c Config) Validate() error {
	for _, m := range c.MTLS.Mappings {
		if m.Match == "" {
			return fmt.Errorf("auth: mtls mapping with an empty match")
		}
		for _, p := range m.Policies {
			if !ValidName(p) {
				return fmt.Errorf("auth: mtls mapping %q: policy name %q", m.Match, p)
			}
		}
	}
	if o := c.OIDC; o != nil {
		if o.Issuer == "" || o.Audience == "" || (o.JWKSFile == "") == (o.JWKSURL == "") {
			return fmt.Errorf("auth: oidc needs issuer, audience and one of jwks_file, jwks_url")
		}
	}
	if c.Tokens.DefaultTTL < 0 || c.Tokens.MaxTTL < 0 {
		return fmt.Errorf("auth: negative token TTL")
	}
	for _, r := range c.RateLimits.Resources {
		if r.Match == "" {
			return fmt.Errorf("auth: rate limit with an empty match")
		}
	}
	return nil
}

// Auth holds the parts built from Config.
type Auth struct {
	Policies      *Policies
	Tokens        *Tokens
	Authenticator *Authenticator
	Limiter       *RateLimiter
	Service       *Service
}

// New builds the policy and token stores (caches watching store until ctx is
// done), the authenticator, the rate limiter and the AuthService.
func New(ctx context.Context, cfg Config, store keystore.Store) (*Auth, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if cfg.Tokens.Cache.IsZero() {
		cfg.Tokens.Cache = cfg.Cache
	}
	pol, err := NewPolicies(ctx, store, cfg.Cache)
	if err != nil {
		return nil, err
	}
	tok, err := NewTokens(ctx, store, cfg.Tokens)
	if err != nil {
		return nil, err
	}
	a := &Auth{Policies: pol, Tokens: tok, Limiter: NewRateLimiter(cfg.RateLimits), Service: NewService(pol, tok)}
	// Certificates reach the authenticator only when the TLS layer verified
	// them, so a verified certificate always names an identity.
	m := cfg.MTLS
	a.Authenticator = &Authenticator{Tokens: tok, MTLS: &m}
	if cfg.OIDC != nil {
		v, err := NewJWTVerifier(ctx, *cfg.OIDC, nil)
		if err != nil {
			return nil, err
		}
		a.Authenticator.JWT = v
	}
	return a, nil
}

// Interceptor returns the interceptor for table (merge every engine's table,
// PublicTable and AuthTable first) writing to auditor.
func (a *Auth) Interceptor(table Table, auditor Auditor) (*Interceptor, error) {
	return NewInterceptor(Options{Table: table, Authenticator: a.Authenticator, Policies: a.Policies, Limiter: a.Limiter, Audit: auditor})
}

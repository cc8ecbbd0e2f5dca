package auth

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/coreos/go-oidc/v3/oidc"
	jose "github.com/go-jose/go-jose/v4"
)

// OIDCConfig is the JWT section of the server config. Either JWKSFile or
// JWKSURL must be set.
type OIDCConfig struct {
	// Issuer: the exact "iss" value required.
	Issuer string `yaml:"issuer"`
	// Audience: a value required in "aud".
	Audience string `yaml:"audience"`
	// JWKSFile: a JSON Web Key Set file (public keys).
	JWKSFile string `yaml:"jwks_file"`
	// JWKSURL: where to fetch the key set (cached, refetched on an unknown kid).
	JWKSURL string `yaml:"jwks_url"`
	// Algorithms allowed (default RS256, ES256, EdDSA).
	Algorithms []string `yaml:"algorithms"`
	// UsernameClaim names the identity (default "preferred_username", then
	// "email", then "sub" when the claim is absent).
	UsernameClaim string `yaml:"username_claim"`
	// GroupsClaim holds a list of groups (default "groups").
	GroupsClaim string `yaml:"groups_claim"`
	// GroupPolicies map a group to policies.
	GroupPolicies map[string][]string `yaml:"group_policies"`
	// DefaultPolicies are given to every JWT identity.
	DefaultPolicies []string `yaml:"default_policies"`
}

// JWTVerifier checks JWTs from one OIDC issuer.
type JWTVerifier struct {
	cfg      OIDCConfig
	verifier *oidc.IDTokenVerifier
}

// NewJWTVerifier builds a verifier. ctx is kept by a remote key set for its
// fetches (an *http.Client can be passed with oidc.ClientContext).
func NewJWTVerifier(ctx context.Context, cfg OIDCConfig, now func() time.Time) (*JWTVerifier, error) {
	if cfg.Issuer == "" || cfg.Audience == "" {
		return nil, fmt.Errorf("auth: oidc: issuer and audience are required")
	}
	var ks oidc.KeySet
	switch {
	case cfg.JWKSFile != "" && cfg.JWKSURL != "":
		return nil, fmt.Errorf("auth: oidc: set jwks_file or jwks_url, not both")
	case cfg.JWKSFile != "":
		b, err := os.ReadFile(cfg.JWKSFile)
		if err != nil {
			return nil, fmt.Errorf("auth: oidc: %w", err)
		}
		var set jose.JSONWebKeySet
		if err := json.Unmarshal(b, &set); err != nil {
			return nil, fmt.Errorf("auth: oidc: jwks file: %w", err)
		}
		static := &oidc.StaticKeySet{}
		for _, k := range set.Keys {
			if !k.IsPublic() {
				return nil, fmt.Errorf("auth: oidc: jwks file holds a private key (kid %q)", k.KeyID)
			}
			static.PublicKeys = append(static.PublicKeys, k.Key)
		}
		if len(static.PublicKeys) == 0 {
			return nil, fmt.Errorf("auth: oidc: jwks file holds no key")
		}
		ks = static
	case cfg.JWKSURL != "":
		ks = oidc.NewRemoteKeySet(ctx, cfg.JWKSURL)
	default:
		return nil, fmt.Errorf("auth: oidc: jwks_file or jwks_url is required")
	}
	algs := cfg.Algorithms
	if len(algs) == 0 {
		algs = []string{oidc.RS256, oidc.ES256, oidc.EdDSA}
	}
	if now == nil {
		now = time.Now
	}
	if cfg.GroupsClaim == "" {
		cfg.GroupsClaim = "groups"
	}
	v := oidc.NewVerifier(cfg.Issuer, ks, &oidc.Config{ClientID: cfg.Audience, SupportedSigningAlgs: algs, Now: now})
	return &JWTVerifier{cfg: cfg, verifier: v}, nil
}

// Authenticate verifies raw (signature, issuer, audience, expiry) and maps its
// claims to an identity. Any failure is ErrUnauthenticated.
func (v *JWTVerifier) Authenticate(ctx context.Context, raw string) (*Identity, error) {
	tok, err := v.verifier.Verify(ctx, raw)
	if err != nil {
		var exp *oidc.TokenExpiredError
		if errors.As(err, &exp) {
			return nil, fmt.Errorf("%w: jwt expired", ErrUnauthenticated)
		}
		return nil, fmt.Errorf("%w: jwt: %v", ErrUnauthenticated, err)
	}
	var claims map[string]any
	if err := tok.Claims(&claims); err != nil {
		return nil, fmt.Errorf("%w: jwt claims: %v", ErrUnauthenticated, err)
	}
	name := ""
	if v.cfg.UsernameClaim != "" {
		name, _ = claims[v.cfg.UsernameClaim].(string) // configured: required, no fall-back
	} else {
		for _, c := range []string{"preferred_username", "email"} {
			if s, ok := claims[c].(string); ok && s != "" {
				name = s
				break
			}
		}
		if name == "" {
			name = tok.Subject
		}
	}
	if name == "" {
		return nil, fmt.Errorf("%w: jwt has no %q claim", ErrUnauthenticated, v.cfg.UsernameClaim)
	}
	// The issuer vouches for every claim: Entity and EntityMetadata are the
	// same as Name and Metadata (the same map, filled below).
	md := map[string]string{"sub": tok.Subject, "iss": tok.Issuer}
	id := &Identity{Name: name, Kind: KindJWT, Metadata: md, Entity: name, EntityMetadata: md}
	seen := map[string]bool{}
	add := func(ps []string) {
		for _, p := range ps {
			if !seen[p] {
				seen[p] = true
				id.Policies = append(id.Policies, p)
			}
		}
	}
	add(v.cfg.DefaultPolicies)
	var groups []string
	switch g := claims[v.cfg.GroupsClaim].(type) {
	case []any:
		for _, x := range g {
			if s, ok := x.(string); ok {
				groups = append(groups, s)
			}
		}
	case string:
		groups = []string{g}
	}
	for _, g := range groups {
		add(v.cfg.GroupPolicies[g])
	}
	if len(groups) > 0 {
		id.Metadata["groups"] = strings.Join(groups, ",")
	}
	for _, c := range []string{"email", "preferred_username"} {
		if s, ok := claims[c].(string); ok {
			id.Metadata[c] = s
		}
	}
	return id, nil
}

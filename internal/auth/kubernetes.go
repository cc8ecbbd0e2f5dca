package auth

import (
	"context"
	"crypto"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"time"

	"github.com/coreos/go-oidc/v3/oidc"
	jose "github.com/go-jose/go-jose/v4"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/hsmgate/hsmgate/keystore"
	hsmgatev1 "github.com/hsmgate/hsmgate/proto/hsmgate/v1"
)

// Kubernetes login (Vault's kubernetes method, as cert-manager's Vault issuer
// uses it): a pod presents its service-account token (a JWT) and a role. The
// JWT's signature is verified against the cluster issuer's public keys (a
// JWKS stored in the config, or fetched from a URL and cached), and its
// issuer, audience, expiry and not-before; then its service account
// ("sub": system:serviceaccount:<namespace>:<name>, cross-checked with the
// "kubernetes.io" claim) must match the role's bound names and namespaces.
//
// A token without "exp" (the legacy, secret-based service-account tokens) is
// refused, and so is one signed with an algorithm outside kubernetesAlgs.
//
// Optionally (token_review_url), the API server is asked too, by a
// TokenReview (kubernetes_review.go): with a key set both must agree, and
// without one the review alone decides. Without a review a token stays valid
// until its expiry even if its pod or service account is deleted (projected
// tokens live an hour by default, and are bound to their pod only in the API
// server's view): use short-lived projected tokens, or the review.
//
// Store layout: auth/kubernetes/config (hsmgate.v1.KubernetesAuthConfig),
// auth/kubernetes/roles/<name> (hsmgate.v1.KubernetesRole).
const (
	KubernetesConfigKey  = "auth/kubernetes/config"
	KubernetesRolePrefix = "auth/kubernetes/roles/"

	maxJWTLen        = 16 << 10
	maxJWKSLen       = 1 << 20
	maxAudiences     = 16
	saSubjectPrefix  = "system:serviceaccount:"
	jwksFetchTimeout = 10 * time.Second
)

// kubernetesAlgs are the signature algorithms accepted on service-account tokens.
var kubernetesAlgs = []string{oidc.RS256, oidc.RS384, oidc.RS512, oidc.ES256, oidc.ES384, oidc.ES512, oidc.PS256, oidc.EdDSA}

// KubernetesConfig tunes KubernetesAuth; the zero value is ready for production.
type KubernetesConfig struct {
	// Now is the clock (default time.Now).
	Now func() time.Time
	// HTTPClient fetches a jwks_url (default: one with a 10s timeout that
	// trusts jwks_ca_pem, or the system roots).
	HTTPClient *http.Client
	// ReviewerJWT reads the bearer token of TokenReview calls
	// (KubernetesReviewerConfig.Source); nil: the login JWT itself.
	ReviewerJWT func() (string, error)
	// ReviewTimeout bounds one TokenReview call (default 10 s).
	ReviewTimeout time.Duration
}

// KubernetesAuth manages the Kubernetes method and logs service accounts in.
type KubernetesAuth struct {
	ctx    context.Context // lives as long as remote key sets may fetch
	store  keystore.Store
	tokens *Tokens
	roles  records[*hsmgatev1.KubernetesRole]
	cfg    KubernetesConfig

	mu        sync.Mutex
	rev       int64 // config revision that v was built from
	v         *oidc.IDTokenVerifier
	reviewRev int64 // config revision that review was built from
	review    *http.Client
}

// NewKubernetesAuth returns the Kubernetes method over store, issuing tokens
// with tokens. ctx bounds the life of remote key-set fetches.
func NewKubernetesAuth(ctx context.Context, cfg KubernetesConfig, store keystore.Store, tokens *Tokens) (*KubernetesAuth, error) {
	if store == nil || tokens == nil {
		return nil, fmt.Errorf("auth: kubernetes needs a store and tokens")
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.ReviewTimeout <= 0 {
		cfg.ReviewTimeout = defaultReviewTimeout
	}
	return &KubernetesAuth{
		ctx: ctx, store: store, tokens: tokens, cfg: cfg,
		roles: records[*hsmgatev1.KubernetesRole]{store: store, prefix: KubernetesRolePrefix, what: "kubernetes role", newT: func() *hsmgatev1.KubernetesRole { return &hsmgatev1.KubernetesRole{} }},
	}, nil
}

// parseJWKS decodes a JSON Web Key Set holding only public keys.
func parseJWKS(doc string) ([]crypto.PublicKey, error) {
	if len(doc) > maxJWKSLen {
		return nil, fmt.Errorf("%w: jwks over %d bytes", ErrInvalid, maxJWKSLen)
	}
	var set jose.JSONWebKeySet
	if err := json.Unmarshal([]byte(doc), &set); err != nil {
		return nil, fmt.Errorf("%w: jwks: %v", ErrInvalid, err)
	}
	var keys []crypto.PublicKey
	for _, k := range set.Keys {
		if !k.IsPublic() {
			return nil, fmt.Errorf("%w: jwks holds a private key (kid %q)", ErrInvalid, k.KeyID)
		}
		keys = append(keys, k.Key)
	}
	if len(keys) == 0 {
		return nil, fmt.Errorf("%w: jwks holds no key", ErrInvalid)
	}
	return keys, nil
}

func validateKubernetesConfig(c *hsmgatev1.KubernetesAuthConfig) (*hsmgatev1.KubernetesAuthConfig, error) {
	if c == nil {
		return nil, fmt.Errorf("%w: config is required", ErrInvalid)
	}
	if err := validateTokenReview(c); err != nil {
		return nil, err
	}
	review, keys := c.GetTokenReviewUrl() != "", c.GetJwks() != "" || c.GetJwksUrl() != ""
	if c.GetJwks() != "" && c.GetJwksUrl() != "" || !keys && !review {
		return nil, fmt.Errorf("%w: set one of jwks and jwks_url (or token_review_url alone)", ErrInvalid)
	}
	if (keys || c.GetIssuer() != "") && (c.GetIssuer() == "" || len(c.GetIssuer()) > 1024) {
		return nil, fmt.Errorf("%w: issuer must be 1..1024 bytes", ErrInvalid)
	}
	if c.GetJwks() != "" {
		if _, err := parseJWKS(c.GetJwks()); err != nil {
			return nil, err
		}
	}
	if c.GetJwksUrl() != "" {
		u, err := url.Parse(c.GetJwksUrl())
		if err != nil || u.Scheme != "https" || u.Host == "" || len(c.GetJwksUrl()) > 2048 {
			return nil, fmt.Errorf("%w: jwks_url must be an https URL", ErrInvalid)
		}
	}
	if c.GetJwksCaPem() != "" {
		if c.GetJwksUrl() == "" {
			return nil, fmt.Errorf("%w: jwks_ca_pem needs jwks_url", ErrInvalid)
		}
		if !x509.NewCertPool().AppendCertsFromPEM([]byte(c.GetJwksCaPem())) {
			return nil, fmt.Errorf("%w: jwks_ca_pem holds no PEM certificate", ErrInvalid)
		}
	}
	if n := len(c.GetAudiences()); (n == 0 && keys) || n > maxAudiences {
		return nil, fmt.Errorf("%w: 1..%d audiences are required (a token for another audience must not log in here)", ErrInvalid, maxAudiences)
	}
	if err := checkGlobs("audiences", c.GetAudiences()); err != nil {
		return nil, err
	}
	return proto.Clone(c).(*hsmgatev1.KubernetesAuthConfig), nil
}

// WriteConfig stores the issuer, its keys and the audiences.
func (k *KubernetesAuth) WriteConfig(ctx context.Context, c *hsmgatev1.KubernetesAuthConfig) (*hsmgatev1.KubernetesAuthConfig, error) {
	c, err := validateKubernetesConfig(c)
	if err != nil {
		return nil, err
	}
	c.UpdateTime = timestamppb.New(k.cfg.Now())
	b, err := proto.Marshal(c)
	if err != nil {
		return nil, fmt.Errorf("auth: encode kubernetes config: %w", err)
	}
	if _, err := k.store.Put(ctx, KubernetesConfigKey, b, keystore.AnyRevision); err != nil {
		return nil, fmt.Errorf("auth: write kubernetes config: %w", err)
	}
	return c, nil
}

// ReadConfig returns the configuration; ErrNotFound if there is none.
func (k *KubernetesAuth) ReadConfig(ctx context.Context) (*hsmgatev1.KubernetesAuthConfig, error) {
	c, _, err := k.readConfig(ctx)
	return c, err
}

func (k *KubernetesAuth) readConfig(ctx context.Context) (*hsmgatev1.KubernetesAuthConfig, int64, error) {
	e, err := k.store.Get(ctx, KubernetesConfigKey)
	if errors.Is(err, keystore.ErrNotFound) {
		return nil, 0, fmt.Errorf("%w: kubernetes auth is not configured", ErrNotFound)
	}
	if err != nil {
		return nil, 0, fmt.Errorf("auth: read kubernetes config: %w", err)
	}
	c := &hsmgatev1.KubernetesAuthConfig{}
	if err := proto.Unmarshal(e.Value, c); err != nil {
		return nil, 0, fmt.Errorf("auth: decode kubernetes config: %w", err)
	}
	return c, e.Revision, nil
}

func validateKubernetesRole(r *hsmgatev1.KubernetesRole) (*hsmgatev1.KubernetesRole, error) {
	if r == nil {
		return nil, fmt.Errorf("%w: role is required", ErrInvalid)
	}
	if err := checkRoleName(r.GetName()); err != nil {
		return nil, err
	}
	if len(r.GetBoundServiceAccountNames()) == 0 || len(r.GetBoundServiceAccountNamespaces()) == 0 {
		return nil, fmt.Errorf("%w: bound service account names and namespaces are required (\"*\" for any)", ErrInvalid)
	}
	if err := checkGlobs("bound service account names", r.GetBoundServiceAccountNames()); err != nil {
		return nil, err
	}
	if err := checkGlobs("bound service account namespaces", r.GetBoundServiceAccountNamespaces()); err != nil {
		return nil, err
	}
	if len(r.GetAudience()) > maxGlobLen {
		return nil, fmt.Errorf("%w: audience over %d bytes", ErrInvalid, maxGlobLen)
	}
	if err := checkPolicies(r.GetPolicies()); err != nil {
		return nil, err
	}
	if err := checkTTLs(r.GetTokenTtl(), r.GetTokenMaxTtl()); err != nil {
		return nil, err
	}
	return proto.Clone(r).(*hsmgatev1.KubernetesRole), nil
}

// WriteRole creates or replaces a Kubernetes role.
func (k *KubernetesAuth) WriteRole(ctx context.Context, r *hsmgatev1.KubernetesRole) (*hsmgatev1.KubernetesRole, error) {
	r, err := validateKubernetesRole(r)
	if err != nil {
		return nil, err
	}
	r.UpdateTime = timestamppb.New(k.cfg.Now())
	if err := k.roles.put(ctx, r.GetName(), r, keystore.AnyRevision); err != nil {
		return nil, err
	}
	return r, nil
}

// ReadRole returns a role; ErrNotFound if absent.
func (k *KubernetesAuth) ReadRole(ctx context.Context, name string) (*hsmgatev1.KubernetesRole, error) {
	if err := checkRoleName(name); err != nil {
		return nil, err
	}
	r, _, err := k.roles.get(ctx, name)
	return r, err
}

// ListRoles returns the role names, sorted.
func (k *KubernetesAuth) ListRoles(ctx context.Context) ([]string, error) { return k.roles.list(ctx) }

// DeleteRole removes a role; ErrNotFound if absent.
func (k *KubernetesAuth) DeleteRole(ctx context.Context, name string) error {
	if err := checkRoleName(name); err != nil {
		return err
	}
	return k.roles.delete(ctx, name, keystore.AnyRevision)
}

// verifier returns the verifier of config c at revision rev, rebuilt when the
// config changed (a remote key set keeps its cache between logins).
func (k *KubernetesAuth) verifier(c *hsmgatev1.KubernetesAuthConfig, rev int64) (*oidc.IDTokenVerifier, error) {
	k.mu.Lock()
	defer k.mu.Unlock()
	if k.v != nil && k.rev == rev {
		return k.v, nil
	}
	var ks oidc.KeySet
	if c.GetJwks() != "" {
		keys, err := parseJWKS(c.GetJwks())
		if err != nil {
			return nil, fmt.Errorf("auth: stored kubernetes jwks: %w", err)
		}
		ks = &oidc.StaticKeySet{PublicKeys: keys}
	} else {
		client := k.cfg.HTTPClient
		if client == nil {
			tc := &tls.Config{MinVersion: tls.VersionTLS12}
			if c.GetJwksCaPem() != "" {
				tc.RootCAs = x509.NewCertPool()
				tc.RootCAs.AppendCertsFromPEM([]byte(c.GetJwksCaPem()))
			}
			tr := http.DefaultTransport.(*http.Transport).Clone()
			tr.TLSClientConfig = tc
			client = &http.Client{Timeout: jwksFetchTimeout, Transport: limitedBody{tr, maxJWKSLen}}
		}
		ks = oidc.NewRemoteKeySet(oidc.ClientContext(k.ctx, client), c.GetJwksUrl())
	}
	k.v = oidc.NewVerifier(c.GetIssuer(), ks, &oidc.Config{SkipClientIDCheck: true, SupportedSigningAlgs: kubernetesAlgs, Now: k.cfg.Now})
	k.rev = rev
	return k.v, nil
}

// limitedBody caps the size of response bodies (a JWKS endpoint cannot make
// the server read without bound).
type limitedBody struct {
	rt  http.RoundTripper
	max int64
}

func (l limitedBody) RoundTrip(r *http.Request) (*http.Response, error) {
	resp, err := l.rt.RoundTrip(r)
	if err != nil {
		return nil, err
	}
	resp.Body = struct {
		io.Reader
		io.Closer
	}{io.LimitReader(resp.Body, l.max), resp.Body}
	return resp, nil
}

// saClaims are the service-account claims of a Kubernetes token.
type saClaims struct {
	Kubernetes *struct {
		Namespace      string `json:"namespace"`
		ServiceAccount struct {
			Name string `json:"name"`
			UID  string `json:"uid"`
		} `json:"serviceaccount"`
		Pod *struct {
			Name string `json:"name"`
		} `json:"pod"`
	} `json:"kubernetes.io"`
}

// serviceAccount returns the namespace and name a verified token speaks for.
func serviceAccount(sub string, c saClaims) (ns, name string, err error) {
	rest, ok := strings.CutPrefix(sub, saSubjectPrefix)
	if !ok {
		return "", "", fmt.Errorf("%w: jwt subject is not a service account", ErrUnauthenticated)
	}
	ns, name, ok = strings.Cut(rest, ":")
	if !ok || !dnsLabelish(ns) || !dnsLabelish(name) {
		return "", "", fmt.Errorf("%w: jwt subject is not a service account", ErrUnauthenticated)
	}
	if kc := c.Kubernetes; kc != nil && (kc.Namespace != ns || kc.ServiceAccount.Name != name) {
		return "", "", fmt.Errorf("%w: jwt subject and kubernetes.io claim disagree", ErrUnauthenticated)
	}
	return ns, name, nil
}

// dnsLabelish: a Kubernetes namespace or service-account name (RFC 1123
// subdomain characters, at most 253), which never holds ':' or '*'.
func dnsLabelish(s string) bool {
	if s == "" || len(s) > 253 {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-' || c == '.') {
			return false
		}
	}
	return true
}

// Login verifies a service-account JWT for the role named role and returns a
// token with the role's policies and TTL, whose identity is
// "system:serviceaccount:<namespace>:<name>". A bad, expired or foreign JWT
// is ErrUnauthenticated; a good one for a service account the role does not
// bind is ErrPermissionDenied.
func (k *KubernetesAuth) Login(ctx context.Context, role, jwt string) (*Login, error) {
	if !ValidName(role) {
		return nil, fmt.Errorf("%w: invalid role name", ErrUnauthenticated)
	}
	if jwt == "" || len(jwt) > maxJWTLen || strings.Count(jwt, ".") != 2 {
		return nil, fmt.Errorf("%w: malformed jwt", ErrUnauthenticated)
	}
	c, rev, err := k.readConfig(ctx)
	if errors.Is(err, ErrNotFound) {
		return nil, fmt.Errorf("%w: kubernetes auth is not configured", ErrUnauthenticated)
	}
	if err != nil {
		return nil, err
	}
	r, _, err := k.roles.get(ctx, role)
	if errors.Is(err, ErrNotFound) {
		return nil, fmt.Errorf("%w: invalid role name", ErrUnauthenticated)
	}
	if err != nil {
		return nil, err
	}
	want := c.GetAudiences()
	if r.GetAudience() != "" {
		want = []string{r.GetAudience()}
	}
	var ns, name string
	meta := map[string]string{}
	if c.GetJwks() != "" || c.GetJwksUrl() != "" {
		if ns, name, err = k.verifyOffline(ctx, c, rev, jwt, want, meta); err != nil {
			return nil, err
		}
	}
	if c.GetTokenReviewUrl() != "" {
		rv, err := k.reviewToken(ctx, c, rev, jwt, want)
		if err != nil {
			return nil, err
		}
		if ns != "" && (rv.ns != ns || rv.name != name) {
			return nil, fmt.Errorf("%w: token review and jwt name different service accounts", ErrUnauthenticated)
		}
		ns, name = rv.ns, rv.name
		for mk, mv := range rv.meta {
			meta[mk] = mv
		}
	}
	if !matchAny(r.GetBoundServiceAccountNamespaces(), ns) || !matchAny(r.GetBoundServiceAccountNames(), name) {
		return nil, fmt.Errorf("%w: service account %s/%s is not bound to role %q", ErrPermissionDenied, ns, name, role)
	}
	meta["service_account_namespace"], meta["service_account_name"] = ns, name
	return issueLogin(ctx, k.tokens, grant{
		method: "kubernetes", role: role, entity: saSubjectPrefix + ns + ":" + name,
		policies: r.GetPolicies(), ttl: r.GetTokenTtl().AsDuration(), maxTTL: r.GetTokenMaxTtl().AsDuration(),
		vouched: meta,
	})
}

// verifyOffline checks jwt's signature against the config's key set, its
// issuer, expiry and audience (one of want), and returns the service
// account it names; its uid and pod go to meta.
func (k *KubernetesAuth) verifyOffline(ctx context.Context, c *hsmgatev1.KubernetesAuthConfig, rev int64, jwt string, want []string, meta map[string]string) (ns, name string, err error) {
	v, err := k.verifier(c, rev)
	if err != nil {
		return "", "", err
	}
	tok, err := v.Verify(ctx, jwt)
	if err != nil {
		var exp *oidc.TokenExpiredError
		if errors.As(err, &exp) {
			return "", "", fmt.Errorf("%w: jwt expired", ErrUnauthenticated)
		}
		// go-oidc's text may name the JWKS URL and why fetching it failed:
		// not for an unauthenticated caller.
		return "", "", fmt.Errorf("%w: jwt is not valid here (signature, issuer or format)", ErrUnauthenticated)
	}
	if !audienceOK(tok.Audience, want) {
		return "", "", fmt.Errorf("%w: jwt audience is not accepted", ErrUnauthenticated)
	}
	var claims saClaims
	if err := tok.Claims(&claims); err != nil {
		return "", "", fmt.Errorf("%w: jwt claims: %s", ErrUnauthenticated, truncate(err.Error(), 200))
	}
	if ns, name, err = serviceAccount(tok.Subject, claims); err != nil {
		return "", "", err
	}
	if kc := claims.Kubernetes; kc != nil {
		meta["service_account_uid"] = truncate(kc.ServiceAccount.UID, maxMetaValue)
		if kc.Pod != nil {
			meta["pod_name"] = truncate(kc.Pod.Name, maxMetaValue)
		}
	}
	return ns, name, nil
}

// audienceOK reports whether one of the token's audiences is wanted (exact match).
func audienceOK(got, want []string) bool {
	for _, g := range got {
		for _, w := range want {
			if g == w {
				return true
			}
		}
	}
	return false
}

package auth

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"strings"
	"time"

	"github.com/hsmgate/hsmgate/internal/errs"
	hsmgatev1 "github.com/hsmgate/hsmgate/proto/hsmgate/v1"
)

// TokenReview (authentication.k8s.io/v1): the API server itself says whether
// a service-account token is valid now, so a token whose pod or service
// account was deleted is refused before its expiry. hsmgate POSTs
//
//	{"apiVersion":"authentication.k8s.io/v1","kind":"TokenReview",
//	 "spec":{"token":<jwt>,"audiences":[...]}}
//
// to <token_review_url>/apis/authentication.k8s.io/v1/tokenreviews with the
// reviewer's bearer token, over TLS verified against token_review_ca_pem,
// never following a redirect (the bearer token would follow it), within
// KubernetesConfig.ReviewTimeout and reading at most maxReviewResponse
// bytes. Only status.authenticated true, with a status.user.username of the
// form system:serviceaccount:<namespace>:<name> and (when audiences are
// wanted) a status.audiences naming one of them, logs in.
//
// The reviewer token (which needs the system:auth-delegator cluster role) is
// the server's own: a file (re-read on every review: projected tokens
// rotate) or an environment variable named in the server's config file
// (auth.kubernetes), never the store or the API. Without one, the login JWT
// is its own reviewer (as Vault does; its service account then needs that
// role).

const (
	tokenReviewPath      = "/apis/authentication.k8s.io/v1/tokenreviews"
	maxReviewResponse    = 64 << 10
	maxReviewerJWTLen    = 16 << 10
	defaultReviewTimeout = 10 * time.Second
)

// ErrTokenReviewUnavailable: the API server could not give a TokenReview
// answer (unreachable, slow, refused the reviewer token, answered garbage).
// The cause is in the error's chain for the server log; the caller sees
// this message only.
var ErrTokenReviewUnavailable = errs.New(errs.Unavailable, "auth: kubernetes token review unavailable")

// KubernetesReviewerConfig is the server's own side of TokenReview: where its
// reviewer token comes from (the `auth.kubernetes` section of the server's
// config file). At most one of the two; neither: the login JWT reviews
// itself.
type KubernetesReviewerConfig struct {
	// TokenReviewerJWTFile is a file holding the reviewer's token, e.g. the
	// pod's own /var/run/secrets/kubernetes.io/serviceaccount/token.
	TokenReviewerJWTFile string `yaml:"token_reviewer_jwt_file"`
	// TokenReviewerJWTEnv names an environment variable holding it.
	TokenReviewerJWTEnv string `yaml:"token_reviewer_jwt_env"`
}

// Validate checks that at most one source is set.
func (c KubernetesReviewerConfig) Validate() error {
	if c.TokenReviewerJWTFile != "" && c.TokenReviewerJWTEnv != "" {
		return errors.New("kubernetes: set at most one of token_reviewer_jwt_file and token_reviewer_jwt_env")
	}
	return nil
}

// Source returns the function that reads the reviewer token (nil: none
// configured, the login JWT reviews itself).
func (c KubernetesReviewerConfig) Source() func() (string, error) {
	switch {
	case c.TokenReviewerJWTFile != "":
		path := c.TokenReviewerJWTFile
		return func() (string, error) {
			f, err := os.Open(path)
			if err != nil {
				return "", fmt.Errorf("reviewer token file: %w", err)
			}
			defer f.Close()
			b, err := io.ReadAll(io.LimitReader(f, maxReviewerJWTLen+1))
			if err != nil {
				return "", fmt.Errorf("reviewer token file: %w", err)
			}
			return reviewerToken(string(b))
		}
	case c.TokenReviewerJWTEnv != "":
		name := c.TokenReviewerJWTEnv
		return func() (string, error) { return reviewerToken(os.Getenv(name)) }
	}
	return nil
}

func reviewerToken(s string) (string, error) {
	s = strings.TrimSpace(s)
	switch {
	case s == "":
		return "", errors.New("reviewer token is empty")
	case len(s) > maxReviewerJWTLen:
		return "", fmt.Errorf("reviewer token over %d bytes", maxReviewerJWTLen)
	case strings.ContainsAny(s, "\r\n\t "):
		return "", errors.New("reviewer token holds white space")
	}
	return s, nil
}

// validateTokenReview checks the TokenReview fields of a config.
func validateTokenReview(c *hsmgatev1.KubernetesAuthConfig) error {
	if c.GetTokenReviewUrl() == "" {
		if c.GetTokenReviewCaPem() != "" {
			return fmt.Errorf("%w: token_review_ca_pem needs token_review_url", ErrInvalid)
		}
		return nil
	}
	raw := c.GetTokenReviewUrl()
	u, err := url.Parse(raw)
	if err != nil || u.Scheme != "https" || u.Host == "" || u.User != nil || u.RawQuery != "" || u.Fragment != "" || len(raw) > 2048 {
		return fmt.Errorf("%w: token_review_url must be an https URL without user, query or fragment", ErrInvalid)
	}
	if c.GetTokenReviewCaPem() != "" && !x509.NewCertPool().AppendCertsFromPEM([]byte(c.GetTokenReviewCaPem())) {
		return fmt.Errorf("%w: token_review_ca_pem holds no PEM certificate", ErrInvalid)
	}
	return nil
}

// reviewClient returns the HTTP client of config c at revision rev (cached
// with the verifier's revision).
func (k *KubernetesAuth) reviewClient(c *hsmgatev1.KubernetesAuthConfig, rev int64) *http.Client {
	k.mu.Lock()
	defer k.mu.Unlock()
	if k.review != nil && k.reviewRev == rev {
		return k.review
	}
	tc := &tls.Config{MinVersion: tls.VersionTLS12}
	if c.GetTokenReviewCaPem() != "" {
		tc.RootCAs = x509.NewCertPool()
		tc.RootCAs.AppendCertsFromPEM([]byte(c.GetTokenReviewCaPem()))
	}
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.TLSClientConfig = tc
	tr.Proxy = nil // the API server is reached directly
	if k.review != nil {
		k.review.CloseIdleConnections()
	}
	k.review = &http.Client{
		Timeout:   k.cfg.ReviewTimeout,
		Transport: tr,
		// Never send the bearer token anywhere else.
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
	k.reviewRev = rev
	return k.review
}

type tokenReview struct {
	APIVersion string            `json:"apiVersion"`
	Kind       string            `json:"kind"`
	Spec       tokenReviewSpec   `json:"spec"`
	Status     tokenReviewStatus `json:"status"`
}

type tokenReviewSpec struct {
	Token     string   `json:"token"`
	Audiences []string `json:"audiences,omitempty"`
}

type tokenReviewStatus struct {
	Authenticated bool `json:"authenticated"`
	User          struct {
		Username string              `json:"username"`
		UID      string              `json:"uid"`
		Extra    map[string][]string `json:"extra"`
	} `json:"user"`
	Audiences []string `json:"audiences"`
}

// reviewed is what a TokenReview vouched for.
type reviewed struct {
	ns, name string
	meta     map[string]string
}

// reviewToken asks the API server of c about jwt. A token it does not
// authenticate, or one for another audience or not a service account's, is
// ErrUnauthenticated; no answer is ErrTokenReviewUnavailable.
func (k *KubernetesAuth) reviewToken(ctx context.Context, c *hsmgatev1.KubernetesAuthConfig, rev int64, jwt string, audiences []string) (*reviewed, error) {
	bearer := jwt
	if k.cfg.ReviewerJWT != nil {
		t, err := k.cfg.ReviewerJWT()
		if err != nil {
			return nil, fmt.Errorf("%w: %v", ErrTokenReviewUnavailable, err)
		}
		bearer = t
	}
	body, err := json.Marshal(tokenReview{APIVersion: "authentication.k8s.io/v1", Kind: "TokenReview",
		Spec: tokenReviewSpec{Token: jwt, Audiences: audiences}})
	if err != nil {
		return nil, fmt.Errorf("auth: encode token review: %w", err)
	}
	ctx, cancel := context.WithTimeout(ctx, k.cfg.ReviewTimeout)
	defer cancel()
	endpoint := strings.TrimRight(c.GetTokenReviewUrl(), "/") + tokenReviewPath
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, endpoint, bytes.NewReader(body))
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrTokenReviewUnavailable, err)
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Accept", "application/json")
	req.Header.Set("Authorization", "Bearer "+bearer)
	resp, err := k.reviewClient(c, rev).Do(req)
	if err != nil {
		// The URL error names the endpoint: for the log only (wrapped cause).
		return nil, fmt.Errorf("%w: %v", ErrTokenReviewUnavailable, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, maxReviewResponse+1))
	if err != nil {
		return nil, fmt.Errorf("%w: read answer: %v", ErrTokenReviewUnavailable, err)
	}
	switch {
	case resp.StatusCode == http.StatusUnauthorized || resp.StatusCode == http.StatusForbidden:
		return nil, fmt.Errorf("%w: the API server refused the reviewer token (HTTP %d)", ErrTokenReviewUnavailable, resp.StatusCode)
	case resp.StatusCode != http.StatusOK && resp.StatusCode != http.StatusCreated:
		return nil, fmt.Errorf("%w: the API server answered HTTP %d", ErrTokenReviewUnavailable, resp.StatusCode)
	case len(b) > maxReviewResponse:
		return nil, fmt.Errorf("%w: answer over %d bytes", ErrTokenReviewUnavailable, maxReviewResponse)
	}
	var tr tokenReview
	if err := json.Unmarshal(b, &tr); err != nil || tr.Kind != "TokenReview" || !strings.HasPrefix(tr.APIVersion, "authentication.k8s.io/") {
		return nil, fmt.Errorf("%w: the answer is not a TokenReview", ErrTokenReviewUnavailable)
	}
	st := tr.Status
	if !st.Authenticated {
		return nil, fmt.Errorf("%w: jwt is not valid here (token review)", ErrUnauthenticated)
	}
	if len(audiences) > 0 && !audienceOK(st.Audiences, audiences) {
		return nil, fmt.Errorf("%w: jwt audience is not accepted (token review)", ErrUnauthenticated)
	}
	ns, name, err := serviceAccount(st.User.Username, saClaims{})
	if err != nil {
		return nil, err
	}
	meta := map[string]string{}
	if st.User.UID != "" {
		meta["service_account_uid"] = truncate(st.User.UID, maxMetaValue)
	}
	if p := st.User.Extra["authentication.kubernetes.io/pod-name"]; len(p) == 1 {
		meta["pod_name"] = truncate(p[0], maxMetaValue)
	}
	return &reviewed{ns: ns, name: name, meta: meta}, nil
}

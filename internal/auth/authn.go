package auth

import (
	"context"
	"crypto/x509"
	"fmt"
	"net/http"
	"strings"

	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/peer"
)

// Authenticator turns a request's credentials into an Identity. A nil field
// turns that kind of credential off.
type Authenticator struct {
	Tokens *Tokens
	JWT    *JWTVerifier
	MTLS   *MTLSConfig
}

// FromGRPC authenticates an incoming gRPC call: the "authorization: Bearer"
// metadata, else the client certificate the TLS layer verified.
func (a *Authenticator) FromGRPC(ctx context.Context) (*Identity, error) {
	bearer := ""
	if md, ok := metadata.FromIncomingContext(ctx); ok {
		if v := md.Get("authorization"); len(v) > 0 {
			if len(v) > 1 {
				return nil, fmt.Errorf("%w: several authorization values", ErrUnauthenticated)
			}
			b, err := bearerValue(v[0])
			if err != nil {
				return nil, err
			}
			bearer = b
		}
	}
	var chains [][]*x509.Certificate
	if p, ok := peer.FromContext(ctx); ok {
		if ti, ok := p.AuthInfo.(credentials.TLSInfo); ok {
			chains = ti.State.VerifiedChains
		}
	}
	return a.authenticate(ctx, bearer, chains)
}

// FromHTTP authenticates an HTTP request: "Authorization: Bearer", else
// "X-Vault-Token" (cert-manager's Vault issuer), else the verified client certificate.
func (a *Authenticator) FromHTTP(r *http.Request) (*Identity, error) {
	bearer := ""
	if h := r.Header.Get("Authorization"); h != "" {
		b, err := bearerValue(h)
		if err != nil {
			return nil, err
		}
		bearer = b
	} else if h := r.Header.Get("X-Vault-Token"); h != "" {
		bearer = h
	}
	var chains [][]*x509.Certificate
	if r.TLS != nil {
		chains = r.TLS.VerifiedChains
	}
	return a.authenticate(r.Context(), bearer, chains)
}

func bearerValue(h string) (string, error) {
	const p = "bearer "
	if len(h) <= len(p) || !strings.EqualFold(h[:len(p)], p) {
		return "", fmt.Errorf("%w: authorization is not a bearer credential", ErrUnauthenticated)
	}
	return strings.TrimSpace(h[len(p):]), nil
}

func (a *Authenticator) authenticate(ctx context.Context, bearer string, chains [][]*x509.Certificate) (*Identity, error) {
	switch {
	case bearer != "" && strings.HasPrefix(bearer, TokenPrefix):
		if a.Tokens == nil {
			return nil, fmt.Errorf("%w: tokens are not enabled", ErrUnauthenticated)
		}
		return a.Tokens.Authenticate(ctx, bearer)
	case bearer != "":
		if a.JWT == nil || strings.Count(bearer, ".") != 2 {
			return nil, fmt.Errorf("%w: unrecognised bearer credential", ErrUnauthenticated)
		}
		return a.JWT.Authenticate(ctx, bearer)
	case len(chains) > 0 && len(chains[0]) > 0 && a.MTLS != nil:
		return a.MTLS.CertIdentity(chains[0][0])
	}
	return nil, errNoCredentials
}

// errNoCredentials: the request carried no credential at all (Anonymous
// rules admit it).
var errNoCredentials = fmt.Errorf("%w: no credentials", ErrUnauthenticated)

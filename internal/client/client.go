// Package client dials an hsmgate server the way every CLI verb, test and
// bench run does: TLS always (the CA from HSMGATE_CACERT, else the system
// roots), an optional client certificate for mTLS, and a bearer token sent as
// "authorization: Bearer <token>" metadata on every call.
//
// Environment (what `eval "$(hsmgate dev)"` sets):
//
//	HSMGATE_ADDR         gRPC address, host:port
//	HSMGATE_HTTP_ADDR    HTTPS address of /healthz, /readyz, PKI endpoints
//	HSMGATE_CACERT       PEM file of the CA that signed the server certificate
//	HSMGATE_TOKEN        bearer token
//	HSMGATE_CLIENT_CERT  PEM client certificate (mTLS), with HSMGATE_CLIENT_KEY
//	HSMGATE_CLIENT_KEY   PEM private key of the client certificate
//	HSMGATE_TLS_SERVER_NAME  name to verify in the server certificate (default: the host of the address)
package client

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"os"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
)

// Environment variable names.
const (
	EnvAddr          = "HSMGATE_ADDR"
	EnvHTTPAddr      = "HSMGATE_HTTP_ADDR"
	EnvCACert        = "HSMGATE_CACERT"
	EnvToken         = "HSMGATE_TOKEN"
	EnvClientCert    = "HSMGATE_CLIENT_CERT"
	EnvClientKey     = "HSMGATE_CLIENT_KEY"
	EnvTLSServerName = "HSMGATE_TLS_SERVER_NAME"
)

// DefaultAddr is used when neither a flag nor HSMGATE_ADDR gives an address.
const DefaultAddr = "127.0.0.1:8443"

// MaxRecvBytes is the largest response a client accepts.
const MaxRecvBytes = 64 << 20

// Config says how to reach a server.
type Config struct {
	Addr       string // gRPC host:port
	HTTPAddr   string // HTTPS host:port (for HTTP-only endpoints)
	CACert     string // PEM file; empty: system roots
	ClientCert string // PEM file; with ClientKey for mTLS
	ClientKey  string
	Token      string // bearer token; empty: none sent
	ServerName string // TLS server name; empty: host of Addr
}

// FromEnv reads the HSMGATE_* variables (Addr defaults to DefaultAddr).
func FromEnv() Config {
	c := Config{
		Addr:       os.Getenv(EnvAddr),
		HTTPAddr:   os.Getenv(EnvHTTPAddr),
		CACert:     os.Getenv(EnvCACert),
		ClientCert: os.Getenv(EnvClientCert),
		ClientKey:  os.Getenv(EnvClientKey),
		Token:      os.Getenv(EnvToken),
		ServerName: os.Getenv(EnvTLSServerName),
	}
	if c.Addr == "" {
		c.Addr = DefaultAddr
	}
	return c
}

// TLSConfig is the client TLS configuration for addr (the gRPC or HTTP address).
func (c Config) TLSConfig(addr string) (*tls.Config, error) {
	tc := &tls.Config{MinVersion: tls.VersionTLS12, ServerName: c.ServerName}
	if tc.ServerName == "" {
		host, _, err := net.SplitHostPort(addr)
		if err != nil {
			return nil, fmt.Errorf("client: address %q: want host:port", addr)
		}
		tc.ServerName = host
	}
	if c.CACert != "" {
		pemBytes, err := os.ReadFile(c.CACert)
		if err != nil {
			return nil, fmt.Errorf("client: CA certificate (%s): %w", EnvCACert, err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pemBytes) {
			return nil, fmt.Errorf("client: %s: no PEM certificate found", c.CACert)
		}
		tc.RootCAs = pool
	}
	switch {
	case c.ClientCert != "" && c.ClientKey != "":
		pair, err := tls.LoadX509KeyPair(c.ClientCert, c.ClientKey)
		if err != nil {
			return nil, fmt.Errorf("client: client certificate: %w", err)
		}
		tc.Certificates = []tls.Certificate{pair}
	case c.ClientCert != "" || c.ClientKey != "":
		return nil, fmt.Errorf("client: %s and %s go together", EnvClientCert, EnvClientKey)
	}
	return tc, nil
}

// Dial returns a connection to c.Addr (connecting lazily, on the first call).
func Dial(c Config, opts ...grpc.DialOption) (*grpc.ClientConn, error) {
	if c.Addr == "" {
		return nil, errors.New("client: no server address (set " + EnvAddr + " or --addr)")
	}
	tc, err := c.TLSConfig(c.Addr)
	if err != nil {
		return nil, err
	}
	base := []grpc.DialOption{
		grpc.WithTransportCredentials(credentials.NewTLS(tc)),
		grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(MaxRecvBytes)),
	}
	if c.Token != "" {
		base = append(base, grpc.WithPerRPCCredentials(bearer(c.Token)))
	}
	cc, err := grpc.NewClient(c.Addr, append(base, opts...)...)
	if err != nil {
		return nil, fmt.Errorf("client: %w", err)
	}
	return cc, nil
}

// bearer sends the token on every call, over TLS only.
type bearer string

func (b bearer) GetRequestMetadata(context.Context, ...string) (map[string]string, error) {
	return map[string]string{"authorization": "Bearer " + string(b)}, nil
}

func (bearer) RequireTransportSecurity() bool { return true }

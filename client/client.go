package client

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"os"
	"strings"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"

	pb "github.com/hsmgate/hsmgate/proto/hsmgate/v1"
)

// Environment variables read by FromEnv (and by the hsmgate CLI, whose flags
// override them). `eval "$(hsmgate dev)"` sets the first four.
const (
	EnvAddr          = "HSMGATE_ADDR"            // gRPC address, host:port
	EnvHTTPAddr      = "HSMGATE_HTTP_ADDR"       // HTTPS address of /healthz, PKI endpoints
	EnvCACert        = "HSMGATE_CACERT"          // PEM file of the CA of the server certificate
	EnvToken         = "HSMGATE_TOKEN"           // bearer token
	EnvTokenFile     = "HSMGATE_TOKEN_FILE"      // file holding the bearer token (when EnvToken is unset)
	EnvClientCert    = "HSMGATE_CLIENT_CERT"     // PEM client certificate (mTLS)
	EnvClientKey     = "HSMGATE_CLIENT_KEY"      // PEM key of the client certificate
	EnvTLSServerName = "HSMGATE_TLS_SERVER_NAME" // name to verify in the server certificate
)

// DefaultAddr is used when neither Options.Addr nor HSMGATE_ADDR gives one.
const DefaultAddr = "127.0.0.1:8443"

// MaxRecvBytes is the largest response a client accepts.
const MaxRecvBytes = 64 << 20

// DefaultTimeout is the deadline New gives a call whose context has none.
const DefaultTimeout = 30 * time.Second

// Options says how to reach and authenticate to a server. The zero value
// of each field means its default.
type Options struct {
	Addr     string // gRPC host:port (default DefaultAddr in FromEnv; required in New)
	HTTPAddr string // HTTPS host:port of the HTTP endpoints (optional)

	// Server authentication: RootCAs if set, else the PEM file CACert, else
	// the system roots. ServerName defaults to the host of Addr.
	CACert     string
	RootCAs    *x509.CertPool
	ServerName string

	// mTLS: a certificate and key in PEM files, or Certificate.
	ClientCert, ClientKey string
	Certificate           *tls.Certificate

	// Token is sent as "authorization: Bearer <token>" on every call (over
	// TLS only). TokenFile is read once, at New, when Token is empty.
	Token     string
	TokenFile string

	// Timeout bounds a call whose context has no deadline (default
	// DefaultTimeout; negative: no bound).
	Timeout time.Duration

	// Retry is the policy of idempotent calls (see RetryPolicy); the zero
	// value is DefaultRetry.
	Retry RetryPolicy

	// DialOptions are appended to the client's own (interceptors, stats
	// handlers, a custom dialer).
	DialOptions []grpc.DialOption
}

// FromEnv returns the Options of the HSMGATE_* variables; Addr defaults to
// DefaultAddr.
func FromEnv() Options {
	o := Options{
		Addr:       os.Getenv(EnvAddr),
		HTTPAddr:   os.Getenv(EnvHTTPAddr),
		CACert:     os.Getenv(EnvCACert),
		ClientCert: os.Getenv(EnvClientCert),
		ClientKey:  os.Getenv(EnvClientKey),
		Token:      os.Getenv(EnvToken),
		TokenFile:  os.Getenv(EnvTokenFile),
		ServerName: os.Getenv(EnvTLSServerName),
	}
	if o.Addr == "" {
		o.Addr = DefaultAddr
	}
	return o
}

// TLSConfig is the client TLS configuration for addr (the gRPC or the HTTP
// address): TLS 1.2 at least, the roots and client certificate of o.
func (o Options) TLSConfig(addr string) (*tls.Config, error) {
	tc := &tls.Config{MinVersion: tls.VersionTLS12, ServerName: o.ServerName, RootCAs: o.RootCAs}
	if tc.ServerName == "" {
		host, _, err := net.SplitHostPort(addr)
		if err != nil {
			return nil, fmt.Errorf("client: address %q: want host:port", addr)
		}
		tc.ServerName = host
	}
	if tc.RootCAs == nil && o.CACert != "" {
		pemBytes, err := os.ReadFile(o.CACert)
		if err != nil {
			return nil, fmt.Errorf("client: CA certificate (%s): %w", EnvCACert, err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pemBytes) {
			return nil, fmt.Errorf("client: %s: no PEM certificate found", o.CACert)
		}
		tc.RootCAs = pool
	}
	switch {
	case o.Certificate != nil:
		tc.Certificates = []tls.Certificate{*o.Certificate}
	case o.ClientCert != "" && o.ClientKey != "":
		pair, err := tls.LoadX509KeyPair(o.ClientCert, o.ClientKey)
		if err != nil {
			return nil, fmt.Errorf("client: client certificate: %w", err)
		}
		tc.Certificates = []tls.Certificate{pair}
	case o.ClientCert != "" || o.ClientKey != "":
		return nil, fmt.Errorf("client: %s and %s go together", EnvClientCert, EnvClientKey)
	}
	return tc, nil
}

// token returns the bearer token: Token, else the trimmed content of TokenFile.
func (o Options) token() (string, error) {
	if o.Token != "" || o.TokenFile == "" {
		return o.Token, nil
	}
	b, err := os.ReadFile(o.TokenFile)
	if err != nil {
		return "", fmt.Errorf("client: token file (%s): %w", EnvTokenFile, err)
	}
	t := strings.TrimSpace(string(b))
	if t == "" {
		return "", fmt.Errorf("client: token file %s is empty", o.TokenFile)
	}
	return t, nil
}

// Dial returns a connection to o.Addr with o's TLS, token, deadline,
// retry and error mapping (every status error a stub returns on it is an
// *Error). It connects lazily, on the first call. Dial is the one dial
// helper of hsmgate: New, the CLI, tests and the bench use it.
func Dial(o Options, opts ...grpc.DialOption) (*grpc.ClientConn, error) {
	if o.Addr == "" {
		return nil, errors.New("client: no server address (set " + EnvAddr + " or --addr)")
	}
	tc, err := o.TLSConfig(o.Addr)
	if err != nil {
		return nil, err
	}
	tok, err := o.token()
	if err != nil {
		return nil, err
	}
	timeout := o.Timeout
	if timeout == 0 {
		timeout = DefaultTimeout
	}
	base := []grpc.DialOption{
		grpc.WithTransportCredentials(credentials.NewTLS(tc)),
		grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(MaxRecvBytes)),
		// Outermost first: the deadline bounds every attempt and backoff of
		// the retry loop; errors are mapped once, after the last attempt.
		grpc.WithChainUnaryInterceptor(
			errorInterceptor,
			deadlineInterceptor(timeout),
			o.Retry.withDefaults().interceptor(),
		),
		grpc.WithChainStreamInterceptor(streamErrorInterceptor),
	}
	if tok != "" {
		base = append(base, grpc.WithPerRPCCredentials(bearer(tok)))
	}
	base = append(base, o.DialOptions...)
	cc, err := grpc.NewClient(o.Addr, append(base, opts...)...)
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

// Client is a connection to an hsmgate server with typed helpers per
// engine. It is safe for concurrent use; make one per process and share it
// (one HTTP/2 connection multiplexes every call). Close it when done.
type Client struct {
	conn *grpc.ClientConn
	opts Options

	Transit *Transit // encryption as a service
	PKI     *PKI     // X.509 CA
	SSH     *SSH     // SSH CA
}

// New returns a Client for o. It does not contact the server: the
// connection is made on the first call (and remade after a failure), so
// New succeeds while the server is down and ctx only bounds New's own
// setup. Errors are about o itself (no address, unreadable CA or token
// file, a client certificate without its key).
func New(ctx context.Context, o Options) (*Client, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	cc, err := Dial(o)
	if err != nil {
		return nil, err
	}
	c := &Client{conn: cc, opts: o}
	c.Transit = &Transit{c: pb.NewTransitServiceClient(cc)}
	c.PKI = &PKI{c: pb.NewPKIServiceClient(cc)}
	c.SSH = &SSH{c: pb.NewSSHCAServiceClient(cc)}
	return c, nil
}

// Conn is the underlying connection, for the generated stubs of the
// services this package has no helpers for:
//
//	pb.NewAuthServiceClient(c.Conn())
//
// Calls on it get the same token, deadline, retries and *Error mapping.
func (c *Client) Conn() grpc.ClientConnInterface { return c.conn }

// Close closes the connection; calls in flight fail with context.Canceled.
func (c *Client) Close() error { return c.conn.Close() }

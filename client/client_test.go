package client

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	pb "github.com/hsmgate/hsmgate/proto/hsmgate/v1"
)

// testTLS writes a CA and a server certificate for 127.0.0.1 into a temp
// directory and returns the server credentials and the CA file.
func testTLS(t *testing.T) (credentials.TransportCredentials, string) {
	t.Helper()
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	caTmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "test CA"},
		NotBefore: now.Add(-time.Hour), NotAfter: now.Add(time.Hour), IsCA: true, BasicConstraintsValid: true,
		KeyUsage: x509.KeyUsageCertSign}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	ca, _ := x509.ParseCertificate(caDER)
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	leafDER, err := x509.CreateCertificate(rand.Reader, &x509.Certificate{SerialNumber: big.NewInt(2),
		NotBefore: now.Add(-time.Hour), NotAfter: now.Add(time.Hour), IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)},
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}, KeyUsage: x509.KeyUsageDigitalSignature}, ca, &key.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	caFile := filepath.Join(t.TempDir(), "ca.pem")
	if err := os.WriteFile(caFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: caDER}), 0o644); err != nil {
		t.Fatal(err)
	}
	return credentials.NewServerTLSFromCert(&tls.Certificate{Certificate: [][]byte{leafDER}, PrivateKey: key}), caFile
}

// serve starts a TLS gRPC server on 127.0.0.1:0 with register's services
// and returns Options that reach it.
func serve(t *testing.T, register func(*grpc.Server)) Options {
	t.Helper()
	creds, caFile := testTLS(t)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := grpc.NewServer(grpc.Creds(creds))
	register(srv)
	go srv.Serve(ln)
	t.Cleanup(srv.Stop)
	return Options{Addr: ln.Addr().String(), CACert: caFile}
}

type mdHealth struct {
	healthpb.UnimplementedHealthServer
	got chan metadata.MD
}

func (h *mdHealth) Check(ctx context.Context, _ *healthpb.HealthCheckRequest) (*healthpb.HealthCheckResponse, error) {
	md, _ := metadata.FromIncomingContext(ctx)
	h.got <- md
	return &healthpb.HealthCheckResponse{Status: healthpb.HealthCheckResponse_SERVING}, nil
}

func TestDialSendsBearerOverTLS(t *testing.T) {
	h := &mdHealth{got: make(chan metadata.MD, 2)}
	o := serve(t, func(s *grpc.Server) { healthpb.RegisterHealthServer(s, h) })
	tokenFile := filepath.Join(t.TempDir(), "token")
	if err := os.WriteFile(tokenFile, []byte("hgs.file-token\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		env  map[string]string
		want string
	}{
		{"HSMGATE_TOKEN", map[string]string{EnvToken: "hgs.test-token"}, "Bearer hgs.test-token"},
		{"HSMGATE_TOKEN_FILE", map[string]string{EnvTokenFile: tokenFile}, "Bearer hgs.file-token"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Setenv(EnvAddr, o.Addr)
			t.Setenv(EnvCACert, o.CACert)
			t.Setenv(EnvToken, "")
			for k, v := range tc.env {
				t.Setenv(k, v)
			}
			c, err := New(context.Background(), FromEnv())
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			if _, err := healthpb.NewHealthClient(c.Conn()).Check(context.Background(), &healthpb.HealthCheckRequest{}); err != nil {
				t.Fatal(err)
			}
			md := <-h.got
			if got := md.Get("authorization"); len(got) != 1 || got[0] != tc.want {
				t.Errorf("authorization metadata: got %q, want [%s]", got, tc.want)
			}
		})
	}
}

func TestOptionsErrors(t *testing.T) {
	tests := []struct {
		name string
		o    Options
		want string
	}{
		{"no address", Options{}, "no server address"},
		{"bad address", Options{Addr: "nohost"}, "want host:port"},
		{"missing CA", Options{Addr: "127.0.0.1:1", CACert: "/nonexistent/ca.pem"}, "CA certificate"},
		{"cert without key", Options{Addr: "127.0.0.1:1", ClientCert: "c.pem"}, "go together"},
		{"missing token file", Options{Addr: "127.0.0.1:1", TokenFile: "/nonexistent/token"}, "token file"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := New(context.Background(), tc.o)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("got %v, want an error containing %q", err, tc.want)
			}
		})
	}
}

// flakyTransit fails each method's first fails calls with code, then
// answers; it counts calls per method.
type flakyTransit struct {
	pb.UnimplementedTransitServiceServer
	code  codes.Code
	fails int

	mu    sync.Mutex
	calls map[string]int
}

func (f *flakyTransit) hit(m string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls[m]++
	if f.calls[m] <= f.fails {
		return status.Error(f.code, "try again")
	}
	return nil
}

func (f *flakyTransit) count(m string) int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.calls[m]
}

func (f *flakyTransit) Decrypt(_ context.Context, r *pb.DecryptRequest) (*pb.DecryptResponse, error) {
	if err := f.hit("Decrypt"); err != nil {
		return nil, err
	}
	return &pb.DecryptResponse{Results: []*pb.DecryptResult{{Plaintext: []byte("ok"), KeyVersion: 1}}}, nil
}

func (f *flakyTransit) Encrypt(_ context.Context, r *pb.EncryptRequest) (*pb.EncryptResponse, error) {
	if err := f.hit("Encrypt"); err != nil {
		return nil, err
	}
	return &pb.EncryptResponse{Results: []*pb.EncryptResult{{Ciphertext: []byte{1, 1, 0}, KeyVersion: 1}}}, nil
}

func (f *flakyTransit) RotateKey(context.Context, *pb.RotateKeyRequest) (*pb.RotateKeyResponse, error) {
	if err := f.hit("RotateKey"); err != nil {
		return nil, err
	}
	return &pb.RotateKeyResponse{}, nil
}

func TestRetry(t *testing.T) {
	fast := RetryPolicy{MaxAttempts: 4, InitialBackoff: time.Millisecond, MaxBackoff: 2 * time.Millisecond}
	tests := []struct {
		name      string
		code      codes.Code
		fails     int
		call      func(*Client) error
		method    string
		wantCalls int
		wantErr   error
	}{
		{"decrypt retried on Unavailable", codes.Unavailable, 2, func(c *Client) error {
			_, err := c.Transit.Decrypt(context.Background(), "k", []byte{1})
			return err
		}, "Decrypt", 3, nil},
		{"encrypt retried on Aborted", codes.Aborted, 1, func(c *Client) error {
			_, err := c.Transit.Encrypt(context.Background(), "k", []byte("x"))
			return err
		}, "Encrypt", 2, nil},
		{"gives up after MaxAttempts", codes.Unavailable, 10, func(c *Client) error {
			_, err := c.Transit.Decrypt(context.Background(), "k", []byte{1})
			return err
		}, "Decrypt", 4, ErrUnavailable},
		{"InvalidArgument not retried", codes.InvalidArgument, 1, func(c *Client) error {
			_, err := c.Transit.Decrypt(context.Background(), "k", []byte{1})
			return err
		}, "Decrypt", 1, ErrInvalidArgument},
		{"rotate never retried", codes.Unavailable, 1, func(c *Client) error {
			_, err := c.Transit.Stub().RotateKey(context.Background(), &pb.RotateKeyRequest{Name: "k"})
			return err
		}, "RotateKey", 1, ErrUnavailable},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			f := &flakyTransit{code: tc.code, fails: tc.fails, calls: map[string]int{}}
			o := serve(t, func(s *grpc.Server) { pb.RegisterTransitServiceServer(s, f) })
			o.Retry = fast
			c, err := New(context.Background(), o)
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			err = tc.call(c)
			if tc.wantErr == nil && err != nil || tc.wantErr != nil && !errors.Is(err, tc.wantErr) {
				t.Errorf("err: got %v, want %v", err, tc.wantErr)
			}
			if got := f.count(tc.method); got != tc.wantCalls {
				t.Errorf("calls: got %d, want %d", got, tc.wantCalls)
			}
		})
	}
}

func TestIsIdempotent(t *testing.T) {
	for m, want := range map[string]bool{
		"/hsmgate.v1.TransitService/Decrypt":       true,
		"/hsmgate.v1.TransitService/Encrypt":       true,
		"/hsmgate.v1.TransitService/GetKey":        true,
		"/hsmgate.v1.PKIService/ListIssuers":       true,
		"/hsmgate.v1.AuthService/LookupSelf":       true,
		"/hsmgate.v1.TransitService/CreateKey":     false,
		"/hsmgate.v1.TransitService/RotateKey":     false,
		"/hsmgate.v1.PKIService/Issue":             false,
		"/hsmgate.v1.PKIService/Sign":              false,
		"/hsmgate.v1.SSHCAService/SignUserKey":     false,
		"/hsmgate.v1.AuthService/CreateToken":      false,
		"/other.v1.Thing/GetSomething":             false,
		"/hsmgate.v1.TransitService/ImportKey":     false,
		"/hsmgate.v1.TransitService/EncryptStream": false,
	} {
		if got := IsIdempotent(m); got != want {
			t.Errorf("IsIdempotent(%s): got %v, want %v", m, got, want)
		}
	}
}

func TestErrorRoundTrip(t *testing.T) {
	for _, tc := range []struct {
		code codes.Code
		want error
	}{
		{codes.InvalidArgument, ErrInvalidArgument},
		{codes.NotFound, ErrNotFound},
		{codes.AlreadyExists, ErrAlreadyExists},
		{codes.FailedPrecondition, ErrFailedPrecondition},
		{codes.Aborted, ErrAborted},
		{codes.ResourceExhausted, ErrResourceExhausted},
		{codes.Unavailable, ErrUnavailable},
		{codes.Unauthenticated, ErrUnauthenticated},
		{codes.PermissionDenied, ErrPermissionDenied},
		{codes.Unimplemented, ErrUnimplemented},
		{codes.Internal, ErrInternal},
		{codes.Unknown, ErrInternal},
		{codes.DeadlineExceeded, context.DeadlineExceeded},
		{codes.Canceled, context.Canceled},
	} {
		t.Run(tc.code.String(), func(t *testing.T) {
			err := FromError(status.Error(tc.code, "msg"))
			if !errors.Is(err, tc.want) {
				t.Errorf("errors.Is(%v, %v): got false, want true", err, tc.want)
			}
			if tc.want != ErrNotFound && errors.Is(err, ErrNotFound) {
				t.Errorf("errors.Is(%v, ErrNotFound): got true, want false", err)
			}
			if got := status.Code(err); got != tc.code {
				t.Errorf("status.Code: got %v, want %v", got, tc.code)
			}
		})
	}
	if FromStatus(status.New(codes.OK, "")) != nil {
		t.Error("FromStatus(OK): got an error, want nil")
	}
	// A local refusal that wraps a sentinel (made before any call) has the
	// sentinel's code too, for status.Code and a CLI printing codes.
	if _, err := ParseVersioned("hsmgate:v0:AA=="); !errors.Is(err, ErrInvalidArgument) || status.Code(err) != codes.InvalidArgument {
		t.Errorf("ParseVersioned(v0): got %v (code %v), want ErrInvalidArgument, code InvalidArgument", err, status.Code(err))
	}
}

package server

import (
	"context"
	"crypto/ecdsa"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/peer"
	reflectionpb "google.golang.org/grpc/reflection/grpc_reflection_v1"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/emptypb"

	"github.com/hsmgate/hsmgate/internal/devtls"
	"github.com/hsmgate/hsmgate/internal/syncbuf"
	"github.com/hsmgate/hsmgate/keystore"
	hsmgatev1 "github.com/hsmgate/hsmgate/proto/hsmgate/v1"
)

// pki is the TLS material of one test: a CA with a server certificate, a
// client certificate from that CA and one from a CA the server does not know.
type pki struct {
	files                 devtls.Files
	goodClient, badClient tls.Certificate
	pool                  *x509.CertPool
}

func newPKI(t *testing.T) pki {
	t.Helper()
	now := time.Now()
	dir := t.TempDir()
	files, _, err := devtls.Ensure(dir, devtls.DefaultHosts, now)
	if err != nil {
		t.Fatal(err)
	}
	ca, caKey, err := devtls.Load(files.CACert, files.CAKey)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AddCert(ca)
	good := clientCert(t, ca, caKey, "good-client", now)
	otherCA, otherKey, err := devtls.NewCA(now)
	if err != nil {
		t.Fatal(err)
	}
	bad := clientCert(t, otherCA, otherKey, "bad-client", now)
	return pki{files: files, goodClient: good, badClient: bad, pool: pool}
}

func clientCert(t *testing.T, ca *x509.Certificate, caKey *ecdsa.PrivateKey, cn string, now time.Time) tls.Certificate {
	t.Helper()
	c, k, err := devtls.Issue(ca, caKey, devtls.Template{CommonName: cn}, now)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	cf, kf := filepath.Join(dir, "c.pem"), filepath.Join(dir, "k.pem")
	if err := devtls.WritePair(cf, kf, c, k); err != nil {
		t.Fatal(err)
	}
	pair, err := tls.LoadX509KeyPair(cf, kf)
	if err != nil {
		t.Fatal(err)
	}
	return pair
}

// fakeSystem is a SystemService whose GetStatus runs fn.
type fakeSystem struct {
	hsmgatev1.UnimplementedSystemServiceServer
	fn func(ctx context.Context) (*hsmgatev1.GetStatusResponse, error)
}

func (f *fakeSystem) GetStatus(ctx context.Context, _ *hsmgatev1.GetStatusRequest) (*hsmgatev1.GetStatusResponse, error) {
	return f.fn(ctx)
}

// streamFunc backs a one-method server-streaming test service.
type streamFunc func(grpc.ServerStream) error

var testStreamDesc = grpc.ServiceDesc{
	ServiceName: "hsmgate.test.Stream",
	HandlerType: (*any)(nil),
	Streams: []grpc.StreamDesc{{
		StreamName:    "Run",
		ServerStreams: true,
		Handler:       func(srv any, ss grpc.ServerStream) error { return srv.(streamFunc)(ss) },
	}},
}

type harness struct {
	srv    *Server
	pki    pki
	logs   *syncbuf.Buffer
	cancel context.CancelFunc
	done   chan error
}

// start serves a Server on loopback; setup registers services before Serve.
func start(t *testing.T, p pki, mod func(*Config), setup func(*Server)) *harness {
	t.Helper()
	logs := &syncbuf.Buffer{}
	cfg := Config{
		GRPCAddr: "127.0.0.1:0",
		HTTPAddr: "127.0.0.1:0",
		CertFile: p.files.Cert,
		KeyFile:  p.files.Key,
		Logger:   slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug})),
	}
	if mod != nil {
		mod(&cfg)
	}
	s, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if setup != nil {
		setup(s)
	}
	if err := s.Listen(); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	h := &harness{srv: s, pki: p, logs: logs, cancel: cancel, done: make(chan error, 1)}
	go func() { h.done <- s.Serve(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-h.done; err != nil {
			t.Errorf("Serve: %v", err)
		}
	})
	waitServing(t, h.dial(t, nil))
	return h
}

func (h *harness) dial(t *testing.T, cert *tls.Certificate) *grpc.ClientConn {
	t.Helper()
	tc := &tls.Config{RootCAs: h.pki.pool, ServerName: "localhost", MinVersion: tls.VersionTLS12}
	if cert != nil {
		tc.Certificates = []tls.Certificate{*cert}
	}
	cc, err := grpc.NewClient(h.srv.GRPCAddr(), grpc.WithTransportCredentials(credentials.NewTLS(tc)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cc.Close() })
	return cc
}

func (h *harness) httpClient() *http.Client {
	return &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: h.pki.pool, ServerName: "localhost"}}}
}

// waitServing polls health until SERVING, with a deadline.
func waitServing(t *testing.T, cc *grpc.ClientConn) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		resp, err := healthpb.NewHealthClient(cc).Check(ctx, &healthpb.HealthCheckRequest{})
		cancel()
		if err == nil && resp.Status == healthpb.HealthCheckResponse_SERVING {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("health never SERVING: %v %v", resp, err)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func callStatus(cc *grpc.ClientConn) (*hsmgatev1.GetStatusResponse, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	return hsmgatev1.NewSystemServiceClient(cc).GetStatus(ctx, &hsmgatev1.GetStatusRequest{})
}

func callStream(cc *grpc.ClientConn) error {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	cs, err := cc.NewStream(ctx, &grpc.StreamDesc{ServerStreams: true}, "/hsmgate.test.Stream/Run")
	if err != nil {
		return err
	}
	if err := cs.SendMsg(&emptypb.Empty{}); err != nil {
		return err
	}
	if err := cs.CloseSend(); err != nil {
		return err
	}
	for {
		if err := cs.RecvMsg(&emptypb.Empty{}); err != nil {
			if errors.Is(err, io.EOF) {
				return nil
			}
			return err
		}
	}
}

func TestHealthAndReflection(t *testing.T) {
	h := start(t, newPKI(t), nil, func(s *Server) {
		hsmgatev1.RegisterSystemServiceServer(s, &fakeSystem{})
	})
	cc := h.dial(t, nil)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()

	for _, svc := range []string{"", "hsmgate.v1.SystemService"} {
		resp, err := healthpb.NewHealthClient(cc).Check(ctx, &healthpb.HealthCheckRequest{Service: svc})
		if err != nil {
			t.Fatalf("health %q: %v", svc, err)
		}
		if got, want := resp.Status, healthpb.HealthCheckResponse_SERVING; got != want {
			t.Errorf("health %q: got %v, want %v", svc, got, want)
		}
	}

	rc, err := reflectionpb.NewServerReflectionClient(cc).ServerReflectionInfo(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := rc.Send(&reflectionpb.ServerReflectionRequest{
		MessageRequest: &reflectionpb.ServerReflectionRequest_ListServices{},
	}); err != nil {
		t.Fatal(err)
	}
	resp, err := rc.Recv()
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, s := range resp.GetListServicesResponse().GetService() {
		names = append(names, s.Name)
	}
	for _, want := range []string{"hsmgate.v1.SystemService", "grpc.health.v1.Health", "grpc.reflection.v1.ServerReflection"} {
		if !contains(names, want) {
			t.Errorf("reflection lists %v, want it to include %s", names, want)
		}
	}
	_ = rc.CloseSend()
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

func TestErrorMapping(t *testing.T) {
	var mode atomic.Value // set before each call; read by the handlers
	mode.Store("")
	behave := func() error {
		switch mode.Load().(string) {
		case "notfound":
			return fmt.Errorf("transit: key %q: %w", "payments", keystore.ErrNotFound)
		case "plain":
			return errors.New("disk full at /secret/path")
		case "panic":
			panic("secret panic value 0xdeadbeef")
		case "status":
			return status.Error(codes.PermissionDenied, "denied")
		}
		return nil
	}
	h := start(t, newPKI(t), nil, func(s *Server) {
		hsmgatev1.RegisterSystemServiceServer(s, &fakeSystem{fn: func(context.Context) (*hsmgatev1.GetStatusResponse, error) {
			return &hsmgatev1.GetStatusResponse{}, behave()
		}})
		s.RegisterService(&testStreamDesc, streamFunc(func(grpc.ServerStream) error { return behave() }))
	})
	cc := h.dial(t, nil)

	tests := []struct {
		mode     string
		wantCode codes.Code
		wantMsg  string
	}{
		{"notfound", codes.NotFound, `transit: key "payments": keystore: not found`},
		{"plain", codes.Internal, "internal error"},
		{"panic", codes.Internal, "internal error"},
		{"status", codes.PermissionDenied, "denied"},
	}
	for _, tc := range tests {
		for _, kind := range []string{"unary", "stream"} {
			t.Run(tc.mode+"/"+kind, func(t *testing.T) {
				mode.Store(tc.mode)
				var err error
				if kind == "unary" {
					_, err = callStatus(cc)
				} else {
					err = callStream(cc)
				}
				st := status.Convert(err)
				if st.Code() != tc.wantCode || st.Message() != tc.wantMsg {
					t.Errorf("got %v %q, want %v %q", st.Code(), st.Message(), tc.wantCode, tc.wantMsg)
				}
			})
		}
	}
	logs := h.logs.String()
	for _, want := range []string{"secret panic value", "disk full"} {
		if !strings.Contains(logs, want) {
			t.Errorf("server log lacks %q (internal causes must be logged server-side)", want)
		}
	}
}

func TestOversizeMessage(t *testing.T) {
	h := start(t, newPKI(t), func(c *Config) { c.MaxRecvBytes = 1024 }, nil)
	cc := h.dial(t, nil)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_, err := healthpb.NewHealthClient(cc).Check(ctx, &healthpb.HealthCheckRequest{Service: strings.Repeat("x", 4096)})
	if got, want := status.Code(err), codes.ResourceExhausted; got != want {
		t.Fatalf("oversize request: got %v (%v), want %v", got, err, want)
	}
	// A request under the limit still works on the same connection.
	if _, err := healthpb.NewHealthClient(cc).Check(ctx, &healthpb.HealthCheckRequest{}); err != nil {
		t.Fatalf("small request after oversize: %v", err)
	}
}

func TestMutualTLS(t *testing.T) {
	p := newPKI(t)
	var mu sync.Mutex
	var peerCN string
	h := start(t, p, func(c *Config) { c.ClientCAFile = p.files.CACert }, func(s *Server) {
		hsmgatev1.RegisterSystemServiceServer(s, &fakeSystem{fn: func(ctx context.Context) (*hsmgatev1.GetStatusResponse, error) {
			cn := ""
			if pr, ok := peer.FromContext(ctx); ok {
				if ti, ok := pr.AuthInfo.(credentials.TLSInfo); ok && len(ti.State.VerifiedChains) > 0 {
					cn = ti.State.VerifiedChains[0][0].Subject.CommonName
				}
			}
			mu.Lock()
			peerCN = cn
			mu.Unlock()
			return &hsmgatev1.GetStatusResponse{}, nil
		}})
	})
	tests := []struct {
		name    string
		cert    *tls.Certificate
		wantErr bool
		wantCN  string
	}{
		{"trusted client cert", &p.goodClient, false, "good-client"},
		{"no client cert", nil, false, ""},
		{"untrusted client cert", &p.badClient, true, ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := callStatus(h.dial(t, tc.cert))
			if (err != nil) != tc.wantErr {
				t.Fatalf("got error %v, want error: %v", err, tc.wantErr)
			}
			if err != nil {
				if got := status.Code(err); got != codes.Unavailable {
					t.Errorf("untrusted cert: got %v, want Unavailable (handshake refused)", got)
				}
				return
			}
			mu.Lock()
			defer mu.Unlock()
			if peerCN != tc.wantCN {
				t.Errorf("handler saw peer %q, want %q", peerCN, tc.wantCN)
			}
		})
	}
}

func TestTLSVersions(t *testing.T) {
	p := newPKI(t)
	h := start(t, p, func(c *Config) { c.MinTLSVersion = tls.VersionTLS13 }, nil)
	tc := &tls.Config{RootCAs: p.pool, ServerName: "localhost", MaxVersion: tls.VersionTLS12, NextProtos: []string{"h2"}}
	conn, err := tls.Dial("tcp", h.srv.GRPCAddr(), tc)
	if err == nil {
		conn.Close()
		t.Fatal("TLS 1.2 client accepted by a TLS 1.3-only server")
	}
}

func TestInterceptorsAdded(t *testing.T) {
	var mu sync.Mutex
	var seen []string // what the added interceptor saw come back from the handler
	var deny atomic.Bool
	h := start(t, newPKI(t), nil, func(s *Server) {
		err := s.Use(func(ctx context.Context, req any, info *grpc.UnaryServerInfo, next grpc.UnaryHandler) (any, error) {
			if deny.Load() && info.FullMethod == hsmgatev1.SystemService_GetStatus_FullMethodName {
				return nil, fmt.Errorf("auth: %w", keystore.ErrNotFound) // any domain error
			}
			resp, err := next(ctx, req)
			if info.FullMethod == hsmgatev1.SystemService_GetStatus_FullMethodName {
				mu.Lock()
				seen = append(seen, status.Code(err).String())
				mu.Unlock()
			}
			return resp, err
		}, nil)
		if err != nil {
			t.Fatal(err)
		}
		hsmgatev1.RegisterSystemServiceServer(s, &fakeSystem{fn: func(context.Context) (*hsmgatev1.GetStatusResponse, error) {
			panic("boom")
		}})
	})
	cc := h.dial(t, nil)
	if _, err := callStatus(cc); status.Code(err) != codes.Internal {
		t.Fatalf("panicking handler: got %v, want Internal", err)
	}
	mu.Lock()
	if len(seen) != 1 || seen[0] != "Internal" {
		t.Errorf("added interceptor saw %v, want [Internal] (inner recovery)", seen)
	}
	mu.Unlock()
	deny.Store(true)
	if _, err := callStatus(cc); status.Code(err) != codes.NotFound {
		t.Errorf("domain error from an added interceptor: got %v, want NotFound", err)
	}
	if err := h.srv.Use(nil, nil); !errors.Is(err, ErrStarted) {
		t.Errorf("Use after Serve: got %v, want ErrStarted", err)
	}
}

func TestHTTP(t *testing.T) {
	var hsmDown atomic.Bool // down once serving (start waits for SERVING)
	h := start(t, newPKI(t), nil, func(s *Server) {
		hsmgatev1.RegisterSystemServiceServer(s, &fakeSystem{fn: func(context.Context) (*hsmgatev1.GetStatusResponse, error) {
			return &hsmgatev1.GetStatusResponse{}, nil
		}})
		s.HandleHTTP("GET /v1/test", http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
			io.WriteString(w, "hello")
		}))
		s.AddReadyCheck("store", func(context.Context) error { return nil })
		s.AddReadyCheck("hsm", func(context.Context) error {
			if hsmDown.Load() {
				return fmt.Errorf("ping: %w", keystore.ErrUnavailable)
			}
			return nil
		})
	})
	hsmDown.Store(true)
	if _, err := callStatus(h.dial(t, nil)); err != nil {
		t.Fatal(err)
	}
	hc := h.httpClient()
	base := "https://" + h.srv.HTTPAddr()
	tests := []struct {
		path     string
		wantCode int
		wantBody string
	}{
		{"/healthz", 200, "ok"},
		{"/v1/test", 200, "hello"},
		{"/readyz", 503, "hsm: keystore: unavailable"},
		{"/metrics", 404, ""}, // only on the metrics listener
		{"/nope", 404, ""},
	}
	for _, tc := range tests {
		t.Run(tc.path, func(t *testing.T) {
			resp, err := hc.Get(base + tc.path)
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			body, _ := io.ReadAll(resp.Body)
			if resp.StatusCode != tc.wantCode {
				t.Errorf("got %d, want %d", resp.StatusCode, tc.wantCode)
			}
			if !strings.Contains(string(body), tc.wantBody) {
				t.Errorf("body lacks %q:\n%s", tc.wantBody, body)
			}
		})
	}
}

func TestGracefulShutdown(t *testing.T) {
	p := newPKI(t)
	entered := make(chan struct{})
	release := make(chan struct{})
	h := start(t, p, nil, func(s *Server) {
		hsmgatev1.RegisterSystemServiceServer(s, &fakeSystem{fn: func(context.Context) (*hsmgatev1.GetStatusResponse, error) {
			close(entered)
			<-release
			return &hsmgatev1.GetStatusResponse{Version: "finished"}, nil
		}})
	})
	cc := h.dial(t, nil)
	type result struct {
		resp *hsmgatev1.GetStatusResponse
		err  error
	}
	rc := make(chan result, 1)
	go func() {
		resp, err := callStatus(cc)
		rc <- result{resp, err}
	}()
	<-entered
	h.cancel()

	// Health turns NOT_SERVING while the in-flight RPC is still running.
	deadline := time.Now().Add(10 * time.Second)
	for {
		resp, err := h.srv.Health().Check(context.Background(), &healthpb.HealthCheckRequest{})
		if err == nil && resp.Status == healthpb.HealthCheckResponse_NOT_SERVING {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("health never NOT_SERVING during shutdown: %v %v", resp, err)
		}
		time.Sleep(5 * time.Millisecond)
	}
	select {
	case err := <-h.done:
		t.Fatalf("Serve returned (%v) before the in-flight RPC finished", err)
	default:
	}
	close(release)
	r := <-rc
	if r.err != nil || r.resp.Version != "finished" {
		t.Fatalf("in-flight RPC: got %v, %v; want it to finish", r.resp, r.err)
	}
	if err := <-h.done; err != nil {
		t.Fatalf("Serve: %v", err)
	}
	h.done <- nil // for the cleanup
}

func TestShutdownTimeoutCutsRPCs(t *testing.T) {
	entered := make(chan struct{})
	h := start(t, newPKI(t), func(c *Config) { c.ShutdownTimeout = 100 * time.Millisecond }, func(s *Server) {
		hsmgatev1.RegisterSystemServiceServer(s, &fakeSystem{fn: func(ctx context.Context) (*hsmgatev1.GetStatusResponse, error) {
			close(entered)
			<-ctx.Done() // never finishes by itself
			return nil, ctx.Err()
		}})
	})
	errc := make(chan error, 1)
	go func() {
		_, err := callStatus(h.dial(t, nil))
		errc <- err
	}()
	<-entered
	h.cancel()
	if err := <-h.done; err != nil {
		t.Fatalf("Serve: %v", err)
	}
	h.done <- nil
	if err := <-errc; err == nil {
		t.Fatal("RPC cut by the shutdown timeout succeeded")
	}
}

func TestNewErrors(t *testing.T) {
	p := newPKI(t)
	missing := filepath.Join(t.TempDir(), "missing.pem")
	garbage := filepath.Join(t.TempDir(), "garbage.pem")
	if err := os.WriteFile(garbage, []byte("not pem"), 0o600); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name string
		cfg  Config
		want string
	}{
		{"no address", Config{CertFile: p.files.Cert, KeyFile: p.files.Key}, "GRPCAddr is required"},
		{"no cert", Config{GRPCAddr: "127.0.0.1:0"}, "CertFile and KeyFile are required"},
		{"missing cert", Config{GRPCAddr: "127.0.0.1:0", CertFile: missing, KeyFile: p.files.Key}, "no such file"},
		{"mismatched pair", Config{GRPCAddr: "127.0.0.1:0", CertFile: p.files.CACert, KeyFile: p.files.Key}, "private key does not match"},
		{"bad client CA", Config{GRPCAddr: "127.0.0.1:0", CertFile: p.files.Cert, KeyFile: p.files.Key, ClientCAFile: garbage}, "no PEM certificate"},
		{"TLS 1.1", Config{GRPCAddr: "127.0.0.1:0", CertFile: p.files.Cert, KeyFile: p.files.Key, MinTLSVersion: tls.VersionTLS11}, "want TLS 1.2 or 1.3"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := New(tc.cfg)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("got %v, want an error containing %q", err, tc.want)
			}
		})
	}
}

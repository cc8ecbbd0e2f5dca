package client

import (
	"context"
	"net"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/metadata"

	"github.com/hsmgate/hsmgate/internal/devtls"
)

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
	files, _, err := devtls.Ensure(t.TempDir(), devtls.DefaultHosts, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	creds, err := credentials.NewServerTLSFromFile(files.Cert, files.Key)
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := grpc.NewServer(grpc.Creds(creds))
	h := &mdHealth{got: make(chan metadata.MD, 1)}
	healthpb.RegisterHealthServer(srv, h)
	go srv.Serve(ln)
	defer srv.Stop()

	t.Setenv(EnvAddr, ln.Addr().String())
	t.Setenv(EnvCACert, files.CACert)
	t.Setenv(EnvToken, "hgs.test-token")
	cc, err := Dial(FromEnv())
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := healthpb.NewHealthClient(cc).Check(ctx, &healthpb.HealthCheckRequest{}); err != nil {
		t.Fatal(err)
	}
	md := <-h.got
	if got := md.Get("authorization"); len(got) != 1 || got[0] != "Bearer hgs.test-token" {
		t.Errorf("authorization metadata: got %q, want [Bearer hgs.test-token]", got)
	}
}

func TestConfigErrors(t *testing.T) {
	tests := []struct {
		name string
		cfg  Config
		want string
	}{
		{"no address", Config{}, "no server address"},
		{"bad address", Config{Addr: "nohost"}, "want host:port"},
		{"missing CA", Config{Addr: "127.0.0.1:1", CACert: "/nonexistent/ca.pem"}, "CA certificate"},
		{"cert without key", Config{Addr: "127.0.0.1:1", ClientCert: "c.pem"}, "go together"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Dial(tc.cfg)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("got %v, want an error containing %q", err, tc.want)
			}
		})
	}
}

func TestFromEnvDefault(t *testing.T) {
	t.Setenv(EnvAddr, "")
	if got := FromEnv().Addr; got != DefaultAddr {
		t.Errorf("default address: got %q, want %q", got, DefaultAddr)
	}
}

package server

import (
	"context"
	"net"
	"slices"
	"sync"
	"testing"
	"time"

	coltracepb "go.opentelemetry.io/proto/otlp/collector/trace/v1"
	"google.golang.org/grpc"

	hsmgatev1 "github.com/hsmgate/hsmgate/proto/hsmgate/v1"
)

// collector is an in-process OTLP/gRPC trace collector that keeps span names.
type collector struct {
	coltracepb.UnimplementedTraceServiceServer
	mu    sync.Mutex
	spans []string
}

func (c *collector) Export(_ context.Context, req *coltracepb.ExportTraceServiceRequest) (*coltracepb.ExportTraceServiceResponse, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, rs := range req.GetResourceSpans() {
		for _, ss := range rs.GetScopeSpans() {
			for _, sp := range ss.GetSpans() {
				c.spans = append(c.spans, sp.GetName())
			}
		}
	}
	return &coltracepb.ExportTraceServiceResponse{}, nil
}

func (c *collector) names() []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]string(nil), c.spans...)
}

// TestTracingExportsRPCSpans: with tracing on, an RPC's server span reaches
// the OTLP collector named by OTEL_EXPORTER_OTLP_ENDPOINT; health checks
// are not traced.
func TestTracingExportsRPCSpans(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	col := &collector{}
	gs := grpc.NewServer()
	coltracepb.RegisterTraceServiceServer(gs, col)
	go func() { _ = gs.Serve(ln) }()
	t.Cleanup(gs.Stop)
	t.Setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://"+ln.Addr().String())
	t.Setenv("OTEL_EXPORTER_OTLP_INSECURE", "true")

	tr, err := NewTracing(context.Background(), "test")
	if err != nil {
		t.Fatal(err)
	}
	h := start(t, newPKI(t), func(c *Config) { c.StatsHandlers = append(c.StatsHandlers, tr.Handler) }, func(s *Server) {
		hsmgatev1.RegisterSystemServiceServer(s, &fakeSystem{fn: func(context.Context) (*hsmgatev1.GetStatusResponse, error) {
			return &hsmgatev1.GetStatusResponse{}, nil
		}})
	})
	if _, err := callStatus(h.dial(t, nil)); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	want := "hsmgate.v1.SystemService/GetStatus"
	// The server span ends after the client has its answer: flush until it
	// is out (or a minute passed), then shut down.
	for ctx.Err() == nil && !slices.Contains(col.names(), want) {
		if err := tr.tp.ForceFlush(ctx); err != nil {
			t.Fatal(err)
		}
		time.Sleep(10 * time.Millisecond)
	}
	if err := tr.Shutdown(ctx); err != nil { // flushes
		t.Fatal(err)
	}
	got := col.names()
	found := false
	for _, n := range got {
		if n == want {
			found = true
		}
		if n == "grpc.health.v1.Health/Check" {
			t.Errorf("health check traced: %v", got)
		}
	}
	if !found {
		t.Errorf("spans exported: got %v, want %q among them", got, want)
	}
}

package server

import (
	"context"
	"errors"
	"strings"
	"testing"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/hsmgate/hsmgate/internal/callinfo"
	hsmgatev1 "github.com/hsmgate/hsmgate/proto/hsmgate/v1"
)

type testIdentityKey struct{}

// TestRequestLogLinesNameRequestAndCaller: every line of a call (the
// per-call line, the Internal error line, a handler's own line) carries the
// request id the auth layer chose and the identity it found.
func TestRequestLogLinesNameRequestAndCaller(t *testing.T) {
	// Stands for the auth interceptor: it picks the request id and puts
	// the identity in the handler's context.
	fakeAuth := func(ctx context.Context, req any, _ *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
		if ci := callinfo.From(ctx); ci != nil { // health calls are not logged
			ci.RequestID = "req-7"
		}
		return handler(context.WithValue(ctx, testIdentityKey{}, "alice"), req)
	}
	var h *harness
	h = start(t, newPKI(t), func(c *Config) {
		c.UnaryInterceptors = []grpc.UnaryServerInterceptor{fakeAuth}
		c.RequestFields = func(ctx context.Context) (string, string) {
			if n, ok := ctx.Value(testIdentityKey{}).(string); ok {
				return n, "token"
			}
			return "", ""
		}
	}, func(s *Server) {
		hsmgatev1.RegisterSystemServiceServer(s, &fakeSystem{fn: func(ctx context.Context) (*hsmgatev1.GetStatusResponse, error) {
			h.srv.Logger().InfoContext(ctx, "handler line")
			return nil, errors.New("disk on fire")
		}})
	})
	if _, err := callStatus(h.dial(t, nil)); status.Code(err) != codes.Internal {
		t.Fatalf("got %v, want Internal", err)
	}
	want := map[string]bool{"msg=\"handler line\"": false, "msg=\"internal error\"": false, "msg=\"finished call\"": false}
	for _, l := range strings.Split(h.logs.String(), "\n") {
		if !strings.Contains(l, "GetStatus") && !strings.Contains(l, "handler line") {
			continue
		}
		for m := range want {
			if strings.Contains(l, m) {
				want[m] = true
				if !strings.Contains(l, "request_id=req-7") || !strings.Contains(l, "identity=alice") || !strings.Contains(l, "identity_kind=token") {
					t.Errorf("log line lacks request_id or identity: %s", l)
				}
			}
		}
	}
	for m, seen := range want {
		if !seen {
			t.Errorf("no %s line in the log:\n%s", m, h.logs)
		}
	}
}

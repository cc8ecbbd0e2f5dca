package auth

import (
	"bytes"
	"context"
	"path/filepath"
	"testing"

	"google.golang.org/grpc"
	"google.golang.org/grpc/metadata"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/hsmgate/hsmgate/internal/audit"
)

// BenchmarkUnary is the interceptor's cost per request on the hot path: a
// cached token, a cached policy, a rate limit, and no audit, two audit lines
// to a file, or the one line of a read-only RPC. The call runs in a server
// stream's context, as in a server (grpc.SetHeader succeeds).
func BenchmarkUnary(b *testing.B) {
	for _, bc := range []struct {
		name            string
		audit, readOnly bool
	}{{"no-audit", false, false}, {"audit", true, false}, {"audit-read-only", true, true}} {
		withAudit := bc.audit
		b.Run(bc.name, func(b *testing.B) {
			a, _ := newAuth(b, Config{RateLimits: RateLimitConfig{Identity: Limit{Rate: 1e9, Burst: 1e9}}})
			var auditor Auditor
			if withAudit {
				l, err := audit.Open(audit.Config{Path: filepath.Join(b.TempDir(), "audit.log"), MaxBytes: -1}, bytes.Repeat([]byte{1}, 32))
				if err != nil {
					b.Fatal(err)
				}
				b.Cleanup(func() { l.Close() })
				auditor = l
			}
			ic, err := a.Interceptor(Table{"/test.Pipe/Echo": {Capability: CapEncrypt, Resource: pipeResource, ReadOnly: bc.readOnly}}, auditor)
			if err != nil {
				b.Fatal(err)
			}
			pol, _ := ParsePolicyDocument("p", []byte("rules:\n  - resource: transit/keys/orders-*\n    capabilities: [decrypt]\n  - resource: transit/keys/payments-*\n    capabilities: [encrypt]\n"))
			a.Policies.Put(context.Background(), pol)
			secret, _, _ := a.Tokens.Create(context.Background(), rootID, TokenRequest{Policies: []string{"p"}})
			ctx := metadata.NewIncomingContext(context.Background(), metadata.Pairs("authorization", "Bearer "+secret))
			ctx = grpc.NewContextWithServerTransportStream(ctx, benchStream{})
			info := &grpc.UnaryServerInfo{FullMethod: "/test.Pipe/Echo"}
			h := func(context.Context, any) (any, error) { return nil, nil }
			req := wrapperspb.String("payments-eu")
			u := ic.Unary()
			b.ReportAllocs()
			b.ResetTimer()
			for b.Loop() {
				if _, err := u(ctx, req, info, h); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

func BenchmarkMatch(b *testing.B) {
	for b.Loop() {
		Match("transit/keys/payments-*-eu", "transit/keys/payments-card-eu")
	}
}

// benchStream is the server transport stream of a benchmark's calls.
type benchStream struct{}

func (benchStream) Method() string                  { return "/test.Pipe/Echo" }
func (benchStream) SetHeader(metadata.MD) error     { return nil }
func (benchStream) SendHeader(metadata.MD) error    { return nil }
func (benchStream) SetTrailer(md metadata.MD) error { return nil }

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
// cached token, a cached policy, a rate limit, two audit lines to a file.
func BenchmarkUnary(b *testing.B) {
	for _, withAudit := range []bool{false, true} {
		name := "no-audit"
		if withAudit {
			name = "audit"
		}
		b.Run(name, func(b *testing.B) {
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
			ic, err := a.Interceptor(Table{"/test.Pipe/Echo": {Capability: CapEncrypt, Resource: pipeResource}}, auditor)
			if err != nil {
				b.Fatal(err)
			}
			pol, _ := ParsePolicyDocument("p", []byte("rules:\n  - resource: transit/keys/orders-*\n    capabilities: [decrypt]\n  - resource: transit/keys/payments-*\n    capabilities: [encrypt]\n"))
			a.Policies.Put(context.Background(), pol)
			secret, _, _ := a.Tokens.Create(context.Background(), rootID, TokenRequest{Policies: []string{"p"}})
			ctx := metadata.NewIncomingContext(context.Background(), metadata.Pairs("authorization", "Bearer "+secret))
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

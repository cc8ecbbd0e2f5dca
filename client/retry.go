package client

import (
	"context"
	"math/rand/v2"
	"strings"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// RetryPolicy retries idempotent calls that fail with Unavailable or
// Aborted, with exponential backoff and full jitter (each wait is uniform in
// [0, min(MaxBackoff, InitialBackoff·2^attempt)]), inside the call's
// deadline: a wait that would end after the deadline is not started.
//
// Which calls are idempotent (IsIdempotent):
//
//   - reads: every Get*, List*, Read*, Lookup* method, GetStatus, health;
//   - the transit data plane: Decrypt, VerifySignature, VerifyHmac,
//     ComputeHmac, SignData, Rewrap, Encrypt, GenerateDataKey and
//     GenerateRandom. Encrypt is retried on purpose: an attempt whose answer
//     was lost committed nothing a caller can observe (its ciphertext was
//     never delivered, so it can never be decrypted or compared), each
//     attempt draws a fresh random nonce on the server (no nonce is reused),
//     and its only side effect is one more count against the key version's
//     encryption limit, which the server rotates before reaching. Rewrap,
//     SignData and GenerateDataKey are retried on the same grounds;
//   - never: creates, updates, deletes, rotations, imports, certificate and
//     SSH issuance (a lost answer may still have minted a certificate with
//     its own serial; a retry would mint a second), revocation, tokens.
//
// Streams are never retried.
type RetryPolicy struct {
	// MaxAttempts counts the first call (default 4; 1 disables retries).
	MaxAttempts int
	// InitialBackoff is the cap of the first wait (default 50ms).
	InitialBackoff time.Duration
	// MaxBackoff caps every wait (default 2s).
	MaxBackoff time.Duration
}

// DefaultRetry is the policy of a zero RetryPolicy.
var DefaultRetry = RetryPolicy{MaxAttempts: 4, InitialBackoff: 50 * time.Millisecond, MaxBackoff: 2 * time.Second}

func (p RetryPolicy) withDefaults() RetryPolicy {
	if p.MaxAttempts <= 0 {
		p.MaxAttempts = DefaultRetry.MaxAttempts
	}
	if p.InitialBackoff <= 0 {
		p.InitialBackoff = DefaultRetry.InitialBackoff
	}
	if p.MaxBackoff <= 0 {
		p.MaxBackoff = DefaultRetry.MaxBackoff
	}
	return p
}

// backoff is the jittered wait before attempt n+1 (n counts from 1).
func (p RetryPolicy) backoff(n int) time.Duration {
	ceil := p.InitialBackoff
	for i := 1; i < n && ceil < p.MaxBackoff; i++ {
		ceil *= 2
	}
	ceil = min(ceil, p.MaxBackoff)
	return rand.N(ceil + 1)
}

// idempotentMethods are the data-plane methods retried besides reads.
var idempotentMethods = map[string]bool{
	"/hsmgate.v1.TransitService/Encrypt":         true,
	"/hsmgate.v1.TransitService/Decrypt":         true,
	"/hsmgate.v1.TransitService/Rewrap":          true,
	"/hsmgate.v1.TransitService/GenerateDataKey": true,
	"/hsmgate.v1.TransitService/SignData":        true,
	"/hsmgate.v1.TransitService/VerifySignature": true,
	"/hsmgate.v1.TransitService/ComputeHmac":     true,
	"/hsmgate.v1.TransitService/VerifyHmac":      true,
	"/hsmgate.v1.TransitService/GenerateRandom":  true,
	"/grpc.health.v1.Health/Check":               true,
}

// IsIdempotent reports whether the full method name (/pkg.Service/Method)
// is retried by RetryPolicy.
func IsIdempotent(fullMethod string) bool {
	if idempotentMethods[fullMethod] {
		return true
	}
	if !strings.HasPrefix(fullMethod, "/hsmgate.v1.") {
		return false
	}
	m := fullMethod[strings.LastIndexByte(fullMethod, '/')+1:]
	for _, p := range []string{"Get", "List", "Read", "Lookup"} {
		if strings.HasPrefix(m, p) {
			return true
		}
	}
	return false
}

// retryable reports whether a failed attempt may be repeated.
func retryable(err error) bool {
	switch status.Code(err) {
	case codes.Unavailable, codes.Aborted:
		return true
	}
	return false
}

func (p RetryPolicy) interceptor() grpc.UnaryClientInterceptor {
	return func(ctx context.Context, method string, req, reply any, cc *grpc.ClientConn, invoker grpc.UnaryInvoker, opts ...grpc.CallOption) error {
		if p.MaxAttempts <= 1 || !IsIdempotent(method) {
			return invoker(ctx, method, req, reply, cc, opts...)
		}
		for n := 1; ; n++ {
			err := invoker(ctx, method, req, reply, cc, opts...)
			if err == nil || n >= p.MaxAttempts || !retryable(err) {
				return err
			}
			wait := p.backoff(n)
			if dl, ok := ctx.Deadline(); ok && time.Until(dl) < wait {
				return err
			}
			t := time.NewTimer(wait)
			select {
			case <-ctx.Done():
				t.Stop()
				return err
			case <-t.C:
			}
		}
	}
}

// deadlineInterceptor gives a call without a deadline one of d (d < 0: none).
func deadlineInterceptor(d time.Duration) grpc.UnaryClientInterceptor {
	return func(ctx context.Context, method string, req, reply any, cc *grpc.ClientConn, invoker grpc.UnaryInvoker, opts ...grpc.CallOption) error {
		if _, ok := ctx.Deadline(); !ok && d > 0 {
			var cancel context.CancelFunc
			ctx, cancel = context.WithTimeout(ctx, d)
			defer cancel()
		}
		return invoker(ctx, method, req, reply, cc, opts...)
	}
}

func errorInterceptor(ctx context.Context, method string, req, reply any, cc *grpc.ClientConn, invoker grpc.UnaryInvoker, opts ...grpc.CallOption) error {
	return FromError(invoker(ctx, method, req, reply, cc, opts...))
}

func streamErrorInterceptor(ctx context.Context, desc *grpc.StreamDesc, cc *grpc.ClientConn, method string, streamer grpc.Streamer, opts ...grpc.CallOption) (grpc.ClientStream, error) {
	s, err := streamer(ctx, desc, cc, method, opts...)
	if err != nil {
		return nil, FromError(err)
	}
	return mappedStream{s}, nil
}

// mappedStream maps the status errors of a stream (io.EOF stays io.EOF).
type mappedStream struct{ grpc.ClientStream }

func (s mappedStream) SendMsg(m any) error { return FromError(s.ClientStream.SendMsg(m)) }
func (s mappedStream) RecvMsg(m any) error { return FromError(s.ClientStream.RecvMsg(m)) }
func (s mappedStream) CloseSend() error    { return FromError(s.ClientStream.CloseSend()) }

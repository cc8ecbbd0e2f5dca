package server

import (
	"context"
	"net/http"
	"strconv"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/grpc/tap"

	"github.com/hsmgate/hsmgate/internal/errs"
)

// tapStreams admits a new gRPC stream under the server-wide bound, before
// any of its messages is read; the slot is given back when the stream ends
// (its context is cancelled then, whatever the outcome).
func (s *Server) tapStreams(ctx context.Context, _ *tap.Info) (context.Context, error) {
	if s.streams.Add(1) > int64(s.cfg.MaxStreams) {
		s.streams.Add(-1)
		s.lm.streamsRefused.Inc()
		return ctx, status.Error(codes.ResourceExhausted, "server: too many concurrent streams, retry later")
	}
	// The stream's context can be cancelled by the request read deadline
	// (recvhold.go); grpc cancels it (and so this child) when the stream ends.
	ctx, cancel := context.WithCancel(ctx)
	context.AfterFunc(ctx, func() { s.streams.Add(-1) })
	return context.WithValue(ctx, streamCancelKey{}, cancel), nil
}

// inflightUnary holds the request's size in the budget while the call runs,
// unless its recvHold already does (every unary RPC but health and reflection).
func (s *Server) inflightUnary(ctx context.Context, req any, _ *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
	if h, _ := ctx.Value(recvHoldKey{}).(*recvHold); h != nil && h.holding() {
		return handler(ctx, req)
	}
	release, err := s.budget.acquire(ctx, msgSize(req), "grpc")
	if err != nil {
		return nil, err
	}
	defer release()
	return handler(ctx, req)
}

// inflightStream holds each received message's size in the budget until the
// next message is asked for or the stream ends.
func (s *Server) inflightStream(srv any, ss grpc.ServerStream, _ *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
	bs := &budgetStream{ServerStream: ss, b: s.budget}
	defer bs.releaseHeld()
	return handler(srv, bs)
}

type budgetStream struct {
	grpc.ServerStream
	b       *budget
	release func() // of the last message; RecvMsg is never called concurrently
}

func (bs *budgetStream) releaseHeld() {
	if bs.release != nil {
		bs.release()
		bs.release = nil
	}
}

func (bs *budgetStream) RecvMsg(m any) error {
	bs.releaseHeld()
	if err := bs.ServerStream.RecvMsg(m); err != nil {
		return err
	}
	release, err := bs.b.acquire(bs.Context(), msgSize(m), "grpc")
	if err != nil {
		return errs.ToGRPC(err)
	}
	bs.release = release
	return nil
}

// authUnary and authStream are the innermost interceptors: reaching them
// means every added interceptor (auth) admitted the request.
func (s *Server) authUnary(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
	s.authenticated(ctx, info.FullMethod)
	s.addRequestFields(ctx) // logctx.go
	return handler(ctx, req)
}

func (s *Server) authStream(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
	s.authenticated(ss.Context(), info.FullMethod)
	s.addRequestFields(ss.Context()) // logctx.go
	return handler(srv, ss)
}

// limitHTTP bounds an HTTPS request's body (413 over MaxHTTPBodyBytes) and
// holds its size in the bytes-in-flight budget while it is handled (429 when
// it does not fit). A body of unknown length counts as the maximum.
func (s *Server) limitHTTP(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		limit := s.cfg.MaxHTTPBodyBytes
		if r.ContentLength > limit {
			http.Error(w, "request body larger than "+strconv.FormatInt(limit, 10)+" bytes", http.StatusRequestEntityTooLarge)
			return
		}
		n := r.ContentLength
		if n < 0 {
			n = limit
		}
		release, err := s.budget.acquire(r.Context(), n, "http")
		if err != nil {
			w.Header().Set("Retry-After", "1")
			code, msg := errs.HTTPStatus(err)
			http.Error(w, msg, code)
			return
		}
		defer release()
		if r.Body != nil {
			r.Body = http.MaxBytesReader(w, r.Body, limit)
		}
		next.ServeHTTP(w, r)
	})
}

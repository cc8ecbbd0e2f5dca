package server

import (
	"context"
	"log/slog"
	"strings"
	"time"

	"github.com/grpc-ecosystem/go-grpc-middleware/v2/interceptors/logging"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"

	"github.com/hsmgate/hsmgate/internal/callinfo"
)

// The per-call log line. A call that succeeds is logged at debug: the audit
// log is the record of every request, and a line per request in the server
// log doubled the write path of single-item calls. Failures keep
// go-grpc-middleware's levels (a caller's mistake at info, refusals and
// unavailability at warn, internal faults at error).
//
// Unary calls go through callLogUnary, which does what
// logging.UnaryServerInterceptor does (the same fields, the same "finished
// call" line) except that it builds the line only when its level is
// enabled: the middleware assembles every field of every call before the
// handler decides to drop the line. Streams keep the middleware (with the
// same levels): a stream's line is one per stream, not per message.

// callLevel is the level of a finished call's line.
func callLevel(code codes.Code) logging.Level {
	if code == codes.OK {
		return logging.LevelDebug
	}
	return logging.DefaultServerCodeToLevel(code)
}

// callLogUnary is the unary per-call logging interceptor (health checks are not logged).
func callLogUnary(l *slog.Logger) grpc.UnaryServerInterceptor {
	return func(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
		service, method := splitMethod(info.FullMethod)
		if service == healthpb.Health_ServiceDesc.ServiceName {
			return handler(ctx, req)
		}
		start := time.Now()
		// The call's request id and identity are filled in below (auth,
		// addRequestFields), for this line and for every line logged with
		// the call's context (RequestFieldsHandler).
		ctx, ci := callinfo.New(ctx, service, method)
		resp, err := handler(ctx, req)
		code := status.Code(err)
		lvl := slog.Level(callLevel(code))
		if !l.Enabled(ctx, lvl) {
			return resp, err
		}
		fields := append([]any{
			logging.SystemTag[0], logging.SystemTag[1],
			logging.ComponentFieldKey, logging.KindServerFieldValue,
			logging.ServiceFieldKey, service,
			logging.MethodFieldKey, method,
			logging.MethodTypeFieldKey, "unary",
		}, requestFieldsOf(ci)...)
		if p, ok := peer.FromContext(ctx); ok && p.Addr != nil {
			fields = append(fields, "peer.address", p.Addr.String())
		}
		fields = append(fields, "grpc.start_time", start.Format(time.RFC3339))
		if d, ok := ctx.Deadline(); ok {
			fields = append(fields, "grpc.request.deadline", d.Format(time.RFC3339))
		}
		fields = append(fields, "grpc.code", code.String())
		if err != nil {
			fields = append(fields, "grpc.error", err.Error())
		}
		fields = append(fields, "grpc.duration", time.Since(start).String())
		l.Log(ctx, lvl, "finished call", fields...)
		return resp, err
	}
}

// splitMethod splits "/package.Service/Method".
func splitMethod(full string) (service, method string) {
	s, m, ok := strings.Cut(strings.TrimPrefix(full, "/"), "/")
	if !ok {
		return "unknown", "unknown"
	}
	return s, m
}

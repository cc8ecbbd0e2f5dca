package vaultdoor

import (
	"context"
	"fmt"
	"net/http"
	"runtime/debug"
	"strings"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/hsmgate/hsmgate/internal/auth"
	"github.com/hsmgate/hsmgate/internal/errs"
	"github.com/hsmgate/hsmgate/internal/server"
)

// Registry is where the door finds the gRPC services and the interceptors
// that guard them (*server.Server). Both are read at request time: the
// engines register and the auth wiring adds its interceptor after the door
// is made.
type Registry interface {
	// RegisteredService returns the descriptor and implementation of a
	// service by its full name ("hsmgate.v1.TransitService").
	RegisteredService(name string) (*grpc.ServiceDesc, any, bool)
	// UnaryInterceptors returns the interceptors added to the gRPC server
	// (authentication, authorisation, rate limits, audit), in order.
	UnaryInterceptors() []grpc.UnaryServerInterceptor
}

var _ Registry = (*server.Server)(nil)

// errNotReady answers while no interceptor guards the services: the door
// never serves an unauthenticated RPC.
var errNotReady = errs.New(errs.Unavailable, "vaultdoor: authentication is not ready")

// doorAddr is the peer address the interceptor records in the audit line's
// "remote": the client's address and the door's request, so that a line
// names the door, the Vault path and (in "method") the mapped RPC.
type doorAddr struct{ remote, op string }

func (a doorAddr) Network() string { return "tcp" }
func (a doorAddr) String() string  { return a.remote + " via vault " + a.op }

// call is one door request on its way to an RPC.
type call struct {
	r     *http.Request
	reqID string
	token string
}

// incoming returns the context an in-process RPC sees: the caller's token
// as "authorization: Bearer", the request id, and a peer carrying the
// client's address (with the door's request) and its TLS state, so that
// the interceptor authenticates exactly as it does a gRPC call.
func (c *call) incoming(ctx context.Context) context.Context {
	md := metadata.Pairs("x-request-id", c.reqID)
	if c.token != "" {
		md.Set("authorization", "Bearer "+c.token)
	}
	ctx = metadata.NewIncomingContext(ctx, md)
	p := &peer.Peer{Addr: doorAddr{remote: c.r.RemoteAddr, op: c.r.Method + " " + c.r.URL.Path}}
	if c.r.TLS != nil {
		p.AuthInfo = credentials.TLSInfo{State: *c.r.TLS}
	}
	return peer.NewContext(ctx, p)
}

// invoke runs the RPC method ("/hsmgate.v1.TransitService/Encrypt") with
// req through the gRPC server's interceptors (the RPC's capability rule,
// rate limit and audit lines), then the method's own handler. A handler
// for a method the door maps to no registered service (door-only
// operations such as SignIntermediate) is given as fn.
func (d *Door) invoke(ctx context.Context, c *call, method string, req proto.Message, fn grpc.UnaryHandler) (any, error) {
	ics := d.cfg.Registry.UnaryInterceptors()
	if len(ics) == 0 {
		return nil, errNotReady
	}
	if fn == nil {
		svc, name, ok := strings.Cut(strings.TrimPrefix(method, "/"), "/")
		if !ok {
			return nil, fmt.Errorf("vaultdoor: bad method %q", method)
		}
		desc, impl, ok := d.cfg.Registry.RegisteredService(svc)
		if !ok {
			return nil, errs.New(errs.Unimplemented, "vaultdoor: "+svc+" is not served here")
		}
		var md *grpc.MethodDesc
		for i := range desc.Methods {
			if desc.Methods[i].MethodName == name {
				md = &desc.Methods[i]
			}
		}
		if md == nil {
			return nil, fmt.Errorf("vaultdoor: %s has no unary method %s", svc, name)
		}
		dec := func(m any) error {
			proto.Merge(m.(proto.Message), req)
			return nil
		}
		return md.Handler(impl, c.incoming(ctx), dec, chain(append(ics, d.inner)))
	}
	info := &grpc.UnaryServerInfo{FullMethod: method}
	return chain(append(ics, d.inner))(c.incoming(ctx), req, info, fn)
}

// chain runs interceptors in order around the handler.
func chain(ics []grpc.UnaryServerInterceptor) grpc.UnaryServerInterceptor {
	return func(ctx context.Context, req any, info *grpc.UnaryServerInfo, h grpc.UnaryHandler) (any, error) {
		var next func(i int) grpc.UnaryHandler
		next = func(i int) grpc.UnaryHandler {
			if i == len(ics) {
				return h
			}
			return func(ctx context.Context, req any) (any, error) { return ics[i](ctx, req, info, next(i+1)) }
		}
		return next(0)(ctx, req)
	}
}

// inner runs right around the handler, as the gRPC server's innermost
// recovery does: a panic becomes Internal (logged, never sent), and an
// Internal error is logged with its cause and request id before the auth
// interceptor turns it into a bare status.
func (d *Door) inner(ctx context.Context, req any, info *grpc.UnaryServerInfo, h grpc.UnaryHandler) (resp any, err error) {
	defer func() {
		if p := recover(); p != nil {
			id, _ := auth.RequestID(ctx)
			d.log.ErrorContext(ctx, "vaultdoor: panic in RPC", "grpc.method", info.FullMethod, "request_id", id, "panic", fmt.Sprint(p), "stack", string(debug.Stack()))
			resp, err = nil, status.Error(codes.Internal, "internal error")
		}
	}()
	resp, err = h(ctx, req)
	if err != nil && errs.Code(err) == codes.Internal {
		if _, isStatus := status.FromError(err); !isStatus {
			id, _ := auth.RequestID(ctx)
			d.log.ErrorContext(ctx, "vaultdoor: internal error", "grpc.method", info.FullMethod, "request_id", id, "error", err)
		}
	}
	return resp, err
}

// Package callinfo carries what every log line of one unary RPC names (its
// method, the request id the auth layer chose, the caller's identity) from
// the interceptors that learn them to the call's "finished call" line and to
// every line logged with the call's context.
//
// It replaces go-grpc-middleware's logging fields on the unary hot path:
// those are a slice in the context that each addition copies, three copies
// and a dozen allocations a call that mostly logs nothing (a call that
// succeeds is logged at debug). Here the fields are one struct, in the same
// allocation as the context that carries it, filled in place and read only
// when a line is written. Streams keep the middleware's fields.
//
// The fields are written by the interceptors in the RPC's goroutine before
// the handler runs, and read after that (by the handler, goroutines it
// starts, and the call's log line), so they need no lock.
package callinfo

import "context"

// Info is one call's log fields.
type Info struct {
	Service, Method string // "hsmgate.v1.TransitService", "Encrypt"
	RequestID       string // set by the auth layer
	Identity        string // the caller's name, once authenticated
	IdentityKind    string // token, root, mtls, ...
}

type key struct{}

// infoCtx is a context carrying an Info: one allocation for both.
type infoCtx struct {
	context.Context
	info Info
}

func (c *infoCtx) Value(k any) any {
	if k == (key{}) {
		return &c.info
	}
	return c.Context.Value(k)
}

// New returns ctx carrying a new Info for service and method.
func New(ctx context.Context, service, method string) (context.Context, *Info) {
	c := &infoCtx{Context: ctx, info: Info{Service: service, Method: method}}
	return c, &c.info
}

// From returns the call's Info, or nil outside a unary call.
func From(ctx context.Context) *Info {
	if ctx == nil {
		return nil
	}
	i, _ := ctx.Value(key{}).(*Info)
	return i
}

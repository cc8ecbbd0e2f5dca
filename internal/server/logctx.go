package server

import (
	"context"
	"log/slog"

	"github.com/grpc-ecosystem/go-grpc-middleware/v2/interceptors/logging"

	"github.com/hsmgate/hsmgate/internal/callinfo"
)

// requestKeys are the request-scoped fields every log line of a call
// carries: the auth layer sets request_id, the server adds identity and
// identity_kind from Config.RequestFields once the added interceptors ran.
// A unary call keeps them in its callinfo.Info (callLogUnary made it); a
// stream in go-grpc-middleware's logging fields (logging.AddFields). The
// per-call line takes them from there; RequestFieldsHandler adds them to
// any other line logged with the call's context.
var requestKeys = map[string]bool{"request_id": true, "identity": true, "identity_kind": true}

// addRequestFields records Config.RequestFields(ctx) for the call's log
// lines; it runs innermost, where the identity is in ctx.
func (s *Server) addRequestFields(ctx context.Context) {
	fn := s.cfg.RequestFields
	if fn == nil {
		return
	}
	id, kind := fn(ctx)
	if id == "" && kind == "" {
		return
	}
	if ci := callinfo.From(ctx); ci != nil {
		ci.Identity, ci.IdentityKind = id, kind
		return
	}
	logging.AddFields(ctx, logging.Fields{"identity", id, "identity_kind", kind})
}

// requestFieldsOf returns the request-scoped fields a unary call has set.
func requestFieldsOf(ci *callinfo.Info) []any {
	var f []any
	if ci.RequestID != "" {
		f = append(f, "request_id", ci.RequestID)
	}
	if ci.Identity != "" || ci.IdentityKind != "" {
		f = append(f, "identity", ci.Identity, "identity_kind", ci.IdentityKind)
	}
	return f
}

// RequestFieldsHandler wraps h so that a record logged with a call's
// context (InfoContext and friends) carries the call's request_id,
// identity and identity_kind, unless it has them already.
func RequestFieldsHandler(h slog.Handler) slog.Handler {
	if _, ok := h.(requestFieldsHandler); ok {
		return h
	}
	return requestFieldsHandler{h}
}

type requestFieldsHandler struct{ slog.Handler }

func (h requestFieldsHandler) Handle(ctx context.Context, r slog.Record) error {
	if ctx == nil {
		return h.Handler.Handle(ctx, r)
	}
	var fields []any
	if ci := callinfo.From(ctx); ci != nil {
		fields = requestFieldsOf(ci)
	} else {
		fields = logging.ExtractFields(ctx)
	}
	if len(fields) == 0 {
		return h.Handler.Handle(ctx, r)
	}
	have := map[string]bool{}
	r.Attrs(func(a slog.Attr) bool {
		if requestKeys[a.Key] {
			have[a.Key] = true
		}
		return true
	})
	var add []slog.Attr
	for i := 0; i+1 < len(fields); i += 2 {
		k, ok := fields[i].(string)
		if ok && requestKeys[k] && !have[k] {
			have[k] = true
			add = append(add, slog.Any(k, fields[i+1]))
		}
	}
	if len(add) > 0 {
		r = r.Clone()
		r.AddAttrs(add...)
	}
	return h.Handler.Handle(ctx, r)
}

func (h requestFieldsHandler) WithAttrs(as []slog.Attr) slog.Handler {
	return requestFieldsHandler{h.Handler.WithAttrs(as)}
}

func (h requestFieldsHandler) WithGroup(name string) slog.Handler {
	return requestFieldsHandler{h.Handler.WithGroup(name)}
}

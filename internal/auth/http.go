package auth

import (
	"encoding/json"
	"net/http"
	"strconv"
	"sync/atomic"

	"github.com/hsmgate/hsmgate/internal/errs"
)

// HTTPRule says what an HTTP endpoint needs, like Rule does for an RPC.
type HTTPRule struct {
	// Public endpoints (health, CA certificates, CRL, OCSP, SSH CA public key,
	// KRL, ACME directory) need no identity and are not audited here.
	Public            bool
	AuthenticatedOnly bool
	Capability        Capability
	// Resource computes the resource from the request; nil means Path.
	Resource func(r *http.Request) (string, error)
	Path     string
}

// HTTP wraps next with the same checks as the gRPC interceptor: authenticate,
// authorise, rate limit, write the audit request line (fail closed: 503 and
// next never runs), run next, write the response line. The identity is in the
// request's context (FromContext). Errors answer as JSON {"errors":[msg]} with
// the HTTP status of the error's kind.
func (i *Interceptor) HTTP(rule HTTPRule, next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if rule.Public {
			next.ServeHTTP(w, r)
			return
		}
		ctx, c := i.newCall(r.Context(), "HTTP "+r.Method+" "+r.URL.Path)
		r = r.WithContext(ctx)
		if v := r.Header.Get("X-Request-Id"); validRequestID(v) {
			c.reqID = v
		}
		c.remote = r.RemoteAddr
		w.Header().Set("X-Request-Id", c.reqID)
		fail := func(resource string, err error) {
			i.auditRefusal(c, resource, 1, err)
			writeHTTPError(w, i.status(c, err))
		}
		id, err := i.o.Authenticator.FromHTTP(r)
		if err != nil {
			fail("", err)
			return
		}
		c.id = id
		resource := rule.Path
		if rule.Resource != nil {
			if resource, err = rule.Resource(r); err != nil {
				fail("", errs.New(errs.InvalidArgument, "auth: "+err.Error()))
				return
			}
		}
		if err := i.admit(r.Context(), id, Rule{AuthenticatedOnly: rule.AuthenticatedOnly, Capability: rule.Capability}, resource); err != nil {
			fail(resource, err)
			return
		}
		if err := i.logRequest(c, resource, 1); err != nil {
			writeHTTPError(w, i.status(c, err))
			return
		}
		sw := &statusWriter{ResponseWriter: w, code: http.StatusOK}
		next.ServeHTTP(sw, r.WithContext(withCall(r.Context(), id, c.reqID)))
		if i.o.Audit != nil {
			e := i.entry(c, "response", resource, 1)
			e.Code = strconv.Itoa(sw.code)
			e.LatencyMS = float64(i.now().Sub(c.start).Microseconds()) / 1000
			i.countDegraded(c)
			_ = i.o.Audit.Write(e) // the response is already sent
		}
	})
}

type statusWriter struct {
	http.ResponseWriter
	code int
}

func (s *statusWriter) WriteHeader(code int) {
	s.code = code
	s.ResponseWriter.WriteHeader(code)
}

func (s *statusWriter) Unwrap() http.ResponseWriter { return s.ResponseWriter }

func writeHTTPError(w http.ResponseWriter, err error) {
	code, msg := errs.HTTPStatus(err)
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	_ = json.NewEncoder(w).Encode(map[string][]string{"errors": {msg}})
}

// HTTPGate wraps HTTP handlers before the Interceptor exists (engines register
// their handlers before the auth wiring builds it). Until Set is called every
// non-public request is answered 503, so nothing is served unauthenticated by
// mistake. The zero value is ready to use.
type HTTPGate struct {
	ic atomic.Pointer[Interceptor]
}

// Set installs the interceptor that wrapped handlers use.
func (g *HTTPGate) Set(ic *Interceptor) { g.ic.Store(ic) }

// Wrap is Interceptor.HTTP, bound when the request arrives.
func (g *HTTPGate) Wrap(rule HTTPRule, next http.Handler) http.Handler {
	if rule.Public {
		return next
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		ic := g.ic.Load()
		if ic == nil {
			writeHTTPError(w, errs.New(errs.Unavailable, "auth: not ready"))
			return
		}
		ic.HTTP(rule, next).ServeHTTP(w, r)
	})
}

package auth

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/grpc-ecosystem/go-grpc-middleware/v2/interceptors/logging"
	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/hsmgate/hsmgate/internal/audit"
	"github.com/hsmgate/hsmgate/internal/callinfo"
	"github.com/hsmgate/hsmgate/internal/errs"
	"github.com/hsmgate/hsmgate/keystore"
)

// Auditor is what the interceptor needs of the audit log (*audit.Log).
type Auditor interface {
	// Write appends one chained line; an error means the request must fail.
	Write(e *audit.Entry) error
	// HMAC hides an identifier under the deployment key.
	HMAC(s string) string
}

var _ Auditor = (*audit.Log)(nil)

// Options configure an Interceptor.
type Options struct {
	// Table: the merged rule table (see Merge, PublicTable, AuthTable).
	Table         Table
	Authenticator *Authenticator
	Policies      *Policies
	// Limiter may be nil (no rate limits).
	Limiter *RateLimiter
	// Audit may be nil only in tests.
	Audit Auditor
	// Logger receives every Internal error with its cause and request id;
	// nil: slog.Default().
	Logger *slog.Logger
	// RefusalAuditRate bounds the audit lines written for unauthenticated
	// and rate-limited refusals: at most this many per second for each of
	// the two (bursts as large), the rest counted and reported in the next
	// line written; 0: DefaultRefusalAuditRate.
	RefusalAuditRate int
}

// DefaultRefusalAuditRate is the default Options.RefusalAuditRate.
const DefaultRefusalAuditRate = 10

// Interceptor authenticates, authorises, rate limits and audits every RPC.
type Interceptor struct {
	o   Options
	now func() time.Time
	log *slog.Logger
	ref *refusals
	// degraded counts requests served, in part, from caches that could not
	// check their entries with an unreachable store (keystore.Cache).
	degraded prometheus.Counter
	// accessors remembers the audit HMAC of token accessors (the HMAC of an
	// accessor under the deployment key never changes): an HMAC and three
	// allocations a request otherwise. At most maxAccessorHMACs entries;
	// when full it starts again.
	accessors  sync.Map // accessor → HMAC
	nAccessors atomic.Int64
}

// maxAccessorHMACs bounds Interceptor.accessors.
const maxAccessorHMACs = 1 << 14

// accessorHMAC returns the audit HMAC of a token accessor.
func (i *Interceptor) accessorHMAC(acc string) string {
	if v, ok := i.accessors.Load(acc); ok {
		return v.(string)
	}
	h := i.o.Audit.HMAC(acc)
	if i.nAccessors.Add(1) > maxAccessorHMACs {
		i.accessors.Clear()
		i.nAccessors.Store(1)
	}
	i.accessors.Store(acc, h)
	return h
}

// NewInterceptor checks o and returns the interceptor.
func NewInterceptor(o Options) (*Interceptor, error) {
	if o.Table == nil || o.Authenticator == nil || o.Policies == nil {
		return nil, fmt.Errorf("auth: interceptor needs a table, an authenticator and policies")
	}
	for m, r := range o.Table {
		if err := r.check(); err != nil {
			return nil, fmt.Errorf("auth: rule for %s: %w", m, err)
		}
	}
	log := o.Logger
	if log == nil {
		log = slog.Default()
	}
	rate := o.RefusalAuditRate
	if rate <= 0 {
		rate = DefaultRefusalAuditRate
	}
	return &Interceptor{o: o, now: time.Now, log: log, ref: newRefusals(rate),
		degraded: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "hsmgate_degraded_requests_total",
			Help: "Requests served from cached keys, tokens or policies while the store was out of reach (within store.degraded_grace).",
		})}, nil
}

// call is the state of one request.
type call struct {
	method string
	id     *Identity
	reqID  string
	remote string
	start  time.Time
	// auditID is the identity as its audit lines show it, made once for
	// the call's lines (its accessor HMAC'd once).
	auditID *audit.Identity
	// degraded counts what caches served this request from entries they
	// could not check with an unreachable store (keystore.Cache); it points
	// at note.
	degraded *keystore.DegradedNote
	note     keystore.DegradedNote
}

// newCall starts a request's state and returns ctx with its degraded note.
func (i *Interceptor) newCall(ctx context.Context, method string) (context.Context, *call) {
	c := &call{method: method, start: i.now()}
	c.degraded = &c.note
	ctx = keystore.WithDegradedNoteIn(ctx, c.degraded)
	// ValueFromIncomingContext copies one key's values, not the whole metadata.
	if v := metadata.ValueFromIncomingContext(ctx, "x-request-id"); len(v) > 0 && validRequestID(v[0]) {
		c.reqID = v[0]
	}
	if c.reqID == "" {
		var b [12]byte
		rand.Read(b[:])
		c.reqID = hex.EncodeToString(b[:])
	}
	if r, ok := Remote(ctx); ok {
		c.remote = r // WithRemote, once per connection
	} else if p, ok := peer.FromContext(ctx); ok && p.Addr != nil {
		c.remote = p.Addr.String()
	}
	return ctx, c
}

// MaxRequestIDLen bounds a caller's request id.
const MaxRequestIDLen = 64

// validRequestID is the one check of a caller's request id (gRPC
// "x-request-id", HTTP X-Request-Id): 1 to MaxRequestIDLen characters of
// [A-Za-z0-9._-], so that it can go as it is into audit lines, logs and SSH
// key IDs (whose default template separates fields with ':'). Anything else
// is replaced by a random id; RequestID returns the id that was kept.
func validRequestID(s string) bool {
	if s == "" || len(s) > MaxRequestIDLen {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '.' || c == '_' || c == '-') {
			return false
		}
	}
	return true
}

func (i *Interceptor) entry(c *call, typ, resource string, items int) *audit.Entry {
	e := &audit.Entry{Type: typ, RequestID: c.reqID, Remote: c.remote, Method: c.method, Resource: resource, Items: items}
	if c.id != nil {
		if c.auditID == nil {
			c.auditID = &audit.Identity{Name: c.id.Name, Kind: string(c.id.Kind), Policies: c.id.Policies}
			if c.id.Accessor != "" && i.o.Audit != nil {
				c.auditID.Accessor = i.accessorHMAC(c.id.Accessor)
			}
		}
		e.Identity = c.auditID // the audit log only reads it
	}
	if c.degraded != nil && c.degraded.Served() > 0 {
		// Served from cached tokens, policies or keys while the store was
		// out of reach (within the grace period): say so in the audit line.
		e.Extra = map[string]string{"degraded": "store unreachable; served from cache"}
	}
	return e
}

// logRequest writes the request line; its error fails the request.
func (i *Interceptor) logRequest(c *call, resource string, items int) error {
	if i.o.Audit == nil {
		return nil
	}
	if err := i.o.Audit.Write(i.entry(c, audit.TypeRequest, resource, items)); err != nil {
		return fmt.Errorf("auth: %w", err)
	}
	return nil
}

// logResponse writes the response line.
func (i *Interceptor) logResponse(c *call, resource string, items int, err error) error {
	return i.logResult(c, audit.TypeResponse, resource, items, err)
}

// logResult writes the line of a finished call: a response line, or the one
// line of a ReadOnly call (typ audit.TypeCall).
func (i *Interceptor) logResult(c *call, typ, resource string, items int, err error) error {
	if i.o.Audit == nil {
		return nil
	}
	e := i.entry(c, typ, resource, items)
	e.Code = errs.Code(err).String()
	e.LatencyMS = float64(i.now().Sub(c.start).Microseconds()) / 1000
	i.countDegraded(c)
	if werr := i.o.Audit.Write(e); werr != nil {
		return fmt.Errorf("auth: %w", werr)
	}
	return nil
}

// countDegraded counts a request that caches served degraded.
func (i *Interceptor) countDegraded(c *call) {
	if c.degraded != nil && c.degraded.Served() > 0 {
		i.degraded.Inc()
	}
}

// refuse audits a refused request and returns its error as a status.
func (i *Interceptor) refuse(c *call, resource string, items int, err error) error {
	i.auditRefusal(c, resource, items, err)
	return i.status(c, err)
}

// auditRefusal writes the response line of a refused request (its failure
// changes nothing: the refusal stands). Unauthenticated and rate-limited
// refusals, which anyone can cause in bulk, are counted and sampled (see
// refusals); the others are written one by one.
func (i *Interceptor) auditRefusal(c *call, resource string, items int, err error) {
	if i.o.Audit == nil {
		return
	}
	extra, ok := i.ref.sample(errs.Code(err), i.now())
	if !ok {
		return
	}
	e := i.entry(c, audit.TypeResponse, resource, items)
	e.Code = errs.Code(err).String()
	e.LatencyMS = float64(i.now().Sub(c.start).Microseconds()) / 1000
	for k, v := range e.Extra {
		if extra == nil {
			extra = map[string]string{}
		}
		extra[k] = v
	}
	e.Extra = extra
	_ = i.o.Audit.Write(e)
}

// status returns err as a gRPC status for the client. An Internal or
// Unavailable error is logged here, once, with its cause and the request id;
// the client sees only "internal error" or the sentinel's message. (A bare status error is not logged: it is the
// recovery interceptor's, which logged the panic, or was logged below.)
func (i *Interceptor) status(c *call, err error) error {
	if err == nil {
		return nil
	}
	// Internal and Unavailable answers carry no cause (no audit path, no
	// store or HSM detail): it goes to the log here, with the request id.
	if code := errs.Code(err); code == codes.Internal || code == codes.Unavailable {
		if _, bare := err.(interface{ GRPCStatus() *status.Status }); !bare {
			attrs := []any{"grpc.method", c.method, "request_id", c.reqID, "error", errs.Truncate(err.Error(), 4096)}
			if c.id != nil {
				attrs = append(attrs, "identity", c.id.Name, "kind", string(c.id.Kind))
			}
			if code == codes.Internal {
				i.log.Error("internal error", attrs...)
			} else {
				i.log.Warn("unavailable", attrs...)
			}
		}
	}
	return errs.ToGRPC(err)
}

// admit runs the checks for one message: authorisation, then rate limit.
func (i *Interceptor) admit(ctx context.Context, id *Identity, rule Rule, resource string) error {
	if err := i.authorize(ctx, id, rule, resource); err != nil {
		return err
	}
	return i.o.Limiter.Allow(id, resource)
}

// authorize checks the identity's policies (root and authenticated-only rules pass).
func (i *Interceptor) authorize(ctx context.Context, id *Identity, rule Rule, resource string) error {
	if !rule.AuthenticatedOnly && !id.Root() {
		ok, err := i.o.Policies.Allowed(ctx, id.Policies, rule.Capability, resource)
		if err != nil {
			return fmt.Errorf("auth: read policies: %w", err)
		}
		if !ok {
			return fmt.Errorf("%w: %s on %.160q", ErrPermissionDenied, rule.Capability, resource)
		}
	}
	return nil
}

func resourceOf(rule Rule, msg proto.Message) (string, error) {
	res, err := rule.resource(msg)
	if err != nil {
		if errors.Is(err, errs.InvalidArgument) || errors.Is(err, errs.NotFound) {
			return "", err
		}
		return "", fmt.Errorf("%w: %v", ErrInvalid, err)
	}
	return res, nil
}

// Unary returns the unary server interceptor.
func (i *Interceptor) Unary() grpc.UnaryServerInterceptor {
	return func(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
		rule, ok := i.o.Table[info.FullMethod]
		if ok && rule.Public {
			return handler(ctx, req)
		}
		ctx, c := i.newCall(ctx, info.FullMethod)
		_ = grpc.SetHeader(ctx, metadata.Pairs("x-request-id", c.reqID))
		if ci := callinfo.From(ctx); ci != nil { // the call's log lines
			ci.RequestID = c.reqID
		} else {
			logging.AddFields(ctx, logging.Fields{"request_id", c.reqID})
		}
		msg, _ := req.(proto.Message)
		items := audit.ItemCount(msg)
		if !ok {
			return nil, i.refuse(c, "", items, ErrNoRule)
		}
		id, err := i.o.Authenticator.FromGRPC(ctx)
		if rule.Anonymous && errors.Is(err, errNoCredentials) {
			// No credentials at all: the public part, rate limited per
			// client address; bad credentials fall through to the refusal.
			if err := i.o.Limiter.AllowAnonymous(c.remote); err != nil {
				return nil, i.refuse(c, rule.Path, items, err)
			}
			resp, herr := handler(context.WithValue(withCall(ctx, nil, c.reqID), anonymousKey{}, true), req)
			return resp, i.status(c, herr)
		}
		if err != nil {
			return nil, i.refuse(c, "", items, err)
		}
		c.id = id
		resource, err := resourceOf(rule, msg)
		if err != nil {
			return nil, i.refuse(c, "", items, err)
		}
		if err := i.admit(ctx, id, rule, resource); err != nil {
			return nil, i.refuse(c, resource, items, err)
		}
		typ := audit.TypeResponse
		if rule.ReadOnly {
			typ = audit.TypeCall // one line, after the handler
		} else if err := i.logRequest(c, resource, items); err != nil {
			return nil, i.status(c, err) // fail closed: the handler never runs
		}
		resp, herr := handler(withCall(ctx, id, c.reqID), req)
		if err := i.logResult(c, typ, resource, items, herr); err != nil {
			_ = i.status(c, herr)        // its cause is logged all the same
			return nil, i.status(c, err) // no unaudited result leaves
		}
		return resp, i.status(c, herr)
	}
}

// Stream returns the stream server interceptor. The identity is checked when
// the stream opens; every received message is authorised, rate limited and
// audited before the handler sees it; one response line closes the stream.
func (i *Interceptor) Stream() grpc.StreamServerInterceptor {
	return func(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
		rule, ok := i.o.Table[info.FullMethod]
		if ok && rule.Public {
			return handler(srv, ss)
		}
		ctx, c := i.newCall(ss.Context(), info.FullMethod)
		_ = ss.SetHeader(metadata.Pairs("x-request-id", c.reqID))
		logging.AddFields(ctx, logging.Fields{"request_id", c.reqID})
		if !ok {
			return i.refuse(c, "", 0, ErrNoRule)
		}
		id, err := i.o.Authenticator.FromGRPC(ctx)
		if err != nil {
			return i.refuse(c, "", 0, err)
		}
		c.id = id
		w := &stream{ServerStream: ss, ctx: withCall(ctx, id, c.reqID), i: i, c: c, rule: rule}
		w.resource.Store(&rule.Path)
		if rule.Resource == nil {
			// A fixed resource is authorised before any message; each
			// message is rate limited.
			if err := i.authorize(ctx, id, rule, rule.Path); err != nil {
				return i.refuse(c, rule.Path, 0, err)
			}
		}
		herr := handler(srv, w)
		if err := i.logResponse(c, *w.resource.Load(), int(w.items.Load()), herr); err != nil && herr == nil {
			return i.status(c, err)
		}
		return i.status(c, herr)
	}
}

type stream struct {
	grpc.ServerStream
	ctx      context.Context
	i        *Interceptor
	c        *call
	rule     Rule
	items    atomic.Int64
	resource atomic.Pointer[string]
}

func (s *stream) Context() context.Context { return s.ctx }

func (s *stream) RecvMsg(m any) error {
	if err := s.ServerStream.RecvMsg(m); err != nil {
		return err
	}
	msg, _ := m.(proto.Message)
	n := audit.ItemCount(msg)
	resource, err := resourceOf(s.rule, msg)
	if err != nil {
		return s.i.status(s.c, err)
	}
	if s.rule.Resource != nil {
		if err := s.i.admit(s.ctx, s.c.id, s.rule, resource); err != nil {
			return s.i.refuse(s.c, resource, n, err)
		}
	} else if err := s.i.o.Limiter.Allow(s.c.id, resource); err != nil {
		return s.i.refuse(s.c, resource, n, err)
	}
	if err := s.i.logRequest(s.c, resource, n); err != nil {
		return s.i.status(s.c, err)
	}
	s.items.Add(int64(n))
	s.resource.Store(&resource)
	return nil
}

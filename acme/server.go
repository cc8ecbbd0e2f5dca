package acme

import (
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"mime"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/hsmgate/hsmgate/internal/errs"
	"github.com/hsmgate/hsmgate/keystore"
	pb "github.com/hsmgate/hsmgate/proto/hsmgate/v1"
)

// CA is the slice of the PKI engine (*pki.Service) that ACME issues and
// revokes through: the same role checks, lint gate and certificate store as
// PKIService.Sign. Errors are pki's domain errors.
type CA interface {
	// GetRole returns a role; pki.ErrRoleNotFound if absent.
	GetRole(ctx context.Context, req *pb.GetRoleRequest) (*pb.GetRoleResponse, error)
	// CheckNames says whether the role allows these DNS names and IP
	// addresses; pki.ErrNotAllowed (wrapped) naming the first refused.
	CheckNames(ctx context.Context, role string, dns, ips []string) error
	// Sign issues a certificate for a CSR with the given names.
	Sign(ctx context.Context, req *pb.SignRequest) (*pb.SignResponse, error)
	// Revoke revokes a certificate by serial.
	Revoke(ctx context.Context, req *pb.RevokeRequest) (*pb.RevokeResponse, error)
	// GetCertificate returns a certificate's record; pki.ErrCertNotFound if absent.
	GetCertificate(ctx context.Context, req *pb.GetCertificateRequest) (*pb.GetCertificateResponse, error)
	// AlternateChains returns the other chains of an issuer (one per
	// certificate that cross-signs it), each from the cross certificate up.
	AlternateChains(ctx context.Context, issuer string) ([][][]byte, error)
}

// Wrapper protects EAB HMAC keys at rest (the deployment's HSM KEK: *hsm.KEK).
type Wrapper interface {
	Wrap(ctx context.Context, plaintext []byte) ([]byte, error)
	Unwrap(ctx context.Context, wrapped []byte) ([]byte, error)
}

// Config is what New needs.
type Config struct {
	// Store keeps every piece of ACME state (so replicas on etcd agree). Required.
	Store keystore.Store
	// CA issues and revokes. Required.
	CA CA
	// Wrapper wraps EAB keys. Required.
	Wrapper Wrapper
	// BaseURL is the public https URL of the listener serving Handler
	// (e.g. "https://ca.example.net:8443"); every ACME URL is under
	// BaseURL/acme/<directory>/, and a JWS "url" must match it exactly. Required.
	BaseURL string
	// NonceLifetime (default 10 minutes).
	NonceLifetime time.Duration
	// OrderLifetime is how long a pending order or authorization lives (default 24h).
	OrderLifetime time.Duration
	// MaxBody bounds a request body (default 64 KiB).
	MaxBody int64
	// Workers validate challenges (default 4); QueueSize bounds the
	// challenges waiting for one (default 256).
	Workers, QueueSize int
	// ValidationAttempts: tries of a validation that fails to connect
	// (connection, dns, tls problems), a second apart and more (default 3).
	ValidationAttempts int
	// ValidationTimeout bounds one validation attempt (default 10 s).
	ValidationTimeout time.Duration
	// Validation redirects challenge validation; zero value: the real
	// thing (the identifier's own address, ports 80 and 443).
	Validation ValidationTarget
	// DNSResolver is the host:port of the DNS resolver dns-01 asks
	// (default: the system's resolver).
	DNSResolver string
	// Limits bound rates, open orders and authorization reuse.
	Limits Limits
	// Audit is the audit log; nil: no auditing (tests of other things only).
	Audit Auditor
	// Now is the clock (default time.Now). Rand the randomness source (default crypto/rand).
	Now  func() time.Time
	Rand io.Reader
	// Logger (default slog.Default()).
	Logger *slog.Logger
}

// ValidationTarget is a TEST-ONLY redirection of challenge validation: with
// Host set, every connection made to validate an identifier goes to Host
// (e.g. 127.0.0.1) on HTTPPort for port 80 and TLSPort for port 443,
// whatever the identifier resolves to.
type ValidationTarget struct {
	Host              string
	HTTPPort, TLSPort int
}

func (c Config) withDefaults() (Config, error) {
	if c.Store == nil || c.CA == nil || c.Wrapper == nil {
		return c, errors.New("acme: config needs Store, CA and Wrapper")
	}
	if !strings.HasPrefix(c.BaseURL, "https://") && !strings.HasPrefix(c.BaseURL, "http://") {
		return c, fmt.Errorf("acme: BaseURL %q is not an absolute URL", c.BaseURL)
	}
	c.BaseURL = strings.TrimRight(c.BaseURL, "/")
	if c.NonceLifetime <= 0 {
		c.NonceLifetime = 10 * time.Minute
	}
	if c.OrderLifetime <= 0 {
		c.OrderLifetime = 24 * time.Hour
	}
	if c.MaxBody <= 0 {
		c.MaxBody = 64 << 10
	}
	if c.Workers <= 0 {
		c.Workers = 4
	}
	if c.QueueSize <= 0 {
		c.QueueSize = 256
	}
	if c.ValidationAttempts <= 0 {
		c.ValidationAttempts = 3
	}
	if c.ValidationTimeout <= 0 {
		c.ValidationTimeout = 10 * time.Second
	}
	c.Limits = c.Limits.withDefaults()
	if c.Now == nil {
		c.Now = time.Now
	}
	if c.Rand == nil {
		c.Rand = rand.Reader
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	return c, nil
}

// Server is the ACME server of every configured directory.
type Server struct {
	cfg    Config
	jobs   chan job
	limits *limiters
}

// New returns a Server; its validation workers run from Run.
func New(cfg Config) (*Server, error) {
	c, err := cfg.withDefaults()
	if err != nil {
		return nil, err
	}
	return &Server{cfg: c, jobs: make(chan job, c.QueueSize), limits: newLimiters(c.Limits)}, nil
}

// SweepInterval is how often Run calls Sweep; with replicas, the server
// wiring runs Sweep at this interval on the elected replica only
// (internal/leader) and every replica runs RunWorkers.
const SweepInterval = time.Minute

// Run runs the validation workers and, every SweepInterval, Sweep, until
// ctx is done: one process on its own (tests, a single node without a
// leader runner).
func (s *Server) Run(ctx context.Context) {
	var wg sync.WaitGroup
	wg.Go(func() { s.RunWorkers(ctx) })
	defer wg.Wait()
	t := time.NewTicker(SweepInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			if err := s.Sweep(ctx); err != nil && ctx.Err() == nil {
				s.cfg.Logger.Warn("acme: sweep expired state", "err", err)
			}
		}
	}
}

// RunWorkers runs the validation workers until ctx is done. Every replica
// runs them (challenges are validated where they were asked for, and
// Sweep requeues stale ones on the replica that runs it).
func (s *Server) RunWorkers(ctx context.Context) {
	var wg sync.WaitGroup
	for range s.cfg.Workers {
		wg.Go(func() { s.worker(ctx) })
	}
	wg.Wait()
}

// Handler serves every directory under /acme/.
func (s *Server) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("/acme/{dir}/{rest...}", s.serve)
	return mux
}

// request is one ACME request once authenticated.
type request struct {
	w      http.ResponseWriter
	r      *http.Request
	dir    *Directory
	jws    *JWS
	acct   *account // with kid
	accRev int64
	audit  *auditCall
}

// handler answers one request: it sets headers on rq.w and returns a
// status and a JSON body, or an error (a *Problem or an internal fault).
type handler func(ctx context.Context, rq *request) (int, any, error)

func (s *Server) serve(w http.ResponseWriter, r *http.Request) {
	ctx := r.Context()
	name, rest := r.PathValue("dir"), r.PathValue("rest")
	ac := s.newAuditCall(r, truncate(name))
	w.Header().Set("X-Request-Id", ac.reqID)
	dir, found, err := s.GetDirectory(ctx, name)
	if err == nil && !found {
		err = errNotFound("no ACME directory %q", truncate(name))
	}
	if err != nil {
		s.auditFailed(ac, r, s.fail(w, r, err))
		return
	}
	w.Header().Add("Link", `<`+s.url(name, "directory")+`>;rel="index"`)
	switch {
	case rest == "directory" && r.Method == http.MethodGet:
		s.writeJSON(w, http.StatusOK, s.directoryObject(dir))
		s.auditResponse(ac, r, http.StatusOK, "")
		return
	case rest == "new-nonce" && (r.Method == http.MethodGet || r.Method == http.MethodHead):
		if err := s.addNonce(ctx, w); err != nil {
			s.auditFailed(ac, r, s.fail(w, r, err))
			return
		}
		w.Header().Set("Cache-Control", "no-store")
		status := http.StatusOK
		if r.Method == http.MethodGet {
			status = http.StatusNoContent
		}
		w.WriteHeader(status)
		s.auditResponse(ac, r, status, "")
		return
	case strings.HasPrefix(rest, "renewal-info/") && r.Method == http.MethodGet:
		status, body, h, err := s.renewalInfo(ctx, name, strings.TrimPrefix(rest, "renewal-info/"))
		if err != nil {
			s.auditFailed(ac, r, s.fail(w, r, err))
			return
		}
		maps.Copy(w.Header(), h)
		s.writeJSON(w, status, body)
		s.auditResponse(ac, r, status, "")
		return
	case r.Method != http.MethodPost:
		w.Header().Set("Allow", "POST")
		s.auditFailed(ac, r, s.fail(w, r, problem("malformed", http.StatusMethodNotAllowed, "method %s not allowed here", r.Method)))
		return
	}
	h, jwkAllowed, ok := s.route(rest)
	if !ok {
		s.auditFailed(ac, r, s.nonceThenFail(w, r, errNotFound("no such resource")))
		return
	}
	rq, err := s.authenticate(ctx, w, r, dir, jwkAllowed)
	if err == nil {
		rq.audit = ac
		if rq.acct != nil {
			ac.account = rq.acct.ID
		}
		err = s.auditRequest(ac, r)
	}
	if err != nil {
		s.auditFailed(ac, r, s.nonceThenFail(w, r, err))
		return
	}
	status, body, err := h(ctx, rq)
	if err != nil {
		s.auditFailed(ac, r, s.nonceThenFail(w, r, err))
		return
	}
	if err := s.addNonce(ctx, w); err != nil {
		s.cfg.Logger.Warn("acme: nonce for response", "err", err)
	}
	if b, ok := body.([]byte); ok { // certificate chain
		w.WriteHeader(status)
		w.Write(b)
	} else {
		s.writeJSON(w, status, body)
	}
	s.auditResponse(ac, r, status, "")
}

// route maps a POST path to its handler and whether it takes a jwk.
func (s *Server) route(rest string) (handler, bool, bool) {
	switch rest {
	case "new-account":
		return s.newAccount, true, true
	case "revoke-cert":
		return s.revokeCert, true, true
	case "new-order":
		return s.newOrder, false, true
	case "key-change":
		return s.keyChange, false, true
	}
	kind, id, _ := strings.Cut(rest, "/")
	if base, _, _ := strings.Cut(id, "/"); kind != "cert" && !validID(base) {
		return nil, false, false
	}
	switch kind {
	case "acct":
		if a, ok := strings.CutSuffix(id, "/orders"); ok {
			return func(ctx context.Context, rq *request) (int, any, error) { return s.accountOrders(ctx, rq, a) }, false, true
		}
		return func(ctx context.Context, rq *request) (int, any, error) { return s.accountUpdate(ctx, rq, id) }, false, true
	case "order":
		if o, ok := strings.CutSuffix(id, "/finalize"); ok {
			return func(ctx context.Context, rq *request) (int, any, error) { return s.finalize(ctx, rq, o) }, false, true
		}
		return func(ctx context.Context, rq *request) (int, any, error) { return s.getOrder(ctx, rq, id) }, false, true
	case "authz":
		return func(ctx context.Context, rq *request) (int, any, error) { return s.getAuthz(ctx, rq, id) }, false, true
	case "chall":
		a, typ, ok := strings.Cut(id, "/")
		if !ok {
			return nil, false, false
		}
		return func(ctx context.Context, rq *request) (int, any, error) { return s.postChallenge(ctx, rq, a, typ) }, false, true
	case "cert":
		return func(ctx context.Context, rq *request) (int, any, error) { return s.getCert(ctx, rq, id) }, false, true
	}
	return nil, false, false
}

// authenticate reads and checks the JWS (RFC 8555 6.2-6.5): content type,
// size, form, url, key (jwk only where allowed, else an existing valid
// account's kid), signature, then the nonce, consumed last so that a
// request refused earlier does not use it up.
func (s *Server) authenticate(ctx context.Context, w http.ResponseWriter, r *http.Request, dir *Directory, jwkAllowed bool) (*request, error) {
	if mt, _, err := mime.ParseMediaType(r.Header.Get("Content-Type")); err != nil || mt != "application/jose+json" {
		return nil, problem("malformed", http.StatusUnsupportedMediaType, "Content-Type must be application/jose+json")
	}
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, s.cfg.MaxBody))
	if err != nil {
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			return nil, problem("malformed", http.StatusRequestEntityTooLarge, "request body over %d bytes", s.cfg.MaxBody)
		}
		return nil, errMalformed("reading the request body failed")
	}
	j, err := ParseJWS(body)
	if err != nil {
		return nil, err
	}
	if want := s.cfg.BaseURL + r.URL.Path; j.Header.URL != want {
		return nil, errUnauthorized("JWS url %q is not the request URL", truncate(j.Header.URL))
	}
	rq := &request{w: w, r: r, dir: dir, jws: j}
	var key any
	if j.JWK != nil {
		if !jwkAllowed {
			return nil, errMalformed("this resource takes a kid, not a jwk")
		}
		key = j.JWK.Key
	} else {
		if jwkAllowed && strings.HasSuffix(r.URL.Path, "/new-account") {
			return nil, errMalformed("newAccount takes a jwk, not a kid")
		}
		id, ok := strings.CutPrefix(j.Header.KID, s.url(dir.Name, "acct")+"/")
		if !ok || !validID(id) {
			return nil, errAccountDoesNotExist("kid %q is not an account of this directory", truncate(j.Header.KID))
		}
		a := new(account)
		rev, found, err := s.get(ctx, prefixAccounts+dir.Name+"/"+id, a)
		if err != nil {
			return nil, err
		}
		if !found {
			return nil, errAccountDoesNotExist("no account %q", id)
		}
		if a.Status != "valid" {
			return nil, errUnauthorized("account is %s", a.Status)
		}
		k, err := parseJWK(a.Key)
		if err != nil {
			return nil, fmt.Errorf("acme: stored key of account %s: %v", id, err)
		}
		key, rq.acct, rq.accRev = k.Key, a, rev
	}
	if err := j.Verify(key); err != nil {
		return nil, err
	}
	if err := s.useNonce(ctx, j.Header.Nonce); err != nil {
		return nil, err
	}
	return rq, nil
}

func (s *Server) url(dir string, parts ...string) string {
	return s.cfg.BaseURL + "/acme/" + dir + "/" + strings.Join(parts, "/")
}

func (s *Server) directoryObject(d *Directory) map[string]any {
	meta := map[string]any{"externalAccountRequired": d.EABRequired}
	if d.TermsOfService != "" {
		meta["termsOfService"] = d.TermsOfService
	}
	return map[string]any{
		"newNonce":    s.url(d.Name, "new-nonce"),
		"newAccount":  s.url(d.Name, "new-account"),
		"newOrder":    s.url(d.Name, "new-order"),
		"revokeCert":  s.url(d.Name, "revoke-cert"),
		"keyChange":   s.url(d.Name, "key-change"),
		"renewalInfo": s.url(d.Name, "renewal-info"),
		"meta":        meta,
	}
}

func (s *Server) writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	if v != nil {
		json.NewEncoder(w).Encode(v)
	}
}

// nonceThenFail answers a POST with a problem and a fresh nonce (RFC 8555
// 6.5: every response to a POST carries one; badNonce needs it most).
func (s *Server) nonceThenFail(w http.ResponseWriter, r *http.Request, err error) *Problem {
	if nerr := s.addNonce(r.Context(), w); nerr != nil {
		s.cfg.Logger.Warn("acme: nonce for error response", "err", nerr)
	}
	return s.fail(w, r, err)
}

// fail writes err as a problem. An error that is not a *Problem gets its
// HTTP status from the one error map (errs.HTTPStatus): a dependency
// unavailable is serverInternal 503 with Retry-After, a domain error of
// the caller's (a kind below 500) malformed or rateLimited with its
// client-safe message, and a fault is logged with its cause and answered
// serverInternal without it. It returns the problem written.
func (s *Server) fail(w http.ResponseWriter, r *http.Request, err error) *Problem {
	var p *Problem
	if !errors.As(err, &p) {
		code, msg := errs.HTTPStatus(err)
		switch {
		case code == http.StatusServiceUnavailable:
			p = problem("serverInternal", code, "%s", msg)
			p.retryAfter = 5
		case code == http.StatusTooManyRequests:
			p = problem("rateLimited", code, "%s", msg)
		case code == http.StatusUnauthorized || code == http.StatusForbidden:
			p = problem("unauthorized", http.StatusForbidden, "%s", msg)
		case code >= 400 && code < 500:
			p = problem("malformed", code, "%s", msg)
		default:
			s.cfg.Logger.Error("acme: internal error", "request_id", w.Header().Get("X-Request-Id"), "method", r.Method, "path", r.URL.Path, "err", err)
			p = errServerInternal()
		}
	}
	p.write(w)
	return p
}

// newID returns a random 128-bit identifier, base64url.
func (s *Server) newID() (string, error) {
	b := make([]byte, 16)
	if _, err := io.ReadFull(s.cfg.Rand, b); err != nil {
		return "", fmt.Errorf("acme: random: %w", err)
	}
	return b64.EncodeToString(b), nil
}

// validID accepts the identifiers newID makes (22 base64url characters).
func validID(id string) bool {
	if len(id) != 22 {
		return false
	}
	for _, c := range []byte(id) {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_') {
			return false
		}
	}
	return true
}

// decodePayload decodes a JSON payload strictly into v; empty is refused.
func decodePayload(p []byte, v any) error {
	if len(p) == 0 {
		return errMalformed("empty payload")
	}
	if err := json.Unmarshal(p, v); err != nil {
		return errMalformed("payload: %s", truncate(err.Error()))
	}
	return nil
}

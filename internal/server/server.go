// Package server runs hsmgate's listeners: gRPC over TLS (optionally asking
// for client certificates, for the auth layer) and an HTTPS listener beside it
// for the protocols that are HTTP by nature (/healthz, /readyz, and whatever
// other packages add with HandleHTTP), and optionally a plain-HTTP listener
// for /metrics alone.
// How it fits with the rest (the layers): docs/architecture.md.
//
// Every RPC passes through these interceptors, outermost first:
//
//	metrics (Prometheus, grpc_server_*)
//	logging (slog, one line per finished call, at debug when it succeeded; health checks not logged)
//	recovery (a panic answers Internal "internal error"; the panic is logged, never sent)
//	errors (domain errors become status codes through errs.GRPCStatus, the one mapping)
//	... interceptors added with Config.UnaryInterceptors / Use (auth, audit), in order
//	recovery (again, so that a handler's panic is seen by auth/audit as an Internal error)
//	handler
//
// so handlers and the added interceptors return plain domain errors.
//
// Limits are explicit: message sizes, concurrent streams per connection (HTTP/2
// rapid reset) and over the server, header list size, keepalive enforcement,
// and against unauthenticated exhaustion (limits.go): open connections in
// total and per client address, the handshake timeout, a pre-auth deadline
// (a gRPC connection that has not started an authenticated RPC within
// UnauthenticatedIdleTimeout is closed), and a server-wide budget of request
// bytes in flight, placed right after error mapping:
//
//	metrics, logging, recovery, errors, bytes in flight, [auth, audit, ...], pre-auth mark, recovery, handler
//
// /metrics is served only on its own plain-HTTP listener (MetricsAddr, none
// by default), never on the public HTTPS listener: it names internals.
// Serve shuts down gracefully when its context ends (SIGTERM/SIGINT in
// cmd/hsmgate): health turns NOT_SERVING, an optional drain period passes,
// in-flight RPCs get Config.ShutdownTimeout to finish, then the rest are cut.
package server

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"runtime"
	"runtime/debug"
	"sync"
	"sync/atomic"
	"time"

	grpcprom "github.com/grpc-ecosystem/go-grpc-middleware/providers/prometheus"
	"github.com/grpc-ecosystem/go-grpc-middleware/v2/interceptors"
	"github.com/grpc-ecosystem/go-grpc-middleware/v2/interceptors/logging"
	"github.com/grpc-ecosystem/go-grpc-middleware/v2/interceptors/recovery"
	"github.com/grpc-ecosystem/go-grpc-middleware/v2/interceptors/selector"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/keepalive"
	"google.golang.org/grpc/reflection"
	"google.golang.org/grpc/stats"
	"google.golang.org/grpc/status"

	"github.com/hsmgate/hsmgate/internal/config"
	"github.com/hsmgate/hsmgate/internal/errs"
)

// Defaults for Config fields left zero.
const (
	DefaultMaxRecvBytes         = config.DefaultMaxRecvBytes
	DefaultMaxSendBytes         = config.DefaultMaxSendBytes
	DefaultMaxConcurrentStreams = config.DefaultMaxConcurrentStreams
	DefaultKeepaliveMinTime     = config.DefaultKeepaliveMinTime
	DefaultMaxConnectionIdle    = config.DefaultMaxConnectionIdle
	DefaultShutdownTimeout      = config.DefaultShutdownTimeout
	DefaultHandshakeTimeout     = config.DefaultHandshakeTimeout
	DefaultMaxConnections       = config.DefaultMaxConnections
	DefaultMaxConnectionsPerIP  = config.DefaultMaxConnectionsPerIP
	DefaultPreauthIdleTimeout   = config.DefaultUnauthenticatedIdleTimeout
	DefaultMaxStreams           = config.DefaultMaxStreams
	DefaultMaxInflightBytes     = config.DefaultMaxInflightBytes
	DefaultInflightWait         = config.DefaultInflightWait
	DefaultRequestReadTimeout   = config.DefaultRequestReadTimeout
	// streamWindow is the HTTP/2 flow control window of a new stream: what
	// a client can send before the server starts reading the request.
	// Setting it turns off grpc's BDP window growth.
	streamWindow              = 64 << 10
	connWindow                = 16 << 20
	DefaultMaxHeaderListBytes = 256 << 10
	// ReadyCheckTimeout bounds each /readyz check.
	ReadyCheckTimeout = 3 * time.Second
)

// StreamWorkers is how many goroutines serve streams (grpc.NumStreamWorkers):
// eight per core the process may use. Without them grpc starts a goroutine
// for every RPC, whose 8 KiB stack then grows (a copy of the stack, about
// 5 µs a call here with TLS, auth and audit); a worker keeps its grown
// stack. When all are busy, grpc starts a goroutine as before. The bench's
// echo server uses the same number, so the transport limit keeps it too.
func StreamWorkers() uint32 { return uint32(8 * runtime.GOMAXPROCS(0)) }

// ErrStarted is returned by calls that are only allowed before Serve.
var ErrStarted = errors.New("server: already serving")

// Config configures a Server. The zero value of each limit means its default.
type Config struct {
	// GRPCAddr and HTTPAddr are host:port to listen on (port 0: any free
	// port; see Addrs). An empty HTTPAddr means no HTTP listener.
	GRPCAddr string
	HTTPAddr string
	// MetricsAddr is host:port of a plain-HTTP listener serving only
	// /metrics; empty means /metrics is not served.
	MetricsAddr string
	// PKIAddr is host:port of a plain-HTTP listener serving only what
	// HandlePKI adds (the CA's public objects); empty means none.
	PKIAddr string

	// TLS: certificate and key files (PEM), reloaded when they change on
	// disk; ClientCAFile, if set, makes the server request client
	// certificates and verify any that is given (tls.VerifyClientCertIfGiven),
	// so that the auth layer can read the peer's verified chain.
	CertFile     string
	KeyFile      string
	ClientCAFile string
	// MinTLSVersion is tls.VersionTLS12 (default) or tls.VersionTLS13.
	MinTLSVersion uint16

	MaxRecvBytes         int
	MaxSendBytes         int
	MaxConcurrentStreams uint32
	KeepaliveMinTime     time.Duration
	MaxConnectionIdle    time.Duration

	// MaxConnections and MaxConnectionsPerIP bound open connections over
	// all listeners (per IPv4 address or IPv6 /64).
	MaxConnections      int
	MaxConnectionsPerIP int
	// HandshakeTimeout bounds the TLS handshake (and HTTP/2 preface; HTTPS
	// request headers).
	HandshakeTimeout time.Duration
	// UnauthenticatedIdleTimeout closes a gRPC connection that has not
	// started an authenticated RPC this long after being accepted; it is
	// also the HTTPS keep-alive idle timeout.
	UnauthenticatedIdleTimeout time.Duration
	// MaxStreams bounds concurrent gRPC streams over all connections.
	MaxStreams int
	// MaxInflightBytes bounds request bytes being handled at once; a request
	// that does not fit waits up to InflightWait (< 0: not at all), then is
	// refused with ResourceExhausted (HTTP 429).
	MaxInflightBytes int64
	InflightWait     time.Duration
	// MaxHTTPBodyBytes bounds an HTTPS request body (default MaxRecvBytes).
	MaxHTTPBodyBytes int64
	// RequestReadTimeout: a unary RPC whose request is not read in full this
	// long after it got its share of the budget is cancelled.
	RequestReadTimeout time.Duration
	// Authenticated reports whether the request in ctx, having passed every
	// added interceptor, carries an authenticated identity (e.g.
	// auth.FromContext). Nil: every request that passes them does, except
	// health and reflection (public methods).
	Authenticated func(ctx context.Context) bool
	// RequestFields names the caller of the request in ctx (after every
	// added interceptor; "" when there is none): the identity and
	// identity_kind of every log line of the call (logctx.go).
	RequestFields func(ctx context.Context) (identity, kind string)

	// ShutdownDrain: how long health reports NOT_SERVING before the
	// listeners close. ShutdownTimeout: the wait for in-flight RPCs.
	ShutdownDrain   time.Duration
	ShutdownTimeout time.Duration
	// HealthInterval: how often the ready checks run to set gRPC health
	// (default DefaultHealthInterval).
	HealthInterval time.Duration

	// Logger for the server's own log and request logs (nil: slog.Default()).
	Logger *slog.Logger
	// Metrics is the registry served on /metrics (nil: a new one with the Go
	// and process collectors). Other packages register their metrics on
	// Server.Metrics().
	Metrics *prometheus.Registry

	// UnaryInterceptors and StreamInterceptors run after metrics, logging,
	// recovery and error mapping, in order (auth, then audit). More can be
	// added with Use before Serve.
	UnaryInterceptors  []grpc.UnaryServerInterceptor
	StreamInterceptors []grpc.StreamServerInterceptor
	// StatsHandlers are added to the gRPC server (e.g. Tracing.Handler).
	StatsHandlers []stats.Handler
}

// FromConfig returns the server part of a loaded configuration.
func FromConfig(c *config.Config, logger *slog.Logger) Config {
	return Config{
		GRPCAddr:             c.Listen.GRPC,
		HTTPAddr:             c.Listen.HTTP,
		MetricsAddr:          c.Listen.Metrics,
		PKIAddr:              c.Listen.PKI,
		CertFile:             c.TLS.CertFile,
		KeyFile:              c.TLS.KeyFile,
		ClientCAFile:         c.TLS.ClientCAFile,
		MinTLSVersion:        c.TLS.MinVersion,
		MaxRecvBytes:         c.Limits.MaxRecvBytes,
		MaxSendBytes:         c.Limits.MaxSendBytes,
		MaxConcurrentStreams: c.Limits.MaxConcurrentStreams,
		KeepaliveMinTime:     c.Limits.KeepaliveMinTime,
		MaxConnectionIdle:    c.Limits.MaxConnectionIdle,
		ShutdownDrain:        c.Shutdown.Drain,
		ShutdownTimeout:      c.Shutdown.Timeout,
		Logger:               logger,

		MaxConnections:             c.Limits.MaxConnections,
		MaxConnectionsPerIP:        c.Limits.MaxConnectionsPerIP,
		HandshakeTimeout:           c.Limits.HandshakeTimeout,
		UnauthenticatedIdleTimeout: c.Limits.UnauthenticatedIdleTimeout,
		MaxStreams:                 c.Limits.MaxStreams,
		MaxInflightBytes:           int64(c.Limits.MaxInflightBytes),
		InflightWait:               c.Limits.InflightWait,
		MaxHTTPBodyBytes:           int64(c.Limits.MaxHTTPBodyBytes),
		RequestReadTimeout:         c.Limits.RequestReadTimeout,
	}
}

func (c Config) withDefaults() Config {
	if c.MinTLSVersion == 0 {
		c.MinTLSVersion = tls.VersionTLS12
	}
	if c.MaxRecvBytes <= 0 {
		c.MaxRecvBytes = DefaultMaxRecvBytes
	}
	if c.MaxSendBytes <= 0 {
		c.MaxSendBytes = DefaultMaxSendBytes
	}
	if c.MaxConcurrentStreams == 0 {
		c.MaxConcurrentStreams = DefaultMaxConcurrentStreams
	}
	if c.KeepaliveMinTime <= 0 {
		c.KeepaliveMinTime = DefaultKeepaliveMinTime
	}
	if c.MaxConnectionIdle <= 0 {
		c.MaxConnectionIdle = DefaultMaxConnectionIdle
	}
	if c.ShutdownTimeout <= 0 {
		c.ShutdownTimeout = DefaultShutdownTimeout
	}
	if c.MaxConnections <= 0 {
		c.MaxConnections = DefaultMaxConnections
	}
	if c.MaxConnectionsPerIP <= 0 {
		c.MaxConnectionsPerIP = min(DefaultMaxConnectionsPerIP, c.MaxConnections)
	}
	if c.HandshakeTimeout <= 0 {
		c.HandshakeTimeout = DefaultHandshakeTimeout
	}
	if c.UnauthenticatedIdleTimeout <= 0 {
		c.UnauthenticatedIdleTimeout = min(DefaultPreauthIdleTimeout, c.MaxConnectionIdle)
	}
	if c.MaxStreams <= 0 {
		c.MaxStreams = DefaultMaxStreams
	}
	if c.MaxHTTPBodyBytes <= 0 {
		c.MaxHTTPBodyBytes = int64(c.MaxRecvBytes)
	}
	if c.MaxInflightBytes <= 0 {
		c.MaxInflightBytes = max(DefaultMaxInflightBytes, int64(c.MaxRecvBytes), c.MaxHTTPBodyBytes)
	}
	if c.InflightWait == 0 {
		c.InflightWait = DefaultInflightWait
	}
	if c.RequestReadTimeout <= 0 {
		c.RequestReadTimeout = DefaultRequestReadTimeout
	}
	if c.HealthInterval <= 0 {
		c.HealthInterval = DefaultHealthInterval
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	c.Logger = slog.New(RequestFieldsHandler(c.Logger.Handler()))
	return c
}

// ReadyCheck reports whether a dependency can serve (nil: ready).
type ReadyCheck func(ctx context.Context) error

type registration struct {
	desc *grpc.ServiceDesc
	impl any
}

// Server is the gRPC and HTTP front of hsmgate. Register services, HTTP
// handlers, interceptors and ready checks, then call Serve once.
type Server struct {
	cfg      Config
	log      *slog.Logger
	tls      *tls.Config // gRPC's; the HTTPS listener's is tlsState.base(true)
	tlsState *tlsState
	reg      *prometheus.Registry
	metrics  *grpcprom.ServerMetrics
	health   *health.Server
	mux      *http.ServeMux
	lm       *limitMetrics
	conns    *connLimiter
	budget   *budget
	// readSlots: per client address, a quarter (at least 2) of the budget's read shares.
	readSlots *readSlots
	streams   atomic.Int64 // open gRPC streams (tapStreams)

	mu       sync.Mutex
	started  bool
	services []registration
	unary    []grpc.UnaryServerInterceptor
	stream   []grpc.StreamServerInterceptor
	checks   []namedCheck
	grpcLn   *limitListener
	httpLn   *limitListener
	metricLn *limitListener
	pkiLn    *limitListener
	pkiMux   *http.ServeMux
	// httpPrefixes and pkiPrefixes run before mux and pkiMux, on paths as sent.
	httpPrefixes, pkiPrefixes prefixRoutes

	serving atomic.Bool // for /healthz
	ready   readiness   // healthwatch.go: /readyz and gRPC health
}

type namedCheck struct {
	name string
	fn   ReadyCheck
}

var _ grpc.ServiceRegistrar = (*Server)(nil)

// New checks cfg, loads the TLS material and prepares the server. It does not
// listen yet (see Listen and Serve).
func New(cfg Config) (*Server, error) {
	cfg = cfg.withDefaults()
	if cfg.GRPCAddr == "" {
		return nil, errors.New("server: GRPCAddr is required")
	}
	if cfg.MinTLSVersion != tls.VersionTLS12 && cfg.MinTLSVersion != tls.VersionTLS13 {
		return nil, fmt.Errorf("server: MinTLSVersion %#x: want TLS 1.2 or 1.3", cfg.MinTLSVersion)
	}
	tlsCfg, err := loadTLS(cfg)
	if err != nil {
		return nil, err
	}
	reg := cfg.Metrics
	if reg == nil {
		reg = prometheus.NewRegistry()
		reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	}
	metrics := grpcprom.NewServerMetrics(grpcprom.WithServerHandlingTimeHistogram(
		grpcprom.WithHistogramBuckets([]float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10}),
	))
	if err := reg.Register(metrics); err != nil {
		return nil, fmt.Errorf("server: register gRPC metrics: %w", err)
	}
	lm, err := newLimitMetrics(reg)
	if err != nil {
		return nil, fmt.Errorf("server: register limit metrics: %w", err)
	}
	if cfg.MaxConnectionsPerIP > cfg.MaxConnections {
		return nil, fmt.Errorf("server: MaxConnectionsPerIP %d is above MaxConnections %d", cfg.MaxConnectionsPerIP, cfg.MaxConnections)
	}
	if cfg.MaxInflightBytes < int64(cfg.MaxRecvBytes) || cfg.MaxInflightBytes < cfg.MaxHTTPBodyBytes {
		return nil, fmt.Errorf("server: MaxInflightBytes %d is below one request (MaxRecvBytes %d, MaxHTTPBodyBytes %d)", cfg.MaxInflightBytes, cfg.MaxRecvBytes, cfg.MaxHTTPBodyBytes)
	}
	warnFDLimit(cfg.Logger, cfg.MaxConnections)
	s := &Server{
		cfg:       cfg,
		log:       cfg.Logger,
		tls:       tlsCfg.base(false),
		tlsState:  tlsCfg,
		reg:       reg,
		metrics:   metrics,
		health:    health.NewServer(),
		mux:       http.NewServeMux(),
		pkiMux:    http.NewServeMux(),
		lm:        lm,
		conns:     newConnLimiter(cfg.MaxConnections, cfg.MaxConnectionsPerIP, lm),
		budget:    newBudget(cfg.MaxInflightBytes, cfg.InflightWait, lm),
		readSlots: newReadSlots(max(2, cfg.MaxInflightBytes/int64(cfg.MaxRecvBytes)/4)),
		unary:     append([]grpc.UnaryServerInterceptor(nil), cfg.UnaryInterceptors...),
		stream:    append([]grpc.StreamServerInterceptor(nil), cfg.StreamInterceptors...),
	}
	// Until Serve marks it serving, health says NOT_SERVING.
	s.health.SetServingStatus("", healthpb.HealthCheckResponse_NOT_SERVING)
	s.mux.HandleFunc("GET /healthz", s.healthz)
	s.mux.HandleFunc("GET /readyz", s.readyz)
	return s, nil
}

// RegisterService registers a gRPC service; generated Register*Server
// functions take the Server directly. It panics after Serve, like grpc.Server.
func (s *Server) RegisterService(desc *grpc.ServiceDesc, impl any) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.started {
		panic("server: RegisterService after Serve")
	}
	s.services = append(s.services, registration{desc, impl})
}

// Use appends interceptors (either may be nil) after those already added;
// only before Serve (ErrStarted).
func (s *Server) Use(unary grpc.UnaryServerInterceptor, stream grpc.StreamServerInterceptor) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.started {
		return ErrStarted
	}
	if unary != nil {
		s.unary = append(s.unary, unary)
	}
	if stream != nil {
		s.stream = append(s.stream, stream)
	}
	return nil
}

// HandleHTTP adds a handler to the HTTP listener's mux (http.ServeMux
// patterns, e.g. "GET /v1/pki/ca"). Safe to call at any time.
func (s *Server) HandleHTTP(pattern string, h http.Handler) { s.mux.Handle(pattern, h) }

// HandlePKI adds a handler to the plain-HTTP PKI listener's mux (PKIAddr);
// without that listener it does nothing. Only public, signed objects belong
// there: no authentication runs on it.
func (s *Server) HandlePKI(pattern string, h http.Handler) { s.pkiMux.Handle(pattern, h) }

// HandleHTTPPrefix sends every request of the HTTP listener whose path
// begins with prefix (end it with "/", e.g. "/pki/ocsp/") to h, before the
// mux and with the path as sent. The mux would clean the path and redirect
// the client, which loses data in a path that carries it (an OCSP GET's
// base64 holding "//"): h must treat what follows the prefix as data, never
// as a route. Safe to call at any time.
func (s *Server) HandleHTTPPrefix(prefix string, h http.Handler) { s.httpPrefixes.add(prefix, h) }

// HandlePKIPrefix is HandleHTTPPrefix for the plain-HTTP PKI listener.
func (s *Server) HandlePKIPrefix(prefix string, h http.Handler) { s.pkiPrefixes.add(prefix, h) }

// AddReadyCheck adds a check to /readyz (e.g. HSM and store pings).
func (s *Server) AddReadyCheck(name string, fn ReadyCheck) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.checks = append(s.checks, namedCheck{name, fn})
}

// Health is the grpc.health.v1 server, for per-service statuses.
func (s *Server) Health() *health.Server { return s.health }

// Metrics is the Prometheus registry served on the metrics listener.
func (s *Server) Metrics() *prometheus.Registry { return s.reg }

// Logger is the server's logger.
func (s *Server) Logger() *slog.Logger { return s.log }

// Listen binds the listeners (idempotent). Serve calls it; call it first to
// learn the addresses of ports chosen by the system.
func (s *Server) Listen() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.grpcLn != nil {
		return nil
	}
	gl, err := net.Listen("tcp", s.cfg.GRPCAddr)
	if err != nil {
		return fmt.Errorf("server: listen gRPC: %w", err)
	}
	var hl, ml net.Listener
	if s.cfg.HTTPAddr != "" {
		if hl, err = net.Listen("tcp", s.cfg.HTTPAddr); err != nil {
			_ = gl.Close()
			return fmt.Errorf("server: listen HTTP: %w", err)
		}
	}
	if s.cfg.MetricsAddr != "" {
		if ml, err = net.Listen("tcp", s.cfg.MetricsAddr); err != nil {
			_ = gl.Close()
			if hl != nil {
				_ = hl.Close()
			}
			return fmt.Errorf("server: listen metrics: %w", err)
		}
	}
	var pl net.Listener
	if s.cfg.PKIAddr != "" {
		if pl, err = net.Listen("tcp", s.cfg.PKIAddr); err != nil {
			for _, l := range []net.Listener{gl, hl, ml} {
				if l != nil {
					_ = l.Close()
				}
			}
			return fmt.Errorf("server: listen pki: %w", err)
		}
		s.pkiLn = newLimitListener(pl, "pki", s.conns, 0)
	}
	s.grpcLn = newLimitListener(gl, "grpc", s.conns, s.cfg.UnauthenticatedIdleTimeout)
	if hl != nil {
		s.httpLn = newLimitListener(hl, "https", s.conns, 0)
	}
	if ml != nil {
		s.metricLn = newLimitListener(ml, "metrics", s.conns, 0)
	}
	return nil
}

// GRPCAddr is the bound gRPC address ("" before Listen).
func (s *Server) GRPCAddr() string { return addrOf(s, func() *limitListener { return s.grpcLn }) }

// HTTPAddr is the bound HTTP address ("" before Listen or without HTTP).
func (s *Server) HTTPAddr() string { return addrOf(s, func() *limitListener { return s.httpLn }) }

// MetricsAddr is the bound metrics address ("" before Listen or without one).
func (s *Server) MetricsAddr() string { return addrOf(s, func() *limitListener { return s.metricLn }) }

// PKIAddr is the bound plain-HTTP PKI address ("" before Listen or without one).
func (s *Server) PKIAddr() string { return addrOf(s, func() *limitListener { return s.pkiLn }) }

func addrOf(s *Server, ln func() *limitListener) string {
	s.mu.Lock()
	defer s.mu.Unlock()
	if l := ln(); l != nil {
		return l.Addr().String()
	}
	return ""
}

// Serve serves until ctx ends, then shuts down gracefully and returns nil;
// or returns the error of a listener that failed. It may be called once.
func (s *Server) Serve(ctx context.Context) error {
	if err := s.Listen(); err != nil {
		return err
	}
	gs, err := s.build()
	if err != nil {
		return err
	}
	hs := s.httpServer()
	ms := s.metricsServer()
	ps := s.pkiServer()

	// Health says SERVING (if the ready checks pass) before the first
	// connection is accepted; the checks then run every HealthInterval.
	s.markServing()
	errc := make(chan error, 4)
	var wg sync.WaitGroup
	watchCtx, stopWatch := context.WithCancel(ctx)
	defer stopWatch()
	wg.Add(1)
	go func() {
		defer wg.Done()
		s.watchHealth(watchCtx, s.cfg.HealthInterval)
	}()
	wg.Add(1)
	go func() {
		defer wg.Done()
		if err := gs.Serve(s.grpcLn); err != nil && !errors.Is(err, grpc.ErrServerStopped) {
			errc <- fmt.Errorf("server: gRPC: %w", err)
		}
	}()
	if hs != nil {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := hs.ServeTLS(s.httpLn, "", ""); err != nil && !errors.Is(err, http.ErrServerClosed) {
				errc <- fmt.Errorf("server: HTTP: %w", err)
			}
		}()
	}
	if ms != nil {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := ms.Serve(s.metricLn); err != nil && !errors.Is(err, http.ErrServerClosed) {
				errc <- fmt.Errorf("server: metrics: %w", err)
			}
		}()
	}
	if ps != nil {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := ps.Serve(s.pkiLn); err != nil && !errors.Is(err, http.ErrServerClosed) {
				errc <- fmt.Errorf("server: pki: %w", err)
			}
		}()
	}
	s.log.Info("serving", "grpc", s.GRPCAddr(), "http", s.HTTPAddr(), "metrics", s.MetricsAddr(), "pki", s.PKIAddr())

	var serveErr error
	select {
	case <-ctx.Done():
	case serveErr = <-errc: // returned to the caller once shut down
	}
	s.shutdown(gs, hs)
	if ms != nil {
		_ = ms.Close()
	}
	if ps != nil {
		_ = ps.Close()
	}
	wg.Wait()
	return serveErr
}

// build makes the grpc.Server with every registration made so far.
func (s *Server) build() (*grpc.Server, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.started {
		return nil, ErrStarted
	}
	s.started = true
	c := s.cfg
	logger := s.log
	rec := recovery.WithRecoveryHandlerContext(func(ctx context.Context, p any) error {
		method, _ := grpc.Method(ctx)
		logger.ErrorContext(ctx, "panic in RPC", "grpc.method", method, "panic", fmt.Sprint(p), "stack", string(debug.Stack()))
		return status.Error(codes.Internal, "internal error")
	})
	logOpts := []logging.Option{
		logging.WithLogOnEvents(logging.FinishCall),
		logging.WithDurationField(logging.DurationToDurationField),
		logging.WithLevels(callLevel), // calllog.go
	}
	notHealth := selector.MatchFunc(func(_ context.Context, cm interceptors.CallMeta) bool {
		return cm.Service != healthpb.Health_ServiceDesc.ServiceName
	})
	unary := []grpc.UnaryServerInterceptor{
		s.metrics.UnaryServerInterceptor(),
		callLogUnary(logger), // calllog.go
		recovery.UnaryServerInterceptor(rec),
		errorsUnary(logger),
		s.inflightUnary,
	}
	unary = append(unary, s.unary...)
	unary = append(unary, s.authUnary, recovery.UnaryServerInterceptor(rec))
	stream := []grpc.StreamServerInterceptor{
		s.metrics.StreamServerInterceptor(),
		selector.StreamServerInterceptor(logging.StreamServerInterceptor(slogAdapter(logger), logOpts...), notHealth),
		recovery.StreamServerInterceptor(rec),
		errorsStream(logger),
		s.inflightStream,
	}
	stream = append(stream, s.stream...)
	stream = append(stream, s.authStream, recovery.StreamServerInterceptor(rec))

	opts := []grpc.ServerOption{
		grpc.Creds(credentials.NewTLS(s.tls)),
		grpc.MaxRecvMsgSize(c.MaxRecvBytes),
		grpc.MaxSendMsgSize(c.MaxSendBytes),
		grpc.MaxConcurrentStreams(c.MaxConcurrentStreams),
		grpc.MaxHeaderListSize(DefaultMaxHeaderListBytes),
		grpc.ConnectionTimeout(c.HandshakeTimeout),
		grpc.InTapHandle(s.tapStreams),
		grpc.StatsHandler(budgetStats{s}),
		grpc.NumStreamWorkers(StreamWorkers()),
		grpc.InitialWindowSize(streamWindow),
		grpc.InitialConnWindowSize(connWindow),
		grpc.KeepaliveEnforcementPolicy(keepalive.EnforcementPolicy{
			MinTime:             c.KeepaliveMinTime,
			PermitWithoutStream: true,
		}),
		grpc.KeepaliveParams(keepalive.ServerParameters{
			MaxConnectionIdle: c.MaxConnectionIdle,
			Time:              2 * time.Minute,
			Timeout:           20 * time.Second,
		}),
		grpc.ChainUnaryInterceptor(unary...),
		grpc.ChainStreamInterceptor(stream...),
	}
	for _, h := range c.StatsHandlers {
		opts = append(opts, grpc.StatsHandler(h))
	}
	gs := grpc.NewServer(opts...)
	healthpb.RegisterHealthServer(gs, s.health)
	reflection.Register(gs)
	for _, r := range s.services {
		gs.RegisterService(r.desc, r.impl)
	}
	s.metrics.InitializeMetrics(gs)
	return gs, nil
}

// markServing sets health from a first run of the ready checks.
func (s *Server) markServing() {
	s.serving.Store(true)
	s.probe(false)
}

func (s *Server) shutdown(gs *grpc.Server, hs *http.Server) {
	s.log.Info("shutting down", "drain", s.cfg.ShutdownDrain, "timeout", s.cfg.ShutdownTimeout)
	s.serving.Store(false)
	s.health.Shutdown() // every service NOT_SERVING; watchers are told
	if d := s.cfg.ShutdownDrain; d > 0 {
		t := time.NewTimer(d)
		<-t.C
	}
	ctx, cancel := context.WithTimeout(context.Background(), s.cfg.ShutdownTimeout)
	defer cancel()
	done := make(chan struct{})
	go func() {
		gs.GracefulStop()
		close(done)
	}()
	if hs != nil {
		if err := hs.Shutdown(ctx); err != nil {
			_ = hs.Close()
		}
	}
	select {
	case <-done:
	case <-ctx.Done():
		s.log.Warn("shutdown timeout: cutting in-flight RPCs", "timeout", s.cfg.ShutdownTimeout)
		gs.Stop()
		<-done
	}
	s.log.Info("stopped")
}

// errorsUnary maps every error returned below it to a status with
// errs.GRPCStatus; an error that becomes Internal is logged here with its
// full text (the client only sees "internal error").
func errorsUnary(log *slog.Logger) grpc.UnaryServerInterceptor {
	return func(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
		resp, err := handler(ctx, req)
		if err != nil {
			return resp, toStatus(ctx, log, info.FullMethod, err)
		}
		return resp, nil
	}
}

func errorsStream(log *slog.Logger) grpc.StreamServerInterceptor {
	return func(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
		if err := handler(srv, ss); err != nil {
			return toStatus(ss.Context(), log, info.FullMethod, err)
		}
		return nil
	}
}

// maxLoggedErrorBytes caps an error's text in the server log.
const maxLoggedErrorBytes = 2048

func toStatus(ctx context.Context, log *slog.Logger, method string, err error) error {
	st := errs.GRPCStatus(err)
	if _, isStatus := status.FromError(err); !isStatus {
		// The client sees a generic or sentinel message; the cause (capped:
		// it may quote the caller's input) is for the server log.
		switch st.Code() {
		case codes.Internal:
			log.ErrorContext(ctx, "internal error", "grpc.method", method, "error", errs.Truncate(err.Error(), maxLoggedErrorBytes))
		case codes.Unavailable:
			log.WarnContext(ctx, "unavailable", "grpc.method", method, "error", errs.Truncate(err.Error(), maxLoggedErrorBytes))
		}
	}
	return st.Err()
}

func slogAdapter(l *slog.Logger) logging.Logger {
	return logging.LoggerFunc(func(ctx context.Context, lvl logging.Level, msg string, fields ...any) {
		l.Log(ctx, slog.Level(lvl), msg, fields...)
	})
}

// loadTLS builds the server's TLS state (reload.go).
func loadTLS(c Config) (*tlsState, error) {
	if c.CertFile == "" || c.KeyFile == "" {
		return nil, errors.New("server: CertFile and KeyFile are required (TLS is always on)")
	}
	return newTLSState(c)
}

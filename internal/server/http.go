package server

import (
	"fmt"
	"log/slog"
	"net/http"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/hsmgate/hsmgate/internal/errs"
)

// HTTP server limits (the others come from Config: HandshakeTimeout bounds
// the TLS handshake and request headers, UnauthenticatedIdleTimeout the
// keep-alive idle time, MaxHTTPBodyBytes a body).
const (
	httpReadTimeout    = 30 * time.Second
	httpWriteTimeout   = 60 * time.Second
	httpMaxHeaderBytes = 64 << 10
)

func (s *Server) httpServer() *http.Server {
	if s.httpLn == nil {
		return nil
	}
	tlsCfg := s.tlsState.base(true)
	tlsCfg.NextProtos = []string{"h2", "http/1.1"}
	return &http.Server{
		Handler:   s.limitHTTP(s.httpPrefixes.then(s.mux)),
		TLSConfig: tlsCfg,
		// net/http bounds the TLS handshake by the smallest of these.
		ReadHeaderTimeout: s.cfg.HandshakeTimeout,
		ReadTimeout:       httpReadTimeout,
		WriteTimeout:      httpWriteTimeout,
		IdleTimeout:       s.cfg.UnauthenticatedIdleTimeout,
		MaxHeaderBytes:    httpMaxHeaderBytes,
		HTTP2: &http.HTTP2Config{
			MaxConcurrentStreams: int(s.cfg.MaxConcurrentStreams),
		},
		// TLS handshake failures from scanners and probes are routine.
		ErrorLog: slog.NewLogLogger(s.log.Handler(), slog.LevelDebug),
	}
}

// metricsServer serves /metrics alone, in plain HTTP, on the metrics listener.
func (s *Server) metricsServer() *http.Server {
	if s.metricLn == nil {
		return nil
	}
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", promhttpHandler(s.reg))
	return s.plainHTTPServer(mux)
}

// pkiServer serves HandlePKI's handlers on the plain-HTTP PKI listener.
func (s *Server) pkiServer() *http.Server {
	if s.pkiLn == nil {
		return nil
	}
	return s.plainHTTPServer(s.pkiPrefixes.then(s.pkiMux))
}

// plainHTTPServer is a plain-HTTP server of h with the listeners' bounds
// (the metrics and the PKI listener).
func (s *Server) plainHTTPServer(h http.Handler) *http.Server {
	return &http.Server{
		Handler:           h,
		ReadHeaderTimeout: s.cfg.HandshakeTimeout,
		ReadTimeout:       httpReadTimeout,
		WriteTimeout:      httpWriteTimeout,
		IdleTimeout:       s.cfg.MaxConnectionIdle,
		MaxHeaderBytes:    httpMaxHeaderBytes,
		ErrorLog:          slog.NewLogLogger(s.log.Handler(), slog.LevelDebug),
	}
}

func promhttpHandler(reg *prometheus.Registry) http.Handler {
	return promhttp.HandlerFor(reg, promhttp.HandlerOpts{Registry: reg})
}

// healthz is liveness: 200 while serving, 503 once shutdown has begun.
func (s *Server) healthz(w http.ResponseWriter, _ *http.Request) {
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	if !s.serving.Load() {
		w.WriteHeader(http.StatusServiceUnavailable)
		fmt.Fprintln(w, "not serving")
		return
	}
	fmt.Fprintln(w, "ok")
}

// readyz is readiness: 200 when serving and every ready check passes; 503
// otherwise, with one line per check.
func (s *Server) readyz(w http.ResponseWriter, _ *http.Request) {
	// The verdict gRPC health reports too (healthwatch.go).
	ok, lines := s.probe(true)
	lines = append([]string(nil), lines...)
	serving := s.serving.Load()
	ok = ok && serving
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	if !ok {
		w.WriteHeader(http.StatusServiceUnavailable)
	}
	if !serving {
		lines = append(lines, "server: not serving")
	}
	verdict := "ready"
	if !ok {
		verdict = "not ready"
	}
	fmt.Fprintln(w, strings.Join(append(lines, verdict), "\n"))
}

// errsMessage is the client-safe text of err (internal details hidden).
func errsMessage(err error) string { return errs.GRPCStatus(err).Message() }

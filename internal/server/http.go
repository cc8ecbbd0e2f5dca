package server

import (
	"context"
	"fmt"
	"log/slog"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/hsmgate/hsmgate/internal/errs"
)

// HTTP server limits.
const (
	httpReadHeaderTimeout = 10 * time.Second
	httpReadTimeout       = 30 * time.Second
	httpWriteTimeout      = 60 * time.Second
	httpIdleTimeout       = 2 * time.Minute
	httpMaxHeaderBytes    = 64 << 10
)

func (s *Server) httpServer() *http.Server {
	if s.httpLn == nil {
		return nil
	}
	tlsCfg := s.tls.Clone()
	tlsCfg.NextProtos = []string{"h2", "http/1.1"}
	return &http.Server{
		Handler:           s.mux,
		TLSConfig:         tlsCfg,
		ReadHeaderTimeout: httpReadHeaderTimeout,
		ReadTimeout:       httpReadTimeout,
		WriteTimeout:      httpWriteTimeout,
		IdleTimeout:       httpIdleTimeout,
		MaxHeaderBytes:    httpMaxHeaderBytes,
		// TLS handshake failures from scanners and probes are routine.
		ErrorLog: slog.NewLogLogger(s.log.Handler(), slog.LevelDebug),
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
func (s *Server) readyz(w http.ResponseWriter, r *http.Request) {
	s.mu.Lock()
	checks := append([]namedCheck(nil), s.checks...)
	s.mu.Unlock()

	lines := make([]string, len(checks))
	ok := s.serving.Load()
	var wg sync.WaitGroup
	var mu sync.Mutex
	for i, c := range checks {
		wg.Add(1)
		go func() {
			defer wg.Done()
			ctx, cancel := context.WithTimeout(r.Context(), ReadyCheckTimeout)
			defer cancel()
			line := c.name + ": ok"
			if err := c.fn(ctx); err != nil {
				line = c.name + ": " + errsMessage(err)
				mu.Lock()
				ok = false
				mu.Unlock()
			}
			lines[i] = line
		}()
	}
	wg.Wait()
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	if !ok {
		w.WriteHeader(http.StatusServiceUnavailable)
	}
	if !s.serving.Load() {
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

package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"strings"
	"time"

	"github.com/hsmgate/hsmgate/hsm"
	"github.com/hsmgate/hsmgate/internal/auth"
	"github.com/hsmgate/hsmgate/internal/config"
	"github.com/hsmgate/hsmgate/internal/server"
	"github.com/hsmgate/hsmgate/internal/version"
	"github.com/hsmgate/hsmgate/keystore"
	kbolt "github.com/hsmgate/hsmgate/keystore/bbolt"
	ketcd "github.com/hsmgate/hsmgate/keystore/etcd"
)

// openHSM resolves the PIN and opens the configured token.
func openHSM(ctx context.Context, c *config.Config, log *slog.Logger) (*hsm.Module, error) {
	pin, err := hsm.ResolvePIN(c.HSM.PINEnv, c.HSM.PINFile)
	if err != nil {
		return nil, err
	}
	return hsm.Open(ctx, hsm.Config{
		Library:     c.HSM.Library,
		TokenLabel:  c.HSM.TokenLabel,
		PIN:         pin,
		MaxSessions: c.HSM.MaxSessions,
		WaitTimeout: c.HSM.WaitTimeout,
		Logger:      log,
	})
}

// openStore opens the configured key store backend.
func openStore(ctx context.Context, c *config.Config) (keystore.Store, error) {
	switch c.Store.Backend {
	case config.BackendBbolt:
		return kbolt.Open(c.Store.Path, kbolt.Options{})
	case config.BackendEtcd:
		e := c.Store.Etcd
		cfg := ketcd.Config{
			Endpoints:      e.Endpoints,
			DialTimeout:    e.DialTimeout,
			RequestTimeout: e.RequestTimeout,
			Prefix:         e.Prefix,
			Username:       e.Username,
		}
		if e.PasswordEnv != "" || e.PasswordFile != "" {
			pw, err := resolveSecret("etcd password", e.PasswordEnv, e.PasswordFile)
			if err != nil {
				return nil, err
			}
			cfg.Password = pw
		}
		tc, err := etcdTLS(e)
		if err != nil {
			return nil, err
		}
		cfg.TLS = tc
		return ketcd.New(ctx, cfg)
	}
	return nil, fmt.Errorf("store: unknown backend %q", c.Store.Backend)
}

// etcdTLS returns the client TLS config for etcd, or nil for plain http://
// endpoints without TLS files.
func etcdTLS(e config.Etcd) (*tls.Config, error) {
	https := false
	for _, ep := range e.Endpoints {
		https = https || strings.HasPrefix(ep, "https://")
	}
	if !https && e.CAFile == "" && e.CertFile == "" {
		return nil, nil
	}
	tc := &tls.Config{MinVersion: tls.VersionTLS12}
	if e.CAFile != "" {
		pemBytes, err := os.ReadFile(e.CAFile)
		if err != nil {
			return nil, fmt.Errorf("store.etcd.tls.ca: %w", err)
		}
		tc.RootCAs = x509.NewCertPool()
		if !tc.RootCAs.AppendCertsFromPEM(pemBytes) {
			return nil, fmt.Errorf("store.etcd.tls.ca: %s: no PEM certificate", e.CAFile)
		}
	}
	if e.CertFile != "" {
		pair, err := tls.LoadX509KeyPair(e.CertFile, e.KeyFile)
		if err != nil {
			return nil, fmt.Errorf("store.etcd.tls: %w", err)
		}
		tc.Certificates = []tls.Certificate{pair}
	}
	return tc, nil
}

// resolveSecret reads a secret from the environment variable env if set,
// else from file; the error never contains the secret.
func resolveSecret(what, env, file string) (string, error) {
	if env != "" {
		if v := os.Getenv(env); v != "" {
			return v, nil
		}
	}
	if file != "" {
		b, err := os.ReadFile(file)
		if err != nil {
			return "", fmt.Errorf("%s: %w", what, err)
		}
		if v := strings.TrimRight(string(b), "\r\n"); v != "" {
			return v, nil
		}
		return "", fmt.Errorf("%s: file %s is empty", what, file)
	}
	return "", fmt.Errorf("%s: $%s is not set and no file is configured", what, env)
}

// loadKEK finds the KEK by label, or with create (dev) makes it when missing;
// otherwise a missing KEK is an error that points at `hsmgate init`.
func loadKEK(ctx context.Context, m *hsm.Module, label string, create bool, log *slog.Logger) (*hsm.KEK, error) {
	if create {
		kek, created, err := m.EnsureKEK(ctx, label)
		if err != nil {
			return nil, fmt.Errorf("KEK %q: %w", label, err)
		}
		log.Info("KEK ready", "label", label, "token", m.TokenLabel(), "created", created)
		return kek, nil
	}
	kek, err := m.KEK(ctx, label)
	if errors.Is(err, hsm.ErrKeyNotFound) {
		return nil, fmt.Errorf("KEK %q not found in token %q: run `hsmgate init --config FILE` once first", label, m.TokenLabel())
	}
	if err != nil {
		return nil, fmt.Errorf("KEK %q: %w", label, err)
	}
	return kek, nil
}

// newServer makes the gRPC and HTTPS server of the config (with tracing
// when tracing.enabled) and binds its listeners, so that a taken port is
// reported as such, not as some engine's failure (and the engines that
// derive URLs from the addresses have them).
func newServer(ctx context.Context, d *deps) (*server.Server, error) {
	sc := server.FromConfig(d.Config, d.Log)
	// A gRPC connection is past its pre-auth deadline once a request on it
	// carries an identity (placed by the auth interceptor).
	sc.Authenticated = func(ctx context.Context) bool { _, ok := auth.FromContext(ctx); return ok }
	sc.RequestFields = requestFields
	if d.Config.Tracing.Enabled {
		tr, err := server.NewTracing(ctx, version.String())
		if err != nil {
			return nil, err
		}
		d.OnClose(func() error {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			return tr.Shutdown(ctx)
		})
		sc.StatsHandlers = append(sc.StatsHandlers, tr.Handler)
		d.Log.Info("tracing on: OTLP/gRPC exporter (OTEL_EXPORTER_OTLP_* variables)")
	}
	srv, err := server.New(sc)
	if err != nil {
		return nil, err
	}
	if err := srv.Listen(); err != nil {
		return nil, err
	}
	return srv, nil
}

// requestFields names the caller in every log line of a request.
func requestFields(ctx context.Context) (identity, kind string) {
	id, ok := auth.FromContext(ctx)
	if !ok {
		return "", ""
	}
	return id.Name, string(id.Kind)
}

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

// runOptions vary runServer between `server` and `dev`.
type runOptions struct {
	// createKEK makes the KEK if it is missing (dev); otherwise a missing KEK
	// is an error that points at `hsmgate init`.
	createKEK bool
	// devRootToken and devStateDir are passed to the hooks (dev only).
	devRootToken string
	devStateDir  string
	// allowNoAuth lets the server run without the auth hook (dev only).
	allowNoAuth bool
	// storeOpened is called once the store is open (dev: its lock is held).
	storeOpened func() error
	// listening is called once the listeners are bound, before serving.
	listening func(addrs listenAddrs) error
	// reloadConfig re-reads the config file on SIGHUP (nil: dev, no file);
	// level is the logger's live level, left alone when levelFromFlag.
	reloadConfig  func() (*config.Config, error)
	level         *slog.LevelVar
	levelFromFlag bool
}

// listenAddrs are the bound listener addresses ("" for a listener that is off).
type listenAddrs struct{ GRPC, HTTP, Metrics string }

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

// runServer opens the HSM and the store, builds the server with every
// service hook and the auth hook, and serves until ctx ends.
func runServer(ctx context.Context, c *config.Config, log *slog.Logger, o runOptions) (err error) {
	log = log.With("replica", c.Replica.ID) // every line names the replica (replica.id)
	d := &deps{Config: c, Log: log, Rules: auth.Table{}, DevRootToken: o.devRootToken, DevStateDir: o.devStateDir, Start: time.Now()}
	defer d.close()
	startHUP, stopHUP := watchHUP(ctx) // reload.go: SIGHUP reloads, never kills
	defer stopHUP()

	m, err := openHSM(ctx, c, log)
	if err != nil {
		return err
	}
	d.HSM = m
	d.OnClose(func() error { return hsm.Finalize(c.HSM.Library) })
	d.OnClose(m.Close)

	if o.createKEK {
		kek, created, err := m.EnsureKEK(ctx, c.HSM.KEKLabel)
		if err != nil {
			return fmt.Errorf("KEK %q: %w", c.HSM.KEKLabel, err)
		}
		log.Info("KEK ready", "label", c.HSM.KEKLabel, "token", m.TokenLabel(), "created", created)
		d.KEK = kek
	} else {
		kek, err := m.KEK(ctx, c.HSM.KEKLabel)
		if errors.Is(err, hsm.ErrKeyNotFound) {
			return fmt.Errorf("KEK %q not found in token %q: run `hsmgate init --config FILE` once first", c.HSM.KEKLabel, m.TokenLabel())
		}
		if err != nil {
			return fmt.Errorf("KEK %q: %w", c.HSM.KEKLabel, err)
		}
		d.KEK = kek
	}

	st, err := openStore(ctx, c)
	if err != nil {
		return err
	}
	d.Store = st
	d.OnClose(st.Close)
	if o.storeOpened != nil {
		if err := o.storeOpened(); err != nil {
			return err
		}
	}

	sc := server.FromConfig(c, log)
	// A gRPC connection is past its pre-auth deadline once a request on it
	// carries an identity (placed by the auth interceptor).
	sc.Authenticated = func(ctx context.Context) bool { _, ok := auth.FromContext(ctx); return ok }
	sc.RequestFields = requestFields
	if c.Tracing.Enabled {
		tr, err := server.NewTracing(ctx, version.String())
		if err != nil {
			return err
		}
		d.OnClose(func() error {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			return tr.Shutdown(ctx)
		})
		sc.StatsHandlers = append(sc.StatsHandlers, tr.Handler)
		log.Info("tracing on: OTLP/gRPC exporter (OTEL_EXPORTER_OTLP_* variables)")
	}
	srv, err := server.New(sc)
	if err != nil {
		return err
	}
	d.Server = srv
	// Bind before the hooks (some need the addresses), so that a taken port
	// is reported as such, not as a hook's failure.
	if err := srv.Listen(); err != nil {
		return err
	}
	hsmgatev1RegisterSystem(srv, d)
	if err := d.AddRules(server.SystemRules()); err != nil {
		return err
	}
	srv.AddReadyCheck("hsm", m.Ping)
	srv.AddReadyCheck("store", st.Ping)
	if d.Jobs, err = newJobRunner(d); err != nil { // jobs_wire.go
		return err
	}

	for _, h := range serviceHooks {
		if err := h.setup(ctx, d); err != nil {
			return fmt.Errorf("%s: %w", h.name, err)
		}
	}
	switch {
	case authHook != nil:
		if err := authHook(ctx, d); err != nil {
			return fmt.Errorf("auth: %w", err)
		}
	case o.allowNoAuth:
		log.Warn("auth is not wired into this build: every RPC is open (dev mode only)")
	default:
		return errors.New("auth is not wired into this build: refusing to serve without authentication (use `hsmgate dev` for a local server)")
	}

	startJobs(ctx, d) // jobs_wire.go: background jobs on the elected replica
	if o.listening != nil {
		if err := o.listening(listenAddrs{GRPC: srv.GRPCAddr(), HTTP: srv.HTTPAddr(), Metrics: srv.MetricsAddr()}); err != nil {
			return err
		}
	}
	startHUP(&reloader{d: d, o: o, live: *c})
	log.Info("hsmgate starting", "version", version.String(), "token", m.TokenLabel(), "store", st.Backend())
	return srv.Serve(ctx)
}

// requestFields names the caller in every log line of a request.
func requestFields(ctx context.Context) []any {
	id, ok := auth.FromContext(ctx)
	if !ok {
		return nil
	}
	return []any{"identity", id.Name, "identity_kind", string(id.Kind)}
}

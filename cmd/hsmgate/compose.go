package main

// The composition root: runServer builds the whole server from
// internal/config by calling constructors in the order below, and nothing
// else wires anything (no init() registration, no package globals). To add
// a service, add its builder call to wireServices.

import (
	"context"
	"fmt"
	"log/slog"
	"time"

	"github.com/hsmgate/hsmgate/hsm"
	"github.com/hsmgate/hsmgate/internal/auth"
	"github.com/hsmgate/hsmgate/internal/config"
	"github.com/hsmgate/hsmgate/internal/server"
	"github.com/hsmgate/hsmgate/internal/version"
)

// runOptions vary runServer between `server`, `dev` and `bench`.
type runOptions struct {
	// createKEK makes the KEK if it is missing (dev); otherwise a missing KEK
	// is an error that points at `hsmgate init`.
	createKEK bool
	// devRootToken and devStateDir: the dev server's root token and state
	// directory (dev only).
	devRootToken string
	devStateDir  string
	// storeOpened is called once the store is open (dev: its lock is held).
	storeOpened func() error
	// listening is called once the server is built, its listeners bound,
	// before serving.
	listening func(addrs listenAddrs) error
	// reloadConfig re-reads the config file on SIGHUP (nil: dev, no file);
	// level is the logger's live level, left alone when levelFromFlag.
	reloadConfig  func() (*config.Config, error)
	level         *slog.LevelVar
	levelFromFlag bool
	// acmeTesting points ACME challenge validation at loopback ports and
	// raises its rate limits. TEST-ONLY: set by the bench and tests, never
	// from the config file or flags (nil: the real thing).
	acmeTesting *acmeTesting
}

// listenAddrs are the bound listener addresses ("" for a listener that is off).
type listenAddrs struct{ GRPC, HTTP, Metrics string }

// runServer builds the server from c and serves until ctx ends; then
// everything built is closed in reverse order.
func runServer(ctx context.Context, c *config.Config, log *slog.Logger, o runOptions) error {
	log = log.With("replica", c.Replica.ID) // every line names the replica (replica.id)
	d := &deps{Config: c, Log: log, Rules: auth.Table{}, DevRootToken: o.devRootToken, DevStateDir: o.devStateDir, Start: time.Now(),
		acmeTesting: o.acmeTesting}
	defer d.close()
	startHUP, stopHUP := watchHUP(ctx) // reload.go: a SIGHUP during start-up is held, never fatal
	defer stopHUP()

	// 1. The HSM, then the KEK inside it.
	m, err := openHSM(ctx, c, log)
	if err != nil {
		return err
	}
	d.HSM = m
	d.OnClose(func() error { return hsm.Finalize(c.HSM.Library) })
	d.OnClose(m.Close)
	if d.KEK, err = loadKEK(ctx, m, c.HSM.KEKLabel, o.createKEK, log); err != nil {
		return err
	}

	// 2. The key store.
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

	// 3. The server, its listeners bound (some engines derive URLs from them).
	if d.Server, err = newServer(ctx, d); err != nil {
		return err
	}

	// 4. Every service, then authentication in front of them all.
	if err := wireServices(ctx, d); err != nil {
		return err
	}

	// 5. Serve; SIGHUP reloads what can be reloaded live.
	srv := d.Server
	if o.listening != nil {
		if err := o.listening(listenAddrs{GRPC: srv.GRPCAddr(), HTTP: srv.HTTPAddr(), Metrics: srv.MetricsAddr()}); err != nil {
			return err
		}
	}
	startHUP(&reloader{d: d, o: o, live: *c})
	log.Info("hsmgate starting", "version", version.String(), "token", m.TokenLabel(), "store", st.Backend())
	return srv.Serve(ctx)
}

// wireServices builds every service over what d has opened (config, HSM,
// KEK, store, server), in dependency order, each adding its auth rules to
// d.Rules and its cleanup to d.OnClose; last, the interceptor made from the
// merged rules goes in front of every RPC.
func wireServices(ctx context.Context, d *deps) error {
	// System: status service, /readyz checks, process metrics.
	hsmgatev1RegisterSystem(d.Server, d) // system.go
	if err := d.AddRules(server.SystemRules()); err != nil {
		return err
	}
	d.Server.AddReadyCheck("hsm", d.HSM.Ping)
	d.Server.AddReadyCheck("store", d.Store.Ping)
	if err := registerProcessMetrics(d); err != nil { // metrics_wire.go
		return fmt.Errorf("metrics: %w", err)
	}

	// Audit and auth first: the engines and doors below write to the audit
	// log, and the Vault door logs in through the auth methods.
	auditLog, err := newAuditLog(ctx, d) // authwire.go
	if err != nil {
		return fmt.Errorf("auth: %w", err)
	}
	// Background jobs (rotation, CRLs, tidy, sweeps) run on the elected
	// replica only; the builders below add theirs, they start once all are in.
	if d.Jobs, err = newJobRunner(d, auditLog); err != nil { // jobs_wire.go
		return fmt.Errorf("jobs: %w", err)
	}
	a, err := newAuth(ctx, d) // authwire.go
	if err != nil {
		return fmt.Errorf("auth: %w", err)
	}
	methods, err := newAuthMethods(ctx, d) // authmethods_wire.go
	if err != nil {
		return fmt.Errorf("auth-methods: %w", err)
	}

	// The engines.
	if err := setupTransit(ctx, d); err != nil { // transit_wire.go
		return fmt.Errorf("transit: %w", err)
	}
	pkiBase, err := pkiBaseURL(d) // pki_wire.go
	if err != nil {
		return fmt.Errorf("pki: %w", err)
	}
	if err := setupPKI(ctx, d, pkiBase); err != nil {
		return fmt.Errorf("pki: %w", err)
	}
	if err := setupSSHCA(ctx, d); err != nil { // ssh_wire.go
		return fmt.Errorf("sshca: %w", err)
	}

	// The HTTP doors over the engines: the Vault-compatible API and ACME.
	if err := setupVaultDoor(d, methods, auditLog); err != nil { // vault_wire.go
		return fmt.Errorf("vaultdoor: %w", err)
	}
	if err := setupACME(ctx, d, pkiBase, auditLog); err != nil { // acme_wire.go
		return fmt.Errorf("acme: %w", err)
	}

	// Authentication, authorisation and audit in front of every RPC.
	if err := installInterceptor(d, a, auditLog); err != nil { // authwire.go
		return fmt.Errorf("auth: %w", err)
	}
	startJobs(ctx, d) // jobs_wire.go
	return nil
}

package main

import (
	"context"
	"fmt"
	"log/slog"
	"time"

	"github.com/hsmgate/hsmgate/hsm"
	"github.com/hsmgate/hsmgate/internal/auth"
	"github.com/hsmgate/hsmgate/internal/config"
	"github.com/hsmgate/hsmgate/internal/leader"
	"github.com/hsmgate/hsmgate/internal/server"
	"github.com/hsmgate/hsmgate/keystore"
	"github.com/hsmgate/hsmgate/vaultdoor"
)

// deps is what the process has opened, handed to every service hook.
type deps struct {
	Config *config.Config
	Log    *slog.Logger
	HSM    *hsm.Module
	KEK    *hsm.KEK
	Store  keystore.Store
	Server *server.Server
	// Rules is the merged auth table of every registered service; hooks add
	// theirs with AddRules. The auth hook builds the interceptor from it.
	Rules auth.Table
	// DevRootToken is the root token of `hsmgate dev` (empty otherwise): the
	// auth hook must make the server accept it as a root identity.
	DevRootToken string
	// DevStateDir is the state directory of `hsmgate dev` (empty otherwise),
	// for dev-only files such as an audit log.
	DevStateDir string
	// Start is when the process started serving.
	Start time.Time
	// VaultDoor is the Vault-compatible door (nil until its hook ran); the
	// auth hook gives it the audit log for its login lines.
	VaultDoor *vaultdoor.Door
	// Jobs runs background jobs on the elected replica (jobs_wire.go);
	// hooks add theirs with Jobs.Add. Its LiveReplicas sizes usage blocks.
	Jobs *leader.Runner

	closers []func() error
	onHUP   []func() error // reload.go: run on SIGHUP (audit rotation)
}

// AddRules merges t into d.Rules; a method named twice is a wiring mistake.
func (d *deps) AddRules(t auth.Table) error {
	for m, r := range t {
		if _, dup := d.Rules[m]; dup {
			return fmt.Errorf("auth rule for %s registered twice", m)
		}
		d.Rules[m] = r
	}
	return nil
}

// OnClose runs fn when the server has stopped (in reverse order of OnClose calls).
func (d *deps) OnClose(fn func() error) { d.closers = append(d.closers, fn) }

func (d *deps) close() {
	for i := len(d.closers) - 1; i >= 0; i-- {
		if err := d.closers[i](); err != nil {
			d.Log.Warn("close", "error", err)
		}
	}
	d.closers = nil
}

// A serviceHook builds one engine's service from deps and registers it:
// d.Server.RegisterService (through the generated Register*Server), HTTP
// handlers with d.Server.HandleHTTP, rules with d.AddRules, cleanup with
// d.OnClose. Hooks run in registration order, before the auth hook.
type serviceHook struct {
	name  string
	setup func(ctx context.Context, d *deps) error
}

var serviceHooks []serviceHook

// registerService adds a service hook; call it from an init function in the
// engine's wiring file (cmd/hsmgate/transit.go, pki.go, ...).
func registerService(name string, setup func(ctx context.Context, d *deps) error) {
	serviceHooks = append(serviceHooks, serviceHook{name, setup})
}

// authHook installs authentication, authorisation and audit: it builds the
// interceptors from d.Rules (and d.Config.Auth / d.Config.Audit, and
// d.DevRootToken in dev mode) and adds them with d.Server.Use. It is set by
// the auth wiring file. While it is nil the server refuses to start outside
// dev mode, and dev mode warns that every RPC is open.
var authHook func(ctx context.Context, d *deps) error

package main

import (
	"fmt"
	"log/slog"
	"time"

	"github.com/hsmgate/hsmgate/hsm"
	"github.com/hsmgate/hsmgate/internal/auth"
	"github.com/hsmgate/hsmgate/internal/config"
	"github.com/hsmgate/hsmgate/internal/leader"
	"github.com/hsmgate/hsmgate/internal/server"
	"github.com/hsmgate/hsmgate/keystore"
)

// deps is what the composition root (compose.go) has opened so far, handed
// to each builder it calls. Nothing here is global: every server (and every
// test that wires one) has its own.
type deps struct {
	Config *config.Config
	Log    *slog.Logger
	HSM    *hsm.Module
	KEK    *hsm.KEK
	Store  keystore.Store
	Server *server.Server
	// Rules is the merged auth table of every service built so far; each
	// builder adds its own with AddRules. The interceptor is made from it
	// once every service is registered.
	Rules auth.Table
	// DevRootToken is the root token of `hsmgate dev` (empty otherwise):
	// the server must accept it as a root identity.
	DevRootToken string
	// DevStateDir is the state directory of `hsmgate dev` (empty otherwise),
	// for dev-only files such as an audit log.
	DevStateDir string
	// Start is when the process started serving.
	Start time.Time
	// acmeTesting: runOptions.acmeTesting (TEST-ONLY; nil in every deployment).
	acmeTesting *acmeTesting
	// Jobs runs background jobs on the elected replica (jobs_wire.go);
	// builders add theirs with Jobs.Add. Its LiveReplicas sizes usage blocks.
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

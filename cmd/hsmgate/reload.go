package main

import (
	"context"
	"os"
	"os/signal"
	"reflect"
	"sync"
	"syscall"

	"github.com/hsmgate/hsmgate/internal/config"
)

// OnHUP adds fn to what SIGHUP runs after reloading the config (e.g. audit
// rotation for logrotate).
func (d *deps) OnHUP(fn func() error) { d.onHUP = append(d.onHUP, fn) }

// reloader applies SIGHUPs to a running server. live is the configuration
// in force: the start one with the changes applied since.
type reloader struct {
	d    *deps
	o    runOptions
	mu   sync.Mutex
	live config.Config
}

// watchHUP turns SIGHUP into reloads until ctx ends. It is called first
// thing in runServer so that a SIGHUP during start-up is held, not fatal;
// start begins applying them once the server is built.
func watchHUP(ctx context.Context) (start func(r *reloader), stop func()) {
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	ctx, cancel := context.WithCancel(ctx)
	var wg sync.WaitGroup
	start = func(r *reloader) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				select {
				case <-ctx.Done():
					return
				case <-hup:
					r.reload()
				}
			}
		}()
	}
	stop = func() {
		signal.Stop(hup)
		cancel()
		wg.Wait()
	}
	return start, stop
}

// reload re-reads the config file and applies what can be applied live:
// the TLS key pair and client CA, and the log level; audit rotates. A
// change that needs a restart is logged and not applied; an invalid file is
// refused whole.
func (r *reloader) reload() {
	r.mu.Lock()
	defer r.mu.Unlock()
	log := r.d.Log
	log.Info("SIGHUP: reloading")
	if r.o.reloadConfig == nil {
		log.Info("reload: no config file to re-read (dev mode)")
	} else if next, err := r.o.reloadConfig(); err != nil {
		log.Error("reload: the new configuration is refused; the running one stays", "error", err)
	} else {
		r.apply(next)
	}
	for _, fn := range r.d.onHUP {
		if err := fn(); err != nil {
			log.Error("reload: audit log rotation failed", "error", err)
		} else {
			log.Info("reload: audit log rotated")
		}
	}
}

// restartSections names the sections of next that differ from the live
// configuration and cannot be applied without a restart.
func restartSections(live, next *config.Config) []string {
	var out []string
	for _, s := range []struct {
		name string
		a, b any
	}{
		{"listen", live.Listen, next.Listen},
		{"tls.min_version", live.TLS.MinVersion, next.TLS.MinVersion},
		{"hsm", live.HSM, next.HSM},
		{"store", live.Store, next.Store},
		{"limits", live.Limits, next.Limits},
		{"shutdown", live.Shutdown, next.Shutdown},
		{"log.format", live.Log.Format, next.Log.Format},
		{"metrics", live.Metrics, next.Metrics},
		{"auth", live.Auth, next.Auth},
		{"audit", live.Audit, next.Audit},
		{"pki", live.PKI, next.PKI},
		{"ssh", live.SSH, next.SSH},
		{"acme", live.ACME, next.ACME},
		{"tracing", live.Tracing, next.Tracing},
		{"replica", live.Replica, next.Replica},
	} {
		if !reflect.DeepEqual(s.a, s.b) {
			out = append(out, s.name)
		}
	}
	return out
}

func (r *reloader) apply(next *config.Config) {
	log := r.d.Log
	restart := restartSections(&r.live, next)
	ch, err := r.d.Server.ReloadTLS(next.TLS.CertFile, next.TLS.KeyFile, next.TLS.ClientCAFile)
	if err != nil {
		// Nothing was applied: TLS is the only part that can fail.
		log.Error("reload: the new configuration is refused; the running one stays", "error", err)
		return
	}
	for _, s := range restart {
		log.Warn("reload: changed, needs a restart; not applied", "section", s)
	}
	if ch.Certificate {
		log.Info("reload: TLS certificate reloaded", "cert", next.TLS.CertFile)
	}
	if ch.ClientCA {
		log.Info("reload: TLS client CA reloaded", "client_ca", next.TLS.ClientCAFile)
	}
	r.live.TLS.CertFile, r.live.TLS.KeyFile, r.live.TLS.ClientCAFile = next.TLS.CertFile, next.TLS.KeyFile, next.TLS.ClientCAFile
	if next.Log.Level != r.live.Log.Level {
		if r.o.level == nil || r.o.levelFromFlag {
			log.Info("reload: log level kept: --log-level wins over the config file", "config", next.Log.Level)
		} else {
			r.o.level.Set(next.Log.Level)
			log.Info("reload: log level changed", "from", r.live.Log.Level, "to", next.Log.Level)
		}
		r.live.Log.Level = next.Log.Level
	}
	if len(restart) == 0 && !ch.Certificate && !ch.ClientCA {
		log.Info("reload: nothing changed in the configuration")
	}
}

package main

import (
	"context"
	"io"
	"log/slog"
	"path/filepath"
	"testing"
	"time"

	"github.com/hsmgate/hsmgate/hsm/hsmtest"
	"github.com/hsmgate/hsmgate/internal/auth"
	"github.com/hsmgate/hsmgate/internal/config"
	"github.com/hsmgate/hsmgate/internal/devtls"
	"github.com/hsmgate/hsmgate/internal/server"
	"github.com/hsmgate/hsmgate/keystore"
	"github.com/hsmgate/hsmgate/keystore/bbolt"
)

// handDeps opens what runServer opens before it wires the services, for
// tests that wire them (or some of them) by hand: a config with loopback
// listeners, dev TLS and a bbolt store in a temporary directory (then
// changed by mutate), the test HSM with a KEK, the store (wrapped by wrap
// when set; it closes with d) and a server that is not listening yet. It
// returns d, the TLS files and the dev root token d accepts.
func handDeps(t *testing.T, mutate func(*config.Config), wrap func(keystore.Store) keystore.Store) (*deps, devtls.Files, string) {
	t.Helper()
	dir := t.TempDir()
	files, _, err := devtls.Ensure(filepath.Join(dir, "tls"), devtls.DefaultHosts, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	c := config.Default()
	c.Listen = config.Listen{GRPC: "127.0.0.1:0", HTTP: "127.0.0.1:0"}
	c.TLS.CertFile, c.TLS.KeyFile = files.Cert, files.Key
	c.Store = config.Store{Backend: config.BackendBbolt, Path: filepath.Join(dir, "hsmgate.db")}
	if mutate != nil {
		mutate(c)
	}
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	m := hsmtest.Module(t)
	kek, _, err := m.EnsureKEK(context.Background(), "test-kek")
	if err != nil {
		t.Fatal(err)
	}
	bst, err := bbolt.Open(c.Store.Path, bbolt.Options{NoSync: true})
	if err != nil {
		t.Fatal(err)
	}
	var st keystore.Store = bst
	if wrap != nil {
		st = wrap(bst)
	}
	srv, err := server.New(server.FromConfig(c, log))
	if err != nil {
		bst.Close()
		t.Fatal(err)
	}
	root, err := newRootToken()
	if err != nil {
		bst.Close()
		t.Fatal(err)
	}
	d := &deps{Config: c, Log: log, HSM: m, KEK: kek, Store: st, Server: srv, Rules: auth.Table{}, DevRootToken: root, Start: time.Now()}
	d.OnClose(bst.Close)
	return d, files, root
}

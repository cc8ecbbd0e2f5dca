package main

import (
	"io"
	"log/slog"
	"path/filepath"
	"testing"
	"time"

	"github.com/hsmgate/hsmgate/internal/devtls"
	"github.com/hsmgate/hsmgate/internal/server"
	"github.com/hsmgate/hsmgate/keystore"
	"github.com/hsmgate/hsmgate/keystore/bbolt"
)

// builderServer is what a test of one builder (setupPKI, setupACME, ...)
// needs beside the HSM: a TLS server on loopback port 0 (not yet serving)
// with its dev CA, and a bbolt store, both in a fresh directory, closed at
// the end of the test.
func builderServer(t *testing.T) (dir string, files devtls.Files, srv *server.Server, st keystore.Store) {
	t.Helper()
	dir = t.TempDir()
	files, _, err := devtls.Ensure(filepath.Join(dir, "tls"), devtls.DefaultHosts, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	srv, err = server.New(server.Config{GRPCAddr: "127.0.0.1:0", HTTPAddr: "127.0.0.1:0", CertFile: files.Cert, KeyFile: files.Key,
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatal(err)
	}
	bs, err := bbolt.Open(filepath.Join(dir, "store.db"), bbolt.Options{NoSync: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { bs.Close() })
	return dir, files, srv, bs
}

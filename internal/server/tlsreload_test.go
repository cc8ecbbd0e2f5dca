package server

import (
	"bytes"
	"io"
	"log/slog"
	"os"
	"testing"
	"time"

	"github.com/hsmgate/hsmgate/internal/devtls"
)

func TestKeypairReload(t *testing.T) {
	dir := t.TempDir()
	now := time.Now()
	files, _, err := devtls.Ensure(dir, devtls.DefaultHosts, now)
	if err != nil {
		t.Fatal(err)
	}
	clock := now
	k, err := newKeypairReloader(files.Cert, files.Key, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	k.now = func() time.Time { return clock }
	k.checked = clock
	first, _ := k.GetCertificate(nil)

	// Replace the pair on disk (a renewal for another host set).
	if _, _, err := devtls.Ensure(dir, []string{"localhost", "renewed.test"}, now); err != nil {
		t.Fatal(err)
	}
	// Make sure the stamps differ even on a coarse-mtime file system.
	later := now.Add(time.Minute)
	for _, p := range []string{files.Cert, files.Key} {
		if err := os.Chtimes(p, later, later); err != nil {
			t.Fatal(err)
		}
	}
	if got, _ := k.GetCertificate(nil); !bytes.Equal(got.Certificate[0], first.Certificate[0]) {
		t.Error("reloaded before the reload interval")
	}
	clock = clock.Add(reloadInterval)
	got, _ := k.GetCertificate(nil)
	if bytes.Equal(got.Certificate[0], first.Certificate[0]) {
		t.Fatal("changed key pair not reloaded")
	}

	// A broken pair on disk keeps the previous one.
	if err := os.WriteFile(files.Key, []byte("garbage"), 0o600); err != nil {
		t.Fatal(err)
	}
	clock = clock.Add(reloadInterval)
	if again, _ := k.GetCertificate(nil); !bytes.Equal(again.Certificate[0], got.Certificate[0]) {
		t.Error("broken key pair replaced the working one")
	}
}

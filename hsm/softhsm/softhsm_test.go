package softhsm_test

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/hsmgate/hsmgate/hsm/softhsm"
)

func requireSoftHSM(t *testing.T) {
	t.Helper()
	_, err1 := softhsm.Library()
	_, err2 := softhsm.Util()
	if err1 != nil || err2 != nil {
		if os.Getenv("CI") != "" {
			t.Fatalf("SoftHSM2 is required in CI: %v %v", err1, err2)
		}
		t.Skip("SoftHSM2 not installed")
	}
}

func TestInitToken(t *testing.T) {
	requireSoftHSM(t)
	dir := t.TempDir()
	ctx := context.Background()
	conf, err := softhsm.InitToken(ctx, dir, "dev", "so-pin-1", "user-pin-1")
	if err != nil {
		t.Fatal(err)
	}
	t.Run("config", func(t *testing.T) {
		if want := filepath.Join(dir, "softhsm2.conf"); conf != want {
			t.Fatalf("conf path: got %q, want %q", conf, want)
		}
		b, err := os.ReadFile(conf)
		if err != nil {
			t.Fatal(err)
		}
		for _, want := range []string{"directories.tokendir = " + filepath.Join(dir, "tokens"), "objectstore.backend = file", "log.level = ERROR"} {
			if !strings.Contains(string(b), want) {
				t.Errorf("softhsm2.conf: got %q, want a line %q", b, want)
			}
		}
	})
	tokens := func() int {
		es, err := os.ReadDir(filepath.Join(dir, "tokens"))
		if err != nil {
			t.Fatal(err)
		}
		return len(es)
	}
	t.Run("idempotent", func(t *testing.T) {
		if _, err := softhsm.InitToken(ctx, dir, "dev", "so-pin-1", "user-pin-1"); err != nil {
			t.Fatal(err)
		}
		if got := tokens(); got != 1 {
			t.Fatalf("tokens after a second InitToken: got %d, want 1", got)
		}
	})
	t.Run("second label", func(t *testing.T) {
		if _, err := softhsm.InitToken(ctx, dir, "other", "so-pin-1", "user-pin-1"); err != nil {
			t.Fatal(err)
		}
		if got := tokens(); got != 2 {
			t.Fatalf("tokens: got %d, want 2", got)
		}
		cmd := exec.Command("softhsm2-util", "--show-slots")
		cmd.Env = append(os.Environ(), "SOFTHSM2_CONF="+conf)
		out, err := cmd.Output()
		if err != nil {
			t.Fatal(err)
		}
		for _, l := range []string{"dev", "other"} {
			if !strings.Contains(string(out), "Label:            "+l+" ") {
				t.Errorf("--show-slots: no token %q in %s", l, out)
			}
		}
	})
	t.Run("missing PIN", func(t *testing.T) {
		if _, err := softhsm.InitToken(ctx, dir, "x", "", "p"); err == nil {
			t.Fatal("InitToken without an SO PIN: got nil, want an error")
		}
	})
}

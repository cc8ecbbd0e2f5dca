package softhsm_test

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/hsmgate/hsmgate/hsm"
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

// TestInitTokenInProcess makes a token through this process's PKCS#11 calls
// (as `hsmgate dev` does, keeping the PINs off command lines), then opens
// it with hsm.Open, which initialises SoftHSM again in the same process.
func TestInitTokenInProcess(t *testing.T) {
	requireSoftHSM(t)
	t.Setenv("SOFTHSM2_CONF", "") // restored afterwards
	dir := t.TempDir()
	conf, err := softhsm.InitTokenInProcess(dir, "dev", "so-pin-1", "user-pin-1")
	if err != nil {
		t.Fatal(err)
	}
	if got := os.Getenv("SOFTHSM2_CONF"); got != conf {
		t.Fatalf("SOFTHSM2_CONF: got %q, want %q", got, conf)
	}
	if _, err := softhsm.InitTokenInProcess(dir, "dev", "so-pin-1", "user-pin-1"); err != nil {
		t.Fatalf("second call: %v", err)
	}
	if es, err := os.ReadDir(filepath.Join(dir, "tokens")); err != nil || len(es) != 1 {
		t.Fatalf("tokens after two calls: got %d (%v), want 1", len(es), err)
	}
	lib, err := softhsm.Library()
	if err != nil {
		t.Fatal(err)
	}
	open := func(pin string) (*hsm.Module, error) {
		return hsm.Open(context.Background(), hsm.Config{Library: lib, TokenLabel: "dev", PIN: pin, WaitTimeout: 10 * time.Second})
	}
	if m, err := open("wrong-pin"); err == nil {
		m.Close()
		t.Fatal("hsm.Open with a wrong user PIN: got nil, want an error")
	}
	m, err := open("user-pin-1")
	if err != nil {
		t.Fatalf("hsm.Open with the user PIN: %v", err)
	}
	defer m.Close()
	if _, err := softhsm.InitTokenInProcess(dir, "other", "so-pin-1", "user-pin-1"); err == nil || !strings.Contains(err.Error(), "already open") {
		t.Fatalf("while SoftHSM is open in the process: got %v, want an error saying so", err)
	}
	if _, err := softhsm.InitTokenInProcess(t.TempDir(), "x", "", "p"); err == nil {
		t.Fatal("without an SO PIN: got nil, want an error")
	}
}

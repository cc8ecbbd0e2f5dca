package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/hsmgate/hsmgate/hsm/softhsm"
	"github.com/hsmgate/hsmgate/internal/devtls"
)

// serverConfig makes a SoftHSM token, TLS files and a config file naming
// them, and returns the config path and the SOFTHSM2_CONF for the token.
func serverConfig(t *testing.T, extra string) (path string, env []string) {
	t.Helper()
	requireSoftHSM(t)
	dir := t.TempDir()
	lib, err := softhsm.Library()
	if err != nil {
		t.Fatal(err)
	}
	conf, err := softhsm.InitToken(context.Background(), filepath.Join(dir, "softhsm"), "init-test", "so-pin-1234", "user-pin-1234")
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "pin"), []byte("user-pin-1234\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	files, _, err := devtls.Ensure(filepath.Join(dir, "tls"), devtls.DefaultHosts, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	body := fmt.Sprintf(`listen:
  grpc: 127.0.0.1:0
  http: 127.0.0.1:0
tls:
  cert: %s
  key: %s
hsm:
  library: %s
  token_label: init-test
  pin_file: pin
store:
  path: hsmgate.db
%s`, files.Cert, files.Key, lib, extra)
	path = filepath.Join(dir, "hsmgate.yaml")
	if err := os.WriteFile(path, []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
	return path, []string{"SOFTHSM2_CONF=" + conf}
}

func TestInitIdempotent(t *testing.T) {
	cfg, env := serverConfig(t, "")
	for i, want := range []string{"created", "exists"} {
		out, errOut, code := run(t, env, "init", "--config", cfg)
		if code != 0 {
			t.Fatalf("init #%d: exit %d: %s", i+1, code, errOut)
		}
		if line := fmt.Sprintf("KEK %q in token %q: %s\n", "hsmgate-kek", "init-test", want); out != line {
			t.Errorf("init #%d: got %q, want %q", i+1, out, line)
		}
	}
}

func TestConfigErrorsExit2(t *testing.T) {
	requireSoftHSM(t)
	cfg, env := serverConfig(t, "")
	raw, err := os.ReadFile(cfg)
	if err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		name string
		body string
		want string
	}{
		{"literal PIN", strings.Replace(string(raw), "  pin_file: pin\n", "  pin: \"1234\"\n", 1), "hsm.pin: a PIN is never read from the config file"},
		{"unknown field", string(raw) + "colour: blue\n", "field colour not found"},
		{"bad backend", strings.Replace(string(raw), "store:\n", "store:\n  backend: mysql\n", 1), `store.backend: "mysql"`},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if err := os.WriteFile(cfg, []byte(tc.body), 0o600); err != nil {
				t.Fatal(err)
			}
			for _, verb := range []string{"server", "init"} {
				_, errOut, code := run(t, env, verb, "--config", cfg)
				if code != 2 || !strings.Contains(errOut, tc.want) {
					t.Errorf("%s: exit %d, stderr %q; want exit 2 and %q", verb, code, errOut, tc.want)
				}
				if strings.Contains(errOut, "1234") {
					t.Errorf("%s: the PIN is echoed: %q", verb, errOut)
				}
			}
		})
	}
}

func TestServerNeedsKEK(t *testing.T) {
	cfg, env := serverConfig(t, "")
	_, errOut, code := run(t, env, "server", "--config", cfg)
	if code != 1 || !strings.Contains(errOut, "run `hsmgate init --config FILE` once first") {
		t.Errorf("server without KEK: exit %d, stderr %q", code, errOut)
	}
}

package main

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/hsmgate/hsmgate/hsm/softhsm"
	"github.com/hsmgate/hsmgate/internal/devtls"
	"github.com/hsmgate/hsmgate/internal/syncbuf"
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
		line := fmt.Sprintf("KEK %q in token %q: %s\n", "hsmgate-kek", "init-test", want) +
			fmt.Sprintf("audit checkpoint key %q in token %q: %s\n", "hsmgate-audit-checkpoint", "init-test", want)
		if out != line {
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

var servingLine = regexp.MustCompile(`msg=serving (?:replica=\S+ )?grpc=(\S+) http=(\S+)`)

// serverProcess is `hsmgate server` run by a test as a process of its own.
type serverProcess struct {
	cmd                *exec.Cmd
	stderr             *syncbuf.Buffer
	waited             chan error // cmd.Wait's result; a reader puts it back
	grpcAddr, httpAddr string
}

// startServerProcess runs `hsmgate server --config cfg` with env (killed at
// the test's cleanup) and waits for its serving line.
func startServerProcess(t *testing.T, env []string, cfg string) *serverProcess {
	t.Helper()
	p := &serverProcess{cmd: hsmgateCmd(context.Background(), env, "server", "--config", cfg), stderr: &syncbuf.Buffer{}, waited: make(chan error, 1)}
	p.cmd.Stderr = p.stderr
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { p.waited <- p.cmd.Wait() }()
	t.Cleanup(func() {
		_ = p.cmd.Process.Kill()
		<-p.waited
		p.waited <- nil
	})
	waitLog(t, p.stderr, p.waited, "msg=serving ") // reload_test.go
	m := servingLine.FindStringSubmatch(p.stderr.String())
	if m == nil {
		t.Fatalf("server logged no addresses:\n%s", p.stderr)
	}
	p.grpcAddr, p.httpAddr = m[1], m[2]
	return p
}

func TestServerEndToEnd(t *testing.T) {
	cfg, env := serverConfig(t, "audit:\n  path: audit.log\n  hmac_key_file: audit-key\n")
	key := make([]byte, 32)
	if _, err := rand.Read(key); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(filepath.Dir(cfg), "audit-key"), key, 0o600); err != nil {
		t.Fatal(err)
	}
	if _, errOut, code := run(t, env, "init", "--config", cfg); code != 0 {
		t.Fatalf("init: exit %d: %s", code, errOut)
	}
	p := startServerProcess(t, env, cfg)
	cmd, stderr, waited, grpcAddr, httpAddr := p.cmd, p.stderr, p.waited, p.grpcAddr, p.httpAddr
	caCert := filepath.Join(filepath.Dir(cfg), "tls", "ca.pem")

	// Health and reflection are public.
	if g := grpcurlPath(t); g != "" {
		out, err := exec.Command(g, "-cacert", caCert, grpcAddr, "grpc.health.v1.Health/Check").CombinedOutput()
		if err != nil || !strings.Contains(string(out), `"status": "SERVING"`) {
			t.Errorf("grpcurl health: %v\n%s", err, out)
		}
	}
	// Status answers its public part without a credential; other calls
	// need one.
	clientEnv := []string{"HSMGATE_ADDR=" + grpcAddr, "HSMGATE_CACERT=" + caCert}
	out, errOut, code := run(t, clientEnv, "status")
	if code != 0 || !strings.Contains(out, "public view") || !strings.Contains(out, "hsm:     reachable") {
		t.Errorf("status without a token: exit %d, %q %q; want the public part", code, out, errOut)
	}
	_, errOut, code = run(t, clientEnv, "token", "lookup")
	if code != 1 || !strings.Contains(errOut, "Unauthenticated") {
		t.Errorf("token lookup without a token: exit %d, %q; want Unauthenticated", code, errOut)
	}
	_, errOut, code = run(t, append(clientEnv, "HSMGATE_TOKEN=hgs.not-a-real-token"), "status")
	if code != 1 || !strings.Contains(errOut, "Unauthenticated") {
		t.Errorf("status with a bogus token: exit %d, %q; want Unauthenticated", code, errOut)
	}
	// The HTTPS listener answers /healthz with the same certificate.
	pemBytes, err := os.ReadFile(caCert)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(pemBytes)
	hc := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}}
	resp, err := hc.Get("https://" + httpAddr + "/healthz")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Errorf("/healthz: got %d, want 200", resp.StatusCode)
	}

	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	err = <-waited
	waited <- err
	if err != nil || !strings.Contains(stderr.String(), "msg=stopped") {
		t.Errorf("server after SIGTERM: %v\n%s", err, stderr)
	}
}

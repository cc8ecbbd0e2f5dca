package main

import (
	"bufio"
	"bytes"
	"context"
	"net"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"go.etcd.io/etcd/server/v3/etcdmain"

	"github.com/hsmgate/hsmgate/client"
	"github.com/hsmgate/hsmgate/internal/config"
	"github.com/hsmgate/hsmgate/internal/syncbuf"
	hsmgatev1 "github.com/hsmgate/hsmgate/proto/hsmgate/v1"
)

// With HSMGATE_TEST_ETCD=1 the test binary is etcd (the same server the
// tests embed, as deploy/compose/etcd builds it), so that the compose
// script's test needs no etcd binary and no second build.
func init() {
	if os.Getenv("HSMGATE_TEST_ETCD") == "1" {
		etcdmain.Main(os.Args)
		os.Exit(0)
	}
}

const composeScript = "../../deploy/compose/replicas.sh"

// TestComposeScriptConfigs: the script parses, and the config files it
// renders for each HSM path load with config.Load (strict: an unknown field
// fails) and describe three replicas on the same etcd and token.
func TestComposeScriptConfigs(t *testing.T) {
	if out, err := exec.Command("bash", "-n", composeScript).CombinedOutput(); err != nil {
		t.Fatalf("bash -n %s: %v\n%s", composeScript, err, out)
	}
	for _, mode := range []string{"softhsm", "p11-kit"} {
		t.Run(mode, func(t *testing.T) {
			state := t.TempDir()
			out, err := exec.Command("bash", composeScript, "render", "--state", state, "--hsm", mode, "--port-base", "31000").CombinedOutput()
			if err != nil {
				if mode == "p11-kit" && bytes.Contains(out, []byte("p11-kit-client.so not found")) && os.Getenv("CI") == "" {
					t.Skipf("p11-kit-client.so not installed")
				}
				t.Fatalf("replicas.sh render: %v\n%s", err, out)
			}
			files := strings.Fields(string(out))
			if len(files) != 3 {
				t.Fatalf("render printed %q, want 3 config files", out)
			}
			grpcs, bases := map[string]bool{}, map[string]bool{}
			for i, f := range files {
				// The files name certificates that render does not make.
				c, err := config.Parse(readComposeFile(t, f), filepath.Dir(f))
				if err != nil {
					t.Fatalf("replica %d: %s: %v", i, f, err)
				}
				if c.Store.Backend != config.BackendEtcd || len(c.Store.Etcd.Endpoints) != 3 {
					t.Errorf("replica %d: store %s with %d endpoints, want etcd with 3", i, c.Store.Backend, len(c.Store.Etcd.Endpoints))
				}
				if c.HSM.TokenLabel != "hsmgate" || c.PKI.BaseURL == "" {
					t.Errorf("replica %d: token %q, pki.base_url %q; want the shared token and a base URL", i, c.HSM.TokenLabel, c.PKI.BaseURL)
				}
				wantLib := "libsofthsm2.so"
				if mode == "p11-kit" {
					wantLib = "p11-kit-client.so"
				}
				if filepath.Base(c.HSM.Library) != wantLib {
					t.Errorf("replica %d: hsm.library %s, want %s", i, c.HSM.Library, wantLib)
				}
				grpcs[c.Listen.GRPC] = true
				bases[c.PKI.BaseURL] = true
				if u, err := url.Parse(c.PKI.BaseURL); err != nil || u.Scheme != "http" || u.Hostname() == "localhost" || net.ParseIP(u.Hostname()) != nil {
					t.Errorf("replica %d: pki.base_url %q: want a plain-http front's name, not one replica's address or localhost", i, c.PKI.BaseURL)
				}
			}
			if len(bases) != 1 {
				t.Errorf("pki.base_url %v: want one for every replica", bases)
			}
			if len(grpcs) != 3 {
				t.Errorf("gRPC addresses %v: want 3 different", grpcs)
			}
		})
	}
}

// TestComposeScriptUp runs `replicas.sh up` (SoftHSM token directory shared
// by three hsmgate processes, three etcd processes; this test binary serves
// as both binaries), waits for its export lines, then creates a key through
// one replica, encrypts through a second, decrypts through the third, and
// stops the script with SIGTERM, which must stop everything it started.
func TestComposeScriptUp(t *testing.T) {
	if testing.Short() {
		t.Skip("starts 6 processes: not with -short")
	}
	for _, tool := range []string{"softhsm2-util", "openssl", "curl"} {
		if _, err := exec.LookPath(tool); err != nil {
			if os.Getenv("CI") != "" {
				t.Fatalf("%s is required in CI: %v", tool, err)
			}
			t.Skipf("%s not installed", tool)
		}
	}
	state := t.TempDir()
	base := freePortRun(t, 15)
	cmd := exec.Command("bash", composeScript, "up", "--state", state, "--port-base", base)
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "HSMGATE_") && !strings.HasPrefix(kv, "SOFTHSM2_CONF=") && !strings.HasPrefix(kv, "P11_KIT_") {
			cmd.Env = append(cmd.Env, kv)
		}
	}
	gorace := strings.TrimSpace("GORACE=" + os.Getenv("GORACE") + " atexit_sleep_ms=0")
	cmd.Env = append(cmd.Env,
		"HSMGATE_CMD=env HSMGATE_TEST_MAIN=1 "+os.Args[0],
		"ETCD_CMD=env HSMGATE_TEST_ETCD=1 "+os.Args[0],
		gorace)
	stderr := &syncbuf.Buffer{}
	cmd.Stderr = stderr
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	waited := make(chan error, 1)
	go func() { waited <- cmd.Wait() }()
	stopped := false
	stop := func() {
		if stopped {
			return
		}
		stopped = true
		_ = cmd.Process.Signal(syscall.SIGTERM)
		select {
		case err := <-waited:
			if err != nil {
				t.Errorf("replicas.sh after SIGTERM: %v\n%s", err, stderr)
			}
		case <-time.After(time.Minute): // a hang guard
			_ = cmd.Process.Kill()
			t.Errorf("replicas.sh still running a minute after SIGTERM\n%s", stderr)
		}
	}
	t.Cleanup(stop)

	env := map[string]string{}
	lines := make(chan string)
	go func() {
		defer close(lines)
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			lines <- sc.Text()
		}
	}()
	guard := time.After(3 * time.Minute) // a hang guard, not a timed assertion
wait:
	for {
		select {
		case l, ok := <-lines:
			if !ok {
				t.Fatalf("replicas.sh ended before it was ready:\n%s", stderr)
			}
			if kv, ok := strings.CutPrefix(l, "export "); ok {
				k, v, _ := strings.Cut(kv, "=")
				env[k] = v
			}
			if strings.HasPrefix(l, "# replicas ready") {
				break wait
			}
		case <-guard:
			t.Fatalf("replicas.sh not ready after 3 minutes:\n%s", stderr)
		}
	}
	go func() {
		for range lines {
		}
	}()

	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	var conns [3]hsmgatev1.TransitServiceClient
	for i, name := range []string{"HSMGATE_ADDR_R0", "HSMGATE_ADDR_R1", "HSMGATE_ADDR_R2"} {
		cc, err := client.Dial(client.Options{Addr: env[name], CACert: env["HSMGATE_CACERT"], Token: env["HSMGATE_TOKEN"]})
		if err != nil {
			t.Fatalf("%s=%q: %v", name, env[name], err)
		}
		defer cc.Close()
		conns[i] = hsmgatev1.NewTransitServiceClient(cc)
	}
	if _, err := conns[0].CreateKey(ctx, &hsmgatev1.CreateKeyRequest{Name: "compose", Type: hsmgatev1.TransitKeyType_TRANSIT_KEY_TYPE_AES256_GCM}); err != nil {
		t.Fatalf("CreateKey on r0: %v", err)
	}
	er, err := conns[1].Encrypt(ctx, &hsmgatev1.EncryptRequest{Name: "compose", Items: []*hsmgatev1.EncryptItem{{Plaintext: []byte("through three replicas")}}})
	if err != nil || len(er.GetResults()) != 1 {
		t.Fatalf("Encrypt on r1: %v %v", err, er.GetResults())
	}
	dr, err := conns[2].Decrypt(ctx, &hsmgatev1.DecryptRequest{Name: "compose", Items: []*hsmgatev1.DecryptItem{{Ciphertext: er.GetResults()[0].GetCiphertext()}}})
	if err != nil || len(dr.GetResults()) != 1 || string(dr.GetResults()[0].GetPlaintext()) != "through three replicas" {
		t.Fatalf("Decrypt on r2 of r1's ciphertext: %v %v", err, dr.GetResults())
	}
	stop()
	// Everything it started is gone: no listener left on its ports.
	for _, name := range []string{"HSMGATE_ADDR_R0", "HSMGATE_ADDR_R1", "HSMGATE_ADDR_R2"} {
		if c, err := net.DialTimeout("tcp", env[name], time.Second); err == nil {
			c.Close()
			t.Errorf("%s (%s) still accepts connections after the script stopped", name, env[name])
		}
	}
}

// freePortRun returns the first of n consecutive free loopback ports.
func freePortRun(t *testing.T, n int) string {
	t.Helper()
	for range 50 {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		base := ln.Addr().(*net.TCPAddr).Port
		ln.Close()
		if base+n > 65535 {
			continue
		}
		ok := true
		for p := base; p < base+n && ok; p++ {
			l, err := net.Listen("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(p)))
			if err != nil {
				ok = false
				continue
			}
			l.Close()
		}
		if ok {
			return strconv.Itoa(base)
		}
	}
	t.Fatalf("no run of %d free ports", n)
	return ""
}

func readComposeFile(t *testing.T, path string) []byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

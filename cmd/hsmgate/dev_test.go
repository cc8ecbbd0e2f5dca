package main

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"google.golang.org/protobuf/encoding/protojson"

	"github.com/hsmgate/hsmgate/hsm/softhsm"
	"github.com/hsmgate/hsmgate/keystore"
	kbolt "github.com/hsmgate/hsmgate/keystore/bbolt"
	hsmgatev1 "github.com/hsmgate/hsmgate/proto/hsmgate/v1"
)

// requireSoftHSM skips without SoftHSM2, except in CI where it must be there.
func requireSoftHSM(t *testing.T) {
	t.Helper()
	_, err1 := softhsm.Library()
	_, err2 := softhsm.Util()
	if err1 == nil && err2 == nil {
		return
	}
	if os.Getenv("CI") != "" {
		t.Fatalf("SoftHSM2 is required in CI: %v %v", err1, err2)
	}
	t.Skip("SoftHSM2 not installed (apt-get install softhsm2)")
}

// grpcurlPath finds grpcurl on PATH or in $GOPATH/bin; in CI it must be there.
func grpcurlPath(t *testing.T) string {
	t.Helper()
	if p, err := exec.LookPath("grpcurl"); err == nil {
		return p
	}
	gopath := os.Getenv("GOPATH")
	if gopath == "" {
		home, _ := os.UserHomeDir()
		gopath = filepath.Join(home, "go")
	}
	if p := filepath.Join(gopath, "bin", "grpcurl"); fileExists(p) {
		return p
	}
	if os.Getenv("CI") != "" {
		t.Fatal("grpcurl is required in CI (go install github.com/fullstorydev/grpcurl/cmd/grpcurl@v1.9.4)")
	}
	return ""
}

func fileExists(p string) bool {
	_, err := os.Stat(p)
	return err == nil
}

func TestDevEndToEnd(t *testing.T) {
	requireSoftHSM(t)
	state := filepath.Join(t.TempDir(), "state")

	// First run: everything is created.
	dev := startDev(t, state)
	for _, name := range []string{"HSMGATE_ADDR", "HSMGATE_HTTP_ADDR", "HSMGATE_CACERT", "HSMGATE_TOKEN"} {
		if dev.exports[name] == "" {
			t.Fatalf("no export line for %s in:\n%s", name, strings.Join(dev.lines, "\n"))
		}
	}
	for _, l := range dev.lines {
		if !exportLine.MatchString(l) && !strings.HasPrefix(l, "# ") {
			t.Errorf("stdout line %q is neither `export NAME=value` nor a `# ` comment", l)
		}
	}
	if got := dev.exports["HSMGATE_CACERT"]; !filepath.IsAbs(got) || got != filepath.Join(state, "tls", "ca.pem") {
		t.Errorf("HSMGATE_CACERT: got %q, want the absolute %s", got, filepath.Join(state, "tls", "ca.pem"))
	}
	if tok := dev.exports["HSMGATE_TOKEN"]; !strings.HasPrefix(tok, "hgs.") || len(tok) != 4+43 {
		t.Errorf("HSMGATE_TOKEN %q: want hgs. and 43 base64url characters", tok)
	}
	if strings.Contains(dev.stderr.String(), dev.exports["HSMGATE_TOKEN"]) {
		t.Error("the root token appears in the log")
	}
	envFile, err := os.ReadFile(filepath.Join(state, "env"))
	if err != nil {
		t.Fatal(err)
	}
	if want := strings.Join(dev.lines[:len(dev.exports)], "\n") + "\n"; string(envFile) != want {
		t.Errorf("env file:\n%s\nwant the export lines:\n%s", envFile, want)
	}
	for _, f := range []string{"root-token", "user-pin", "so-pin", "env", "tls/ca-key.pem", "tls/server-key.pem", "hsmgate.db"} {
		st, err := os.Stat(filepath.Join(state, f))
		if err != nil {
			t.Fatal(err)
		}
		if mode := st.Mode().Perm(); mode != 0o600 {
			t.Errorf("%s: mode %o, want 600", f, mode)
		}
	}
	if !strings.Contains(dev.stderr.String(), "created=true") {
		t.Errorf("first run did not create the KEK:\n%s", dev.stderr)
	}
	checkStatus(t, dev)
	checkHealthGrpcurl(t, dev)
	checkVaultDoor(t, dev)
	ca1, _ := os.ReadFile(dev.exports["HSMGATE_CACERT"])
	dev.stop(t)

	// Leave a mark in the store while the server is down.
	st, err := kbolt.Open(filepath.Join(state, "hsmgate.db"), kbolt.Options{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := st.Put(context.Background(), "test/marker", []byte("kept"), keystore.AnyRevision); err != nil {
		t.Fatal(err)
	}
	st.Close()

	// Second run on the same state: token, CA, root token, KEK and store reused.
	dev2 := startDev(t, state)
	if got, want := dev2.exports["HSMGATE_TOKEN"], dev.exports["HSMGATE_TOKEN"]; got != want {
		t.Errorf("root token changed across restarts")
	}
	if ca2, _ := os.ReadFile(dev2.exports["HSMGATE_CACERT"]); string(ca2) != string(ca1) {
		t.Error("dev CA changed across restarts")
	}
	for _, want := range []string{"created=false", "new_ca=false"} {
		if !strings.Contains(dev2.stderr.String(), want) {
			t.Errorf("restart log lacks %s:\n%s", want, dev2.stderr)
		}
	}
	checkStatus(t, dev2)
	dev2.stop(t)

	st, err = kbolt.Open(filepath.Join(state, "hsmgate.db"), kbolt.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	if e, err := st.Get(context.Background(), "test/marker"); err != nil || string(e.Value) != "kept" {
		t.Errorf("store not reused across restarts: %v %q", err, e.Value)
	}
}

// checkStatus runs `hsmgate status` (text and JSON) with the dev exports.
func checkStatus(t *testing.T, dev *devProcess) {
	t.Helper()
	out, errOut, code := run(t, dev.env(), "status")
	if code != 0 {
		t.Fatalf("hsmgate status: exit %d\n%s\n%s", code, out, errOut)
	}
	for _, want := range []string{`hsm:     reachable (token "hsmgate-dev"`, `store:   reachable (backend "bbolt"`, "version: "} {
		if !strings.Contains(out, want) {
			t.Errorf("hsmgate status output lacks %q:\n%s", want, out)
		}
	}
	out, errOut, code = run(t, dev.env(), "status", "--json")
	if code != 0 {
		t.Fatalf("hsmgate status --json: exit %d\n%s", code, errOut)
	}
	var resp hsmgatev1.GetStatusResponse
	if err := protojson.Unmarshal([]byte(out), &resp); err != nil {
		t.Fatalf("status --json: %v\n%s", err, out)
	}
	if !resp.GetHsm().GetReachable() || !resp.GetStore().GetReachable() || resp.GetStore().GetName() != "bbolt" {
		t.Errorf("status --json: got %v, want HSM and bbolt store reachable", &resp)
	}
}

// checkHealthGrpcurl asks the health service through grpcurl and reflection.
func checkHealthGrpcurl(t *testing.T, dev *devProcess) {
	t.Helper()
	g := grpcurlPath(t)
	if g == "" {
		t.Log("grpcurl not installed: health check through grpcurl skipped")
		return
	}
	out, err := exec.Command(g, "-cacert", dev.exports["HSMGATE_CACERT"], dev.exports["HSMGATE_ADDR"], "grpc.health.v1.Health/Check").CombinedOutput()
	if err != nil || !strings.Contains(string(out), `"status": "SERVING"`) {
		t.Errorf("grpcurl health: %v\n%s", err, out)
	}
	out, err = exec.Command(g, "-cacert", dev.exports["HSMGATE_CACERT"], dev.exports["HSMGATE_ADDR"], "list").CombinedOutput()
	if err != nil || !strings.Contains(string(out), "hsmgate.v1.SystemService") {
		t.Errorf("grpcurl list: %v\n%s", err, out)
	}
}

func TestStatusWithoutServer(t *testing.T) {
	_, errOut, code := run(t, []string{"HSMGATE_ADDR=127.0.0.1:1"}, "status", "--timeout", "5s")
	if code != 1 || !strings.HasPrefix(errOut, "hsmgate: status: Unavailable: ") {
		t.Errorf("status against nothing: exit %d, stderr %q; want exit 1 and Unavailable", code, errOut)
	}
}

// TestDevRefusesAnOpenStateDir: the state directory holds the PINs and the
// root token, so one that other users can read is refused, not used.
func TestDevRefusesAnOpenStateDir(t *testing.T) {
	requireSoftHSM(t)
	state := filepath.Join(t.TempDir(), "state")
	if err := os.Mkdir(state, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(state, 0o755); err != nil { // whatever the umask
		t.Fatal(err)
	}
	_, stderr, code := run(t, nil, "dev", "--state", state, "--grpc-addr", "127.0.0.1:0", "--http-addr", "127.0.0.1:0")
	if code == 0 || !strings.Contains(stderr, "chmod 700 "+state) {
		t.Fatalf("dev with a 0755 state directory: exit %d, stderr:\n%s\nwant a failure naming chmod 700", code, stderr)
	}
	if es, err := os.ReadDir(state); err != nil || len(es) != 0 {
		t.Fatalf("state directory after the refusal: %d entries (%v), want none written", len(es), err)
	}
}

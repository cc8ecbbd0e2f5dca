package main

import (
	"bytes"
	"context"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/hsmgate/hsmgate/client"
	"github.com/hsmgate/hsmgate/hsm"
	"github.com/hsmgate/hsmgate/hsm/hsmtest"
	"github.com/hsmgate/hsmgate/internal/audit"
	hsmgatev1 "github.com/hsmgate/hsmgate/proto/hsmgate/v1"
)

// TestAuditVerifyCmd: `audit verify` checks the keyed chain across rotated
// files against the signed checkpoint; a deleted line, a cut tail, a wrong
// key, a pinned key that did not sign, and a missing HMAC key all fail.
func TestAuditVerifyCmd(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "audit.log")
	keyFile := filepath.Join(dir, "key")
	key := bytes.Repeat([]byte{1}, 32)
	os.WriteFile(keyFile, key, 0o600)
	m := hsmtest.Module(t)
	signer, err := auditSigner(context.Background(), m, true)
	if err != nil {
		t.Fatal(err)
	}
	l, err := audit.OpenWith(audit.Config{Path: path, MaxBytes: 1500, CheckpointInterval: -1}, key,
		audit.Options{Signer: signer, SignerLabel: audit.CheckpointKeyLabel})
	if err != nil {
		t.Fatal(err)
	}
	for range 20 {
		if err := l.Write(&audit.Entry{Type: "request", Method: "/m"}); err != nil {
			t.Fatal(err)
		}
	}
	l.Close()
	pemFile := func(name string, pub any) string {
		der, _ := x509.MarshalPKIXPublicKey(pub)
		p := filepath.Join(dir, name)
		os.WriteFile(p, pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der}), 0o600)
		return p
	}
	good := pemFile("good.pem", signer.Public())
	if err := m.GenerateKey(context.Background(), "other", hsm.ECDSAP256); err != nil {
		t.Fatal(err)
	}
	other, _ := m.Signer(context.Background(), "other")
	bad := pemFile("other.pem", other.Public())

	rotated, _ := filepath.Glob(path + ".*")
	files := append(rotated, path)
	if len(files) < 3 {
		t.Fatalf("got %d files, want a rotation", len(files))
	}
	verify := func(extra ...string) (string, error) {
		out, _, err := execRoot(t, append(append([]string{"audit", "verify"}, extra...), files...)...)
		return out, err
	}
	out, err := verify("--hmac-key-file", keyFile, "--checkpoint-key", good)
	if err != nil || !strings.HasPrefix(out, "ok: ") || !strings.Contains(out, "checkpoint seq") || !strings.Contains(out, "(the key given)") {
		t.Fatalf("verify intact: got %q, %v", out, err)
	}
	if n := strings.Count(strings.Join(readAll(t, files), ""), "\n"); !strings.HasPrefix(out, fmt.Sprintf("ok: %d lines", n)) {
		t.Errorf("got %q, want ok: %d lines", out, n)
	}
	t.Setenv(audit.DefaultHMACKeyEnv, "")
	fails := []struct {
		name  string
		args  []string
		setup func() func()
		want  string
	}{
		{"no key", nil, nil, "no HMAC key"},
		{"another key", []string{"--hmac-key-file", writeKey(t, dir, 2)}, nil, "does not verify"},
		{"checkpoint signed by another key", []string{"--hmac-key-file", keyFile, "--checkpoint-key", bad}, nil, "another key"},
		{"head not reached", []string{"--hmac-key-file", keyFile, "--head", "9999:" + strings.Repeat("ab", 32)}, nil, "truncated"},
		{"a line deleted", []string{"--hmac-key-file", keyFile}, func() func() {
			return rewrite(t, files[0], func(ls []string) []string { return append(ls[:1:1], ls[2:]...) })
		}, files[0] + ": line 2: missing"},
		{"tail cut", []string{"--hmac-key-file", keyFile}, func() func() {
			return rewrite(t, path, func(ls []string) []string { return ls[:len(ls)-1] })
		}, "truncated"},
	}
	for _, c := range fails {
		t.Run(c.name, func(t *testing.T) {
			if c.setup != nil {
				defer c.setup()()
			}
			out, err := verify(c.args...)
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Errorf("got %q, %v, want an error containing %q", out, err, c.want)
			}
		})
	}
}

// TestAuditDeletedLogStopsServer: deleting the audit log under a running
// server makes every later request fail (Unavailable, without the path),
// and the restarted server refuses to start a new chain over the checkpoint.
func TestAuditDeletedLogStopsServer(t *testing.T) {
	requireSoftHSM(t)
	state := filepath.Join(t.TempDir(), "state")
	dev := startDev(t, state)
	if _, errOut, code := run(t, dev.env(), "status"); code != 0 {
		t.Fatalf("status: exit %d: %s", code, errOut)
	}
	logPath := filepath.Join(state, "audit.log")
	if err := os.Remove(logPath); err != nil {
		t.Fatal(err)
	}
	for range 2 {
		_, errOut, code := run(t, dev.env(), "status")
		if code == 0 || !strings.Contains(errOut, "Unavailable") || strings.Contains(errOut, logPath) {
			t.Errorf("status after the log was deleted: exit %d, stderr %q; want Unavailable, no path", code, errOut)
		}
	}
	dev.stop(t)
	_, errOut, code := run(t, nil, "dev", "--state", state, "--grpc-addr", "127.0.0.1:0", "--http-addr", "127.0.0.1:0")
	if code == 0 || !strings.Contains(errOut, "does not continue its chain") {
		t.Errorf("restart over a deleted log: exit %d, stderr %q; want a refusal", code, errOut)
	}
}

// TestAuditFIFORefused: a FIFO as the audit path stops the server at start,
// without hanging.
func TestAuditFIFORefused(t *testing.T) {
	requireSoftHSM(t)
	cfg, env := serverConfig(t, "audit:\n  path: audit.fifo\n  hmac_key_file: audit-key\n")
	dir := filepath.Dir(cfg)
	os.WriteFile(filepath.Join(dir, "audit-key"), bytes.Repeat([]byte{5}, 32), 0o600)
	if err := syscall.Mkfifo(filepath.Join(dir, "audit.fifo"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, errOut, code := run(t, env, "init", "--config", cfg); code != 0 {
		t.Fatalf("init: exit %d: %s", code, errOut)
	}
	_, errOut, code := run(t, env, "server", "--config", cfg, "--grpc-addr", "127.0.0.1:0", "--http-addr", "127.0.0.1:0")
	if code == 0 || !strings.Contains(errOut, "not a regular file") {
		t.Errorf("server with a FIFO audit path: exit %d, stderr %q; want a refusal", code, errOut)
	}
}

func readAll(t *testing.T, files []string) []string {
	var out []string
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, string(b))
	}
	return out
}

func writeKey(t *testing.T, dir string, b byte) string {
	p := filepath.Join(dir, "key"+string(rune('0'+b)))
	os.WriteFile(p, bytes.Repeat([]byte{b}, 32), 0o600)
	return p
}

// rewrite edits the lines of a file and returns a function that restores it.
func rewrite(t *testing.T, path string, edit func([]string) []string) func() {
	orig, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	ls := strings.SplitAfter(strings.TrimSuffix(string(orig), "\n"), "\n")
	for i := range ls {
		ls[i] = strings.TrimSuffix(ls[i], "\n") + "\n"
	}
	os.WriteFile(path, []byte(strings.Join(edit(ls), "")), 0o600)
	return func() { os.WriteFile(path, orig, 0o600) }
}

// TestAuditDeletedUnderLoad: with requests in flight from several clients,
// deleting the audit log makes every request that starts after the deletion
// fail (none is answered without a record), and the server counts the
// requests answered before it.
func TestAuditDeletedUnderLoad(t *testing.T) {
	requireSoftHSM(t)
	state := filepath.Join(t.TempDir(), "state")
	dev := startDev(t, state)
	cc, err := client.Dial(client.Options{Addr: dev.exports["HSMGATE_ADDR"], CACert: dev.exports["HSMGATE_CACERT"], Token: dev.exports["HSMGATE_TOKEN"]})
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()
	sys := hsmgatev1.NewSystemServiceClient(cc)
	var deleted atomic.Bool
	var before, answeredAfter, failedAfter, inFlightFailed atomic.Int64
	var wg sync.WaitGroup
	ctx := context.Background()
	for range 4 {
		wg.Go(func() {
			for after := 0; after < 20; {
				started := deleted.Load()
				if started {
					after++
				}
				_, err := sys.GetStatus(ctx, &hsmgatev1.GetStatusRequest{})
				switch {
				case !started && err == nil:
					before.Add(1)
				case started && err == nil:
					answeredAfter.Add(1)
				case started:
					failedAfter.Add(1)
					if status.Code(err) != codes.Unavailable {
						t.Errorf("after the deletion: got %v, want Unavailable", err)
					}
				default: // in flight while the file was deleted: either outcome
					inFlightFailed.Add(1)
				}
			}
		})
	}
	for before.Load() < 200 {
		runtime.Gosched()
	}
	if err := os.Remove(filepath.Join(state, "audit.log")); err != nil {
		t.Fatal(err)
	}
	deleted.Store(true)
	wg.Wait()
	t.Logf("answered before the deletion: %d; in flight and failed: %d; started after it: %d answered, %d failed",
		before.Load(), inFlightFailed.Load(), answeredAfter.Load(), failedAfter.Load())
	if answeredAfter.Load() != 0 {
		t.Errorf("got %d requests answered after the audit log was deleted, want 0", answeredAfter.Load())
	}
}

package main

import (
	"bytes"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// TestErrorFormatEveryVerb: a failing verb of every family prints exactly
// one line, "hsmgate: <verb>: <Code>: <message>", whatever failed (the
// server, the command line, a local file), and never the raw "rpc error:"
// form.
func TestErrorFormatEveryVerb(t *testing.T) {
	requireSoftHSM(t)
	dir := t.TempDir()
	dev := startDev(t, filepath.Join(dir, "state"))
	env := dev.env()
	pol := filepath.Join(dir, "typo.yaml")
	if err := os.WriteFile(pol, []byte("rules:\n  - resource: transit/keys/x\n    capabilites: [encrypt]\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	key := filepath.Join(dir, "not-a-key.pub")
	if err := os.WriteFile(key, []byte("nonsense\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		args []string
		env  []string
		verb string
		code string
		want string // in the message
	}{
		{[]string{"transit", "encrypt", "nosuch", "--in", pol}, env, "transit encrypt", "NotFound", `"nosuch"`},
		{[]string{"transit", "keys", "show", "nosuch"}, env, "transit keys show", "NotFound", `"nosuch"`},
		{[]string{"pki", "issue", "nosuch", "--cn", "a.example.com", "--out-dir", dir}, env, "pki issue", "NotFound", `"nosuch"`},
		{[]string{"pki", "revoke", "SERIAL"}, env, "pki revoke", "InvalidArgument", "SERIAL"},
		{[]string{"pki", "issue", "web", "--cn", "a.example.com"}, env, "pki issue", "InvalidArgument", `"out-dir" not set`},
		{[]string{"ssh", "role", "read", "nosuch"}, env, "ssh role read", "NotFound", "nosuch"},
		{[]string{"ssh", "sign", "--role", "nosuch", key}, env, "ssh sign", "InvalidArgument", "not a public key"},
		{[]string{"status", "--token", "hgs.bogus"}, env, "status", "Unauthenticated", "auth: unauthenticated"},
		{[]string{"status", "--bogus"}, env, "status", "InvalidArgument", "--bogus"},
		{[]string{"policy", "read", "nosuch"}, env, "policy read", "NotFound", `"nosuch"`},
		{[]string{"policy", "write", "app", pol}, env, "policy write", "InvalidArgument", `line 3: unknown field "capabilites" in rule 1`},
		{[]string{"token", "create", "--policy", "nosuchpolicy"}, env, "token create", "InvalidArgument", `policy "nosuchpolicy" does not exist`},
		{[]string{"audit", "verify", filepath.Join(dir, "none.log")}, env, "audit verify", "NotFound", "none.log"},
		{[]string{"dev", "--print-env", "--state", filepath.Join(dir, "nostate")}, nil, "dev", "FailedPrecondition", "no hsmgate dev is running"},
	}
	for _, tc := range tests {
		t.Run(strings.Join(tc.args, " "), func(t *testing.T) {
			out, errOut, code := run(t, tc.env, tc.args...)
			if code == 0 {
				t.Fatalf("got exit 0 (stdout %q), want a failure", out)
			}
			prefix := "hsmgate: " + tc.verb + ": " + tc.code + ": "
			if !strings.HasPrefix(errOut, prefix) || strings.Count(errOut, "\n") != 1 {
				t.Errorf("got stderr %q, want one line starting %q", errOut, prefix)
			}
			if !strings.Contains(errOut, tc.want) || strings.Contains(errOut, "rpc error") || strings.Contains(errOut, "desc =") {
				t.Errorf("got stderr %q, want %q in it and no raw rpc error", errOut, tc.want)
			}
			if strings.Contains(errOut, "struct {") {
				t.Errorf("got stderr %q: a Go type", errOut)
			}
		})
	}
	t.Run("no token was created for the unknown policy", func(t *testing.T) {
		out, errOut, code := run(t, env, "token", "list")
		if code != 0 || strings.Contains(out, "nosuchpolicy") {
			t.Errorf("token list: exit %d, %q %q; want no token with nosuchpolicy", code, out, errOut)
		}
	})
	t.Run("print-env of the running server", func(t *testing.T) {
		out, errOut, code := run(t, nil, "dev", "--print-env", "--state", filepath.Join(dir, "state"))
		if code != 0 {
			t.Fatalf("exit %d: %s", code, errOut)
		}
		got := map[string]string{}
		for _, l := range strings.Split(strings.TrimSpace(out), "\n") {
			m := exportLine.FindStringSubmatch(l)
			if m == nil {
				t.Fatalf("got line %q, want export lines only", l)
			}
			got[m[1]] = m[2]
		}
		if len(got) != len(dev.exports) || got["HSMGATE_ADDR"] != dev.exports["HSMGATE_ADDR"] || got["HSMGATE_TOKEN"] != dev.exports["HSMGATE_TOKEN"] {
			t.Errorf("got %v, want the server's %v", got, dev.exports)
		}
	})
	dev.stop(t)
	t.Run("print-env after the server stopped", func(t *testing.T) {
		_, errOut, code := run(t, nil, "dev", "--print-env", "--state", filepath.Join(dir, "state"))
		if code != 1 || !strings.Contains(errOut, "no hsmgate dev is running") {
			t.Errorf("got exit %d, %q; want a clear failure", code, errOut)
		}
	})
}

// TestDevListenAddrFallback: a taken default port gives way to a free
// one, and says so; a port given with a flag is kept (the server then
// reports it taken).
func TestDevListenAddrFallback(t *testing.T) {
	busy, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()
	taken := busy.Addr().String()
	var msg bytes.Buffer
	got, err := devListenAddr(&msg, "gRPC", taken, true)
	if err != nil || got != "127.0.0.1:0" {
		t.Errorf("taken default: got %q, %v; want 127.0.0.1:0", got, err)
	}
	if !regexp.MustCompile(`^hsmgate dev: ` + regexp.QuoteMeta(taken) + ` is in use .*free port`).MatchString(msg.String()) {
		t.Errorf("got message %q, want one naming %s and the free port", msg.String(), taken)
	}
	msg.Reset()
	if got, err := devListenAddr(&msg, "gRPC", taken, false); err != nil || got != taken || msg.Len() != 0 {
		t.Errorf("taken, given by flag: got %q, %v, %q; want it unchanged and silent", got, err, msg.String())
	}
	free := freeAddr(t)
	if got, err := devListenAddr(&msg, "gRPC", free, true); err != nil || got != free || msg.Len() != 0 {
		t.Errorf("free default: got %q, %v, %q; want it unchanged and silent", got, err, msg.String())
	}
}

func freeAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	a := ln.Addr().String()
	ln.Close()
	return a
}

// TestDevPortTakenError: a port given with a flag that is taken is
// reported as such, with the hint, and not as an engine's failure (it
// used to start with a stray "pki:").
func TestDevPortTakenError(t *testing.T) {
	requireSoftHSM(t)
	busy, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()
	_, errOut, code := run(t, nil, "dev", "--state", filepath.Join(t.TempDir(), "state"), "--grpc-addr", "127.0.0.1:0", "--http-addr", busy.Addr().String())
	lines := strings.Split(strings.TrimSpace(errOut), "\n")
	last := lines[len(lines)-1]
	want := "hsmgate: dev: FailedPrecondition: cannot listen: server: listen HTTP: "
	if code != 1 || !strings.HasPrefix(last, want) || !strings.Contains(last, "pick free ports") {
		t.Errorf("got exit %d, last line %q; want exit 1 and %q... with the hint", code, last, want)
	}
}

package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestAuthVerbsEndToEnd drives policy and token verbs against `hsmgate dev`
// (the auth hook installed, the dev root token accepted).
func TestAuthVerbsEndToEnd(t *testing.T) {
	requireSoftHSM(t)
	state := filepath.Join(t.TempDir(), "state")
	dev := startDev(t, state)
	rootEnv := dev.env()
	noToken := []string{"HSMGATE_ADDR=" + dev.exports["HSMGATE_ADDR"], "HSMGATE_CACERT=" + dev.exports["HSMGATE_CACERT"]}
	mustRun := func(env []string, args ...string) string {
		t.Helper()
		out, errOut, code := run(t, env, args...)
		if code != 0 {
			t.Fatalf("hsmgate %v: exit %d, stderr:\n%s", args, code, errOut)
		}
		return out
	}
	if _, errOut, code := run(t, noToken, "token", "lookup"); code == 0 || !strings.Contains(errOut, "Unauthenticated") {
		t.Errorf("token lookup without a token: got exit %d, stderr %q, want Unauthenticated", code, errOut)
	}
	if out := mustRun(noToken, "status"); !strings.Contains(out, "state:   serving") || !strings.Contains(out, "public view") || strings.Contains(out, "hsmgate-dev") {
		t.Errorf("status without a token: got %q, want the public part only", out)
	}
	pol := filepath.Join(t.TempDir(), "status.yaml")
	os.WriteFile(pol, []byte("rules:\n  - resource: sys/status\n    capabilities: [read]\n"), 0o600)
	mustRun(rootEnv, "policy", "write", "status-reader", pol)
	if out := mustRun(rootEnv, "policy", "list"); strings.TrimSpace(out) != "status-reader" {
		t.Errorf("policy list: got %q, want status-reader", out)
	}
	if out := mustRun(rootEnv, "policy", "read", "status-reader"); !strings.Contains(out, "sys/status") {
		t.Errorf("policy read: got %q, want the rule", out)
	}
	tok := strings.TrimSpace(mustRun(rootEnv, "token", "create", "--policy", "status-reader", "--ttl", "1h", "--renewable", "--display-name", "bot", "--secret-only"))
	if !strings.HasPrefix(tok, "hgs.") {
		t.Fatalf("token create --secret-only: got %q", tok)
	}
	if out := mustRun(rootEnv, "token", "list"); !strings.Contains(out, "bot  [status-reader]") || !strings.Contains(out, "root (root)") || strings.Contains(out, tok) {
		t.Errorf("token list: got %q, want bot and root, no secret", out)
	}
	botEnv := append(append([]string(nil), noToken...), "HSMGATE_TOKEN="+tok)
	if out := mustRun(botEnv, "status"); !strings.Contains(out, `token "hsmgate-dev"`) || strings.Contains(out, "public view") {
		t.Errorf("status with read on sys/status: got %q, want the full status", out)
	}
	if out := mustRun(botEnv, "token", "lookup"); !strings.Contains(out, "bot (token)") || strings.Contains(out, tok) {
		t.Errorf("token lookup: got %q, want the identity and no secret", out)
	}
	if _, errOut, code := run(t, botEnv, "policy", "list"); code == 0 || !strings.Contains(errOut, "PermissionDenied") {
		t.Errorf("policy list as bot: got exit %d, stderr %q, want PermissionDenied", code, errOut)
	}
	mustRun(botEnv, "token", "renew")
	mustRun(botEnv, "token", "revoke", "--self")
	if _, errOut, code := run(t, botEnv, "token", "lookup"); code == 0 || !strings.Contains(errOut, "Unauthenticated") {
		t.Errorf("token lookup after revoke: got exit %d, stderr %q, want Unauthenticated", code, errOut)
	}
	if _, errOut, code := run(t, botEnv, "status"); code == 0 || !strings.Contains(errOut, "Unauthenticated") {
		t.Errorf("status with a revoked token: got exit %d, stderr %q, want Unauthenticated (a bad credential is refused, not downgraded)", code, errOut)
	}
	dev.stop(t)
	for what, secret := range map[string]string{"bot token": tok, "root token": dev.exports["HSMGATE_TOKEN"]} {
		if strings.Contains(dev.stderr.String(), secret) {
			t.Errorf("the %s appears in the server log", what)
		}
	}
	// Dev mode audits to STATE/audit.log; the chain verifies and holds no token.
	logPath := filepath.Join(state, "audit.log")
	out := mustRun(nil, "audit", "verify", logPath)
	if !strings.HasPrefix(out, "ok: ") {
		t.Errorf("audit verify: got %q", out)
	}
	b, err := os.ReadFile(logPath)
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(string(b), tok) || strings.Contains(string(b), dev.exports["HSMGATE_TOKEN"]) {
		t.Errorf("a token appears in the audit log")
	}
	for _, want := range []string{`"code":"Unauthenticated"`, `"code":"PermissionDenied"`, `"method":"/hsmgate.v1.AuthService/CreateToken"`, `"name":"bot"`} {
		if !strings.Contains(string(b), want) {
			t.Errorf("audit log lacks %s", want)
		}
	}
}

package main

import (
	"context"
	"net/netip"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/hsmgate/hsmgate/internal/auth"
	"github.com/hsmgate/hsmgate/keystore/bbolt"
)

// TestAuthAppRoleVerbs drives `hsmgate auth approle ...` against `hsmgate
// dev`, logs in with the secret ID it printed (through the auth package, over
// the dev store while the server is stopped: the HTTP login is the Vault
// door's), and uses the login token against the restarted server.
func TestAuthAppRoleVerbs(t *testing.T) {
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
	pol := filepath.Join(t.TempDir(), "status.yaml")
	if err := os.WriteFile(pol, []byte("rules:\n  - resource: sys/status\n    capabilities: [read]\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	mustRun(rootEnv, "policy", "write", "status-reader", pol)

	out := mustRun(rootEnv, "auth", "approle", "write", "ci", "--policy", "status-reader", "--token-ttl", "20m",
		"--secret-id-ttl", "1h", "--secret-id-num-uses", "2", "--bind-cidr", "127.0.0.0/8")
	m := regexp.MustCompile(`role_id ([0-9a-f-]{36})`).FindStringSubmatch(out)
	if m == nil {
		t.Fatalf("approle write: got %q, want the role_id", out)
	}
	roleID := m[1]
	if got := strings.TrimSpace(mustRun(rootEnv, "auth", "approle", "role-id", "ci")); got != roleID {
		t.Errorf("approle role-id: got %q, want %q", got, roleID)
	}
	if got := strings.TrimSpace(mustRun(rootEnv, "auth", "approle", "list")); got != "ci" {
		t.Errorf("approle list: got %q, want ci", got)
	}
	if got := mustRun(rootEnv, "auth", "approle", "read", "ci"); !regexp.MustCompile(`"secretIdNumUses":\s+2`).MatchString(got) || !strings.Contains(got, "127.0.0.0/8") {
		t.Errorf("approle read: got %q", got)
	}

	secret := strings.TrimSpace(mustRun(rootEnv, "auth", "approle", "secret-id", "create", "ci", "--meta", "host=runner-1", "--secret-only"))
	if len(secret) != 43 {
		t.Fatalf("secret-id create --secret-only: got %q", secret)
	}
	created := mustRun(rootEnv, "auth", "approle", "secret-id", "create", "ci")
	acc := regexp.MustCompile(`secret_id_accessor: ([0-9a-f]{32})`).FindStringSubmatch(created)
	if acc == nil {
		t.Fatalf("secret-id create: got %q, want an accessor", created)
	}
	listed := mustRun(rootEnv, "auth", "approle", "secret-id", "list", "ci")
	if strings.Count(listed, "\n") != 2 || !strings.Contains(listed, acc[1]+"  ") || !strings.Contains(listed, "uses_left=2") ||
		!strings.Contains(listed, "host=runner-1") || strings.Contains(listed, secret) {
		t.Errorf("secret-id list: got %q, want two accessors with uses and metadata, no secret", listed)
	}
	mustRun(rootEnv, "auth", "approle", "secret-id", "destroy", "ci", acc[1])
	if listed := mustRun(rootEnv, "auth", "approle", "secret-id", "list", "ci"); strings.Contains(listed, acc[1]) {
		t.Errorf("secret-id list after destroy: got %q", listed)
	}
	if _, errOut, code := run(t, rootEnv, "auth", "approle", "secret-id", "destroy", "ci", acc[1]); code == 0 || !strings.Contains(errOut, "NotFound") {
		t.Errorf("destroy twice: got exit %d, stderr %q, want NotFound", code, errOut)
	}
	if _, errOut, code := run(t, rootEnv, "auth", "approle", "write", "bad", "--bind-cidr", "300.0.0.0/8"); code == 0 || !strings.Contains(errOut, "InvalidArgument") {
		t.Errorf("write with a bad CIDR: got exit %d, stderr %q, want InvalidArgument", code, errOut)
	}

	// A token without capabilities on auth/approle/* gets nothing.
	bot := strings.TrimSpace(mustRun(rootEnv, "token", "create", "--policy", "status-reader", "--secret-only"))
	botEnv := append(append([]string(nil), noToken...), "HSMGATE_TOKEN="+bot)
	for _, args := range [][]string{
		{"auth", "approle", "secret-id", "create", "ci"},
		{"auth", "approle", "role-id", "ci"},
		{"auth", "approle", "write", "ci", "--policy", "status-reader"},
		{"auth", "kubernetes", "config", "--issuer", "https://x", "--jwks-url", "https://x/keys", "--audience", "a"},
		{"auth", "cert", "role", "write", "web", "--cn", "*"},
	} {
		if _, errOut, code := run(t, botEnv, args...); code == 0 || !strings.Contains(errOut, "PermissionDenied") {
			t.Errorf("%v as a token without rights: got exit %d, stderr %q, want PermissionDenied", args, code, errOut)
		}
	}

	// The other methods' administration verbs.
	jwks := filepath.Join(t.TempDir(), "jwks.json")
	os.WriteFile(jwks, []byte(`{"keys":[{"kty":"EC","crv":"P-256","kid":"k1","x":"MKBCTNIcKUSDii11ySs3526iDZ8AiTo7Tu6KPAqv7D4","y":"4Etl6SRW2YiLUrN5vfvVHuhp7x8PxltmWWlbbM4IFyM"}]}`), 0o600)
	mustRun(rootEnv, "auth", "kubernetes", "config", "--issuer", "https://kubernetes.default.svc.cluster.local", "--jwks-file", jwks, "--audience", "hsmgate")
	if got := mustRun(rootEnv, "auth", "kubernetes", "config"); !strings.Contains(got, "kubernetes.default.svc.cluster.local") {
		t.Errorf("kubernetes config (read): got %q", got)
	}
	mustRun(rootEnv, "auth", "kubernetes", "role", "write", "cert-manager", "--sa-name", "cert-manager", "--sa-namespace", "cert-manager", "--policy", "status-reader")
	if got := strings.TrimSpace(mustRun(rootEnv, "auth", "kubernetes", "role", "list")); got != "cert-manager" {
		t.Errorf("kubernetes role list: got %q", got)
	}
	mustRun(rootEnv, "auth", "cert", "role", "write", "web", "--cn", "web-*", "--policy", "status-reader", "--token-ttl", "1h")
	if got := mustRun(rootEnv, "auth", "cert", "role", "read", "web"); !strings.Contains(got, "web-*") {
		t.Errorf("cert role read: got %q", got)
	}
	mustRun(rootEnv, "auth", "cert", "role", "delete", "web")

	// Log in with the printed secret ID over the store, then use the token.
	dev.stop(t)
	if strings.Contains(dev.stderr.String(), secret) {
		t.Errorf("the secret ID appears in the server log")
	}
	if b, err := os.ReadFile(filepath.Join(state, "audit.log")); err != nil || strings.Contains(string(b), secret) {
		t.Errorf("audit log: err %v, or it holds the secret ID", err)
	}
	tok := loginOverStore(t, filepath.Join(state, devFileStore), roleID, secret)
	dev = startDev(t, state)
	loginEnv := []string{"HSMGATE_ADDR=" + dev.exports["HSMGATE_ADDR"], "HSMGATE_CACERT=" + dev.exports["HSMGATE_CACERT"], "HSMGATE_TOKEN=" + tok}
	if got := mustRun(loginEnv, "status"); strings.Contains(got, "public view") {
		t.Errorf("status with the login token: got %q, want the full status", got)
	}
	if got := mustRun(loginEnv, "token", "lookup"); !strings.Contains(got, "ci (token)") || !strings.Contains(got, "status-reader") {
		t.Errorf("token lookup with the login token: got %q, want identity ci with status-reader", got)
	}
	if _, errOut, code := run(t, loginEnv, "policy", "list"); code == 0 || !strings.Contains(errOut, "PermissionDenied") {
		t.Errorf("policy list with the login token: got exit %d, stderr %q, want PermissionDenied", code, errOut)
	}
	mustRun(dev.env(), "auth", "approle", "delete", "ci")
	if got := mustRun(dev.env(), "auth", "approle", "list"); strings.TrimSpace(got) != "" {
		t.Errorf("approle list after delete: got %q", got)
	}
	dev.stop(t)
}

// loginOverStore logs in with AppRole over the bbolt store of a stopped server.
func loginOverStore(t *testing.T, path, roleID, secret string) string {
	t.Helper()
	st, err := bbolt.Open(path, bbolt.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	tokens, err := auth.NewTokens(ctx, st, auth.TokenConfig{})
	if err != nil {
		t.Fatal(err)
	}
	ar, err := auth.NewAppRoles(auth.AppRoleConfig{}, st, tokens)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := ar.Login(ctx, roleID, secret, netip.MustParseAddr("192.0.2.1")); err == nil {
		t.Errorf("login from outside --bind-cidr: got success")
	}
	l, err := ar.Login(ctx, roleID, secret, netip.MustParseAddr("127.0.0.1"))
	if err != nil {
		t.Fatalf("AppRole login with the CLI's secret ID: %v", err)
	}
	return l.Token
}

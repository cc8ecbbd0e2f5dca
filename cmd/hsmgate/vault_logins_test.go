package main

import (
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	vault "github.com/hashicorp/vault/api"
)

func TestVaultDoorAppRoleLogin(t *testing.T) {
	requireSoftHSM(t)
	dev := startDev(t, filepath.Join(t.TempDir(), "state"))
	env := dev.env()
	mustRun := func(args ...string) string {
		out, errOut, code := run(t, env, args...)
		if code != 0 {
			t.Fatalf("%v: %s", args, errOut)
		}
		return out
	}
	pol := filepath.Join(t.TempDir(), "p.yaml")
	os.WriteFile(pol, []byte("rules:\n  - resource: transit/random\n    capabilities: [read]\n"), 0o600)
	mustRun("policy", "write", "rnd", pol)
	out := mustRun("auth", "approle", "write", "cm", "--policy", "rnd", "--token-ttl", "20m")
	roleID := regexp.MustCompile(`role_id ([0-9a-f-]{36})`).FindStringSubmatch(out)[1]
	secret := strings.TrimSpace(mustRun("auth", "approle", "secret-id", "create", "cm", "--secret-only"))
	cfg := vault.DefaultConfig()
	cfg.Address = dev.exports["VAULT_ADDR"]
	cfg.ConfigureTLS(&vault.TLSConfig{CACert: dev.exports["VAULT_CACERT"]})
	c, _ := vault.NewClient(cfg)
	c.ClearToken()
	s, err := c.Logical().Write("auth/approle/login", map[string]any{"role_id": roleID, "secret_id": secret})
	if err != nil {
		t.Fatal(err)
	}
	tok, _ := s.TokenID()
	t.Logf("policies %v ttl %d", s.Auth.Policies, s.Auth.LeaseDuration)
	c.SetToken(tok)
	r, err := c.Logical().Write("transit/random/8", nil)
	if err != nil || r.Data["random_bytes"] == nil {
		t.Fatalf("random: %v %v", r, err)
	}
	if _, err := c.Logical().Write("auth/approle/login", map[string]any{"role_id": roleID, "secret_id": "x"}); err == nil {
		t.Fatal("bad secret accepted")
	}
	audit, _ := os.ReadFile(filepath.Join(dev.exports["HSMGATE_CACERT"], "..", "..", "audit.log"))
	if !strings.Contains(string(audit), "vault auth/approle/login") || strings.Contains(string(audit), tok) {
		t.Errorf("audit: login line missing or token present")
	}
}

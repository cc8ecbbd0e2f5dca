package vaultdoor_test

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"gopkg.in/yaml.v3"
)

// sopsBinary finds sops in PATH or $(go env GOPATH)/bin; under CI it must exist.
func sopsBinary(t *testing.T) string {
	t.Helper()
	if p, err := exec.LookPath("sops"); err == nil {
		return p
	}
	if out, err := exec.Command("go", "env", "GOPATH").Output(); err == nil {
		p := filepath.Join(strings.TrimSpace(string(out)), "bin", "sops")
		if _, err := os.Stat(p); err == nil {
			return p
		}
	}
	const msg = "sops not found (go install github.com/getsops/sops/v3/cmd/sops@v3.13.3)"
	if os.Getenv("CI") != "" {
		t.Fatal(msg)
	}
	t.Skip(msg)
	return ""
}

// runSops runs sops with only the environment a user would give it.
func (e *env) runSops(t *testing.T, bin, token string, args ...string) ([]byte, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, args...)
	home := t.TempDir()
	cmd.Env = []string{"HOME=" + home, "PATH=" + os.Getenv("PATH"), "VAULT_TOKEN=" + token, "VAULT_CACERT=" + e.caFile}
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Logf("sops %v: %v\n%s", args, err, stderr.String())
	}
	return out, err
}

func TestSOPSHCVaultTransit(t *testing.T) {
	bin := sopsBinary(t)
	e := newEnv(t)
	if code, body := e.do("POST", "/v1/transit/keys/sops", e.root, map[string]any{"type": "aes256-gcm96"}); code != 200 {
		t.Fatalf("create key: %d %s", code, body)
	}
	e.policy("sops", map[string][]string{"transit/keys/sops": {"encrypt", "decrypt"}})
	e.policy("sops-encrypt-only", map[string][]string{"transit/keys/sops": {"encrypt"}})
	tok := e.token("sops")
	dir := t.TempDir()
	plain := "db:\n    user: app\n    password: s3cr3t-hunter2\napi_key: k-0123456789\n"
	plainFile := filepath.Join(dir, "secrets.yaml")
	if err := os.WriteFile(plainFile, []byte(plain), 0o600); err != nil {
		t.Fatal(err)
	}
	keyURL := e.url + "/v1/transit/keys/sops"
	var want map[string]any
	if err := yaml.Unmarshal([]byte(plain), &want); err != nil {
		t.Fatal(err)
	}
	encrypt := func(t *testing.T, name string) string {
		t.Helper()
		out, err := e.runSops(t, bin, tok, "--encrypt", "--hc-vault-transit", keyURL, "--input-type", "yaml", "--output-type", "yaml", plainFile)
		if err != nil {
			t.Fatalf("sops --encrypt: %v", err)
		}
		if bytes.Contains(out, []byte("s3cr3t-hunter2")) {
			t.Fatal("the encrypted file holds the plaintext")
		}
		f := filepath.Join(dir, name)
		if err := os.WriteFile(f, out, 0o600); err != nil {
			t.Fatal(err)
		}
		return f
	}
	decrypt := func(t *testing.T, f, token string) error {
		t.Helper()
		out, err := e.runSops(t, bin, token, "--decrypt", f)
		if err != nil {
			return err
		}
		var got map[string]any
		if err := yaml.Unmarshal(out, &got); err != nil {
			t.Fatal(err)
		}
		if !equalYAML(got, want) {
			t.Fatalf("decrypted: got %v, want %v", got, want)
		}
		return nil
	}
	v1 := encrypt(t, "v1.enc.yaml")
	if b, _ := os.ReadFile(v1); !bytes.Contains(b, []byte("enc: vault:v1:")) {
		t.Fatalf("encrypted file: want the data key as vault:v1:..., got:\n%s", b)
	}
	t.Run("decrypt", func(t *testing.T) {
		if err := decrypt(t, v1, tok); err != nil {
			t.Fatal(err)
		}
	})
	t.Run("decrypt refused without the decrypt capability", func(t *testing.T) {
		if err := decrypt(t, v1, e.token("sops-encrypt-only")); err == nil {
			t.Fatal("got success, want sops to fail")
		}
	})
	t.Run("after a key rotation", func(t *testing.T) {
		if code, body := e.do("POST", "/v1/transit/keys/sops/rotate", e.root, nil); code != 200 {
			t.Fatalf("rotate: %d %s", code, body)
		}
		if err := decrypt(t, v1, tok); err != nil {
			t.Fatalf("old file after rotation: %v", err)
		}
		v2 := encrypt(t, "v2.enc.yaml")
		if b, _ := os.ReadFile(v2); !bytes.Contains(b, []byte("enc: vault:v2:")) {
			t.Fatalf("encrypted after rotation: want vault:v2:, got:\n%s", b)
		}
		if err := decrypt(t, v2, tok); err != nil {
			t.Fatal(err)
		}
	})
}

func equalYAML(a, b any) bool {
	x, _ := yaml.Marshal(a)
	y, _ := yaml.Marshal(b)
	return bytes.Equal(x, y)
}

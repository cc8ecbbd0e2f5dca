package main

import (
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"io"
	"net/http"
	"os"
	"strings"
	"testing"
	"time"
)

// checkVaultDoor uses the VAULT_* lines `hsmgate dev` prints, as a Vault
// client would: sys/health, lookup-self with the root token, a transit key
// and an encryption in Vault's text form, and a 404 in Vault's shape.
func checkVaultDoor(t *testing.T, dev *devProcess) {
	t.Helper()
	addr, tok, caFile := dev.exports["VAULT_ADDR"], dev.exports["VAULT_TOKEN"], dev.exports["VAULT_CACERT"]
	if addr != "https://"+dev.exports["HSMGATE_HTTP_ADDR"] || tok != dev.exports["HSMGATE_TOKEN"] || caFile != dev.exports["HSMGATE_CACERT"] {
		t.Fatalf("VAULT_ADDR %q, VAULT_TOKEN, VAULT_CACERT %q: want the HTTPS listener, the root token and the dev CA", addr, caFile)
	}
	ca, err := os.ReadFile(caFile)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(ca)
	c := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}, Timeout: time.Minute}
	do := func(method, path, body string) (int, map[string]any) {
		t.Helper()
		req, _ := http.NewRequest(method, addr+path, strings.NewReader(body))
		req.Header.Set("X-Vault-Token", tok)
		resp, err := c.Do(req)
		if err != nil {
			t.Fatalf("%s %s: %v", method, path, err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		var m map[string]any
		_ = json.Unmarshal(b, &m)
		return resp.StatusCode, m
	}
	if code, m := do("GET", "/v1/sys/health", ""); code != 200 || m["sealed"] != false {
		t.Errorf("sys/health: %d %v", code, m)
	}
	if code, m := do("GET", "/v1/auth/token/lookup-self", ""); code != 200 {
		t.Errorf("lookup-self: %d %v", code, m)
	}
	if code, m := do("POST", "/v1/transit/keys/dev-door", `{"type":"aes256-gcm96"}`); code != 200 {
		t.Errorf("create key: %d %v", code, m)
	}
	code, m := do("POST", "/v1/transit/encrypt/dev-door", `{"plaintext":"aGk="}`)
	if data, _ := m["data"].(map[string]any); code != 200 || !strings.HasPrefix(data["ciphertext"].(string), "vault:v1:") {
		t.Errorf("encrypt: %d %v", code, m)
	}
	if code, m := do("GET", "/v1/no/such/path", ""); code != 404 || m["errors"] == nil {
		t.Errorf("unknown path: %d %v", code, m)
	}
}

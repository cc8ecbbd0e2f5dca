package vaultdoor_test

import (
	"bytes"
	"encoding/base64"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/hsmgate/hsmgate/internal/devtls"
	"github.com/hsmgate/hsmgate/internal/server"
	pb "github.com/hsmgate/hsmgate/proto/hsmgate/v1"
	"github.com/hsmgate/hsmgate/transit"
	"github.com/hsmgate/hsmgate/vaultdoor"
)

// TestNoInterceptorNoService: a door over services that no interceptor
// guards yet (the auth wiring has not run) refuses with 503 and never
// reaches the service, whatever the caller sends.
func TestNoInterceptorNoService(t *testing.T) {
	dir := t.TempDir()
	files, _, err := devtls.Ensure(filepath.Join(dir, "tls"), devtls.DefaultHosts, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	srv, err := server.New(server.Config{GRPCAddr: "127.0.0.1:0", CertFile: files.Cert, KeyFile: files.Key, Logger: log})
	if err != nil {
		t.Fatal(err)
	}
	// A transit service with no engine behind it: reaching it would panic.
	pb.RegisterTransitServiceServer(srv, &transit.Service{})
	door, err := vaultdoor.New(vaultdoor.Config{Registry: srv, Logger: log})
	if err != nil {
		t.Fatal(err)
	}
	for _, path := range []string{"/v1/transit/encrypt/k", "/v1/transit/keys/k/rotate", "/v1/transit/random/8"} {
		body := `{"plaintext":"` + base64.StdEncoding.EncodeToString([]byte("x")) + `"}`
		if !strings.Contains(path, "encrypt") {
			body = ""
		}
		req := httptest.NewRequest("POST", path, strings.NewReader(body))
		req.Header.Set("X-Vault-Token", "hgs.anything")
		rec := httptest.NewRecorder()
		door.ServeHTTP(rec, req)
		if rec.Code != http.StatusServiceUnavailable {
			t.Errorf("%s: got %d %s, want 503", path, rec.Code, rec.Body)
		}
	}
}

// TestSecretsStayOut: tokens never reach the audit log; a login is audited
// (success and refusal) with the accessor HMAC'd.
func TestSecretsStayOut(t *testing.T) {
	e := newEnv(t)
	code, body := e.do("POST", "/v1/auth/approle/login", "", map[string]any{"role_id": "role-id-1", "secret_id": "secret-id-1"})
	if code != 200 {
		t.Fatalf("login: %d %s", code, body)
	}
	tok := string(body[bytes.Index(body, []byte("hgs.")):][:47])
	if code, _ := e.do("POST", "/v1/auth/approle/login", "", map[string]any{"role_id": "role-id-1", "secret_id": "wrong"}); code != 403 {
		t.Fatalf("bad login: %d, want 403", code)
	}
	e.do("POST", "/v1/transit/keys/k", e.root, nil)
	e.do("GET", "/v1/auth/token/lookup-self", tok, nil)
	raw, err := os.ReadFile(e.auditPath)
	if err != nil {
		t.Fatal(err)
	}
	for _, secret := range []string{tok, e.root, "secret-id-1", "wrong"} {
		if bytes.Contains(raw, []byte(secret)) {
			t.Errorf("the audit log holds a secret (%.8s...)", secret)
		}
	}
	var ok, refused int
	for _, l := range e.auditLines() {
		if l["method"] == "vault auth/approle/login" {
			switch l["code"] {
			case "OK":
				ok++
				id, _ := l["identity"].(map[string]any)
				if id == nil || id["accessor"] == nil || id["name"] != "approle-cert-manager" {
					t.Errorf("login line identity: %v", l["identity"])
				}
			case "PermissionDenied":
				refused++
			}
		}
	}
	if ok != 1 || refused != 1 {
		t.Errorf("login audit lines: got %d OK and %d refused, want 1 and 1", ok, refused)
	}
}

// TestBounds: batch_input over the limit and several token headers are refused.
func TestBounds(t *testing.T) {
	e := newEnv(t)
	e.do("POST", "/v1/transit/keys/k", e.root, nil)
	items := make([]map[string]any, vaultdoor.DefaultMaxBatchItems+1)
	for i := range items {
		items[i] = map[string]any{"plaintext": ""}
	}
	if code, body := e.do("POST", "/v1/transit/encrypt/k", e.root, map[string]any{"batch_input": items}); code != 400 {
		t.Errorf("oversized batch: got %d %.200s, want 400", code, body)
	}
	req, _ := http.NewRequest("POST", e.url+"/v1/transit/random/8", nil)
	req.Header.Add("X-Vault-Token", e.root)
	req.Header.Add("X-Vault-Token", e.root)
	resp, err := e.httpClient().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusForbidden {
		t.Errorf("two X-Vault-Token headers: got %d, want 403", resp.StatusCode)
	}
	// A client asking for response wrapping must not get the secret unwrapped.
	c := e.vaultClient(e.root)
	c.SetWrappingLookupFunc(func(string, string) string { return "5m" })
	if _, err := c.Logical().Write("transit/datakey/plaintext/k", nil); err == nil || !strings.Contains(err.Error(), "Code: 400") {
		t.Errorf("wrapped request: got %v, want 400", err)
	}
}

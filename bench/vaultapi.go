package bench

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"strings"
	"time"
)

// The Vault side of `hsmgate bench compare`: the same workload as a
// scenario's, sent to a server that speaks Vault's HTTP API (hsmgate's own
// Vault door under /v1/, or a Vault or OpenBao the user runs) with plain
// net/http and JSON. No Vault code is used.

// VaultNames are the mounts and object names on the Vault side. An empty
// Key or Role means the name the scenario made on hsmgate (right when the
// Vault side is hsmgate's own door).
type VaultNames struct {
	TransitMount, PKIMount, SSHMount string
	Key, Role                        string
}

func (n VaultNames) withDefaults() VaultNames {
	if n.TransitMount == "" {
		n.TransitMount = "transit"
	}
	if n.PKIMount == "" {
		n.PKIMount = "pki"
	}
	if n.SSHMount == "" {
		n.SSHMount = "ssh"
	}
	return n
}

// vaultRequest is one prepared Vault API call.
type vaultRequest struct {
	Path string // under /v1/
	Body []byte // JSON
	// Items per request: the batch, or 1 where Vault has no batch form.
	Items int
	// Check reads the answer's "data" (nil: not checked).
	Check func(data json.RawMessage) error
}

// VaultClient calls a Vault-API server.
type VaultClient struct {
	Addr  string
	token string
	http  *http.Client
}

// NewVaultClient returns a client for addr (https://host:port) with token;
// caFile, if set, is the PEM CA bundle that verifies the server. Like
// github.com/hashicorp/vault/api's client, it speaks HTTP/2 over TLS and
// keeps up to conns connections.
func NewVaultClient(addr, token, caFile string, conns int) (*VaultClient, error) {
	if addr == "" || token == "" {
		return nil, errors.New("bench: compare needs --vault-addr and --vault-token")
	}
	tc := &tls.Config{MinVersion: tls.VersionTLS12}
	if caFile != "" {
		pem, err := os.ReadFile(caFile)
		if err != nil {
			return nil, fmt.Errorf("bench: --vault-cacert: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("bench: --vault-cacert %s: no PEM certificate", caFile)
		}
		tc.RootCAs = pool
	}
	tr := &http.Transport{
		TLSClientConfig: tc, ForceAttemptHTTP2: true, MaxIdleConnsPerHost: max(conns, 2),
		IdleConnTimeout: 90 * time.Second, TLSHandshakeTimeout: 10 * time.Second,
	}
	return &VaultClient{Addr: strings.TrimSuffix(addr, "/"), token: token,
		http: &http.Client{Transport: tr, Timeout: 60 * time.Second}}, nil
}

// Close drops the idle connections.
func (c *VaultClient) Close() { c.http.CloseIdleConnections() }

// maxVaultAnswer bounds an answer read.
const maxVaultAnswer = 64 << 20

// do POSTs r and checks the answer: 200 or 204, and Check on its data.
func (c *VaultClient) do(ctx context.Context, r *vaultRequest) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, c.Addr+"/v1/"+r.Path, bytes.NewReader(r.Body))
	if err != nil {
		return fmt.Errorf("bench: vault %s: %w", r.Path, err)
	}
	req.Header.Set("X-Vault-Token", c.token)
	req.Header.Set("Content-Type", "application/json")
	resp, err := c.http.Do(req)
	if err != nil {
		return fmt.Errorf("bench: vault %s: %w", r.Path, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxVaultAnswer))
	if err != nil {
		return fmt.Errorf("bench: vault %s: %w", r.Path, err)
	}
	if resp.StatusCode != http.StatusOK && resp.StatusCode != http.StatusNoContent {
		var e struct {
			Errors []string `json:"errors"`
		}
		_ = json.Unmarshal(body, &e)
		msg := strings.Join(e.Errors, "; ")
		if len(msg) > 300 {
			msg = msg[:300] + "..."
		}
		return fmt.Errorf("bench: vault %s: HTTP %d: %s", r.Path, resp.StatusCode, msg)
	}
	if r.Check == nil {
		return nil
	}
	var env struct {
		Data json.RawMessage `json:"data"`
	}
	if err := json.Unmarshal(body, &env); err != nil {
		return fmt.Errorf("bench: vault %s: answer: %w", r.Path, err)
	}
	if err := r.Check(env.Data); err != nil {
		return fmt.Errorf("bench: vault %s: %w", r.Path, err)
	}
	return nil
}

// vaultBody marshals a request body.
func vaultBody(v any) []byte {
	b, err := json.Marshal(v)
	if err != nil {
		panic(err) // maps of strings and slices: cannot fail
	}
	return b
}

// checkField checks that data has a non-empty string field.
func checkField(field string) func(json.RawMessage) error {
	return func(data json.RawMessage) error {
		var m map[string]any
		if err := json.Unmarshal(data, &m); err != nil {
			return fmt.Errorf("answer data: %w", err)
		}
		if s, _ := m[field].(string); s == "" {
			return fmt.Errorf("answer has no %q", field)
		}
		return nil
	}
}

// checkBatch checks that data.batch_results has n items, each with field
// and none with an error.
func checkBatch(field string, n int) func(json.RawMessage) error {
	return func(data json.RawMessage) error {
		var d struct {
			Results []map[string]any `json:"batch_results"`
		}
		if err := json.Unmarshal(data, &d); err != nil {
			return fmt.Errorf("answer data: %w", err)
		}
		if len(d.Results) != n {
			return fmt.Errorf("got %d batch results, want %d", len(d.Results), n)
		}
		for i, r := range d.Results {
			if e, _ := r["error"].(string); e != "" {
				return fmt.Errorf("batch item %d: %s", i, e)
			}
			if s, _ := r[field].(string); s == "" {
				return fmt.Errorf("batch item %d has no %q", i, field)
			}
		}
		return nil
	}
}

// vaultTransit is the Vault form of a transit batch: one item as the
// endpoint's own fields, several as batch_input.
func vaultTransit(path, inField, outField string, in []byte, batch int) *vaultRequest {
	b64 := base64.StdEncoding.EncodeToString(in)
	if batch == 1 {
		return &vaultRequest{Path: path, Items: 1, Body: vaultBody(map[string]string{inField: b64}), Check: checkField(outField)}
	}
	items := make([]map[string]string, batch)
	for i := range items {
		items[i] = map[string]string{inField: b64}
	}
	return &vaultRequest{Path: path, Items: batch, Body: vaultBody(map[string]any{"batch_input": items}),
		Check: checkBatch(outField, batch)}
}

// vaultKeyTypes are Vault's transit key type names.
var vaultKeyTypes = map[string]string{
	"aes256-gcm": "aes256-gcm96", "ecdsa-p256": "ecdsa-p256", "ecdsa-p384": "ecdsa-p384", "ed25519": "ed25519",
	"rsa-2048": "rsa-2048", "rsa-3072": "rsa-3072", "rsa-4096": "rsa-4096",
}

// vaultCreateKey is transit/keys/<name> with the key type: it makes the key
// on a Vault (on hsmgate's door, where the scenario made it, it may answer
// an error, which compare ignores; the first measured call tells).
func vaultCreateKey(n VaultNames, key, kt string) *vaultRequest {
	return &vaultRequest{Path: n.TransitMount + "/keys/" + key, Items: 1, Body: vaultBody(map[string]string{"type": vaultKeyTypes[kt]})}
}

package main

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"math/big"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/spf13/cobra"
	"golang.org/x/crypto/ssh"
	"gopkg.in/yaml.v3"
)

// runIn runs hsmgate with stdin and returns stdout, stderr and the exit code.
func runIn(t *testing.T, env []string, stdin string, args ...string) (stdout, stderr string, code int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute) // a hang guard
	defer cancel()
	cmd := hsmgateCmd(ctx, env, args...)
	cmd.Stdin = strings.NewReader(stdin)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	var ee *exec.ExitError
	switch {
	case err == nil:
	case errors.As(err, &ee):
		code = ee.ExitCode()
	default:
		t.Fatalf("hsmgate %v: %v", args, err)
	}
	return out.String(), errb.String(), code
}

// oneJSONDocument decodes out, which must be exactly one JSON document.
func oneJSONDocument(out string) (any, error) {
	dec := json.NewDecoder(strings.NewReader(out))
	dec.UseNumber()
	var v any
	if err := dec.Decode(&v); err != nil {
		return nil, err
	}
	var more any
	if err := dec.Decode(&more); err != io.EOF {
		return nil, fmt.Errorf("more than one JSON document (then %v)", err)
	}
	return v, nil
}

// leafPath is the command path of the verb args name ("transit keys show").
func leafPath(t *testing.T, args []string) string {
	t.Helper()
	root := newRootCmd(io.Discard, io.Discard)
	c, _, err := root.Find(args)
	if err != nil {
		t.Fatalf("%v: %v", args, err)
	}
	return strings.TrimPrefix(c.CommandPath(), "hsmgate ")
}

// dataVerbs are the leaves that take -o json|yaml; noDataVerbs the others.
func leafVerbs(t *testing.T) (data, noData []string) {
	t.Helper()
	root := newRootCmd(io.Discard, io.Discard)
	var walk func(c *cobra.Command)
	walk = func(c *cobra.Command) {
		if !c.HasSubCommands() && c != root {
			p := strings.TrimPrefix(c.CommandPath(), "hsmgate ")
			if c.Annotations[outputAnnotation] != "" {
				data = append(data, p)
			} else if !c.Hidden && c.Name() != "help" {
				noData = append(noData, p)
			}
		}
		for _, s := range c.Commands() {
			walk(s)
		}
	}
	walk(root)
	return data, noData
}

// TestOutputJSONEveryVerb: every verb that prints data, run against a real
// dev server with -o json, prints exactly one JSON document (and the same
// with --json and, as YAML, with -o yaml), and no such verb is left out.
func TestOutputJSONEveryVerb(t *testing.T) {
	requireSoftHSM(t)
	dir := t.TempDir()
	state := filepath.Join(dir, "state")
	dev := startDev(t, state)
	env := dev.env()
	covered := map[string]bool{}

	// table runs a verb in its human form (for values the next steps need).
	table := func(stdin string, args ...string) string {
		t.Helper()
		out, errOut, code := runIn(t, env, stdin, args...)
		if code != 0 {
			t.Fatalf("hsmgate %s: exit %d: %s", strings.Join(args, " "), code, errOut)
		}
		return out
	}
	// js runs a verb with -o json and returns its document.
	js := func(stdin string, args ...string) map[string]any {
		t.Helper()
		covered[leafPath(t, args)] = true
		out, errOut, code := runIn(t, env, stdin, append(args, "-o", "json")...)
		if code != 0 {
			t.Fatalf("hsmgate %s -o json: exit %d: %s", strings.Join(args, " "), code, errOut)
		}
		v, err := oneJSONDocument(out)
		if err != nil {
			t.Fatalf("hsmgate %s -o json: %v; stdout:\n%s", strings.Join(args, " "), err, out)
		}
		m, ok := v.(map[string]any)
		if !ok {
			t.Fatalf("hsmgate %s -o json: got %T, want an object", strings.Join(args, " "), v)
		}
		return m
	}
	str := func(m map[string]any, path ...string) string {
		t.Helper()
		var v any = m
		for _, p := range path {
			o, ok := v.(map[string]any)
			if !ok {
				t.Fatalf("%v: no %q in %v", path, p, v)
			}
			v = o[p]
		}
		s, _ := v.(string)
		return s
	}

	js("", "version")
	js("", "status")

	// transit
	js("", "transit", "keys", "create", "k1")
	table("", "transit", "keys", "create", "sig", "--type", "ecdsa-p256")
	table("", "transit", "keys", "create", "mac", "--type", "hmac-sha256")
	table("", "transit", "keys", "create", "exp", "--exportable")
	table("", "transit", "keys", "create", "bk", "--allow-restore-rename")
	table("", "transit", "keys", "create", "gone", "--deletion-allowed")
	js("", "transit", "keys", "list")
	js("", "transit", "keys", "show", "k1")
	if pub := js("", "transit", "keys", "show", "sig", "--public-key"); !strings.Contains(str(pub, "publicKeyPem"), "PUBLIC KEY") {
		t.Errorf("keys show --public-key -o json: got %v, want the version with its publicKeyPem", pub)
	}
	js("", "transit", "keys", "rotate", "k1")
	js("", "transit", "keys", "config", "k1", "--min-decryption-version", "1")
	js("", "transit", "keys", "disable-version", "k1", "1")
	js("", "transit", "keys", "enable-version", "k1", "1")
	js("", "transit", "keys", "trim", "k1", "--min-available-version", "1")
	js("", "transit", "keys", "export", "exp")
	js("", "transit", "keys", "backup", "k1")
	backup := table("", "transit", "keys", "backup", "bk")
	js(backup, "transit", "keys", "restore", "--name", "bk2")
	js("", "transit", "keys", "wrapping-key")
	js(strings.Repeat("k", 32), "transit", "keys", "import", "byok", "--type", "aes256-gcm", "--in", "-")
	js("", "transit", "keys", "delete", "gone")
	enc := js("hi", "transit", "encrypt", "k1")
	results, _ := enc["results"].([]any)
	if len(results) != 1 || !strings.HasPrefix(str(results[0].(map[string]any), "ciphertext"), "hsmgate:v2:") {
		t.Errorf("encrypt -o json: got %v, want one hsmgate:v2: ciphertext", enc)
	}
	ct := table("hi", "transit", "encrypt", "k1")
	js(ct, "transit", "decrypt", "k1")
	js(ct, "transit", "rewrap", "k1")
	js("", "transit", "datakey", "k1")
	js("msg", "transit", "sign", "sig")
	sig := strings.TrimSpace(table("msg", "transit", "sign", "sig"))
	js("msg", "transit", "verify", "sig", "--signature", sig)
	js("data", "transit", "hmac", "mac")
	mac := strings.TrimSpace(table("data", "transit", "hmac", "mac"))
	js("data", "transit", "hmac", "mac", "--verify", mac)
	js("", "transit", "random", "16")

	// pki
	js("", "pki", "issuer", "create-root", "root", "--cn", "Output Root")
	table("", "pki", "issuer", "create-root", "root2", "--cn", "Output Root 2")
	js("", "pki", "issuer", "create-intermediate", "int", "--cn", "Output Int", "--parent", "root")
	pending := js("", "pki", "issuer", "create-intermediate", "ext", "--cn", "Output Ext")
	js("", "pki", "issuer", "list")
	js("", "pki", "issuer", "get", "root")
	js("", "pki", "issuer", "update", "root", "--default")
	js("", "pki", "issuer", "cross-sign", "root2", "--signer", "root")
	// The pending intermediate's CSR (DER in the JSON), signed by a root
	// made here, imported from stdin.
	js(externalSign(t, str(pending, "csr")), "pki", "issuer", "import", "ext", "--cert", "-")
	js("", "pki", "role", "write", "web", "--allowed-domain", "example.com", "--allow-subdomains")
	table("", "pki", "role", "write", "tmp", "--allowed-domain", "example.org")
	js("", "pki", "role", "read", "web")
	js("", "pki", "role", "list")
	js("", "pki", "role", "delete", "tmp")
	certDir := filepath.Join(dir, "certs")
	issued := js("", "pki", "issue", "web", "--cn", "a.example.com", "--out-dir", certDir)
	keyPEM, err := os.ReadFile(filepath.Join(certDir, "key.pem"))
	if err != nil {
		t.Fatal(err)
	}
	blk, _ := pem.Decode(keyPEM)
	if blk == nil || str(issued, "privateKey") != "" || strings.Contains(fmt.Sprint(issued), base64.StdEncoding.EncodeToString(blk.Bytes)) {
		t.Errorf("pki issue -o json: the private key is on stdout (or key.pem is not PEM): %v", issued)
	}
	serial := str(issued, "serial")
	signed := js(csrPEM(t, "b.example.com"), "pki", "sign", "web", "--csr", "-")
	if str(signed, "certificate") == "" {
		t.Errorf("pki sign --csr - -o json: got %v, want a certificate", signed)
	}
	js("", "pki", "cert", "list")
	js("", "pki", "cert", "get", serial)
	js("", "pki", "revoke", serial)
	js("", "pki", "tidy")

	// ssh
	js("", "ssh", "ca", "create", "users", "--type", "user")
	table("", "ssh", "ca", "create", "hosts", "--type", "host")
	js("", "ssh", "ca", "list")
	js("", "ssh", "ca", "pub")
	js("", "ssh", "ca", "rotate", "users")
	js("", "ssh", "ca", "retire", "users", "--version", "1")
	js(`{"ca":"users","allowedPrincipals":["alice"],"defaultPrincipals":["alice"]}`, "ssh", "role", "write", "eng", "-f", "-")
	table(`{"ca":"hosts","allowedPrincipals":["*.example.com"]}`, "ssh", "role", "write", "web", "-f", "-")
	table(`{"ca":"users","allowedPrincipals":["x"]}`, "ssh", "role", "write", "tmp", "-f", "-")
	js("", "ssh", "role", "read", "eng")
	js("", "ssh", "role", "list")
	js("", "ssh", "role", "delete", "tmp")
	userKey, hostKey := sshPublicKeyFile(t, dir, "id_ed25519"), sshPublicKeyFile(t, dir, "ssh_host_ed25519_key")
	js("", "ssh", "sign", "--role", "eng", "--principal", "alice", userKey)
	js("", "ssh", "host", "sign", "--role", "web", "--principal", "h1.example.com", hostKey)
	userPub, err := os.ReadFile(userKey)
	if err != nil {
		t.Fatal(err)
	}
	agentCert := filepath.Join(dir, "agent-cert.pub")
	table(string(userPub), "ssh", "sign", "--role", "eng", "--principal", "alice", "--out", agentCert, "-")
	if b, err := os.ReadFile(agentCert); err != nil || !strings.HasPrefix(string(b), "ssh-ed25519-cert-v01@openssh.com ") {
		t.Errorf("ssh sign - --out: got %q, %v; want the certificate of the key from stdin", b, err)
	}
	certFile, err := os.ReadFile(certPath(userKey))
	if err != nil {
		t.Fatal(err)
	}
	js(string(certFile), "ssh", "revoke", "--key", "-")
	krlFile := filepath.Join(dir, "revoked.krl")
	if k := js("", "ssh", "krl", "--out", krlFile); len(k["explicitKeys"].([]any)) != 1 {
		t.Errorf("ssh krl -o json: got %v, want the revoked key", k)
	}
	js("", "ssh", "krl", "--show", krlFile)

	// acme
	js("", "acme", "directory", "write", "web", "--role", "web")
	js("", "acme", "directory", "read", "web")
	js("", "acme", "directory", "list")
	js("", "acme", "eab", "create", "web")

	// policy and tokens
	js("rules:\n  - resource: sys/status\n    capabilities: [read]\n", "policy", "write", "app", "-")
	js("", "policy", "read", "app")
	js("", "policy", "list")
	table("rules: []\n", "policy", "write", "tmp", "-")
	js("", "policy", "delete", "tmp")
	tok := js("", "token", "create", "--policy", "app", "--renewable", "--ttl", "1h")
	accessor := str(tok, "info", "accessor")
	js("", "token", "list")
	js("", "token", "lookup")
	js("", "token", "lookup", accessor)
	js("", "token", "renew", accessor)
	js("", "token", "revoke", accessor)

	// auth methods
	js("", "auth", "approle", "write", "ar", "--policy", "app")
	js("", "auth", "approle", "read", "ar")
	js("", "auth", "approle", "list")
	js("", "auth", "approle", "role-id", "ar")
	sid := js("", "auth", "approle", "secret-id", "create", "ar")
	js("", "auth", "approle", "secret-id", "list", "ar")
	js("", "auth", "approle", "secret-id", "destroy", "ar", str(sid, "info", "accessor"))
	js("", "auth", "approle", "delete", "ar")
	jwks := `{"keys":[{"kty":"EC","crv":"P-256","kid":"k1","x":"MKBCTNIcKUSDii11ySs3526iDZ8AiTo7Tu6KPAqv7D4","y":"4Etl6SRW2YiLUrN5vfvVHuhp7x8PxltmWWlbbM4IFyM"}]}`
	js(jwks, "auth", "kubernetes", "config", "--issuer", "https://k8s.example", "--jwks-file", "-", "--audience", "hsmgate")
	if c := js("", "auth", "kubernetes", "config"); str(c, "jwks") != jwks {
		t.Errorf("kubernetes config --jwks-file -: got %v, want the JWKS from stdin stored", c)
	}
	js("", "auth", "kubernetes", "role", "write", "kr", "--sa-name", "x", "--sa-namespace", "y", "--policy", "app")
	js("", "auth", "kubernetes", "role", "read", "kr")
	js("", "auth", "kubernetes", "role", "list")
	js("", "auth", "kubernetes", "role", "delete", "kr")
	caPEM, err := os.ReadFile(dev.exports["HSMGATE_CACERT"])
	if err != nil {
		t.Fatal(err)
	}
	js(string(caPEM), "auth", "cert", "role", "write", "cr", "--cn", "web-*", "--ca-file", "-")
	if r := js("", "auth", "cert", "role", "read", "cr"); str(r, "caPem") != string(caPEM) {
		t.Errorf("cert role write --ca-file -: got %v, want the CA from stdin", r)
	}
	js("", "auth", "cert", "role", "list")
	js("", "auth", "cert", "role", "delete", "cr")

	t.Run("--json is -o json", func(t *testing.T) {
		a, _, _ := runIn(t, env, "", "policy", "read", "app", "--json")
		b, _, _ := runIn(t, env, "", "policy", "read", "app", "-o", "json")
		if a != b || !strings.HasPrefix(a, "{") {
			t.Errorf("--json: got %q, -o json: %q; want the same JSON", a, b)
		}
	})

	t.Run("yaml is the same document", func(t *testing.T) {
		for _, args := range [][]string{
			{"transit", "keys", "list"}, {"transit", "keys", "show", "k1"}, {"pki", "role", "read", "web"}, {"token", "lookup"},
			{"ssh", "krl"}, {"policy", "read", "app"},
		} {
			jout, _, jcode := runIn(t, env, "", append(args, "-o", "json")...)
			yout, errOut, ycode := runIn(t, env, "", append(args, "-o", "yaml")...)
			if jcode != 0 || ycode != 0 {
				t.Fatalf("%v: exit %d/%d: %s", args, jcode, ycode, errOut)
			}
			var fromJSON, fromYAML any
			if err := json.Unmarshal([]byte(jout), &fromJSON); err != nil {
				t.Fatal(err)
			}
			if err := yaml.Unmarshal([]byte(yout), &fromYAML); err != nil {
				t.Fatalf("%v -o yaml: %v\n%s", args, err, yout)
			}
			// Through JSON, so that numbers compare alike.
			b, err := json.Marshal(fromYAML)
			if err != nil {
				t.Fatal(err)
			}
			var back any
			if err := json.Unmarshal(b, &back); err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(back, fromJSON) {
				t.Errorf("%v: -o yaml gives\n%s\nwhich differs from -o json\n%s", args, yout, jout)
			}
			if strings.HasPrefix(strings.TrimSpace(yout), "{") {
				t.Errorf("%v -o yaml: got flow style %q, want block style", args, yout)
			}
		}
	})

	t.Run("a failed item prints the response, then fails", func(t *testing.T) {
		out, errOut, code := runIn(t, env, "hsmgate:v1:AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA\n", "transit", "decrypt", "k1", "-o", "json")
		if _, err := oneJSONDocument(out); err != nil || code != 1 || !strings.HasPrefix(errOut, "hsmgate: transit decrypt: ") {
			t.Errorf("got exit %d, stdout %q (%v), stderr %q; want the JSON, then exit 1 with the item's error", code, out, err, errOut)
		}
	})

	t.Run("the default stays the table", func(t *testing.T) {
		if out, _, code := runIn(t, env, "", "transit", "keys", "list"); code != 0 || strings.Contains(out, "{") || !strings.Contains(out, "k1\n") {
			t.Errorf("keys list: got %q, want names one a line", out)
		}
		if out, _, code := runIn(t, env, "", "policy", "read", "app"); code != 0 || !strings.HasPrefix(out, "rules:") {
			t.Errorf("policy read: got %q, want the policy file", out)
		}
	})

	// audit verify reads the dev server's log (and its key beside it), once
	// the server has stopped writing it.
	dev.stop(t)
	if r := js("", "audit", "verify", filepath.Join(state, "audit.log")); r["lines"] == json.Number("0") || r["headChecked"] != true {
		t.Errorf("audit verify -o json: got %v, want the log's lines up to its checkpoint", r)
	}

	t.Run("every verb that prints data is covered", func(t *testing.T) {
		// Reads the HSM of a server config: TestOutputOfflineVerbs.
		exempt := map[string]string{"audit checkpoint-key": "TestOutputOfflineVerbs"}
		data, _ := leafVerbs(t)
		for _, v := range data {
			if !covered[v] && exempt[v] == "" {
				t.Errorf("%s takes -o json but is not run here", v)
			}
		}
		if len(data) < 80 {
			t.Errorf("got %d verbs with -o, want every verb that prints data (80 or more)", len(data))
		}
	})
}

// externalSign signs the CSR (DER, base64) of a pending intermediate with
// a root made here, and returns the certificate then that root, in PEM.
func externalSign(t *testing.T, csrB64 string) string {
	t.Helper()
	der, err := base64.StdEncoding.DecodeString(csrB64)
	if err != nil {
		t.Fatal(err)
	}
	csr, err := x509.ParseCertificateRequest(der)
	if err != nil {
		t.Fatal(err)
	}
	rootKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	rootTmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "External Root"},
		NotBefore: now.Add(-time.Hour), NotAfter: now.Add(10 * 365 * 24 * time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
	}
	rootDER, err := x509.CreateCertificate(rand.Reader, rootTmpl, rootTmpl, &rootKey.PublicKey, rootKey)
	if err != nil {
		t.Fatal(err)
	}
	root, _ := x509.ParseCertificate(rootDER)
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(2), Subject: csr.Subject,
		NotBefore: now.Add(-time.Hour), NotAfter: now.Add(5 * 365 * 24 * time.Hour),
		IsCA: true, BasicConstraintsValid: true, MaxPathLenZero: true, KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
	}
	certDER, err := x509.CreateCertificate(rand.Reader, tmpl, root, csr.PublicKey, rootKey)
	if err != nil {
		t.Fatal(err)
	}
	return string(pkiPemBytes("CERTIFICATE", certDER, rootDER))
}

// csrPEM is a CSR for name, with a fresh P-256 key.
func csrPEM(t *testing.T, name string) string {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	der, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{Subject: pkix.Name{CommonName: name}, DNSNames: []string{name}}, k)
	if err != nil {
		t.Fatal(err)
	}
	return string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: der}))
}

// sshPublicKeyFile writes a fresh Ed25519 public key to dir/name.pub.
func sshPublicKeyFile(t *testing.T, dir, name string) string {
	t.Helper()
	pub, _, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	sp, err := ssh.NewPublicKey(pub)
	if err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(dir, name+".pub")
	if err := os.WriteFile(p, ssh.MarshalAuthorizedKey(sp), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

// TestOutputRefusedWhereNoData: json or yaml on a verb that prints no data
// (server, dev, init, bench, completion, token root) is a usage error that
// runs nothing; so are an unknown format and --json against another -o.
func TestOutputRefusedWhereNoData(t *testing.T) {
	_, noData := leafVerbs(t)
	sort.Strings(noData)
	want := []string{"bench", "completion bash", "completion fish", "completion powershell", "completion zsh", "dev", "init", "server", "token root"}
	if !reflect.DeepEqual(noData, want) {
		t.Errorf("verbs without -o: got %v, want %v", noData, want)
	}
	// Each with what it requires, so that only -o can be refused.
	extra := map[string][]string{
		"bench": {"transit-encrypt"}, "init": {"--config", "x.yaml"}, "server": {"--config", "x.yaml"},
		"token root": {"--config", "x.yaml"}, "dev": {"--state", t.TempDir()},
	}
	for _, v := range noData {
		for _, o := range [][]string{{"-o", "json"}, {"--output", "yaml"}} {
			args := append(append(strings.Fields(v), extra[v]...), o...)
			t.Run(strings.Join(args, " "), func(t *testing.T) {
				_, _, err := execRoot(t, args...)
				if err == nil || exitCode(err) != 2 || !strings.Contains(err.Error(), "prints no data") {
					t.Errorf("got %v, want a usage error: prints no data", err)
				}
			})
		}
	}
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"version", "-o", "xml"}, `--output "xml": want table, json or yaml`},
		{[]string{"version", "--json", "-o", "yaml"}, "--json and --output yaml"},
		{[]string{"version", "--json", "--output", "table"}, "--json and --output table"},
	} {
		_, _, err := execRoot(t, tc.args...)
		if err == nil || exitCode(err) != 2 || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("hsmgate %v: got %v, want a usage error %q", tc.args, err, tc.want)
		}
	}
	for _, args := range [][]string{{"version", "-o", "json"}, {"version", "--json"}, {"version", "--json", "-o", "json"}, {"version", "-o", "JSON"}} {
		out, _, err := execRoot(t, args...)
		if _, jerr := oneJSONDocument(out); err != nil || jerr != nil {
			t.Errorf("hsmgate %v: got %q, %v; want one JSON document", args, out, err)
		}
	}
}

// TestExitCodes: the exit status of the real process: 2 for a mistake on
// the command line (a bad flag, a missing argument, an unknown verb at any
// level), 1 for a failure of the server or the call, 0 for a group's help.
func TestExitCodes(t *testing.T) {
	closed := freeAddr(t) // nothing listens there
	tests := []struct {
		args   []string
		stdin  string
		code   int
		stderr string // prefix of the one line
	}{
		{[]string{"nosuch"}, "", 2, `hsmgate: InvalidArgument: unknown command "nosuch" for "hsmgate"`},
		{[]string{"transit", "nosuch"}, "", 2, `hsmgate: transit: InvalidArgument: unknown command "nosuch"`},
		{[]string{"transit", "keys", "nosuch"}, "", 2, `hsmgate: transit keys: InvalidArgument: unknown command "nosuch"`},
		{[]string{"completion", "nosuch"}, "", 2, `hsmgate: completion: InvalidArgument: unknown command "nosuch"`},
		{[]string{"transit", "encrypt"}, "", 2, "hsmgate: transit encrypt: InvalidArgument: accepts 1 arg(s), received 0"},
		{[]string{"status", "--bogus"}, "", 2, "hsmgate: status: InvalidArgument: unknown flag: --bogus"},
		{[]string{"pki", "sign", "web"}, "", 2, `hsmgate: pki sign: InvalidArgument: required flag(s) "csr" not set`},
		{[]string{"status", "-o", "xml"}, "", 2, `hsmgate: status: InvalidArgument: --output "xml"`},
		{[]string{"token", "revoke"}, "", 2, "hsmgate: token revoke: InvalidArgument: give an ACCESSOR or --self"},
		{[]string{"token", "create", "--meta", "novalue"}, "", 2, `hsmgate: token create: InvalidArgument: --meta "novalue": want key=value`},
		{[]string{"auth", "kubernetes", "config", "--issuer", "https://x", "--jwks-file", "-", "--jwks-ca-file", "-"}, "", 2,
			"hsmgate: auth kubernetes config: InvalidArgument: --jwks-ca-file and --jwks-file: only one may read stdin"},
		{[]string{"pki", "sign", "web", "--csr", "-", "--addr", closed}, strings.Repeat("x", maxInput+1), 2,
			"hsmgate: pki sign: InvalidArgument: --csr: more than"},
		{[]string{"ssh", "sign", "-"}, "", 2, "hsmgate: ssh sign: InvalidArgument: a public key from stdin (-) needs --out FILE"},
		{[]string{"status", "--addr", closed, "--timeout", "5s"}, "", 1, "hsmgate: status: Unavailable: "},
		{[]string{"transit", "encrypt", "k1", "--addr", closed, "--timeout", "5s"}, "hi", 1, "hsmgate: transit encrypt: Unavailable: "},
	}
	for _, tc := range tests {
		t.Run(strings.Join(tc.args, " "), func(t *testing.T) {
			out, errOut, code := runIn(t, nil, tc.stdin, tc.args...)
			if code != tc.code || !strings.HasPrefix(errOut, tc.stderr) || strings.Count(errOut, "\n") != 1 {
				t.Errorf("got exit %d, stderr %q; want exit %d and one line starting %q", code, errOut, tc.code, tc.stderr)
			}
			if out != "" {
				t.Errorf("got stdout %q, want none", out)
			}
		})
	}
	t.Run("a group without a verb prints its help", func(t *testing.T) {
		out, errOut, code := runIn(t, nil, "", "transit", "keys")
		if code != 0 || !strings.Contains(out, "Available Commands:") || errOut != "" {
			t.Errorf("got exit %d, %q, %q; want 0 and the help", code, out, errOut)
		}
	})
}

// TestCompletion: `hsmgate completion bash|zsh|fish` each print a script
// (bash's parses with bash -n), and completion knows the verbs and the
// values of -o.
func TestCompletion(t *testing.T) {
	for _, sh := range []string{"bash", "zsh", "fish"} {
		t.Run(sh, func(t *testing.T) {
			out, _, err := execRoot(t, "completion", sh)
			if err != nil || len(out) < 1000 || !strings.Contains(out, "hsmgate") {
				t.Fatalf("got %d bytes, %v; want a completion script for hsmgate", len(out), err)
			}
			if sh != "bash" {
				return
			}
			bash := requireTool(t, "bash")
			p := filepath.Join(t.TempDir(), "hsmgate.bash")
			if err := os.WriteFile(p, []byte(out), 0o644); err != nil {
				t.Fatal(err)
			}
			if b, err := exec.Command(bash, "-n", p).CombinedOutput(); err != nil {
				t.Errorf("bash -n: %v\n%s", err, b)
			}
			// Sourced in a real bash, it registers the completion function.
			script := fmt.Sprintf("source %q && complete -p hsmgate", p)
			if b, err := exec.Command(bash, "-c", script).CombinedOutput(); err != nil || !strings.Contains(string(b), "hsmgate") {
				t.Errorf("complete -p hsmgate: %v\n%s", err, b)
			}
		})
	}
	for _, tc := range []struct {
		args []string
		want []string
	}{
		{[]string{"__complete", "transit", ""}, []string{"encrypt", "decrypt", "keys"}},
		{[]string{"__complete", "status", "-o", ""}, []string{"table", "json", "yaml"}},
	} {
		out, _, err := execRoot(t, tc.args...)
		for _, w := range tc.want {
			if err != nil || !strings.Contains(out, w+"\t") && !strings.Contains(out, w+"\n") {
				t.Errorf("hsmgate %v: got %q, %v; want %q offered", tc.args, out, err, w)
			}
		}
	}
}

// TestOutputOfflineVerbs: audit checkpoint-key, which reads a server's
// config and HSM (no server running), prints the PEM key, or as JSON the
// key with its label and fingerprint.
func TestOutputOfflineVerbs(t *testing.T) {
	cfg, env := serverConfig(t, "")
	if _, errOut, code := run(t, env, "init", "--config", cfg); code != 0 {
		t.Fatalf("init: exit %d: %s", code, errOut)
	}
	pemOut, errOut, code := run(t, env, "audit", "checkpoint-key", "--config", cfg)
	if code != 0 || !strings.HasPrefix(pemOut, "-----BEGIN PUBLIC KEY-----") {
		t.Fatalf("audit checkpoint-key: exit %d, %q, %s; want a PEM public key", code, pemOut, errOut)
	}
	out, errOut, code := run(t, env, "audit", "checkpoint-key", "--config", cfg, "-o", "json")
	v, err := oneJSONDocument(out)
	if code != 0 || err != nil {
		t.Fatalf("audit checkpoint-key -o json: exit %d, %v, %q, %s", code, err, out, errOut)
	}
	doc, _ := v.(map[string]any)
	if doc["publicKeyPem"] != pemOut || doc["fingerprint"] == "" || doc["label"] == "" {
		t.Errorf("audit checkpoint-key -o json: got %v, want the same key with its label and fingerprint", doc)
	}
}

// yamlRoundTrip converts the JSON document j to YAML with jsonToYAML and
// reports whether the YAML means the same value.
func yamlRoundTrip(t *testing.T, j []byte) string {
	t.Helper()
	y, err := jsonToYAML(j)
	if err != nil {
		t.Fatalf("jsonToYAML(%s): %v", j, err)
	}
	var want, got any
	if err := json.Unmarshal(j, &want); err != nil {
		t.Fatal(err)
	}
	var fromYAML any
	if err := yaml.Unmarshal(y, &fromYAML); err != nil {
		t.Fatalf("jsonToYAML(%s) = %q: not YAML: %v", j, y, err)
	}
	b, err := json.Marshal(fromYAML)
	if err != nil {
		t.Fatalf("jsonToYAML(%s) = %q: %v", j, y, err)
	}
	if err := json.Unmarshal(b, &got); err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("jsonToYAML(%s) = %q, which reads back as %s", j, y, b)
	}
	return string(y)
}

func TestJSONToYAML(t *testing.T) {
	tests := []struct {
		name, json, want string
	}{
		{"order of keys kept", `{"b":1,"a":{"d":true,"c":null}}`, "b: 1\na:\n  d: true\n  c: null\n"},
		{"strings that look like other types stay strings", `{"s":"true","n":"12","e":"","y":"yes","z":"0x1F"}`, ""},
		{"multi-line text (PEM)", `{"pem":"-----BEGIN PUBLIC KEY-----\nMFkw\n-----END PUBLIC KEY-----\n"}`, ""},
		{"empty list and object", `{"names":[],"o":{}}`, "names: []\no: {}\n"},
		{"list of objects", `{"results":[{"ciphertext":"hsmgate:v1:AA==","error":null}]}`, "results:\n  - ciphertext: hsmgate:v1:AA==\n    error: null\n"},
		{"big numbers and strings of digits", `{"u":"18446744073709551615","f":1.5}`, ""},
		{"keys that need quoting", `{"a: b":1,"- x":2,"":3}`, ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got := yamlRoundTrip(t, []byte(tc.json))
			if tc.want != "" && got != tc.want {
				t.Errorf("got %q, want %q", got, tc.want)
			}
		})
	}
}

// FuzzJSONToYAML: any JSON document becomes YAML that means the same.
func FuzzJSONToYAML(f *testing.F) {
	for _, s := range []string{`{}`, `[]`, `"x"`, `{"a":[1,"2",{"b":null}]}`, `{"k":"line\nline"}`, `{"n":"1e3"}`, `{"t":"~"}`} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		var v any
		if json.Unmarshal([]byte(s), &v) != nil {
			return
		}
		var compact bytes.Buffer
		if json.Compact(&compact, []byte(s)) != nil {
			return
		}
		// Numbers as JSON has them, not float64, are out of scope: the
		// printer's documents come from protojson (64-bit integers as
		// strings) and encoding/json.
		if _, err := json.Marshal(v); err != nil {
			return
		}
		yamlRoundTrip(t, compact.Bytes())
	})
}

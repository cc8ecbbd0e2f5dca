package vaultdoor_test

import (
	"bytes"
	"context"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/types/known/durationpb"

	pb "github.com/hsmgate/hsmgate/proto/hsmgate/v1"
)

// vaultErrors decodes {"errors":[...]}; it fails the test on any other shape.
func vaultErrors(t *testing.T, body []byte) []string {
	t.Helper()
	var v map[string]json.RawMessage
	if err := json.Unmarshal(body, &v); err != nil {
		t.Fatalf("body %q is not JSON: %v", body, err)
	}
	var errs []string
	if err := json.Unmarshal(v["errors"], &errs); err != nil || len(v) != 1 || len(errs) == 0 {
		t.Fatalf("body %q: want {\"errors\":[...]}", body)
	}
	return errs
}

// snapshot is every engine record in the store, by key, with its revision.
func (e *env) snapshot() map[string]int64 {
	e.t.Helper()
	out := map[string]int64{}
	for _, p := range []string{"transit/", "pki/", "ssh/"} {
		ents, err := e.store.List(context.Background(), p)
		if err != nil {
			e.t.Fatal(err)
		}
		for _, en := range ents {
			out[en.Key] = en.Revision
		}
	}
	return out
}

// fixtures makes the keys, roles and a certificate the mapped paths act on.
func (e *env) fixtures() (ciphertext, signature, mac, serial, userPub string) {
	e.t.Helper()
	for name, typ := range map[string]string{"k": "aes256-gcm96", "s": "ecdsa-p256", "h": "hmac"} {
		if code, body := e.do("POST", "/v1/transit/keys/"+name, e.root, map[string]any{"type": typ}); code != 200 {
			e.t.Fatalf("create %s: %d %s", name, code, body)
		}
	}
	if code, body := e.do("POST", "/v1/transit/keys/k/config", e.root, map[string]any{"deletion_allowed": true}); code != 200 {
		e.t.Fatalf("config: %d %s", code, body)
	}
	in := base64.StdEncoding.EncodeToString([]byte("hello"))
	data := func(code int, body []byte) map[string]any {
		if code != 200 {
			e.t.Fatalf("%d %s", code, body)
		}
		var r struct{ Data map[string]any }
		if err := json.Unmarshal(body, &r); err != nil {
			e.t.Fatal(err)
		}
		return r.Data
	}
	ciphertext = data(e.do("POST", "/v1/transit/encrypt/k", e.root, map[string]any{"plaintext": in}))["ciphertext"].(string)
	signature = data(e.do("POST", "/v1/transit/sign/s", e.root, map[string]any{"input": in}))["signature"].(string)
	mac = data(e.do("POST", "/v1/transit/hmac/h", e.root, map[string]any{"input": in}))["hmac"].(string)
	if _, err := e.pki.CreateRole(e.rootCtx, &pb.CreateRoleRequest{Role: &pb.Role{
		Name: "web", AllowedDomains: []string{"example.com"}, AllowSubdomains: true, ServerFlag: true,
		MaxTtl: durationpb.New(2400 * time.Hour),
	}}); err != nil {
		e.t.Fatal(err)
	}
	serial = data(e.do("POST", "/v1/pki/issue/web", e.root, map[string]any{"common_name": "a.example.com"}))["serial_number"].(string)
	sc := e.sshService()
	if _, err := sc.CreateSSHCA(e.rootCtx, &pb.CreateSSHCARequest{Name: "users", CertType: pb.SSHCertType_SSH_CERT_TYPE_USER, KeyType: pb.SSHKeyType_SSH_KEY_TYPE_ED25519}); err != nil {
		e.t.Fatal(err)
	}
	if _, err := sc.CreateSSHRole(e.rootCtx, &pb.CreateSSHRoleRequest{Role: &pb.SSHRole{Name: "eng", Ca: "users", CertType: pb.SSHCertType_SSH_CERT_TYPE_USER, AllowedPrincipals: []string{"alice"}}}); err != nil {
		e.t.Fatal(err)
	}
	userPub = writeSSHKey(e.t, e.t.TempDir()+"/id")
	return
}

// TestDeniedChangesNothing: every mapped path, with a token whose policies
// grant nothing on the resource, answers 403 {"errors":[...]} and leaves
// the store as it was; the audit log names the door and the mapped RPC.
func TestDeniedChangesNothing(t *testing.T) {
	e := newEnv(t)
	ct, sig, mac, serial, userPub := e.fixtures()
	e.policy("elsewhere", map[string][]string{"transit/keys/other": {"encrypt", "decrypt", "read"}, "pki/roles/other": {"issue"}})
	tok := e.token("elsewhere")
	in := base64.StdEncoding.EncodeToString([]byte("hello"))
	csr := string(csrPEM(t, "b.example.com", []string{"b.example.com"}, nil))
	cases := []struct {
		method, path string
		body         any
		rpc          string
	}{
		{"POST", "/v1/pki/sign/web", map[string]any{"csr": csr}, "/hsmgate.v1.PKIService/Sign"},
		{"POST", "/v1/pki/issue/web", map[string]any{"common_name": "c.example.com"}, "/hsmgate.v1.PKIService/Issue"},
		{"POST", "/v1/pki/root/sign-intermediate", map[string]any{"csr": csr}, "/hsmgate.v1.VaultDoor/SignIntermediate"},
		{"POST", "/v1/pki/revoke", map[string]any{"serial_number": serial}, "/hsmgate.v1.PKIService/Revoke"},
		{"POST", "/v1/transit/encrypt/k", map[string]any{"plaintext": in}, "/hsmgate.v1.TransitService/Encrypt"},
		{"POST", "/v1/transit/decrypt/k", map[string]any{"ciphertext": ct}, "/hsmgate.v1.TransitService/Decrypt"},
		{"POST", "/v1/transit/rewrap/k", map[string]any{"ciphertext": ct}, "/hsmgate.v1.TransitService/Rewrap"},
		{"POST", "/v1/transit/encrypt/k", map[string]any{"batch_input": []map[string]any{{"plaintext": in}}}, "/hsmgate.v1.TransitService/Encrypt"},
		{"POST", "/v1/transit/datakey/plaintext/k", nil, "/hsmgate.v1.TransitService/GenerateDataKey"},
		{"POST", "/v1/transit/datakey/wrapped/k", nil, "/hsmgate.v1.TransitService/GenerateDataKey"},
		{"POST", "/v1/transit/sign/s", map[string]any{"input": in}, "/hsmgate.v1.TransitService/SignData"},
		{"POST", "/v1/transit/sign/s/sha2-256", map[string]any{"input": in}, "/hsmgate.v1.TransitService/SignData"},
		{"POST", "/v1/transit/verify/s", map[string]any{"input": in, "signature": sig}, "/hsmgate.v1.TransitService/VerifySignature"},
		{"POST", "/v1/transit/hmac/h", map[string]any{"input": in}, "/hsmgate.v1.TransitService/ComputeHmac"},
		{"POST", "/v1/transit/verify/h", map[string]any{"input": in, "hmac": mac}, "/hsmgate.v1.TransitService/VerifyHmac"},
		{"POST", "/v1/transit/random/16", nil, "/hsmgate.v1.TransitService/GenerateRandom"},
		{"LIST", "/v1/transit/keys", nil, "/hsmgate.v1.TransitService/ListKeys"},
		{"GET", "/v1/transit/keys?list=true", nil, "/hsmgate.v1.TransitService/ListKeys"},
		{"GET", "/v1/transit/keys/k", nil, "/hsmgate.v1.TransitService/GetKey"},
		{"POST", "/v1/transit/keys/new", map[string]any{"type": "aes256-gcm96"}, "/hsmgate.v1.TransitService/CreateKey"},
		{"PUT", "/v1/transit/keys/new", nil, "/hsmgate.v1.TransitService/CreateKey"},
		{"DELETE", "/v1/transit/keys/k", nil, "/hsmgate.v1.TransitService/DeleteKey"},
		{"POST", "/v1/transit/keys/k/rotate", nil, "/hsmgate.v1.TransitService/RotateKey"},
		{"POST", "/v1/transit/keys/k/config", map[string]any{"min_decryption_version": 1}, "/hsmgate.v1.TransitService/UpdateKeyConfig"},
		{"POST", "/v1/ssh/sign/eng", map[string]any{"public_key": userPub, "valid_principals": "alice"}, "/hsmgate.v1.SSHCAService/SignUserKey"},
	}
	for _, tc := range cases {
		t.Run(tc.method+" "+tc.path, func(t *testing.T) {
			before := e.snapshot()
			code, body := e.do(tc.method, tc.path, tok, tc.body)
			if code != http.StatusForbidden {
				t.Fatalf("got %d %s, want 403", code, body)
			}
			vaultErrors(t, body)
			if after := e.snapshot(); !mapsEqual(before, after) {
				t.Errorf("the store changed: before %v, after %v", before, after)
			}
			lines := e.auditLines()
			last := lines[len(lines)-1]
			if last["method"] != tc.rpc || last["code"] != "PermissionDenied" ||
				!strings.Contains(last["remote"].(string), "via vault "+strings.Replace(tc.method, "LIST", "LIST", 1)) {
				t.Errorf("last audit line: got %v, want the RPC %s refused, via the vault door", last, tc.rpc)
			}
		})
	}
	t.Run("no token", func(t *testing.T) {
		code, body := e.do("POST", "/v1/transit/encrypt/k", "", map[string]any{"plaintext": in})
		if code != http.StatusForbidden {
			t.Fatalf("got %d %s, want 403", code, body)
		}
		vaultErrors(t, body)
	})
	t.Run("bad token", func(t *testing.T) {
		code, body := e.do("POST", "/v1/transit/encrypt/k", "hgs.AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA", map[string]any{"plaintext": in})
		if code != http.StatusForbidden {
			t.Fatalf("got %d %s, want 403", code, body)
		}
	})
}

func mapsEqual(a, b map[string]int64) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if w, ok := b[k]; !ok || w != v {
			return false
		}
	}
	return true
}

// TestTransport: body limits, malformed JSON, unknown fields and paths,
// wrong methods, Authorization: Bearer, Vault's lenient field forms.
func TestTransport(t *testing.T) {
	e := newEnv(t)
	if code, body := e.do("POST", "/v1/transit/keys/k", e.root, nil); code != 200 {
		t.Fatalf("create: %d %s", code, body)
	}
	in := base64.StdEncoding.EncodeToString([]byte("hi"))
	bad := []struct {
		name, method, path string
		body               any
		want               int
	}{
		{"oversized body", "POST", "/v1/transit/encrypt/k", `{"plaintext":"` + strings.Repeat("A", 2<<20) + `"}`, 400},
		{"malformed JSON", "POST", "/v1/transit/encrypt/k", `{"plaintext":`, 400},
		{"not an object", "POST", "/v1/transit/encrypt/k", `["plaintext"]`, 400},
		{"data after the object", "POST", "/v1/transit/encrypt/k", `{"plaintext":"aGk="}{}`, 400},
		{"unknown field", "POST", "/v1/transit/encrypt/k", map[string]any{"plaintext": in, "plaintxt": in}, 400},
		{"bad base64", "POST", "/v1/transit/encrypt/k", map[string]any{"plaintext": "%%%"}, 400},
		{"bad ciphertext", "POST", "/v1/transit/decrypt/k", map[string]any{"ciphertext": "vault:v1:!!"}, 400},
		{"bad ttl", "POST", "/v1/pki/sign/web", map[string]any{"csr": "x", "ttl": "forever"}, 400},
		{"unknown path", "GET", "/v1/nope", nil, 404},
		{"unknown transit path", "POST", "/v1/transit/unwrap/k", nil, 404},
		{"unknown pki path", "GET", "/v1/pki/certs", nil, 404},
		{"dot segment", "GET", "/v1/transit/keys/../k", nil, 404},
		{"wrong method on encrypt", "GET", "/v1/transit/encrypt/k", nil, 405},
		{"wrong method on sign", "DELETE", "/v1/pki/sign/web", nil, 405},
		{"wrong method on health", "POST", "/v1/sys/health", nil, 405},
		{"wrong method on ssh sign", "GET", "/v1/ssh/sign/eng", nil, 405},
	}
	for _, tc := range bad {
		t.Run(tc.name, func(t *testing.T) {
			before := e.snapshot()
			code, body := e.do(tc.method, tc.path, e.root, tc.body)
			if code != tc.want {
				t.Fatalf("got %d %s, want %d", code, body, tc.want)
			}
			vaultErrors(t, body)
			if !mapsEqual(before, e.snapshot()) {
				t.Error("the store changed")
			}
		})
	}
	t.Run("Authorization Bearer", func(t *testing.T) {
		req, _ := http.NewRequest("POST", e.url+"/v1/transit/encrypt/k", strings.NewReader(`{"plaintext":"`+in+`"}`))
		req.Header.Set("Authorization", "Bearer "+e.root)
		resp, err := e.httpClient().Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != 200 {
			t.Fatalf("got %d, want 200", resp.StatusCode)
		}
	})
	t.Run("envelope", func(t *testing.T) {
		code, body := e.do("POST", "/v1/transit/encrypt/k", e.root, map[string]any{"plaintext": in})
		var env map[string]json.RawMessage
		if err := json.Unmarshal(body, &env); code != 200 || err != nil {
			t.Fatalf("%d %s", code, body)
		}
		for _, k := range []string{"request_id", "lease_id", "renewable", "lease_duration", "data", "warnings"} {
			if _, ok := env[k]; !ok {
				t.Errorf("envelope lacks %q: %s", k, body)
			}
		}
		var reqID string
		_ = json.Unmarshal(env["request_id"], &reqID)
		lines := e.auditLines()
		// Encrypt is read-only: one line, after the handler.
		l, before := lines[len(lines)-1], lines[len(lines)-2]
		if l["method"] != "/hsmgate.v1.TransitService/Encrypt" || l["request_id"] != reqID ||
			l["resource"] != "transit/keys/k" || !strings.HasSuffix(l["remote"].(string), "via vault POST /v1/transit/encrypt/k") {
			t.Errorf("audit line %v: want the Encrypt RPC on transit/keys/k via the door, request id %s", l, reqID)
		}
		if l["type"] != "call" || l["code"] != "OK" || before["request_id"] == reqID {
			t.Errorf("audit lines: %v %v, want one call line with code OK", before, l)
		}
		if string(env["lease_id"]) != `""` || string(env["renewable"]) != "false" || string(env["lease_duration"]) != "0" || string(env["warnings"]) != "null" {
			t.Errorf("envelope: %s", body)
		}
	})
	t.Run("lenient forms", func(t *testing.T) {
		if _, err := e.pki.CreateRole(e.rootCtx, &pb.CreateRoleRequest{Role: &pb.Role{
			Name: "web", AllowedDomains: []string{"example.com"}, AllowSubdomains: true, ServerFlag: true, MaxTtl: durationpb.New(2400 * time.Hour),
		}}); err != nil {
			t.Fatal(err)
		}
		for _, body := range []map[string]any{
			{"common_name": "a.example.com", "alt_names": []string{"b.example.com", "c.example.com"}, "ttl": 7200, "exclude_cn_from_sans": true},
			{"common_name": "a.example.com", "alt_names": "b.example.com, c.example.com", "ttl": "7200", "exclude_cn_from_sans": "1"},
			{"common_name": "a.example.com", "alt_names": "b.example.com,c.example.com", "ttl": "2h", "exclude_cn_from_sans": "true", "format": "pem"},
		} {
			code, resp := e.do("POST", "/v1/pki/issue/web", e.root, body)
			if code != 200 {
				t.Fatalf("%v: got %d %s", body, code, resp)
			}
			var r struct {
				Data struct {
					Certificate    string `json:"certificate"`
					PrivateKey     string `json:"private_key"`
					PrivateKeyType string `json:"private_key_type"`
				}
			}
			_ = json.Unmarshal(resp, &r)
			if r.Data.PrivateKeyType != "ec" || !strings.HasPrefix(r.Data.PrivateKey, "-----BEGIN EC "+"PRIVATE KEY-----") {
				t.Errorf("private key: got type %q, %.30q", r.Data.PrivateKeyType, r.Data.PrivateKey)
			}
			blk, _ := pem.Decode([]byte(r.Data.Certificate))
			if blk == nil {
				t.Fatalf("certificate: %q", r.Data.Certificate)
			}
			cert, err := x509.ParseCertificate(blk.Bytes)
			if err != nil {
				t.Fatal(err)
			}
			if want := []string{"a.example.com", "b.example.com", "c.example.com"}; !slices.Equal(cert.DNSNames, want) {
				t.Errorf("SANs: got %v, want %v", cert.DNSNames, want)
			}
			if d := cert.NotAfter.Sub(cert.NotBefore); d < 2*time.Hour || d > 2*time.Hour+time.Minute {
				t.Errorf("validity: got %s, want 2h (plus backdate)", d)
			}
		}
	})
}

// TestTransitWithVaultAPI drives transit through vault/api's Logical().
func TestTransitWithVaultAPI(t *testing.T) {
	e := newEnv(t)
	c := e.vaultClient(e.root).Logical()
	must := func(path string, data map[string]any) map[string]any {
		t.Helper()
		s, err := c.Write(path, data)
		if err != nil {
			t.Fatalf("%s: %v", path, err)
		}
		if s == nil {
			return nil
		}
		return s.Data
	}
	must("transit/keys/k", map[string]any{"type": "aes256-gcm96"})
	must("transit/keys/s", map[string]any{"type": "ed25519"})
	must("transit/keys/h", map[string]any{"type": "hmac", "key_size": 64})
	pt := base64.StdEncoding.EncodeToString([]byte("attack at dawn"))

	ct := must("transit/encrypt/k", map[string]any{"plaintext": pt})["ciphertext"].(string)
	if !strings.HasPrefix(ct, "vault:v1:") {
		t.Fatalf("ciphertext %q: want vault:v1:", ct)
	}
	t.Run("decrypt both text forms", func(t *testing.T) {
		for _, form := range []string{ct, "hsmgate:v1:" + strings.TrimPrefix(ct, "vault:v1:")} {
			if got := must("transit/decrypt/k", map[string]any{"ciphertext": form})["plaintext"]; got != pt {
				t.Errorf("decrypt %q: got %v, want %s", form, got, pt)
			}
		}
	})
	t.Run("batch with a per-item error", func(t *testing.T) {
		code, body := e.do("POST", "/v1/transit/decrypt/k", e.root, map[string]any{"batch_input": []map[string]any{
			{"ciphertext": ct, "reference": "good"},
			{"ciphertext": "vault:v1:AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA", "reference": "tampered"},
			{"ciphertext": ct, "reference": "bad", "nonsense": 1},
		}})
		if code != 400 {
			t.Fatalf("got %d, want 400 (an item failed): %s", code, body)
		}
		var r struct {
			Data struct {
				BatchResults []map[string]any `json:"batch_results"`
			}
		}
		if err := json.Unmarshal(body, &r); err != nil || len(r.Data.BatchResults) != 3 {
			t.Fatalf("batch_results: %s", body)
		}
		got := r.Data.BatchResults
		if got[0]["plaintext"] != pt || got[0]["reference"] != "good" || got[0]["error"] != nil {
			t.Errorf("item 0: %v", got[0])
		}
		for _, i := range []int{1, 2} {
			if got[i]["error"] == nil || got[i]["plaintext"] != nil {
				t.Errorf("item %d: got %v, want an error", i, got[i])
			}
		}
		code, _ = e.do("POST", "/v1/transit/decrypt/k", e.root, map[string]any{"partial_failure_response_code": 207, "batch_input": []map[string]any{
			{"ciphertext": ct}, {"ciphertext": "vault:v1:AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"},
		}})
		if code != 207 {
			t.Errorf("partial_failure_response_code: got %d, want 207", code)
		}
	})
	t.Run("datakey", func(t *testing.T) {
		d := must("transit/datakey/plaintext/k", map[string]any{"bits": 256})
		raw, _ := base64.StdEncoding.DecodeString(d["plaintext"].(string))
		if len(raw) != 32 {
			t.Fatalf("data key: %d bytes", len(raw))
		}
		if got := must("transit/decrypt/k", map[string]any{"ciphertext": d["ciphertext"]})["plaintext"]; got != d["plaintext"] {
			t.Error("the wrapped data key does not decrypt to the plaintext one")
		}
		if w := must("transit/datakey/wrapped/k", nil); w["plaintext"] != nil || w["ciphertext"] == nil {
			t.Errorf("wrapped datakey: %v", w)
		}
	})
	t.Run("sign and verify", func(t *testing.T) {
		sig := must("transit/sign/s", map[string]any{"input": pt})["signature"].(string)
		if !strings.HasPrefix(sig, "vault:v1:") {
			t.Fatalf("signature %q", sig)
		}
		if v := must("transit/verify/s", map[string]any{"input": pt, "signature": sig})["valid"]; v != true {
			t.Errorf("verify: got %v, want true", v)
		}
		other := base64.StdEncoding.EncodeToString([]byte("attack at dusk"))
		if v := must("transit/verify/s", map[string]any{"input": other, "signature": sig})["valid"]; v != false {
			t.Errorf("verify of other input: got %v, want false", v)
		}
	})
	t.Run("hmac", func(t *testing.T) {
		mac := must("transit/hmac/h/sha2-512", map[string]any{"input": pt})["hmac"].(string)
		if v := must("transit/verify/h/sha2-512", map[string]any{"input": pt, "hmac": mac})["valid"]; v != true {
			t.Errorf("verify hmac: got %v", v)
		}
		if _, err := c.Write("transit/hmac/h/sha2-256", map[string]any{"input": pt}); err == nil || !strings.Contains(err.Error(), "Code: 400") {
			t.Errorf("hmac with another hash: got %v, want 400", err)
		}
	})
	t.Run("random", func(t *testing.T) {
		r := must("transit/random/16", map[string]any{"format": "hex"})["random_bytes"].(string)
		if len(r) != 32 {
			t.Errorf("random hex: %q", r)
		}
	})
	t.Run("keys read, list, rotate, config, delete", func(t *testing.T) {
		s, err := c.Read("transit/keys/k")
		if err != nil || s.Data["type"] != "aes256-gcm96" || s.Data["latest_version"] != json.Number("1") {
			t.Fatalf("read: %v %v", s, err)
		}
		l, err := c.List("transit/keys")
		if err != nil {
			t.Fatal(err)
		}
		var names []string
		for _, n := range l.Data["keys"].([]any) {
			names = append(names, n.(string))
		}
		if !slices.Equal(names, []string{"h", "k", "s"}) {
			t.Errorf("list: got %v", names)
		}
		if d := must("transit/keys/k/rotate", nil); d["latest_version"] != json.Number("2") {
			t.Errorf("rotate: %v", d)
		}
		ct2 := must("transit/encrypt/k", map[string]any{"plaintext": pt})["ciphertext"].(string)
		if !strings.HasPrefix(ct2, "vault:v2:") {
			t.Errorf("after rotate: %q", ct2)
		}
		if r := must("transit/rewrap/k", map[string]any{"ciphertext": ct})["ciphertext"].(string); !strings.HasPrefix(r, "vault:v2:") {
			t.Errorf("rewrap: %q", r)
		}
		must("transit/keys/k/config", map[string]any{"min_decryption_version": 2, "deletion_allowed": true})
		if _, err := c.Write("transit/decrypt/k", map[string]any{"ciphertext": ct}); err == nil || !strings.Contains(err.Error(), "Code: 400") {
			t.Errorf("decrypt below min_decryption_version: got %v, want 400", err)
		}
		if _, err := c.Delete("transit/keys/k"); err != nil {
			t.Fatal(err)
		}
		if s, err := c.Read("transit/keys/k"); err != nil || s != nil {
			t.Errorf("read after delete: got %v %v, want 404 (nil secret)", s, err)
		}
	})
	t.Run("create again answers the key", func(t *testing.T) {
		if d := must("transit/keys/s", map[string]any{"type": "ed25519"}); d["type"] != "ed25519" {
			t.Errorf("got %v", d)
		}
	})
	_ = bytes.MinRead
}

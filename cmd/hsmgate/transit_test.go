package main

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/spf13/cobra"
	"google.golang.org/protobuf/encoding/protojson"

	"github.com/hsmgate/hsmgate/client"
	"github.com/hsmgate/hsmgate/client/textform"
	hsmgatev1 "github.com/hsmgate/hsmgate/proto/hsmgate/v1"
)

var transitTextForm = regexp.MustCompile(`^hsmgate:v([0-9]+):[A-Za-z0-9+/]+=*$`)

// TestTransitCLI is the CLI round trip of issue 4 item 6 against a real
// `hsmgate dev` (auth, audit and every engine wired), each verb a separate
// process as a user would run it.
func TestTransitCLI(t *testing.T) {
	requireSoftHSM(t)
	dev := startDev(t, filepath.Join(t.TempDir(), "state"))
	env := dev.env()
	dir := t.TempDir()
	file := func(name, content string) string {
		t.Helper()
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	hg := func(args ...string) string {
		t.Helper()
		out, errOut, code := run(t, env, args...)
		if code != 0 {
			t.Fatalf("hsmgate %s: exit %d, stderr:\n%s", strings.Join(args, " "), code, errOut)
		}
		return out
	}
	// fails runs a command that must fail with exit 1 and stderr containing want.
	fails := func(want string, args ...string) {
		t.Helper()
		out, errOut, code := run(t, env, args...)
		if code != 1 || !strings.Contains(errOut, want) {
			t.Errorf("hsmgate %s: got exit %d, stdout %q, stderr %q; want exit 1 and %q", strings.Join(args, " "), code, out, errOut, want)
		}
	}
	ciphertext := func(out string, version string) string {
		t.Helper()
		line := strings.TrimSuffix(out, "\n")
		m := transitTextForm.FindStringSubmatch(line)
		if m == nil || strings.Count(out, "\n") != 1 {
			t.Fatalf("got %q, want one line hsmgate:v<N>:<base64>", out)
		}
		if m[1] != version {
			t.Errorf("ciphertext %q: got version %s, want %s", line, m[1], version)
		}
		return file("ct-"+strings.ReplaceAll(line[len(line)-8:], "/", "_"), out)
	}

	if out := hg("transit", "keys", "create", "k1"); !strings.Contains(out, "type:                     aes256-gcm") {
		t.Errorf("keys create: got\n%s\nwant type aes256-gcm", out)
	}

	t.Run("pipe", func(t *testing.T) {
		// The issue's own example, through a real shell pipe.
		sh := exec.Command("sh", "-c", `printf hi | "$HG" transit encrypt k1 | "$HG" transit decrypt k1`)
		sh.Env = append(hsmgateCmd(context.Background(), env).Env, "HG="+os.Args[0])
		var out, errb bytes.Buffer
		sh.Stdout, sh.Stderr = &out, &errb
		if err := sh.Run(); err != nil || out.String() != "hi" {
			t.Errorf("echo -n hi | encrypt | decrypt: got %q, %v (stderr %s), want \"hi\"", out.String(), err, errb.String())
		}
	})

	pt := file("pt", "attack at dawn\n")
	ct1 := ciphertext(hg("transit", "encrypt", "k1", "--in", pt), "1")

	t.Run("rotate then decrypt old ciphertext", func(t *testing.T) {
		if out := hg("transit", "keys", "rotate", "k1"); !strings.Contains(out, "latest version:           2") {
			t.Errorf("keys rotate: got\n%s\nwant latest version 2", out)
		}
		if got := hg("transit", "decrypt", "k1", "--in", ct1); got != "attack at dawn\n" {
			t.Errorf("decrypt v1 ciphertext after rotate: got %q", got)
		}
		ciphertext(hg("transit", "encrypt", "k1", "--in", pt), "2")
	})

	t.Run("rewrap", func(t *testing.T) {
		ct2 := ciphertext(hg("transit", "rewrap", "k1", "--in", ct1), "2")
		if got := hg("transit", "decrypt", "k1", "--in", ct2); got != "attack at dawn\n" {
			t.Errorf("decrypt rewrapped: got %q", got)
		}
	})

	t.Run("aad", func(t *testing.T) {
		aad := base64.StdEncoding.EncodeToString([]byte("order-42"))
		ct := ciphertext(hg("transit", "encrypt", "k1", "--in", pt, "--aad", aad), "2")
		fails("InvalidArgument", "transit", "decrypt", "k1", "--in", ct)
		if got := hg("transit", "decrypt", "k1", "--in", ct, "--aad", "@"+file("aad", "order-42")); got != "attack at dawn\n" {
			t.Errorf("decrypt with --aad @file: got %q", got)
		}
	})

	t.Run("sign and verify", func(t *testing.T) {
		hg("transit", "keys", "create", "s1", "--type", "ecdsa-p256")
		doc := file("doc", "release 1.0")
		sig := strings.TrimSpace(hg("transit", "sign", "s1", "--in", doc))
		if m := transitTextForm.FindStringSubmatch(sig); m == nil || m[1] != "1" {
			t.Fatalf("sign: got %q, want hsmgate:v1:<base64>", sig)
		}
		if got := hg("transit", "verify", "s1", "--in", doc, "--signature", sig); got != "valid\n" {
			t.Errorf("verify: got %q, want valid", got)
		}
		if got := hg("transit", "verify", "s1", "--in", doc, "--signature", "@"+file("sig", sig+"\n")); got != "valid\n" {
			t.Errorf("verify --signature @file: got %q, want valid", got)
		}
		fails("not valid", "transit", "verify", "s1", "--in", file("doc2", "release 2.0"), "--signature", sig)
		fails("InvalidArgument", "transit", "sign", "k1", "--in", doc) // wrong key type
	})

	t.Run("hmac", func(t *testing.T) {
		hg("transit", "keys", "create", "m1", "--type", "hmac-sha256")
		in := file("mac-in", "payload")
		mac := strings.TrimSpace(hg("transit", "hmac", "m1", "--in", in))
		raw, _ := base64.StdEncoding.DecodeString(strings.TrimPrefix(mac, "hsmgate:v1:"))
		if len(raw) != 32 {
			t.Fatalf("hmac: got %q, want hsmgate:v1: and 32 bytes", mac)
		}
		if got := hg("transit", "hmac", "m1", "--in", in, "--verify", mac); got != "valid\n" {
			t.Errorf("hmac --verify: got %q, want valid", got)
		}
		fails("not valid", "transit", "hmac", "m1", "--in", file("mac-in2", "payload!"), "--verify", mac)
	})

	t.Run("datakey", func(t *testing.T) {
		out := hg("transit", "datakey", "k1")
		var ct, plain string
		for _, l := range strings.Split(strings.TrimSpace(out), "\n") {
			k, v, _ := strings.Cut(l, ":")
			switch k {
			case "ciphertext":
				ct = strings.TrimSpace(v)
			case "plaintext":
				plain = strings.TrimSpace(v)
			}
		}
		key, err := base64.StdEncoding.DecodeString(plain)
		if err != nil || len(key) != 32 {
			t.Fatalf("datakey: got\n%s\nwant a 32-byte plaintext", out)
		}
		if got := hg("transit", "decrypt", "k1", "--in", ciphertext(ct+"\n", "2")); got != string(key) {
			t.Errorf("decrypt of the data key's ciphertext: got %x, want %x", got, key)
		}
		if out := hg("transit", "datakey", "k1", "--wrapped-only", "--bits", "128"); strings.Contains(out, "plaintext") {
			t.Errorf("datakey --wrapped-only printed a plaintext:\n%s", out)
		}
	})

	t.Run("json", func(t *testing.T) {
		var enc struct {
			Results []struct {
				Ciphertext string `json:"ciphertext"`
				KeyVersion int    `json:"keyVersion"`
			} `json:"results"`
		}
		out := hg("transit", "encrypt", "k1", "--in", pt, "--json")
		if err := json.Unmarshal([]byte(out), &enc); err != nil || len(enc.Results) != 1 {
			t.Fatalf("encrypt --json: %v\n%s", err, out)
		}
		if r := enc.Results[0]; !strings.HasPrefix(r.Ciphertext, "hsmgate:v2:") || r.KeyVersion != 2 {
			t.Errorf("encrypt --json: got %+v, want a hsmgate:v2: ciphertext and keyVersion 2", r)
		}
		var dec hsmgatev1.DecryptResponse
		out = hg("transit", "decrypt", "k1", "--in", ct1, "--json")
		if err := protojson.Unmarshal([]byte(out), &dec); err != nil {
			t.Fatalf("decrypt --json: %v\n%s", err, out)
		}
		if got := string(dec.GetResults()[0].GetPlaintext()); got != "attack at dawn\n" {
			t.Errorf("decrypt --json plaintext: got %q", got)
		}
		var key hsmgatev1.GetKeyResponse
		out = hg("transit", "keys", "show", "k1", "--json")
		if err := protojson.Unmarshal([]byte(out), &key); err != nil {
			t.Fatalf("keys show --json: %v\n%s", err, out)
		}
		if k := key.GetKey(); k.GetLatestVersion() != 2 || len(k.GetVersions()) != 2 || k.GetType() != hsmgatev1.TransitKeyType_TRANSIT_KEY_TYPE_AES256_GCM {
			t.Errorf("keys show --json: got %v", k)
		}
		// Usage: reserved and used, in JSON and in text; never "encryptions".
		for _, v := range key.GetKey().GetVersions() {
			if v.Reserved == nil || v.Used == nil || v.GetUsed() > v.GetReserved() {
				t.Errorf("keys show --json v%d: reserved %v used %v, want both, used <= reserved", v.GetVersion(), v.Reserved, v.Used)
			}
		}
		if !strings.Contains(out, `"reserved"`) || !strings.Contains(out, `"used"`) {
			t.Errorf("keys show --json: no reserved/used fields:\n%s", out)
		}
		if out := hg("transit", "keys", "show", "k1"); !strings.Contains(out, " reserved ") || !strings.Contains(out, " used ") || strings.Contains(out, "encryptions ") {
			t.Errorf("keys show: want reserved and used per version, not encryptions:\n%s", out)
		}
		if got := hg("transit", "keys", "list"); got != "k1\nm1\ns1\n" {
			t.Errorf("keys list: got %q, want k1 m1 s1", got)
		}
	})

	t.Run("key lifecycle", func(t *testing.T) {
		hg("transit", "keys", "create", "e1", "--exportable", "--deletion-allowed", "--allow-restore-rename")
		ct := ciphertext(hg("transit", "encrypt", "e1", "--in", pt), "1")
		exp := strings.Fields(hg("transit", "keys", "export", "e1"))
		if key, err := base64.StdEncoding.DecodeString(exp[len(exp)-1]); len(exp) != 2 || exp[0] != "v1" || err != nil || len(key) != 32 {
			t.Errorf("keys export: got %q, want v1 and 32 bytes of base64", exp)
		}
		// Backup, restore under a new name: the old ciphertext decrypts there.
		bak := file("e1.bak", hg("transit", "keys", "backup", "e1"))
		if out := hg("transit", "keys", "restore", "--in", bak, "--name", "e1-copy"); !strings.Contains(out, "name:                     e1-copy") {
			t.Errorf("keys restore: got\n%s", out)
		}
		if got := hg("transit", "decrypt", "e1-copy", "--in", ct); got != "attack at dawn\n" {
			t.Errorf("decrypt with the restored key: got %q", got)
		}
		// Disable and enable a version.
		hg("transit", "keys", "rotate", "e1")
		hg("transit", "keys", "disable-version", "e1", "1")
		fails("FailedPrecondition", "transit", "decrypt", "e1", "--in", ct)
		hg("transit", "keys", "enable-version", "e1", "1")
		hg("transit", "decrypt", "e1", "--in", ct)
		// Trim needs both minimums raised first; then v1 is gone for good.
		fails("InvalidArgument", "transit", "keys", "trim", "e1", "--min-available-version", "2")
		hg("transit", "keys", "config", "e1", "--min-decryption-version", "2", "--min-encryption-version", "2")
		if out := hg("transit", "keys", "trim", "e1", "--min-available-version", "2"); !strings.Contains(out, "v1    destroyed") {
			t.Errorf("keys trim: got\n%s\nwant v1 destroyed", out)
		}
		hg("transit", "keys", "delete", "e1")
		fails("NotFound", "transit", "keys", "show", "e1")
	})

	t.Run("import", func(t *testing.T) {
		aesKey := make([]byte, 32)
		rand.Read(aesKey)
		hg("transit", "keys", "import", "byok", "--type", "aes256-gcm", "--in", file("aes.b64", base64.StdEncoding.EncodeToString(aesKey)), "--encoding", "base64", "--exportable")
		exp := strings.Fields(hg("transit", "keys", "export", "byok"))
		if got, _ := base64.StdEncoding.DecodeString(exp[len(exp)-1]); !bytes.Equal(got, aesKey) {
			t.Errorf("export of an imported key: got %x, want the imported %x", got, aesKey)
		}
		// An Ed25519 PKCS#8 PEM: hsmgate signs with it, the public half we
		// kept verifies.
		pub, priv, _ := ed25519.GenerateKey(rand.Reader)
		der, _ := x509.MarshalPKCS8PrivateKey(priv)
		pemFile := file("ed.pem", string(pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der})))
		hg("transit", "keys", "import", "byok-ed", "--type", "ed25519", "--in", pemFile)
		msg := file("msg", "imported")
		raw, _, err := transitParseVersioned(hg("transit", "sign", "byok-ed", "--in", msg), 0)
		if err != nil || !ed25519.Verify(pub, []byte("imported"), raw) {
			t.Errorf("signature by the imported key does not verify with its public key: %v", err)
		}
	})

	t.Run("public key and random", func(t *testing.T) {
		out := hg("transit", "keys", "show", "s1", "--public-key")
		blk, _ := pem.Decode([]byte(out))
		if blk == nil || blk.Type != "PUBLIC KEY" {
			t.Fatalf("keys show --public-key: got %q", out)
		}
		pub, err := x509.ParsePKIXPublicKey(blk.Bytes)
		if err != nil {
			t.Fatal(err)
		}
		sig, _, _ := transitParseVersioned(hg("transit", "sign", "s1", "--in", file("m2", "hello")), 0)
		h := sha256.Sum256([]byte("hello"))
		if !ecdsa.VerifyASN1(pub.(*ecdsa.PublicKey), h[:], sig) {
			t.Errorf("ECDSA signature does not verify with the shown public key")
		}
		if out := hg("transit", "random", "16", "--format", "hex"); len(strings.TrimSpace(out)) != 32 {
			t.Errorf("random 16 --format hex: got %q", out)
		}
	})

	t.Run("served services", func(t *testing.T) {
		// The binary started, so the auth hook's start-up check
		// (auth.CheckTableCovers) passed over exactly these services.
		cc, err := client.Dial(client.Options{Addr: dev.exports["HSMGATE_ADDR"], CACert: dev.exports["HSMGATE_CACERT"]})
		if err != nil {
			t.Fatal(err)
		}
		defer cc.Close()
		if got := reflectServices(t, cc); !slices.Equal(got, wiredServices) {
			t.Errorf("hsmgate dev serves %v, want %v", got, wiredServices)
		}
	})

	t.Run("errors", func(t *testing.T) {
		fails(`NotFound`, "transit", "decrypt", "nope", "--in", ct1)
		fails(`NotFound`, "transit", "keys", "show", "nope")
		fails("FailedPrecondition", "transit", "keys", "export", "k1") // not exportable
		fails("FailedPrecondition", "transit", "keys", "delete", "k1") // deletion not allowed
		hg("transit", "keys", "config", "k1", "--min-decryption-version", "2")
		fails("FailedPrecondition", "transit", "decrypt", "k1", "--in", ct1)
		if _, errOut, code := run(t, env, "transit", "decrypt", "k1", "--in", file("junk", "not a ciphertext\n")); code != 2 || !strings.Contains(errOut, "hsmgate:v<N>:<base64>") {
			t.Errorf("decrypt of junk: got exit %d, stderr %q; want a usage error (exit 2)", code, errOut)
		}
	})
}

// TestTransitCLIHelp: every transit command has a short help and every
// runnable one an example.
func TestTransitCLIHelp(t *testing.T) {
	var all []*cobra.Command
	var walk func(c *cobra.Command)
	walk = func(c *cobra.Command) {
		all = append(all, c)
		for _, s := range c.Commands() {
			walk(s)
		}
	}
	walk(newTransitCmd())
	for _, c := range all {
		if c.Short == "" {
			t.Errorf("%s: no short help", c.CommandPath())
		}
		if c.Runnable() && c.Example == "" {
			t.Errorf("%s: no example", c.CommandPath())
		}
	}
	// transit, keys, 14 keys verbs, 8 data verbs.
	if len(all) != 24 {
		t.Errorf("got %d transit commands, want 24", len(all))
	}
}

func TestTransitParseVersioned(t *testing.T) {
	raw := []byte{1, 2, 3, 250}
	b64 := base64.StdEncoding.EncodeToString(raw)
	tests := []struct {
		name, in   string
		def, wantV uint32
		wantErr    bool
	}{
		{"text form", "hsmgate:v7:" + b64, 0, 7, false},
		{"text form, trailing newline", "hsmgate:v7:" + b64 + "\n", 3, 7, false},
		{"plain base64 takes the default", b64, 3, 3, false},
		{"leading zero", "hsmgate:v07:" + b64, 0, 0, true},
		{"version 0", "hsmgate:v0:" + b64, 0, 0, true},
		{"not base64", "hsmgate:v1:***", 0, 0, true},
		{"junk", "%%%", 0, 0, true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, v, err := transitParseVersioned(tc.in, tc.def)
			if (err != nil) != tc.wantErr {
				t.Fatalf("got error %v, want error %v", err, tc.wantErr)
			}
			if err == nil && (!bytes.Equal(got, raw) || v != tc.wantV) {
				t.Errorf("got %x v%d, want %x v%d", got, v, raw, tc.wantV)
			}
		})
	}
	if s := (client.Versioned{KeyVersion: 7, Bytes: raw}).String(); s != "hsmgate:v7:"+b64 {
		t.Errorf("client.Versioned.String (what sign and hmac print): got %q", s)
	}
}

func TestTransitTextCiphertexts(t *testing.T) {
	ct, err := textform.Parse("hsmgate:v2:AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA")
	if err != nil {
		t.Fatal(err)
	}
	resp := &hsmgatev1.EncryptResponse{Results: []*hsmgatev1.EncryptResult{{Ciphertext: ct, KeyVersion: 2, Reference: "r"}, {}}}
	b, err := transitDoc(resp, true)
	if err != nil {
		t.Fatal(err)
	}
	var got struct {
		Results []map[string]any `json:"results"`
	}
	if err := json.Unmarshal(b, &got); err != nil {
		t.Fatalf("%v\n%s", err, b)
	}
	if c := got.Results[0]["ciphertext"]; c != "hsmgate:v2:AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA" {
		t.Errorf("ciphertext: got %v, want the text form", c)
	}
	if r := got.Results[0]["reference"]; r != "r" {
		t.Errorf("reference: got %v", r)
	}
	if c, ok := got.Results[1]["ciphertext"]; ok && c != "" {
		t.Errorf("an empty result grew a ciphertext: %v", got.Results[1])
	}
}

func TestTransitImportMaterial(t *testing.T) {
	ecKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	sec1, _ := x509.MarshalECPrivateKey(ecKey)
	pkcs8, _ := x509.MarshalPKCS8PrivateKey(ecKey)
	raw := []byte{0xde, 0xad, 0xbe, 0xef}
	tests := []struct {
		name, encoding string
		in             []byte
		want           []byte
		wantErr        bool
	}{
		{"raw", "raw", raw, raw, false},
		{"base64", "base64", []byte(base64.StdEncoding.EncodeToString(raw) + "\n"), raw, false},
		{"hex", "hex", []byte("deadbeef\n"), raw, false},
		{"PKCS#8 PEM", "raw", pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: pkcs8}), pkcs8, false},
		{"SEC 1 PEM becomes PKCS#8", "raw", pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: sec1}), pkcs8, false},
		{"certificate PEM", "raw", pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: raw}), nil, true},
		{"empty", "raw", nil, nil, true},
		{"bad hex", "hex", []byte("xyz"), nil, true},
		{"unknown encoding", "base32", raw, nil, true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := transitImportMaterial(tc.in, tc.encoding)
			if (err != nil) != tc.wantErr {
				t.Fatalf("got error %v, want error %v", err, tc.wantErr)
			}
			if err != nil && exitCode(err) != 2 {
				t.Errorf("error %v: got exit %d, want 2 (usage)", err, exitCode(err))
			}
			if !bytes.Equal(got, tc.want) {
				t.Errorf("got %x, want %x", got, tc.want)
			}
		})
	}
}

func TestTransitBytesArg(t *testing.T) {
	f := filepath.Join(t.TempDir(), "aad")
	os.WriteFile(f, []byte("raw\n"), 0o600)
	for in, want := range map[string]string{"": "", "aGk=": "hi", "aGk": "hi", "@" + f: "raw\n"} {
		got, err := transitBytesArg("aad", in)
		if err != nil || string(got) != want {
			t.Errorf("transitBytesArg(%q): got %q, %v, want %q", in, got, err, want)
		}
	}
	for _, in := range []string{"not base64!", "@/does/not/exist"} {
		if _, err := transitBytesArg("aad", in); err == nil || exitCode(err) != 2 {
			t.Errorf("transitBytesArg(%q): got %v, want a usage error", in, err)
		}
	}
}

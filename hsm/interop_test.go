package hsm_test

// Interop with other PKCS#11 consumers on the same SoftHSM token: crypto11
// (github.com/ThalesGroup/crypto11, playing the key-ceremony tool) and
// OpenSC's pkcs11-tool. Each runs in a process of its own, as it would in
// real life: crypto11 cannot share the process, since the library is
// initialised here already and crypto11 finalises it on Close.

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/ThalesGroup/crypto11"
	"github.com/miekg/pkcs11"

	"github.com/hsmgate/hsmgate/hsm"
	"github.com/hsmgate/hsmgate/hsm/hsmtest"
)

// c11Result is what the crypto11 helper process prints.
type c11Result struct {
	Sig    []byte          // signature (sign)
	PubDER []byte          // PKIX public key (sign)
	Attrs  map[string]bool // boolean attributes of the private key (attrs)
	Err    string
}

// TestCrypto11Helper is not a test: it is the crypto11 process that the
// interop tests start (the test binary run again with HSMGATE_C11_OP set).
func TestCrypto11Helper(t *testing.T) {
	op := os.Getenv("HSMGATE_C11_OP")
	if op == "" {
		return
	}
	res := c11Run(op)
	out, _ := json.Marshal(res)
	fmt.Printf("C11RESULT %s\n", out)
	os.Exit(0)
}

func c11Run(op string) (res c11Result) {
	cfg := &crypto11.Config{
		Path:            os.Getenv("HSMGATE_C11_LIB"),
		TokenLabel:      os.Getenv("HSMGATE_C11_TOKEN"),
		Pin:             os.Getenv("HSMGATE_C11_PIN"),
		PoolWaitTimeout: 30e9, // 0 would block forever (DESIGN.md traps)
	}
	c, err := crypto11.Configure(cfg)
	if err != nil {
		return c11Result{Err: "configure: " + err.Error()}
	}
	defer c.Close() // once: a second Close panics
	id, _ := hex.DecodeString(os.Getenv("HSMGATE_C11_ID"))
	label := []byte(os.Getenv("HSMGATE_C11_LABEL"))
	switch op {
	case "gen-ec", "gen-ec-extractable":
		pub, err := crypto11.NewAttributeSetWithIDAndLabel(id, label)
		if err != nil {
			return c11Result{Err: err.Error()}
		}
		priv := pub.Copy()
		if op == "gen-ec-extractable" {
			_ = priv.Set(crypto11.CkaExtractable, true)
			_ = priv.Set(crypto11.CkaSensitive, false)
		}
		if _, err := c.GenerateECDSAKeyPairWithAttributes(pub, priv, elliptic.P256()); err != nil {
			return c11Result{Err: "generate: " + err.Error()}
		}
		return c11Result{}
	case "sign":
		k, err := c.FindKeyPair(id, label)
		if err != nil || k == nil {
			return c11Result{Err: fmt.Sprintf("find key pair: %v (found %v)", err, k != nil)}
		}
		digest := sha256.Sum256([]byte("signed by crypto11"))
		sig, err := k.Sign(rand.Reader, digest[:], crypto.SHA256) // never nil opts (panics for RSA)
		if err != nil {
			return c11Result{Err: "sign: " + err.Error()}
		}
		der, err := x509.MarshalPKIXPublicKey(k.Public())
		if err != nil {
			return c11Result{Err: err.Error()}
		}
		return c11Result{Sig: sig, PubDER: der}
	case "attrs":
		k, err := c.FindKeyPair(id, label)
		if err != nil || k == nil {
			return c11Result{Err: fmt.Sprintf("find key pair: %v (found %v)", err, k != nil)}
		}
		names := map[string]crypto11.AttributeType{
			"CKA_SENSITIVE": crypto11.CkaSensitive, "CKA_EXTRACTABLE": crypto11.CkaExtractable,
			"CKA_ALWAYS_SENSITIVE": crypto11.CkaAlwaysSensitive, "CKA_NEVER_EXTRACTABLE": crypto11.CkaNeverExtractable,
			"CKA_LOCAL": crypto11.CkaLocal, "CKA_PRIVATE": crypto11.CkaPrivate,
		}
		res.Attrs = map[string]bool{}
		for n, at := range names {
			a, err := c.GetAttribute(k, at)
			if err != nil {
				return c11Result{Err: fmt.Sprintf("%s: %v", n, err)}
			}
			res.Attrs[n] = len(a.Value) == 1 && a.Value[0] != 0
		}
		return res
	}
	return c11Result{Err: "unknown op " + op}
}

// crypto11Do runs one crypto11 operation in a process of its own on the token.
func crypto11Do(t *testing.T, cfg hsm.Config, op, label string, id []byte) c11Result {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^TestCrypto11Helper$", "-test.count=1")
	cmd.Env = append(os.Environ(),
		"HSMGATE_C11_OP="+op, "HSMGATE_C11_LIB="+cfg.Library, "HSMGATE_C11_TOKEN="+cfg.TokenLabel,
		"HSMGATE_C11_PIN="+cfg.PIN, "HSMGATE_C11_LABEL="+label, "HSMGATE_C11_ID="+hex.EncodeToString(id))
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("crypto11 %s: %v\n%s", op, err, out)
	}
	for line := range strings.Lines(string(out)) {
		if j, ok := strings.CutPrefix(line, "C11RESULT "); ok {
			var r c11Result
			if err := json.Unmarshal([]byte(j), &r); err != nil {
				t.Fatalf("crypto11 %s: %v", op, err)
			}
			if r.Err != "" {
				t.Fatalf("crypto11 %s: %s", op, r.Err)
			}
			return r
		}
	}
	t.Fatalf("crypto11 %s: no result in\n%s", op, out)
	return c11Result{}
}

func verifyECDSA(t *testing.T, pub any, msg, sig []byte) {
	t.Helper()
	ec, ok := pub.(*ecdsa.PublicKey)
	if !ok {
		t.Fatalf("public key: got %T, want *ecdsa.PublicKey", pub)
	}
	d := sha256.Sum256(msg)
	if !ecdsa.VerifyASN1(ec, d[:], sig) {
		t.Fatalf("signature does not verify with the public key")
	}
}

// TestAdoptCrypto11Key: a key made by crypto11 (the ceremony) is adopted by
// URI and signs; an extractable one is refused.
func TestAdoptCrypto11Key(t *testing.T) {
	cfg := hsmtest.Config(t)
	m := openModule(t, cfg)
	id := []byte{0xca, 0x01}
	crypto11Do(t, cfg, "gen-ec", "ceremony-root", id)

	t.Run("adopted by URI and signs", func(t *testing.T) {
		uri := "pkcs11:token=" + cfg.TokenLabel + ";object=ceremony-root;id=%CA%01"
		a, err := m.AdoptKey(ctx, uri, hsm.ECDSAP256, hsm.ECDSAP384)
		if err != nil {
			t.Fatalf("AdoptKey: %v", err)
		}
		if a.KeyType != hsm.ECDSAP256 || a.Label != "ceremony-root" || string(a.ID) != string(id) {
			t.Fatalf("got %+v, want ecdsa-p256 ceremony-root id ca01", a)
		}
		s, err := m.Signer(ctx, a.Ref)
		if err != nil {
			t.Fatalf("Signer(%q): %v", a.Ref, err)
		}
		msg := []byte("signed by hsmgate with a ceremony key")
		d := sha256.Sum256(msg)
		sig, err := s.SignContext(ctx, d[:], crypto.SHA256)
		if err != nil {
			t.Fatalf("sign: %v", err)
		}
		verifyECDSA(t, s.Public(), msg, sig)
		// The same key as crypto11 sees it.
		r := crypto11Do(t, cfg, "sign", "ceremony-root", id)
		pub, err := x509.ParsePKIXPublicKey(r.PubDER)
		if err != nil {
			t.Fatal(err)
		}
		if !pub.(*ecdsa.PublicKey).Equal(s.Public()) {
			t.Fatalf("hsmgate's public key is not crypto11's")
		}
	})
	t.Run("by id only", func(t *testing.T) {
		if _, err := m.AdoptKey(ctx, "pkcs11:id=%ca%01"); err != nil {
			t.Fatalf("AdoptKey by id: %v", err)
		}
	})
	t.Run("never destroyed", func(t *testing.T) {
		err := m.DestroyKey(ctx, "pkcs11:object=ceremony-root;id=%CA%01")
		if !errors.Is(err, hsm.ErrUnsupported) {
			t.Fatalf("DestroyKey(ref): got %v, want ErrUnsupported", err)
		}
		if _, err := m.AdoptKey(ctx, "pkcs11:id=%ca%01"); err != nil {
			t.Fatalf("key gone after refused destroy: %v", err)
		}
	})
	t.Run("extractable refused", func(t *testing.T) {
		crypto11Do(t, cfg, "gen-ec-extractable", "leaky", []byte{0xbe, 0xef})
		_, err := m.AdoptKey(ctx, "pkcs11:object=leaky")
		if !errors.Is(err, hsm.ErrNotAdoptable) || !strings.Contains(err.Error(), "CKA_SENSITIVE") {
			t.Fatalf("got %v, want ErrNotAdoptable naming CKA_SENSITIVE", err)
		}
	})
	t.Run("other token refused", func(t *testing.T) {
		_, err := m.AdoptKey(ctx, "pkcs11:token=someone-else;object=ceremony-root")
		if !errors.Is(err, hsm.ErrInvalidInput) {
			t.Fatalf("got %v, want ErrInvalidInput", err)
		}
	})
	t.Run("wrong type refused", func(t *testing.T) {
		_, err := m.AdoptKey(ctx, "pkcs11:object=ceremony-root", hsm.RSA2048)
		if !errors.Is(err, hsm.ErrUnsupported) {
			t.Fatalf("got %v, want ErrUnsupported", err)
		}
	})
}

// TestCrypto11UsesHsmgateKeys: keys hsmgate makes are found by crypto11 by
// label and ID, sign for it, and carry the attributes an auditor checks.
func TestCrypto11UsesHsmgateKeys(t *testing.T) {
	cfg := hsmtest.Config(t)
	m := openModule(t, cfg)
	if err := m.GenerateKey(ctx, "gate-ec", hsm.ECDSAP256); err != nil {
		t.Fatal(err)
	}
	id := keyID(t, cfg, "gate-ec")
	r := crypto11Do(t, cfg, "sign", "gate-ec", id)
	pub, err := x509.ParsePKIXPublicKey(r.PubDER)
	if err != nil {
		t.Fatal(err)
	}
	verifyECDSA(t, pub, []byte("signed by crypto11"), r.Sig)
	s, err := m.Signer(ctx, "gate-ec")
	if err != nil {
		t.Fatal(err)
	}
	if !pub.(*ecdsa.PublicKey).Equal(s.Public()) {
		t.Fatalf("crypto11's public key is not hsmgate's")
	}
	attrs := crypto11Do(t, cfg, "attrs", "gate-ec", id).Attrs
	want := map[string]bool{
		"CKA_SENSITIVE": true, "CKA_EXTRACTABLE": false, "CKA_ALWAYS_SENSITIVE": true,
		"CKA_NEVER_EXTRACTABLE": true, "CKA_LOCAL": true, "CKA_PRIVATE": true,
	}
	for n, w := range want {
		if got, ok := attrs[n]; !ok || got != w {
			t.Errorf("%s: got %v (present %v), want %v", n, got, ok, w)
		}
	}
}

// keyID reads the CKA_ID of the private key with this label through a
// second PKCS#11 session.
func keyID(t *testing.T, cfg hsm.Config, label string) []byte {
	t.Helper()
	p, slot := hsmtest.Slot(t, cfg.TokenLabel)
	s, err := p.OpenSession(slot, pkcs11.CKF_SERIAL_SESSION)
	if err != nil {
		t.Fatal(err)
	}
	defer p.CloseSession(s)
	// Public objects need no login: the public half carries the same ID.
	if err := p.FindObjectsInit(s, []*pkcs11.Attribute{
		pkcs11.NewAttribute(pkcs11.CKA_CLASS, pkcs11.CKO_PUBLIC_KEY),
		pkcs11.NewAttribute(pkcs11.CKA_LABEL, label),
	}); err != nil {
		t.Fatal(err)
	}
	hs, _, err := p.FindObjects(s, 2)
	_ = p.FindObjectsFinal(s)
	if err != nil || len(hs) != 1 {
		t.Fatalf("find %q: got %d objects, %v; want 1", label, len(hs), err)
	}
	a, err := p.GetAttributeValue(s, hs[0], []*pkcs11.Attribute{pkcs11.NewAttribute(pkcs11.CKA_ID, nil)})
	if err != nil || len(a[0].Value) == 0 {
		t.Fatalf("CKA_ID of %q: %v", label, err)
	}
	return a[0].Value
}

func openModule(t *testing.T, cfg hsm.Config) *hsm.Module {
	t.Helper()
	m, err := hsm.Open(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { m.Close() })
	return m
}

// pkcs11Tool returns the path of OpenSC's pkcs11-tool: a failure under
// CI=true when it is missing, a skip otherwise.
func pkcs11Tool(t *testing.T) string {
	t.Helper()
	p, err := exec.LookPath("pkcs11-tool")
	if err != nil {
		if os.Getenv("CI") != "" {
			t.Fatalf("pkcs11-tool (Debian package opensc) is required in CI: %v", err)
		}
		t.Skipf("pkcs11-tool not installed: %v", err)
	}
	return p
}

func runTool(t *testing.T, cfg hsm.Config, args ...string) string {
	t.Helper()
	all := append([]string{"--module", cfg.Library, "--token-label", cfg.TokenLabel, "--login", "--pin", cfg.PIN}, args...)
	out, err := exec.Command(pkcs11Tool(t), all...).CombinedOutput()
	if err != nil {
		t.Fatalf("pkcs11-tool %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return string(out)
}

// TestPkcs11ToolInterop: pkcs11-tool lists hsmgate's keys with the
// auditor's attributes and signs with them; a key pkcs11-tool makes is
// adopted by hsmgate.
func TestPkcs11ToolInterop(t *testing.T) {
	pkcs11Tool(t)
	cfg := hsmtest.Config(t)
	m := openModule(t, cfg)
	if err := m.GenerateKey(ctx, "gate-ec", hsm.ECDSAP256); err != nil {
		t.Fatal(err)
	}
	id := keyID(t, cfg, "gate-ec")

	t.Run("lists hsmgate's key with the auditor's attributes", func(t *testing.T) {
		out := runTool(t, cfg, "--list-objects", "--type", "privkey")
		f := objectFields(out, "gate-ec")
		if f == nil {
			t.Fatalf("no private key labelled gate-ec in\n%s", out)
		}
		if got, want := f["ID"], hex.EncodeToString(id); got != want {
			t.Errorf("ID: got %q, want %q", got, want)
		}
		if got, want := f["Usage"], "sign"; got != want {
			t.Errorf("Usage: got %q, want %q", got, want)
		}
		// pkcs11-tool prints "extractable" only for CKA_EXTRACTABLE=true.
		if got, want := f["Access"], "sensitive, always sensitive, never extractable, local"; got != want {
			t.Errorf("Access: got %q, want %q", got, want)
		}
	})
	t.Run("signs with hsmgate's key", func(t *testing.T) {
		dir := t.TempDir()
		msg := []byte("signed by pkcs11-tool")
		d := sha256.Sum256(msg)
		in, sigf := filepath.Join(dir, "digest"), filepath.Join(dir, "sig")
		if err := os.WriteFile(in, d[:], 0o600); err != nil {
			t.Fatal(err)
		}
		runTool(t, cfg, "--sign", "--mechanism", "ECDSA", "--id", hex.EncodeToString(id),
			"--signature-format", "openssl", "--input-file", in, "--output-file", sigf)
		sig, err := os.ReadFile(sigf)
		if err != nil {
			t.Fatal(err)
		}
		s, err := m.Signer(ctx, "gate-ec")
		if err != nil {
			t.Fatal(err)
		}
		verifyECDSA(t, s.Public(), msg, sig)
	})
	t.Run("key pkcs11-tool makes is adopted", func(t *testing.T) {
		runTool(t, cfg, "--keypairgen", "--key-type", "EC:prime256v1", "--label", "opensc-ca", "--id", "0a0b",
			"--usage-sign", "--sensitive")
		a, err := m.AdoptKey(ctx, "pkcs11:token="+cfg.TokenLabel+";object=opensc-ca;id=%0A%0B", hsm.ECDSAP256)
		if err != nil {
			t.Fatalf("AdoptKey: %v", err)
		}
		s, err := m.Signer(ctx, a.Ref)
		if err != nil {
			t.Fatal(err)
		}
		msg := []byte("ceremony by OpenSC")
		d := sha256.Sum256(msg)
		sig, err := s.SignContext(ctx, d[:], crypto.SHA256)
		if err != nil {
			t.Fatal(err)
		}
		verifyECDSA(t, s.Public(), msg, sig)
	})
}

// objectFields returns the "name: value" lines of pkcs11-tool's entry of
// the object with this label, or nil.
func objectFields(out, label string) map[string]string {
	for _, b := range strings.Split(out, "Object;") {
		f := map[string]string{}
		for line := range strings.Lines(b) {
			if k, v, ok := strings.Cut(line, ":"); ok {
				f[strings.TrimSpace(k)] = strings.TrimSpace(v)
			}
		}
		if f["label"] == label {
			return f
		}
	}
	return nil
}

package main

import (
	"bytes"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestCanary is the canary of issue 3 on the full binary: `hsmgate dev`
// (auth, audit, every engine) as a real process; with the known root token,
// create an exportable key, encrypt a random marker, decrypt it, export the
// key; stop the server; then search every file under the state directory
// (audit log, bbolt store, SoftHSM token, everything) and the server's
// stdout and stderr for the plaintext, the ciphertext, the token and the
// key bytes in raw, hex and base64 forms. None may appear.
//
// Two places hold the root token by design and are searched for everything
// but the token: STATE/root-token and STATE/env (dev mode keeps it there,
// 0600, to be sourced) and the export lines dev prints on stdout. The
// token's SHA-256 hex is its accessor, which the audit log may name.
func TestCanary(t *testing.T) {
	requireSoftHSM(t)
	state := filepath.Join(t.TempDir(), "state")
	work := t.TempDir() // the client's files, outside the state directory
	dev := startDev(t, state)
	env := dev.env()
	token := dev.exports["HSMGATE_TOKEN"]
	if token == "" {
		t.Fatal("no root token exported")
	}
	hg := func(args ...string) string {
		t.Helper()
		out, errOut, code := run(t, env, args...)
		if code != 0 {
			t.Fatalf("hsmgate %s: exit %d, stderr:\n%s", strings.Join(args, " "), code, errOut)
		}
		return out
	}

	mark := make([]byte, 16)
	rand.Read(mark)
	plaintext := "canary-" + hex.EncodeToString(mark)
	ptFile := filepath.Join(work, "pt")
	if err := os.WriteFile(ptFile, []byte(plaintext), 0o600); err != nil {
		t.Fatal(err)
	}
	hg("transit", "keys", "create", "canary", "--exportable")
	ct := hg("transit", "encrypt", "canary", "--in", ptFile)
	ctFile := filepath.Join(work, "ct")
	if err := os.WriteFile(ctFile, []byte(ct), 0o600); err != nil {
		t.Fatal(err)
	}
	if got := hg("transit", "decrypt", "canary", "--in", ctFile); got != plaintext {
		t.Fatalf("decrypt: got %q, want the marker", got)
	}
	exported := strings.Fields(hg("transit", "keys", "export", "canary"))
	if len(exported) != 2 || exported[0] != "v1" {
		t.Fatalf("keys export: got %q, want one line v1 <base64>", exported)
	}
	key, err := base64.StdEncoding.DecodeString(exported[1])
	if err != nil || len(key) != 32 {
		t.Fatalf("keys export: %q is not a 32-byte key: %v", exported[1], err)
	}
	ctRaw, err := base64.StdEncoding.DecodeString(strings.SplitN(strings.TrimSpace(ct), ":", 3)[2])
	if err != nil {
		t.Fatal(err)
	}
	dev.stop(t)

	type needle struct {
		name string
		b    []byte
	}
	// forms are raw, hex and base64 (standard and URL) of raw; base64 at
	// each of the three alignments it can have inside a longer encoding.
	forms := func(name string, raw []byte) []needle {
		ns := []needle{
			{name + " (raw)", raw},
			{name + " (hex)", []byte(hex.EncodeToString(raw))},
			{name + " (HEX)", []byte(strings.ToUpper(hex.EncodeToString(raw)))},
		}
		for i := range 3 {
			s := raw[i:]
			s = s[:len(s)/3*3]
			ns = append(ns,
				needle{fmt.Sprintf("%s (base64, offset %d)", name, i), []byte(base64.StdEncoding.EncodeToString(s))},
				needle{fmt.Sprintf("%s (base64url, offset %d)", name, i), []byte(base64.URLEncoding.EncodeToString(s))})
		}
		return ns
	}
	secrets := append(forms("plaintext", []byte(plaintext)), forms("key", key)...)
	secrets = append(secrets, forms("ciphertext", ctRaw)...)
	secrets = append(secrets, needle{"ciphertext (text form)", []byte(strings.TrimSpace(ct))})
	tokenForms := append(forms("token", []byte(token)), needle{"token's random part", []byte(strings.TrimPrefix(token, "hgs."))})
	check := func(where string, data []byte, withToken bool) {
		t.Helper()
		list := secrets
		if withToken {
			list = append(append([]needle(nil), secrets...), tokenForms...)
		}
		for _, n := range list {
			if bytes.Contains(data, n.b) {
				t.Errorf("%s contains the %s", where, n.name)
			}
		}
	}

	// Controls: the needles find the key inside a longer base64 text at
	// any alignment, and the token where dev keeps it on purpose.
	for i := range 3 {
		probe := base64.StdEncoding.EncodeToString(append(make([]byte, i), key...))
		found := false
		for _, n := range secrets {
			found = found || bytes.Contains([]byte(probe), n.b)
		}
		if !found {
			t.Errorf("the needles miss the key base64-encoded after %d bytes", i)
		}
	}
	if b, _ := os.ReadFile(filepath.Join(state, devFileRootToken)); !bytes.Contains(b, []byte(token)) {
		t.Errorf("%s does not hold the token: the search would prove nothing", devFileRootToken)
	}
	// The searches look at the files that matter.
	audit, err := os.ReadFile(filepath.Join(state, "audit.log"))
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"/hsmgate.v1.TransitService/Encrypt", "/hsmgate.v1.TransitService/ExportKey", "transit/keys/canary"} {
		if !bytes.Contains(audit, []byte(want)) {
			t.Errorf("audit.log does not record %s", want)
		}
	}
	if db, err := os.ReadFile(filepath.Join(state, "hsmgate.db")); err != nil || !bytes.Contains(db, []byte("canary")) {
		t.Errorf("hsmgate.db does not hold the key record (%v): the search would prove nothing", err)
	}
	sum := sha256.Sum256([]byte(token))
	t.Logf("token accessor (sha256 hex, allowed) appears in audit.log: %v", bytes.Contains(audit, []byte(hex.EncodeToString(sum[:]))))

	files := 0
	err = filepath.WalkDir(state, func(path string, d fs.DirEntry, err error) error {
		if err != nil || !d.Type().IsRegular() {
			return err
		}
		data, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		files++
		rel, _ := filepath.Rel(state, path)
		check(rel, data, rel != devFileRootToken && rel != devFileEnv)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("searched %d files under the state directory", files)
	if files < 8 {
		t.Errorf("searched %d files under the state directory, want at least 8", files)
	}
	var stdout []string
	for _, l := range dev.lines {
		// The token is printed on purpose for hsmgate and Vault clients.
		if !strings.HasPrefix(l, "export HSMGATE_TOKEN=") && !strings.HasPrefix(l, "export VAULT_TOKEN=") {
			stdout = append(stdout, l)
		}
	}
	check("server stdout", []byte(strings.Join(stdout, "\n")), true)
	check("server stderr", []byte(dev.stderr.String()), true)
}

package main

import (
	"context"
	"crypto/ecdsa"
	"crypto/x509"
	"encoding/pem"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/hsmgate/hsmgate/hsm/hsmtest"
)

// TestPKICreateRootKeyURI: `pki issuer create-root --key-uri` makes a root
// on a key made outside hsmgate (a key ceremony); openssl verifies the
// certificate, whose public key is the ceremony key's.
func TestPKICreateRootKeyURI(t *testing.T) {
	openssl, err := exec.LookPath("openssl")
	if err != nil {
		if os.Getenv("CI") != "" {
			t.Fatalf("openssl is required in CI: %v", err)
		}
		t.Skip("openssl not installed")
	}
	m := hsmtest.Module(t)
	hsmtest.ForeignECKey(t, m.TokenLabel(), "ceremony-root", []byte{0x20, 0x26}, false)
	addr, ca := pkiTestServerOn(t, m)
	dir := t.TempDir()
	rootPEM := filepath.Join(dir, "root.pem")
	uri := "pkcs11:token=" + m.TokenLabel() + ";object=ceremony-root;id=%20%26"
	out, err := runPKI(t, addr, ca, "issuer", "create-root", "ceremony", "--cn", "Ceremony Root", "--key-uri", uri, "--cert-out", rootPEM)
	if err != nil {
		t.Fatalf("create-root --key-uri: %v\n%s", err, out)
	}
	v, err := exec.Command(openssl, "verify", "-CAfile", rootPEM, rootPEM).CombinedOutput()
	if err != nil || !strings.Contains(string(v), ": OK") {
		t.Fatalf("openssl verify: %v\n%s", err, v)
	}
	data, err := os.ReadFile(rootPEM)
	if err != nil {
		t.Fatal(err)
	}
	blk, _ := pem.Decode(data)
	if blk == nil {
		t.Fatalf("no PEM in %s", rootPEM)
	}
	cert, err := x509.ParseCertificate(blk.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	s, err := m.Signer(context.Background(), "pkcs11:object=ceremony-root;id=%20%26")
	if err != nil {
		t.Fatal(err)
	}
	if pub, ok := cert.PublicKey.(*ecdsa.PublicKey); !ok || !pub.Equal(s.Public()) {
		t.Fatalf("the root's public key is not the ceremony key's")
	}

	t.Run("extractable key refused", func(t *testing.T) {
		hsmtest.ForeignECKey(t, m.TokenLabel(), "leaky", []byte{1}, true)
		out, err := runPKI(t, addr, ca, "issuer", "create-root", "leaky", "--cn", "Leaky", "--key-uri", "pkcs11:object=leaky")
		if err == nil || !strings.Contains(out+err.Error(), "CKA_SENSITIVE") {
			t.Fatalf("got %v\n%s; want a refusal naming CKA_SENSITIVE", err, out)
		}
	})
}

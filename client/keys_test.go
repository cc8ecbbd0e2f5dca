package client

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	"go.step.sm/crypto/pemutil"
	"golang.org/x/crypto/ssh"

	"github.com/hsmgate/hsmgate/client/kwp"
)

func pemOf(typ string, der []byte) []byte {
	return pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der})
}

func TestParsePrivateKeyForms(t *testing.T) {
	rk, _ := rsa.GenerateKey(rand.Reader, 2048)
	ek, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	_, edk, _ := ed25519.GenerateKey(rand.Reader)
	pkcs8 := func(k crypto.Signer) []byte { b, _ := x509.MarshalPKCS8PrivateKey(k); return b }
	sec1, _ := x509.MarshalECPrivateKey(ek)
	openssh, err := ssh.MarshalPrivateKey(edk, "")
	if err != nil {
		t.Fatal(err)
	}
	opensshPw, err := ssh.MarshalPrivateKeyWithPassphrase(ek, "", []byte("pw"))
	if err != nil {
		t.Fatal(err)
	}
	legacy, err := pemutil.Serialize(rk, pemutil.WithPassword([]byte("pw")))
	if err != nil {
		t.Fatal(err)
	}
	encPKCS8, err := pemutil.Serialize(ek, pemutil.WithPKCS8(true), pemutil.WithPassword([]byte("pw")))
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		data []byte
		pw   []byte
		want crypto.Signer
	}{
		{"PKCS#8 PEM RSA", pemOf("PRIVATE KEY", pkcs8(rk)), nil, rk},
		{"PKCS#8 DER Ed25519", pkcs8(edk), nil, edk},
		{"PKCS#1 PEM", pemOf("RSA PRIVATE KEY", x509.MarshalPKCS1PrivateKey(rk)), nil, rk},
		{"PKCS#1 DER", x509.MarshalPKCS1PrivateKey(rk), nil, rk},
		{"SEC 1 PEM", pemOf("EC PRIVATE KEY", sec1), nil, ek},
		{"SEC 1 DER", sec1, nil, ek},
		{"OpenSSH", pem.EncodeToMemory(openssh), nil, edk},
		{"OpenSSH with passphrase", pem.EncodeToMemory(opensshPw), []byte("pw"), ek},
		{"legacy encrypted PEM", pem.EncodeToMemory(legacy), []byte("pw"), rk},
		{"encrypted PKCS#8", pem.EncodeToMemory(encPKCS8), []byte("pw"), ek},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := ParsePrivateKey(tc.data, tc.pw)
			if err != nil {
				t.Fatalf("got %v, want a key", err)
			}
			type equaler interface{ Equal(crypto.PrivateKey) bool }
			if !got.(equaler).Equal(tc.want) {
				t.Errorf("got a different key (%T), want the one serialized", got)
			}
			m, err := ImportMaterial(tc.data, tc.pw)
			if err != nil || !bytes.Equal(m, pkcs8(tc.want)) {
				t.Errorf("ImportMaterial: got %d bytes, %v; want the PKCS#8 of the key", len(m), err)
			}
		})
	}
	t.Run("wrong passphrase", func(t *testing.T) {
		if _, err := ParsePrivateKey(pem.EncodeToMemory(legacy), []byte("nope")); !errors.Is(err, ErrInvalidArgument) {
			t.Errorf("got %v, want ErrInvalidArgument", err)
		}
	})
	t.Run("not a key", func(t *testing.T) {
		if _, err := ParsePrivateKey([]byte("hello"), nil); !errors.Is(err, ErrInvalidArgument) {
			t.Errorf("got %v, want ErrInvalidArgument", err)
		}
	})
}

// TestParsePrivateKeyOpenSSL reads keys written by the openssl command.
func TestParsePrivateKeyOpenSSL(t *testing.T) {
	openssl, err := exec.LookPath("openssl")
	if err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatal("openssl is missing")
		}
		t.Skip("openssl is missing")
	}
	dir := t.TempDir()
	key := filepath.Join(dir, "k.pem")
	enc := filepath.Join(dir, "enc.pem")
	for _, args := range [][]string{
		{"genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-384", "-out", key},
		{"pkcs8", "-topk8", "-in", key, "-v2", "aes-256-cbc", "-passout", "pass:secret", "-out", enc},
	} {
		if out, err := exec.Command(openssl, args...).CombinedOutput(); err != nil {
			t.Fatalf("openssl %v: %v\n%s", args, err, out)
		}
	}
	plain, _ := os.ReadFile(key)
	encrypted, _ := os.ReadFile(enc)
	a, err := ParsePrivateKey(plain, nil)
	if err != nil {
		t.Fatal(err)
	}
	b, err := ParsePrivateKey(encrypted, []byte("secret"))
	if err != nil {
		t.Fatal(err)
	}
	if !a.(*ecdsa.PrivateKey).Equal(b) || a.Public().(*ecdsa.PublicKey).Curve != elliptic.P384() {
		t.Error("the encrypted PKCS#8 key differs from the plain one")
	}
}

// FuzzParsePrivateKey: no input panics, and an accepted key signs.
func FuzzParsePrivateKey(f *testing.F) {
	ek, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	der, _ := x509.MarshalPKCS8PrivateKey(ek)
	f.Add(pemOf("PRIVATE KEY", der))
	f.Add(der)
	// A truncated OpenSSH key ("openssh-key-v1" and nothing after), made
	// with pem so that no key-shaped block stands in the source.
	f.Add(pemOf("OPENSSH "+"PRIVATE KEY", []byte("openssh-key-v1\x00\x00\x00\x00")))
	f.Fuzz(func(t *testing.T, data []byte) {
		k, err := ParsePrivateKey(data, []byte("pw"))
		if err != nil {
			return
		}
		if k.Public() == nil {
			t.Fatal("a parsed key without a public key")
		}
	})
}

func TestWrapForImport(t *testing.T) {
	priv, _ := rsa.GenerateKey(rand.Reader, 2048)
	pubDER, _ := x509.MarshalPKIXPublicKey(&priv.PublicKey)
	pub, err := ParseWrappingKey(string(pemOf("PUBLIC KEY", pubDER)))
	if err != nil {
		t.Fatal(err)
	}
	material := bytes.Repeat([]byte{7}, 32)
	w, err := WrapForImport(pub, material, nil)
	if err != nil {
		t.Fatal(err)
	}
	// The server's side: OAEP of the AES key, then KWP of the material.
	k := priv.Size()
	eph, err := rsa.DecryptOAEP(newSHA256(), nil, priv, w[:k], nil)
	if err != nil {
		t.Fatal(err)
	}
	got, err := kwp.Unwrap(eph, w[k:])
	if err != nil || !bytes.Equal(got, material) {
		t.Errorf("unwrap: got %x, %v; want %x", got, err, material)
	}
	small, _ := rsa.GenerateKey(rand.Reader, 1024)
	smallDER, _ := x509.MarshalPKIXPublicKey(&small.PublicKey)
	if _, err := ParseWrappingKey(string(pemOf("PUBLIC KEY", smallDER))); err == nil {
		t.Error("ParseWrappingKey(RSA-1024): got nil, want an error")
	}
}

package sshca

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"fmt"
	"math/big"
	"strings"
	"testing"

	"golang.org/x/crypto/cryptobyte"
	cbasn1 "golang.org/x/crypto/cryptobyte/asn1"
	"golang.org/x/crypto/ssh"
)

// TestSignCertWire checks that signCert's line is what
// ssh.MarshalAuthorizedKey gives for the signed certificate, and that the
// certificate verifies, for every CA key family (software keys: the wire
// format, not the HSM, is under test here).
func TestSignCertWire(t *testing.T) {
	_, subj, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	subjPub, err := ssh.NewPublicKey(subj.Public())
	if err != nil {
		t.Fatal(err)
	}
	mk := func(f func() (crypto.Signer, error)) crypto.Signer {
		s, err := f()
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	cases := []struct {
		name string
		cs   crypto.Signer
	}{
		{"ecdsa-p256", mk(func() (crypto.Signer, error) { return ecdsa.GenerateKey(elliptic.P256(), rand.Reader) })},
		{"ecdsa-p384", mk(func() (crypto.Signer, error) { return ecdsa.GenerateKey(elliptic.P384(), rand.Reader) })},
		{"ecdsa-p521", mk(func() (crypto.Signer, error) { return ecdsa.GenerateKey(elliptic.P521(), rand.Reader) })},
		{"ed25519", mk(func() (crypto.Signer, error) { _, k, err := ed25519.GenerateKey(rand.Reader); return k, err })},
		{"rsa-2048", mk(func() (crypto.Signer, error) { return rsa.GenerateKey(rand.Reader, 2048) })},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			signer, err := newSSHSigner(tc.cs, ssh.KeyAlgoRSASHA256)
			if err != nil {
				t.Fatal(err)
			}
			// One memo across certificates whose maps are shared, fresh, or
			// none, in turn: a stale encoding would not match.
			sharedExt := map[string]string{"permit-pty": "", "permit-X11-forwarding": "", "z-custom@example.com": "v"}
			sharedOpts := map[string]string{"source-address": "10.0.0.0/8", "force-command": "/bin/true", "verify-required": ""}
			var memo tuplesMemo
			for i := range 50 { // ECDSA: r and s with and without a high bit
				ext, opts := sharedExt, sharedOpts
				switch i % 3 {
				case 1:
					ext = map[string]string{"permit-pty": "", "x@example.com": fmt.Sprint(i)}
					opts = map[string]string{"force-command": fmt.Sprint("/bin/echo ", i)}
				case 2:
					ext, opts = nil, nil
				}
				c := &ssh.Certificate{
					Key: subjPub, Serial: 7, CertType: ssh.UserCert, KeyId: "k",
					ValidPrincipals: []string{"alice", "bob"}, ValidAfter: 1, ValidBefore: 1 << 40,
					Permissions: ssh.Permissions{Extensions: ext, CriticalOptions: opts},
				}
				line, err := signCert(rand.Reader, signer, signer.PublicKey().Marshal(), c, &memo)
				if err != nil {
					t.Fatal(err)
				}
				if want := strings.TrimSpace(string(ssh.MarshalAuthorizedKey(c))); line != want {
					t.Fatalf("got line %q, want %q", line, want)
				}
				pub, _, _, _, err := ssh.ParseAuthorizedKey([]byte(line))
				if err != nil {
					t.Fatal(err)
				}
				pc := pub.(*ssh.Certificate)
				checker := ssh.CertChecker{SupportedCriticalOptions: []string{"force-command", "source-address", "verify-required"}, IsUserAuthority: func(k ssh.PublicKey) bool { return string(k.Marshal()) == string(signer.PublicKey().Marshal()) }}
				if err := checker.CheckCert("alice", pc); err != nil {
					t.Fatalf("got %v, want a valid certificate", err)
				}
				if tc.name == "rsa-2048" && pc.Signature.Format != ssh.KeyAlgoRSASHA256 {
					t.Fatalf("got signature format %q, want %q", pc.Signature.Format, ssh.KeyAlgoRSASHA256)
				}
			}
		})
	}
}

// TestSSHECDSARawSignature checks the r||s conversion against the DER one,
// for values with leading zero bytes and high bits, and refuses zero and
// odd lengths.
func TestSSHECDSARawSignature(t *testing.T) {
	for _, v := range [][2][]byte{
		{{0, 0, 0x81, 1}, {0x7f, 2, 3, 4}},
		{{0x80, 0, 0, 0}, {0, 0, 0, 1}},
		{{1, 2, 3, 4}, {0xff, 0xff, 0xff, 0xff}},
	} {
		r, s := new(big.Int).SetBytes(v[0]), new(big.Int).SetBytes(v[1])
		var b cryptobyte.Builder
		b.AddASN1(cbasn1.SEQUENCE, func(b *cryptobyte.Builder) { b.AddASN1BigInt(r); b.AddASN1BigInt(s) })
		der := b.BytesOrPanic()
		want, err := sshECDSASignature(der)
		if err != nil {
			t.Fatal(err)
		}
		got, err := sshECDSARawSignature(append(append([]byte{}, v[0]...), v[1]...))
		if err != nil || !bytes.Equal(got, want) {
			t.Fatalf("r||s %x %x: got %x, %v, want %x", v[0], v[1], got, err, want)
		}
	}
	for name, raw := range map[string][]byte{"empty": {}, "odd": {1, 2, 3}, "zero r": {0, 0, 1, 2}, "zero s": {1, 2, 0, 0}} {
		if b, err := sshECDSARawSignature(raw); err == nil {
			t.Fatalf("%s: got %x, want an error", name, b)
		}
	}
}

func TestSSHECDSASignatureMalformed(t *testing.T) {
	for name, der := range map[string][]byte{
		"empty":      {},
		"trailing":   {0x30, 0x06, 0x02, 0x01, 0x01, 0x02, 0x01, 0x01, 0x00},
		"negative r": {0x30, 0x06, 0x02, 0x01, 0x81, 0x02, 0x01, 0x01},
		"zero s":     {0x30, 0x06, 0x02, 0x01, 0x01, 0x02, 0x01, 0x00},
		"padded r":   {0x30, 0x07, 0x02, 0x02, 0x00, 0x01, 0x02, 0x01, 0x01},
		"one int":    {0x30, 0x03, 0x02, 0x01, 0x01},
	} {
		t.Run(name, func(t *testing.T) {
			if b, err := sshECDSASignature(der); err == nil {
				t.Fatalf("got %x, want an error", b)
			}
		})
	}
	t.Run("ok", func(t *testing.T) {
		b, err := sshECDSASignature([]byte{0x30, 0x07, 0x02, 0x02, 0x00, 0x81, 0x02, 0x01, 0x01})
		want := []byte{0, 0, 0, 2, 0, 0x81, 0, 0, 0, 1, 1}
		if err != nil || string(b) != string(want) {
			t.Fatalf("got %x, %v, want %x", b, err, want)
		}
	})
}

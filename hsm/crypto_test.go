package hsm_test

import (
	"bytes"
	"crypto"
	"crypto/aes"
	"crypto/cipher"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/sha512"
	"errors"
	"math/big"
	"testing"

	"github.com/miekg/pkcs11"

	"github.com/hsmgate/hsmgate/hsm"
	"github.com/hsmgate/hsmgate/hsm/hsmtest"
)

// userSession opens a logged-in session on m's token through a second
// context, closed when the test ends.
func userSession(t *testing.T, m *hsm.Module) (*pkcs11.Ctx, pkcs11.SessionHandle) {
	t.Helper()
	p, slot := hsmtest.Slot(t, m.TokenLabel())
	s, err := p.OpenSession(slot, pkcs11.CKF_SERIAL_SESSION)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.CloseSession(s) })
	if err := p.Login(s, pkcs11.CKU_USER, hsmtest.UserPIN); err != nil && err != pkcs11.Error(pkcs11.CKR_USER_ALREADY_LOGGED_IN) {
		t.Fatal(err)
	}
	return p, s
}

// readValue reads CKA_VALUE of a secret key through a second context.
func readValue(t *testing.T, m *hsm.Module, label string) []byte {
	t.Helper()
	p, s := userSession(t, m)
	h := findOne(t, p, s, label, pkcs11.CKO_SECRET_KEY)
	a, err := p.GetAttributeValue(s, h, []*pkcs11.Attribute{pkcs11.NewAttribute(pkcs11.CKA_VALUE, nil)})
	if err != nil {
		t.Fatalf("read test key: %v", err)
	}
	return a[0].Value
}

func TestAEAD(t *testing.T) {
	m := hsmtest.Module(t)
	if err := hsm.GenerateExtractableAES(ctx, m, "gcm"); err != nil {
		t.Fatal(err)
	}
	a, err := m.AEAD(ctx, "gcm")
	if err != nil {
		t.Fatal(err)
	}
	key := readValue(t, m, "gcm")
	block, err := aes.NewCipher(key)
	if err != nil {
		t.Fatal(err)
	}
	goGCM, err := cipher.NewGCM(block)
	if err != nil {
		t.Fatal(err)
	}
	nonce := make([]byte, 12)
	rand.Read(nonce)

	cases := []struct {
		name          string
		plaintext, ad []byte
	}{
		{"empty", nil, nil},
		{"short", []byte("hello"), nil},
		{"256B with AAD", bytes.Repeat([]byte{0xab}, 256), []byte("context")},
		{"4KiB", bytes.Repeat([]byte{1, 2, 3, 4}, 1024), []byte("aad")},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			got, err := a.SealContext(ctx, []byte("prefix"), nonce, c.plaintext, c.ad)
			if err != nil {
				t.Fatal(err)
			}
			want := goGCM.Seal([]byte("prefix"), nonce, c.plaintext, c.ad)
			if !bytes.Equal(got, want) {
				t.Fatalf("HSM Seal: got %x, want Go's %x", got, want)
			}
			pt, err := a.OpenContext(ctx, nil, nonce, want[len("prefix"):], c.ad)
			if err != nil || !bytes.Equal(pt, c.plaintext) {
				t.Fatalf("HSM Open of Go's ciphertext: got %x, %v; want %x", pt, err, c.plaintext)
			}
			if got := a.Seal(nil, nonce, c.plaintext, c.ad); !bytes.Equal(got, want[len("prefix"):]) {
				t.Fatalf("cipher.AEAD Seal: got %x, want %x", got, want[len("prefix"):])
			}
			if pt, err := a.Open(nil, nonce, want[len("prefix"):], c.ad); err != nil || !bytes.Equal(pt, c.plaintext) {
				t.Fatalf("cipher.AEAD Open: got %x, %v; want %x", pt, err, c.plaintext)
			}
		})
	}
	t.Run("tampered", func(t *testing.T) {
		sealed := goGCM.Seal(nil, nonce, []byte("attack at dawn"), []byte("ad"))
		flipped := bytes.Clone(sealed)
		flipped[0] ^= 1
		otherNonce := bytes.Clone(nonce)
		otherNonce[11] ^= 1
		for name, in := range map[string]struct{ nonce, ct, ad []byte }{
			"ciphertext bit":     {nonce, flipped, []byte("ad")},
			"tag truncated":      {nonce, sealed[:len(sealed)-1], []byte("ad")},
			"wrong AAD":          {nonce, sealed, []byte("AD")},
			"wrong nonce":        {otherNonce, sealed, []byte("ad")},
			"shorter than a tag": {nonce, sealed[:15], []byte("ad")},
		} {
			t.Run(name, func(t *testing.T) {
				_, err := a.OpenContext(ctx, nil, in.nonce, in.ct, in.ad)
				if !errors.Is(err, hsm.ErrInvalidInput) {
					t.Fatalf("OpenContext: got %v, want ErrInvalidInput", err)
				}
			})
		}
	})
	t.Run("bad nonces", func(t *testing.T) {
		for name, n := range map[string][]byte{"missing": nil, "empty": {}, "short": make([]byte, 8), "long": make([]byte, 16)} {
			t.Run(name, func(t *testing.T) {
				if _, err := a.SealContext(ctx, nil, n, []byte("x"), nil); !errors.Is(err, hsm.ErrInvalidNonce) {
					t.Errorf("SealContext: got %v, want ErrInvalidNonce", err)
				}
				if _, err := a.OpenContext(ctx, nil, n, make([]byte, 32), nil); !errors.Is(err, hsm.ErrInvalidNonce) {
					t.Errorf("OpenContext: got %v, want ErrInvalidNonce", err)
				}
				func() {
					defer func() {
						if recover() == nil {
							t.Errorf("Seal with a %d-byte nonce: got no panic, want one", len(n))
						}
					}()
					a.Seal(nil, n, []byte("x"), nil)
				}()
			})
		}
	})
	t.Run("generated key is not readable", func(t *testing.T) {
		if err := m.GenerateKey(ctx, "data", hsm.AES256); err != nil {
			t.Fatal(err)
		}
		d, err := m.AEAD(ctx, "data")
		if err != nil {
			t.Fatal(err)
		}
		ct, err := d.SealContext(ctx, nil, nonce, []byte("x"), nil)
		if err != nil {
			t.Fatal(err)
		}
		if pt, err := d.OpenContext(ctx, nil, nonce, ct, nil); err != nil || string(pt) != "x" {
			t.Fatalf("round trip: got %q, %v; want \"x\"", pt, err)
		}
	})
	t.Run("KEK is not an AEAD", func(t *testing.T) {
		if _, _, err := m.EnsureKEK(ctx, "kek"); err != nil {
			t.Fatal(err)
		}
		if _, err := m.AEAD(ctx, "kek"); !errors.Is(err, hsm.ErrUnsupported) {
			t.Fatalf("AEAD(kek): got %v, want ErrUnsupported", err)
		}
	})
}

func TestSigners(t *testing.T) {
	m := hsmtest.Module(t)
	msg := []byte("the message")
	d256 := sha256.Sum256(msg)
	d384 := sha512.Sum384(msg)
	d512 := sha512.Sum512(msg)
	for _, kt := range []hsm.KeyType{hsm.ECDSAP256, hsm.ECDSAP384, hsm.RSA2048, hsm.Ed25519} {
		t.Run(string(kt), func(t *testing.T) {
			if err := m.GenerateKey(ctx, string(kt), kt); err != nil {
				t.Fatal(err)
			}
			s, err := m.Signer(ctx, string(kt))
			if err != nil {
				t.Fatal(err)
			}
			if s.KeyType() != kt {
				t.Fatalf("KeyType: got %q, want %q", s.KeyType(), kt)
			}
			switch pub := s.Public().(type) {
			case *ecdsa.PublicKey:
				for _, c := range []struct {
					name   string
					digest []byte
					opts   crypto.SignerOpts
				}{{"SHA-256", d256[:], crypto.SHA256}, {"SHA-384", d384[:], crypto.SHA384}, {"nil opts", d256[:], nil}} {
					t.Run(c.name, func(t *testing.T) {
						sig, err := s.Sign(rand.Reader, c.digest, c.opts)
						if err != nil {
							t.Fatal(err)
						}
						if !ecdsa.VerifyASN1(pub, c.digest, sig) {
							t.Fatalf("ecdsa.VerifyASN1: got false, want true")
						}
					})
				}
				t.Run("raw r||s", func(t *testing.T) {
					size := (pub.Curve.Params().N.BitLen() + 7) / 8
					for range 20 { // r or s with leading zero bytes stay full length
						raw, err := s.SignRawContext(ctx, d256[:], crypto.SHA256)
						if err != nil {
							t.Fatal(err)
						}
						if len(raw) != 2*size {
							t.Fatalf("got %d bytes, want %d", len(raw), 2*size)
						}
						r, ss := new(big.Int).SetBytes(raw[:size]), new(big.Int).SetBytes(raw[size:])
						if !ecdsa.Verify(pub, d256[:], r, ss) {
							t.Fatalf("ecdsa.Verify of r||s: got false, want true")
						}
					}
				})
			case *rsa.PublicKey:
				if pub.N.BitLen() != 2048 {
					t.Fatalf("modulus: got %d bits, want 2048", pub.N.BitLen())
				}
				for _, c := range []struct {
					name   string
					hash   crypto.Hash
					digest []byte
				}{{"SHA-256", crypto.SHA256, d256[:]}, {"SHA-384", crypto.SHA384, d384[:]}, {"SHA-512", crypto.SHA512, d512[:]}} {
					t.Run("PKCS1v15 "+c.name, func(t *testing.T) {
						sig, err := s.SignContext(ctx, c.digest, c.hash)
						if err != nil {
							t.Fatal(err)
						}
						if err := rsa.VerifyPKCS1v15(pub, c.hash, c.digest, sig); err != nil {
							t.Fatalf("rsa.VerifyPKCS1v15: got %v, want nil", err)
						}
					})
					for name, salt := range map[string]int{"auto": rsa.PSSSaltLengthAuto, "equals hash": rsa.PSSSaltLengthEqualsHash, "10": 10} {
						t.Run("PSS "+c.name+" salt "+name, func(t *testing.T) {
							sig, err := s.SignContext(ctx, c.digest, &rsa.PSSOptions{SaltLength: salt, Hash: c.hash})
							if err != nil {
								t.Fatal(err)
							}
							want := salt
							if salt < 0 {
								want = c.hash.Size()
							}
							if err := rsa.VerifyPSS(pub, c.hash, c.digest, sig, &rsa.PSSOptions{SaltLength: want}); err != nil {
								t.Fatalf("rsa.VerifyPSS: got %v, want nil", err)
							}
						})
					}
				}
				t.Run("nil opts is SHA-256", func(t *testing.T) {
					sig, err := s.Sign(nil, d256[:], nil)
					if err != nil {
						t.Fatal(err)
					}
					if err := rsa.VerifyPKCS1v15(pub, crypto.SHA256, d256[:], sig); err != nil {
						t.Fatalf("rsa.VerifyPKCS1v15: got %v, want nil", err)
					}
				})
			case ed25519.PublicKey:
				sig, err := s.Sign(nil, msg, crypto.Hash(0))
				if err != nil {
					t.Fatal(err)
				}
				if !ed25519.Verify(pub, msg, sig) {
					t.Fatalf("ed25519.Verify: got false, want true")
				}
				if _, err := s.SignContext(ctx, d512[:], crypto.SHA512); !errors.Is(err, hsm.ErrUnsupported) {
					t.Fatalf("Ed25519ph: got %v, want ErrUnsupported", err)
				}
			default:
				t.Fatalf("Public: got %T", pub)
			}
			if kt != hsm.Ed25519 {
				if _, err := s.SignContext(ctx, d256[:20], crypto.SHA256); !errors.Is(err, hsm.ErrInvalidInput) {
					t.Fatalf("short digest: got %v, want ErrInvalidInput", err)
				}
			}
		})
	}
	t.Run("private key is not readable", func(t *testing.T) {
		p, slot := hsmtest.Slot(t, m.TokenLabel())
		s, err := p.OpenSession(slot, pkcs11.CKF_SERIAL_SESSION)
		if err != nil {
			t.Fatal(err)
		}
		defer p.CloseSession(s)
		p.Login(s, pkcs11.CKU_USER, hsmtest.UserPIN)
		h := findOne(t, p, s, string(hsm.ECDSAP256), pkcs11.CKO_PRIVATE_KEY)
		if _, err := p.GetAttributeValue(s, h, []*pkcs11.Attribute{pkcs11.NewAttribute(pkcs11.CKA_VALUE, nil)}); err != pkcs11.Error(pkcs11.CKR_ATTRIBUTE_SENSITIVE) {
			t.Fatalf("read private CKA_VALUE: got %v, want CKR_ATTRIBUTE_SENSITIVE", err)
		}
	})
}

// TestLargeRSA generates the slow key sizes once each.
func TestLargeRSA(t *testing.T) {
	if testing.Short() {
		t.Skip("RSA-3072/4096 generation is slow")
	}
	m := hsmtest.Module(t)
	digest := sha256.Sum256([]byte("m"))
	for _, c := range []struct {
		kt   hsm.KeyType
		bits int
	}{{hsm.RSA3072, 3072}, {hsm.RSA4096, 4096}} {
		t.Run(string(c.kt), func(t *testing.T) {
			if err := m.GenerateKey(ctx, string(c.kt), c.kt); err != nil {
				t.Fatal(err)
			}
			s, err := m.Signer(ctx, string(c.kt))
			if err != nil {
				t.Fatal(err)
			}
			pub := s.Public().(*rsa.PublicKey)
			if pub.N.BitLen() != c.bits || s.KeyType() != c.kt {
				t.Fatalf("got %d bits %q, want %d %q", pub.N.BitLen(), s.KeyType(), c.bits, c.kt)
			}
			sig, err := s.SignContext(ctx, digest[:], crypto.SHA256)
			if err != nil {
				t.Fatal(err)
			}
			if err := rsa.VerifyPKCS1v15(pub, crypto.SHA256, digest[:], sig); err != nil {
				t.Fatalf("rsa.VerifyPKCS1v15: got %v, want nil", err)
			}
		})
	}
}

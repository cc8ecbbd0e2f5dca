package client

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"io"

	"go.step.sm/crypto/pemutil"

	"github.com/hsmgate/hsmgate/client/kwp"
)

// ParsePrivateKey reads a private key in any of the forms people keep keys
// in: PEM PKCS#8 ("PRIVATE KEY"), PKCS#1 ("RSA PRIVATE KEY"), SEC 1 ("EC
// PRIVATE KEY"), OpenSSH ("OPENSSH PRIVATE KEY"), encrypted PEM (PKCS#8
// "ENCRYPTED PRIVATE KEY", legacy Proc-Type encryption and passphrase-
// protected OpenSSH keys, with password), or raw DER (PKCS#8, PKCS#1,
// SEC 1). Parsing is go.step.sm/crypto/pemutil's. The result is an
// *rsa.PrivateKey, *ecdsa.PrivateKey or ed25519.PrivateKey.
func ParsePrivateKey(data, password []byte) (crypto.Signer, error) {
	var opts []pemutil.Options
	if len(password) > 0 {
		opts = append(opts, pemutil.WithPassword(password))
	}
	var (
		k   any
		err error
	)
	if blk, _ := pem.Decode(data); blk != nil {
		k, err = pemutil.Parse(data, opts...)
	} else {
		k, err = pemutil.ParseDER(data)
	}
	if err != nil {
		return nil, fmt.Errorf("client: parse private key: %w: %w", ErrInvalidArgument, err)
	}
	switch k := k.(type) {
	case *rsa.PrivateKey, *ecdsa.PrivateKey:
		return k.(crypto.Signer), nil
	case ed25519.PrivateKey:
		return k, nil
	case *ed25519.PrivateKey:
		return *k, nil
	}
	return nil, fmt.Errorf("client: parse private key: %w: not an RSA, ECDSA or Ed25519 private key (%T)", ErrInvalidArgument, k)
}

// MarshalPKCS8 returns key as PKCS#8 DER, the form ImportKey wants for
// asymmetric keys.
func MarshalPKCS8(key crypto.Signer) ([]byte, error) {
	b, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, fmt.Errorf("client: %w", err)
	}
	return b, nil
}

// ImportMaterial turns a private key file (any form ParsePrivateKey reads)
// into what ImportKey wants for an asymmetric key: PKCS#8 DER.
func ImportMaterial(data, password []byte) ([]byte, error) {
	k, err := ParsePrivateKey(data, password)
	if err != nil {
		return nil, err
	}
	return MarshalPKCS8(k)
}

// ParseWrappingKey parses the PEM (or DER) public key GetWrappingKey
// returns: RSA, at least 2048 bits.
func ParseWrappingKey(pemText string) (*rsa.PublicKey, error) {
	der := []byte(pemText)
	if blk, _ := pem.Decode(der); blk != nil {
		der = blk.Bytes
	}
	k, err := x509.ParsePKIXPublicKey(der)
	if err != nil {
		return nil, fmt.Errorf("client: wrapping key: %w", err)
	}
	rk, ok := k.(*rsa.PublicKey)
	if !ok {
		return nil, fmt.Errorf("client: wrapping key is %T, want RSA", k)
	}
	if rk.N.BitLen() < 2048 {
		return nil, fmt.Errorf("client: wrapping key has %d bits, want at least 2048", rk.N.BitLen())
	}
	return rk, nil
}

// WrapForImport wraps key material for the server's wrapping key as
// ImportKey expects (the scheme of AWS KMS and Vault BYOK): RSA-OAEP-SHA256
// (empty label) of a fresh AES-256 key, followed by RFC 5649 KWP of the
// material under that key. rnd is crypto/rand.Reader unless testing.
func WrapForImport(pub *rsa.PublicKey, material []byte, rnd io.Reader) ([]byte, error) {
	if rnd == nil {
		rnd = rand.Reader
	}
	eph := make([]byte, 32)
	if _, err := io.ReadFull(rnd, eph); err != nil {
		return nil, fmt.Errorf("client: wrap: %w", err)
	}
	defer clear(eph)
	c1, err := rsa.EncryptOAEP(sha256.New(), rnd, pub, eph, nil)
	if err != nil {
		return nil, fmt.Errorf("client: wrap: %w", err)
	}
	c2, err := kwp.Wrap(eph, material)
	if err != nil {
		return nil, fmt.Errorf("client: wrap: %w", err)
	}
	return append(c1, c2...), nil
}

// GenerateKey makes a private key of an hsmgate key type name:
// "ecdsa-p256" (also ""), "ecdsa-p384", "ed25519", "rsa-2048",
// "rsa-3072", "rsa-4096". It runs locally: the key never leaves the caller.
func GenerateKey(keyType string) (crypto.Signer, error) {
	switch keyType {
	case "", "ecdsa-p256", "ec-p256", "p256":
		return ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	case "ecdsa-p384", "ec-p384", "p384":
		return ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	case "ed25519":
		_, k, err := ed25519.GenerateKey(rand.Reader)
		return k, err
	case "rsa-2048":
		return rsa.GenerateKey(rand.Reader, 2048)
	case "rsa-3072":
		return rsa.GenerateKey(rand.Reader, 3072)
	case "rsa-4096":
		return rsa.GenerateKey(rand.Reader, 4096)
	}
	return nil, fmt.Errorf("client: key type %q: want ecdsa-p256, ecdsa-p384, ed25519, rsa-2048, rsa-3072 or rsa-4096: %w", keyType, ErrInvalidArgument)
}

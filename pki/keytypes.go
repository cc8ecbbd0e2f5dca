package pki

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"fmt"

	"github.com/hsmgate/hsmgate/hsm"
)

// Key type names, as in hsm.KeyType.
const (
	KeyECDSAP256 = string(hsm.ECDSAP256)
	KeyECDSAP384 = string(hsm.ECDSAP384)
	KeyRSA2048   = string(hsm.RSA2048)
	KeyRSA3072   = string(hsm.RSA3072)
	KeyRSA4096   = string(hsm.RSA4096)
	KeyEd25519   = string(hsm.Ed25519)
)

// issuerKeyTypes are the key types an issuer may have.
var issuerKeyTypes = map[string]bool{
	KeyECDSAP256: true, KeyECDSAP384: true, KeyRSA3072: true, KeyRSA4096: true, KeyEd25519: true,
}

// leafKeyTypes are the key types a certificate may certify.
var leafKeyTypes = map[string]bool{
	KeyECDSAP256: true, KeyECDSAP384: true, KeyRSA2048: true, KeyRSA3072: true, KeyRSA4096: true, KeyEd25519: true,
}

// generateKey makes an in-process key pair of type kt (Go's crypto).
func generateKey(kt string) (crypto.Signer, error) {
	switch kt {
	case KeyECDSAP256:
		return ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	case KeyECDSAP384:
		return ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	case KeyRSA2048:
		return rsa.GenerateKey(rand.Reader, 2048)
	case KeyRSA3072:
		return rsa.GenerateKey(rand.Reader, 3072)
	case KeyRSA4096:
		return rsa.GenerateKey(rand.Reader, 4096)
	case KeyEd25519:
		_, k, err := ed25519.GenerateKey(rand.Reader)
		return k, err
	}
	return nil, fmt.Errorf("%w: key type %q", ErrInvalid, kt)
}

// keyTypeOf names the type of a public key; an error for anything unsupported.
func keyTypeOf(pub crypto.PublicKey) (string, error) {
	switch k := pub.(type) {
	case *ecdsa.PublicKey:
		switch k.Curve {
		case elliptic.P256():
			return KeyECDSAP256, nil
		case elliptic.P384():
			return KeyECDSAP384, nil
		}
		return "", fmt.Errorf("%w: ECDSA curve %s", ErrNotAllowed, k.Curve.Params().Name)
	case *rsa.PublicKey:
		switch k.N.BitLen() {
		case 2048:
			return KeyRSA2048, nil
		case 3072:
			return KeyRSA3072, nil
		case 4096:
			return KeyRSA4096, nil
		}
		return "", fmt.Errorf("%w: RSA key of %d bits", ErrNotAllowed, k.N.BitLen())
	case ed25519.PublicKey:
		return KeyEd25519, nil
	}
	return "", fmt.Errorf("%w: public key type %T", ErrNotAllowed, pub)
}

func isRSA(kt string) bool { return kt == KeyRSA2048 || kt == KeyRSA3072 || kt == KeyRSA4096 }

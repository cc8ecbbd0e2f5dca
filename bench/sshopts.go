package bench

import "crypto"

// sshSignOpts is the hash an SSH CA of key type kt signs with: ECDSA by the
// curve (RFC 5656), RSA rsa-sha2-512, Ed25519 none.
func sshSignOpts(kt string) crypto.SignerOpts {
	switch kt {
	case "ecdsa-p256":
		return crypto.SHA256
	case "ecdsa-p384":
		return crypto.SHA384
	case "ed25519":
		return crypto.Hash(0)
	}
	return crypto.SHA512
}

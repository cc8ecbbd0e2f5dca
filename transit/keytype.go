package transit

import (
	"crypto"
	"strings"

	pb "github.com/hsmgate/hsmgate/proto/hsmgate/v1"
)

// keyKind groups key types by the operations they allow.
type keyKind int

const (
	kindAEAD keyKind = iota + 1
	kindHMAC
	kindSign
)

// typeInfo describes a key type.
type typeInfo struct {
	name       string // the DESIGN name, e.g. "aes256-gcm"
	kind       keyKind
	keyLen     int         // symmetric key length in bytes
	nonceSize  int         // AEAD nonce size
	hsmType    string      // HSM key type when hsm residency is possible; "" if not
	hash       crypto.Hash // HMAC hash, or the default signature hash
	rsaBits    int
	defaultMax uint64 // default max_encryptions_per_version (0: none)
}

// DefaultAESGCMMaxEncryptions is just under the 2^32 random-nonce limit of
// NIST SP 800-38D, leaving room for one block reservation per replica.
const DefaultAESGCMMaxEncryptions = 1<<32 - 1<<20

var keyTypes = map[pb.TransitKeyType]typeInfo{
	pb.TransitKeyType_TRANSIT_KEY_TYPE_AES256_GCM:         {name: "aes256-gcm", kind: kindAEAD, keyLen: 32, nonceSize: 12, hsmType: "aes256", defaultMax: DefaultAESGCMMaxEncryptions},
	pb.TransitKeyType_TRANSIT_KEY_TYPE_XCHACHA20_POLY1305: {name: "xchacha20-poly1305", kind: kindAEAD, keyLen: 32, nonceSize: 24},
	pb.TransitKeyType_TRANSIT_KEY_TYPE_HMAC_SHA256:        {name: "hmac-sha256", kind: kindHMAC, keyLen: 32, hsmType: "hmac-sha256", hash: crypto.SHA256},
	pb.TransitKeyType_TRANSIT_KEY_TYPE_HMAC_SHA512:        {name: "hmac-sha512", kind: kindHMAC, keyLen: 64, hsmType: "hmac-sha512", hash: crypto.SHA512},
	pb.TransitKeyType_TRANSIT_KEY_TYPE_ECDSA_P256:         {name: "ecdsa-p256", kind: kindSign, hsmType: "ecdsa-p256", hash: crypto.SHA256},
	pb.TransitKeyType_TRANSIT_KEY_TYPE_ECDSA_P384:         {name: "ecdsa-p384", kind: kindSign, hsmType: "ecdsa-p384", hash: crypto.SHA384},
	pb.TransitKeyType_TRANSIT_KEY_TYPE_ED25519:            {name: "ed25519", kind: kindSign, hsmType: "ed25519"},
	pb.TransitKeyType_TRANSIT_KEY_TYPE_RSA_2048:           {name: "rsa-2048", kind: kindSign, hsmType: "rsa-2048", hash: crypto.SHA256, rsaBits: 2048},
	pb.TransitKeyType_TRANSIT_KEY_TYPE_RSA_3072:           {name: "rsa-3072", kind: kindSign, hsmType: "rsa-3072", hash: crypto.SHA256, rsaBits: 3072},
	pb.TransitKeyType_TRANSIT_KEY_TYPE_RSA_4096:           {name: "rsa-4096", kind: kindSign, hsmType: "rsa-4096", hash: crypto.SHA256, rsaBits: 4096},
}

// KeyTypeName returns the DESIGN name of a key type ("aes256-gcm"...), or "".
func KeyTypeName(t pb.TransitKeyType) string { return keyTypes[t].name }

// ParseKeyType maps a DESIGN name ("aes256-gcm", case-insensitive) to its enum;
// TRANSIT_KEY_TYPE_UNSPECIFIED if unknown. The CLI uses it.
func ParseKeyType(s string) pb.TransitKeyType {
	for t, ti := range keyTypes {
		if strings.EqualFold(ti.name, s) {
			return t
		}
	}
	return pb.TransitKeyType_TRANSIT_KEY_TYPE_UNSPECIFIED
}

// KeyTypeNames lists the DESIGN names of every key type, in enum order.
func KeyTypeNames() []string {
	var out []string
	for t := pb.TransitKeyType(1); ; t++ {
		ti, ok := keyTypes[t]
		if !ok {
			return out
		}
		out = append(out, ti.name)
	}
}

func hashFor(h pb.TransitHashAlgorithm, def crypto.Hash) (crypto.Hash, bool) {
	switch h {
	case pb.TransitHashAlgorithm_TRANSIT_HASH_ALGORITHM_UNSPECIFIED:
		if def == 0 {
			def = crypto.SHA256
		}
		return def, true
	case pb.TransitHashAlgorithm_TRANSIT_HASH_ALGORITHM_SHA2_256:
		return crypto.SHA256, true
	case pb.TransitHashAlgorithm_TRANSIT_HASH_ALGORITHM_SHA2_384:
		return crypto.SHA384, true
	case pb.TransitHashAlgorithm_TRANSIT_HASH_ALGORITHM_SHA2_512:
		return crypto.SHA512, true
	}
	return 0, false
}

// ParseResidency maps "wrapped" or "hsm" to its enum (UNSPECIFIED if neither).
func ParseResidency(s string) pb.TransitResidency {
	switch strings.ToLower(s) {
	case "wrapped":
		return pb.TransitResidency_TRANSIT_RESIDENCY_WRAPPED
	case "hsm":
		return pb.TransitResidency_TRANSIT_RESIDENCY_HSM
	}
	return pb.TransitResidency_TRANSIT_RESIDENCY_UNSPECIFIED
}

// ParseHashAlgorithm maps "sha2-256", "sha2-384", "sha2-512" (or "sha256"...)
// to its enum (UNSPECIFIED if none).
func ParseHashAlgorithm(s string) pb.TransitHashAlgorithm {
	switch strings.ToLower(strings.ReplaceAll(s, "2-", "")) {
	case "sha256":
		return pb.TransitHashAlgorithm_TRANSIT_HASH_ALGORITHM_SHA2_256
	case "sha384":
		return pb.TransitHashAlgorithm_TRANSIT_HASH_ALGORITHM_SHA2_384
	case "sha512":
		return pb.TransitHashAlgorithm_TRANSIT_HASH_ALGORITHM_SHA2_512
	}
	return pb.TransitHashAlgorithm_TRANSIT_HASH_ALGORITHM_UNSPECIFIED
}

// ParseSignatureAlgorithm maps "pss" or "pkcs1v15" to its enum (UNSPECIFIED if neither).
func ParseSignatureAlgorithm(s string) pb.TransitSignatureAlgorithm {
	switch strings.ToLower(s) {
	case "pss":
		return pb.TransitSignatureAlgorithm_TRANSIT_SIGNATURE_ALGORITHM_PSS
	case "pkcs1v15", "pkcs1", "pkcs1-v1_5":
		return pb.TransitSignatureAlgorithm_TRANSIT_SIGNATURE_ALGORITHM_PKCS1V15
	}
	return pb.TransitSignatureAlgorithm_TRANSIT_SIGNATURE_ALGORITHM_UNSPECIFIED
}

package audit

import (
	"crypto/hkdf"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
)

// keys are the deployment key and the keys derived from it.
//
// value keeps the raw deployment key: Log.HMAC(s) = HMAC-SHA256(key, s), as
// before the chain was keyed, so identifiers HMAC'd in older lines still
// match. The chain and checkpoint keys come from HKDF-SHA256 (RFC 5869) with
// the deployment key as input keying material: Extract computes
// HMAC(salt, key), with the key as the message, never as the HMAC key, and
// Expand takes a label per use. So no value HMAC, whatever s a caller passes,
// is or reveals a chain key, a chain MAC or a checkpoint MAC, and the chain
// and checkpoint keys are independent of each other.
type keys struct {
	value      []byte
	chain      []byte
	checkpoint []byte
}

const (
	kdfSalt          = "hsmgate audit log"
	chainInfo        = "hsmgate audit chain hmac-sha256 v1"
	checkpointInfo   = "hsmgate audit checkpoint hmac-sha256 v1"
	minHMACKeyLength = 32
)

func deriveKeys(deployment []byte) (keys, error) {
	if len(deployment) < minHMACKeyLength {
		return keys{}, fmt.Errorf("audit: hmac key shorter than %d bytes", minHMACKeyLength)
	}
	chain, err := hkdf.Key(sha256.New, deployment, []byte(kdfSalt), chainInfo, 32)
	if err != nil {
		return keys{}, fmt.Errorf("audit: derive chain key: %w", err)
	}
	cp, err := hkdf.Key(sha256.New, deployment, []byte(kdfSalt), checkpointInfo, 32)
	if err != nil {
		return keys{}, fmt.Errorf("audit: derive checkpoint key: %w", err)
	}
	return keys{value: append([]byte(nil), deployment...), chain: chain, checkpoint: cp}, nil
}

func mac(key, msg []byte) []byte {
	m := hmac.New(sha256.New, key)
	m.Write(msg)
	return m.Sum(nil)
}

// LoadHMACKey reads the HMAC key from cfg.HMACKeyFile or, when unset, from the
// environment variable cfg.HMACKeyEnv (default HSMGATE_AUDIT_HMAC_KEY, hex).
// It must be at least 32 bytes.
func LoadHMACKey(cfg Config) ([]byte, error) {
	env := cfg.HMACKeyEnv
	if env == "" {
		env = DefaultHMACKeyEnv
	}
	var key []byte
	switch {
	case cfg.HMACKeyFile != "":
		b, err := os.ReadFile(cfg.HMACKeyFile)
		if err != nil {
			return nil, fmt.Errorf("audit: hmac key: %w", err)
		}
		key = b
	case os.Getenv(env) != "":
		b, err := hex.DecodeString(os.Getenv(env))
		if err != nil {
			return nil, fmt.Errorf("audit: $%s is not hex", env)
		}
		key = b
	default:
		return nil, fmt.Errorf("audit: no hmac key (hmac_key_file, or $%s)", env)
	}
	if len(key) < minHMACKeyLength {
		return nil, fmt.Errorf("audit: hmac key shorter than 32 bytes")
	}
	return key, nil
}

// DefaultHMACKeyEnv names the environment variable that holds the HMAC key
// (hex) when neither hmac_key_file nor hmac_key_env is set.
const DefaultHMACKeyEnv = "HSMGATE_AUDIT_HMAC_KEY"

// LoadOrCreateKeyFile returns the key in path, first writing 32 random bytes
// there (mode 0600) if the file does not exist. For `hsmgate dev`; production
// keys are provisioned like any other secret.
func LoadOrCreateKeyFile(path string) ([]byte, error) {
	key, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		key = make([]byte, 32)
		if _, err := rand.Read(key); err != nil {
			return nil, fmt.Errorf("audit: hmac key: %w", err)
		}
		f, err := os.OpenFile(path, os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o600)
		if err != nil {
			return nil, fmt.Errorf("audit: hmac key: %w", err)
		}
		_, werr := f.Write(key)
		if cerr := f.Close(); werr == nil {
			werr = cerr
		}
		if werr != nil {
			os.Remove(path)
			return nil, fmt.Errorf("audit: hmac key: %w", werr)
		}
		return key, nil
	}
	if err != nil {
		return nil, fmt.Errorf("audit: hmac key: %w", err)
	}
	if len(key) < minHMACKeyLength {
		return nil, fmt.Errorf("audit: hmac key in %s shorter than 32 bytes", path)
	}
	return key, nil
}

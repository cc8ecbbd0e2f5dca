package client

import (
	"bytes"
	"context"
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"encoding/binary"
	"fmt"
)

// EnvelopeMagic starts every envelope ciphertext (format version 1).
const EnvelopeMagic = "HGE1"

// maxWrappedKey bounds the wrapped data key an envelope may carry.
const maxWrappedKey = 1024

// Envelope encrypts data locally under a fresh data key per message and
// stores the data key, wrapped by a transit key, beside the data: the
// plaintext never goes to the server, only the 32-byte data key does, once
// per message to unwrap it. Use it for payloads too large or too many to
// send to transit, as AWS KMS's and Tink's envelope encryption do.
//
// Format of an envelope ciphertext (all of it is authenticated):
//
//	"HGE1"                   4 bytes, magic and format version
//	uvarint(len(wrapped))    length of the wrapped data key (at most 1024)
//	wrapped                  the data key as a binary transit ciphertext
//	                         (0x01 | uvarint(version) | nonce | sealed), so it
//	                         names the transit key version that wrapped it
//	nonce                    12 random bytes
//	sealed                   AES-256-GCM(data key, nonce, plaintext,
//	                         AAD = everything above || the caller's AAD)
//
// The data key is AES-256 from the server's RNG (GenerateDataKey), used
// for one message, and wiped from memory after use. Rotating the transit
// key leaves envelopes readable; Rewrap of the wrapped part (or
// re-encryption) moves them to the new version.
type Envelope struct {
	t   *Transit
	key string
}

// Envelope returns the envelope AEAD of the transit key (aes256-gcm or
// xchacha20-poly1305).
func (t *Transit) Envelope(key string) *Envelope { return &Envelope{t: t, key: key} }

// Encrypt seals plaintext with associated data aad (which Decrypt needs
// again; it is not stored).
func (e *Envelope) Encrypt(ctx context.Context, plaintext, aad []byte) ([]byte, error) {
	dk, err := e.t.GenerateDataKey(ctx, e.key, 256)
	if err != nil {
		return nil, fmt.Errorf("client: envelope: data key: %w", err)
	}
	defer clear(dk.Plaintext)
	if len(dk.Plaintext) != 32 || len(dk.Ciphertext) == 0 || len(dk.Ciphertext) > maxWrappedKey {
		return nil, fmt.Errorf("client: envelope: server sent a malformed data key: %w", ErrInternal)
	}
	gcm, err := newGCM(dk.Plaintext)
	if err != nil {
		return nil, err
	}
	out := make([]byte, 0, len(EnvelopeMagic)+binary.MaxVarintLen32+len(dk.Ciphertext)+gcm.NonceSize()+len(plaintext)+gcm.Overhead())
	out = append(out, EnvelopeMagic...)
	out = binary.AppendUvarint(out, uint64(len(dk.Ciphertext)))
	out = append(out, dk.Ciphertext...)
	header := len(out)
	out = out[:header+gcm.NonceSize()]
	if _, err := rand.Read(out[header:]); err != nil {
		return nil, fmt.Errorf("client: envelope: %w", err)
	}
	return gcm.Seal(out, out[header:], plaintext, envelopeAAD(out[:header], aad)), nil
}

// Decrypt opens an envelope made by Encrypt with the same aad. A
// malformed or altered envelope fails with ErrInvalidArgument.
func (e *Envelope) Decrypt(ctx context.Context, ciphertext, aad []byte) ([]byte, error) {
	wrapped, nonce, sealed, header, err := parseEnvelope(ciphertext)
	if err != nil {
		return nil, err
	}
	dk, err := e.t.Decrypt(ctx, e.key, wrapped)
	if err != nil {
		return nil, fmt.Errorf("client: envelope: unwrap data key: %w", err)
	}
	defer clear(dk)
	if len(dk) != 32 {
		return nil, fmt.Errorf("client: envelope: wrapped data key is not an AES-256 key: %w", ErrInvalidArgument)
	}
	gcm, err := newGCM(dk)
	if err != nil {
		return nil, err
	}
	pt, err := gcm.Open(nil, nonce, sealed, envelopeAAD(header, aad))
	if err != nil {
		return nil, fmt.Errorf("client: envelope: message does not authenticate: %w", ErrInvalidArgument)
	}
	return pt, nil
}

// parseEnvelope splits an envelope; header is everything before the nonce.
func parseEnvelope(b []byte) (wrapped, nonce, sealed, header []byte, err error) {
	bad := func(why string) error {
		return fmt.Errorf("client: envelope: %s: %w", why, ErrInvalidArgument)
	}
	rest, ok := bytes.CutPrefix(b, []byte(EnvelopeMagic))
	if !ok {
		return nil, nil, nil, nil, bad("not an envelope (no " + EnvelopeMagic + " magic)")
	}
	n, k := binary.Uvarint(rest)
	if k <= 0 || n == 0 || n > maxWrappedKey || uint64(len(rest)-k) < n {
		return nil, nil, nil, nil, bad("bad wrapped key length")
	}
	wrapped = rest[k : k+int(n)]
	header = b[:len(EnvelopeMagic)+k+int(n)]
	rest = rest[k+int(n):]
	if len(rest) < 12+16 {
		return nil, nil, nil, nil, bad("truncated")
	}
	return wrapped, rest[:12], rest[12:], header, nil
}

func envelopeAAD(header, aad []byte) []byte {
	return append(append(make([]byte, 0, len(header)+len(aad)), header...), aad...)
}

func newGCM(key []byte) (cipher.AEAD, error) {
	block, err := aes.NewCipher(key)
	if err != nil {
		return nil, fmt.Errorf("client: envelope: %w", err)
	}
	gcm, err := cipher.NewGCM(block)
	if err != nil {
		return nil, fmt.Errorf("client: envelope: %w", err)
	}
	return gcm, nil
}

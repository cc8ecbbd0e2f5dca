package transit

import (
	"errors"
	"fmt"

	"github.com/hsmgate/hsmgate/client/textform"
)

// EnvelopeV1 is the first byte of every ciphertext.
const EnvelopeV1 = textform.EnvelopeV1

// TextPrefix starts the text form of a ciphertext: hsmgate:v<N>:<base64>.
const TextPrefix = textform.Prefix

// tagSize is the authentication tag size of both AEADs (GCM and Poly1305).
const tagSize = 16

// Envelope is a parsed ciphertext: 0x01 | uvarint(version) | nonce | sealed.
// Nonce and Sealed alias the parsed input.
type Envelope struct {
	Version uint32
	Nonce   []byte
	Sealed  []byte // ciphertext || tag
}

// headerLen returns the length of 0x01 | uvarint(version).
func headerLen(version uint32) int { return textform.HeaderLen(version) }

// appendHeader appends 0x01 | uvarint(version) to dst.
func appendHeader(dst []byte, version uint32) []byte { return textform.AppendHeader(dst, version) }

// malformed turns an error of the textform package into ErrMalformed with
// the same reason.
func malformed(err error) error {
	var me *textform.MalformedError
	if errors.As(err, &me) {
		return fmt.Errorf("%w: %s", ErrMalformed, me.Reason)
	}
	return fmt.Errorf("%w: %w", ErrMalformed, err)
}

// ParseVersion returns the version named by a binary ciphertext and the
// offset after the header, checking the header strictly: the 0x01 prefix, a
// minimally encoded uvarint, a version in 1..2^32-1 (textform.ParseVersion).
func ParseVersion(b []byte) (version uint32, off int, err error) {
	version, off, err = textform.ParseVersion(b)
	if err != nil {
		return 0, 0, malformed(err)
	}
	return version, off, nil
}

// ParseEnvelope parses a binary ciphertext whose nonce is nonceSize bytes.
// The sealed part must hold at least the 16-byte tag.
func ParseEnvelope(b []byte, nonceSize int) (Envelope, error) {
	v, off, err := ParseVersion(b)
	if err != nil {
		return Envelope{}, err
	}
	rest := b[off:]
	if len(rest) < nonceSize+tagSize {
		return Envelope{}, fmt.Errorf("%w: truncated ciphertext", ErrMalformed)
	}
	return Envelope{Version: v, Nonce: rest[:nonceSize:nonceSize], Sealed: rest[nonceSize:]}, nil
}

// FormatText returns the text form hsmgate:v<N>:<base64(nonce|sealed)> of a
// binary ciphertext (textform.Format).
func FormatText(ciphertext []byte) (string, error) {
	t, err := textform.Format(ciphertext)
	if err != nil {
		return "", malformed(err)
	}
	return t, nil
}

// ParseText converts the text form back to the binary ciphertext
// (textform.Parse). It is strict: canonical decimal version without leading
// zeros, standard padded base64, no surrounding space.
func ParseText(s string) ([]byte, error) {
	b, err := textform.Parse(s)
	if err != nil {
		return nil, malformed(err)
	}
	return b, nil
}

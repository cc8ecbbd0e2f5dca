package transit

import (
	"encoding/base64"
	"encoding/binary"
	"fmt"
	"math"
	"strconv"
	"strings"
)

// EnvelopeV1 is the first byte of every ciphertext.
const EnvelopeV1 = 0x01

// TextPrefix starts the text form of a ciphertext: hsmgate:v<N>:<base64>.
const TextPrefix = "hsmgate:v"

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
func headerLen(version uint32) int {
	n := 2
	for v := version >> 7; v != 0; v >>= 7 {
		n++
	}
	return n
}

// appendHeader appends 0x01 | uvarint(version) to dst.
func appendHeader(dst []byte, version uint32) []byte {
	dst = append(dst, EnvelopeV1)
	return binary.AppendUvarint(dst, uint64(version))
}

// ParseVersion returns the version named by a binary ciphertext and the
// offset after the header, checking the header strictly: the 0x01 prefix, a
// minimally encoded uvarint, a version in 1..2^32-1.
func ParseVersion(b []byte) (version uint32, off int, err error) {
	if len(b) == 0 {
		return 0, 0, fmt.Errorf("%w: empty ciphertext", ErrMalformed)
	}
	if b[0] != EnvelopeV1 {
		return 0, 0, fmt.Errorf("%w: unknown envelope 0x%02x", ErrMalformed, b[0])
	}
	v, n := binary.Uvarint(b[1:])
	if n <= 0 {
		return 0, 0, fmt.Errorf("%w: truncated version", ErrMalformed)
	}
	if v == 0 || v > math.MaxUint32 {
		return 0, 0, fmt.Errorf("%w: version %d out of range", ErrMalformed, v)
	}
	if n != headerLen(uint32(v))-1 {
		return 0, 0, fmt.Errorf("%w: non-minimal version encoding", ErrMalformed)
	}
	return uint32(v), 1 + n, nil
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
// binary ciphertext.
func FormatText(ciphertext []byte) (string, error) {
	v, off, err := ParseVersion(ciphertext)
	if err != nil {
		return "", err
	}
	if len(ciphertext) == off {
		return "", fmt.Errorf("%w: empty body", ErrMalformed)
	}
	return TextPrefix + strconv.FormatUint(uint64(v), 10) + ":" +
		base64.StdEncoding.EncodeToString(ciphertext[off:]), nil
}

// ParseText converts the text form back to the binary ciphertext. It is
// strict: canonical decimal version without leading zeros, standard padded
// base64, no surrounding space.
func ParseText(s string) ([]byte, error) {
	rest, ok := strings.CutPrefix(s, TextPrefix)
	if !ok {
		return nil, fmt.Errorf("%w: missing %q prefix", ErrMalformed, TextPrefix)
	}
	num, body, ok := strings.Cut(rest, ":")
	if !ok || num == "" || (len(num) > 1 && num[0] == '0') {
		return nil, fmt.Errorf("%w: bad version field", ErrMalformed)
	}
	v, err := strconv.ParseUint(num, 10, 32)
	if err != nil || v == 0 {
		return nil, fmt.Errorf("%w: bad version field", ErrMalformed)
	}
	if strings.ContainsAny(body, "\r\n") { // the decoder skips them
		return nil, fmt.Errorf("%w: bad base64 body", ErrMalformed)
	}
	raw, err := base64.StdEncoding.Strict().DecodeString(body)
	if err != nil || len(raw) == 0 {
		return nil, fmt.Errorf("%w: bad base64 body", ErrMalformed)
	}
	out := make([]byte, 0, headerLen(uint32(v))+len(raw))
	out = appendHeader(out, uint32(v))
	return append(out, raw...), nil
}

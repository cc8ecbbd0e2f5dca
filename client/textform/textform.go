// Package textform reads and writes the text form of hsmgate ciphertexts,
// signatures and MACs: "hsmgate:v<N>:<base64>", where N is the key version
// in decimal and base64 is standard, padded base64.
//
// A transit ciphertext travels over gRPC as bytes,
//
//	0x01 | uvarint(version) | nonce | sealed
//
// and is shown to people (the CLI, JSON, config files) in the text form,
// whose base64 holds nonce | sealed and whose N is the version of the
// header. A signature or MAC has no header: its text form is
// FormatVersioned(version, raw).
//
// The package has no dependency outside the standard library, so anything
// (a server package, a CLI, a microservice) can import it.
package textform

import (
	"encoding/base64"
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"strconv"
	"strings"
)

// Prefix starts every text form.
const Prefix = "hsmgate:v"

// EnvelopeV1 is the first byte of every binary ciphertext.
const EnvelopeV1 = 0x01

// ErrMalformed matches (errors.Is) every error of this package: the input
// is not well formed. The error is a *MalformedError saying why.
var ErrMalformed = errors.New("textform: malformed")

// MalformedError says why an input is not well formed. Its Reason never
// quotes the input.
type MalformedError struct{ Reason string }

func (e *MalformedError) Error() string        { return "textform: malformed: " + e.Reason }
func (e *MalformedError) Is(target error) bool { return target == ErrMalformed }

func malformed(format string, a ...any) error {
	return &MalformedError{Reason: fmt.Sprintf(format, a...)}
}

// HeaderLen returns the length of the header 0x01 | uvarint(version).
func HeaderLen(version uint32) int {
	n := 2
	for v := version >> 7; v != 0; v >>= 7 {
		n++
	}
	return n
}

// AppendHeader appends the binary ciphertext header 0x01 | uvarint(version).
func AppendHeader(dst []byte, version uint32) []byte {
	dst = append(dst, EnvelopeV1)
	return binary.AppendUvarint(dst, uint64(version))
}

// ParseVersion returns the version named by a binary ciphertext and the
// offset after its header, checking the header strictly: the 0x01 prefix,
// a minimally encoded uvarint, a version in 1..2^32-1.
func ParseVersion(b []byte) (version uint32, off int, err error) {
	if len(b) == 0 {
		return 0, 0, malformed("empty ciphertext")
	}
	if b[0] != EnvelopeV1 {
		return 0, 0, malformed("unknown envelope 0x%02x", b[0])
	}
	v, n := binary.Uvarint(b[1:])
	if n <= 0 {
		return 0, 0, malformed("truncated version")
	}
	if v == 0 || v > math.MaxUint32 {
		return 0, 0, malformed("version %d out of range", v)
	}
	if n != HeaderLen(uint32(v))-1 {
		return 0, 0, malformed("non-minimal version encoding")
	}
	return uint32(v), 1 + n, nil
}

// Format returns the text form of a binary ciphertext.
func Format(ciphertext []byte) (string, error) {
	v, off, err := ParseVersion(ciphertext)
	if err != nil {
		return "", err
	}
	if len(ciphertext) == off {
		return "", malformed("empty body")
	}
	return FormatVersioned(v, ciphertext[off:]), nil
}

// Parse converts the text form of a ciphertext back to the binary one. It
// is strict: canonical decimal version without leading zeros, standard
// padded base64, no surrounding space.
func Parse(s string) ([]byte, error) {
	v, raw, err := ParseVersioned(s)
	if err != nil {
		return nil, err
	}
	out := make([]byte, 0, HeaderLen(v)+len(raw))
	out = AppendHeader(out, v)
	return append(out, raw...), nil
}

// FormatVersioned is the text form of raw bytes (a signature, a MAC, the
// body of a ciphertext) made by key version v.
func FormatVersioned(v uint32, raw []byte) string {
	return Prefix + strconv.FormatUint(uint64(v), 10) + ":" + base64.StdEncoding.EncodeToString(raw)
}

// ParseVersioned reads "hsmgate:v<N>:<base64>" into N and the decoded
// bytes, as strictly as Parse. The bytes are never empty.
func ParseVersioned(s string) (uint32, []byte, error) {
	rest, ok := strings.CutPrefix(s, Prefix)
	if !ok {
		return 0, nil, malformed("missing %q prefix", Prefix)
	}
	num, body, ok := strings.Cut(rest, ":")
	if !ok || num == "" || (len(num) > 1 && num[0] == '0') {
		return 0, nil, malformed("bad version field")
	}
	v, err := strconv.ParseUint(num, 10, 32)
	if err != nil || v == 0 {
		return 0, nil, malformed("bad version field")
	}
	if strings.ContainsAny(body, "\r\n") { // the decoder skips them
		return 0, nil, malformed("bad base64 body")
	}
	raw, err := base64.StdEncoding.Strict().DecodeString(body)
	if err != nil || len(raw) == 0 {
		return 0, nil, malformed("bad base64 body")
	}
	return uint32(v), raw, nil
}

package transit

import (
	"crypto/subtle"
	"fmt"
	"log/slog"
)

// secret holds key bytes. It copies in and out, so a caller's slice never
// aliases key material, and compares in constant time. Printing it with any
// fmt verb, or logging it with slog, shows "[redacted]", never the bytes.
type secret struct{ b []byte }

const redacted = "[redacted]"

// Format makes every fmt verb (%v, %+v, %#v, %s, %x...) print "[redacted]".
func (s secret) Format(f fmt.State, _ rune) { _, _ = f.Write([]byte(redacted)) }

// LogValue makes slog print "[redacted]".
func (s secret) LogValue() slog.Value { return slog.StringValue(redacted) }

func newSecret(b []byte) secret { return secret{b: append([]byte(nil), b...)} }

// Bytes returns a copy of the key bytes.
func (s secret) Bytes() []byte { return append([]byte(nil), s.b...) }

// Len is the key length.
func (s secret) Len() int { return len(s.b) }

// Equal compares in constant time.
func (s secret) Equal(o secret) bool { return subtle.ConstantTimeCompare(s.b, o.b) == 1 }

// view returns the bytes without a copy, for the engine's own use only.
func (s secret) view() []byte { return s.b }

// wipe overwrites a temporary buffer of key bytes.
func wipe(b []byte) { clear(b) }

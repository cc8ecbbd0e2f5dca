package bbolt

import (
	"bytes"
	"testing"
)

// FuzzEntryCodec: decoding arbitrary stored bytes never panics, and what
// encodeEntry writes decodes to the same revision and value.
func FuzzEntryCodec(f *testing.F) {
	f.Add(int64(1), []byte("v"))
	f.Add(int64(1<<40), []byte{})
	f.Add(int64(300), []byte{0x80, 0x01})
	f.Fuzz(func(t *testing.T, rev int64, value []byte) {
		_, _ = decodeEntry("k", value) // arbitrary bytes as a stored entry
		if rev <= 0 {
			return
		}
		e, err := decodeEntry("k", encodeEntry(rev, value))
		if err != nil {
			t.Fatalf("decode(encode(%d, %x)): %v", rev, value, err)
		}
		if e.Revision != rev || !bytes.Equal(e.Value, value) {
			t.Fatalf("round trip: got {%d %x}, want {%d %x}", e.Revision, e.Value, rev, value)
		}
	})
}

package transit

import (
	"bytes"
	"errors"
	"testing"

	pb "github.com/hsmgate/hsmgate/proto/hsmgate/v1"
)

func TestParseEnvelope(t *testing.T) {
	body := bytes.Repeat([]byte{0xAB}, 12+16)
	cases := []struct {
		name    string
		in      []byte
		version uint32
		ok      bool
	}{
		{"v1", append([]byte{1, 1}, body...), 1, true},
		{"v300", append([]byte{1, 0xAC, 0x02}, body...), 300, true},
		{"max", append([]byte{1, 0xFF, 0xFF, 0xFF, 0xFF, 0x0F}, body...), 1<<32 - 1, true},
		{"empty", nil, 0, false},
		{"wrong prefix", append([]byte{2, 1}, body...), 0, false},
		{"version 0", append([]byte{1, 0}, body...), 0, false},
		{"non-minimal", append([]byte{1, 0x81, 0x00}, body...), 0, false},
		{"over 2^32", append([]byte{1, 0x80, 0x80, 0x80, 0x80, 0x10}, body...), 0, false},
		{"truncated varint", []byte{1, 0x80}, 0, false},
		{"short body", append([]byte{1, 1}, body[:27]...), 0, false},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			env, err := ParseEnvelope(c.in, 12)
			if c.ok != (err == nil) {
				t.Fatalf("err = %v, want ok=%v", err, c.ok)
			}
			if err != nil {
				if !errors.Is(err, ErrMalformed) {
					t.Fatalf("err = %v, want ErrMalformed", err)
				}
				return
			}
			if env.Version != c.version || len(env.Nonce) != 12 || len(env.Sealed) != 16 {
				t.Fatalf("got v%d nonce %d sealed %d, want v%d 12 16", env.Version, len(env.Nonce), len(env.Sealed), c.version)
			}
		})
	}
}

func TestTextForm(t *testing.T) {
	ct := append([]byte{1, 0xAC, 0x02}, bytes.Repeat([]byte{0xAB}, 28)...)
	s, err := FormatText(ct)
	if err != nil {
		t.Fatal(err)
	}
	if want := "hsmgate:v300:"; s[:len(want)] != want {
		t.Fatalf("FormatText = %q, want prefix %q", s, want)
	}
	back, err := ParseText(s)
	if err != nil || !bytes.Equal(back, ct) {
		t.Fatalf("ParseText = %x, %v; want %x", back, err, ct)
	}
	for _, bad := range []string{"", "vault:v1:AAAA", "hsmgate:v0:AAAA", "hsmgate:v01:AAAA", "hsmgate:v1:", "hsmgate:v1:AA=A", "hsmgate:vx:AAAA", "hsmgate:v1", "hsmgate:v4294967296:AAAA", " hsmgate:v1:AAAA"} {
		if _, err := ParseText(bad); !errors.Is(err, ErrMalformed) {
			t.Errorf("ParseText(%q): err = %v, want ErrMalformed", bad, err)
		}
	}
}

func FuzzParseEnvelope(f *testing.F) {
	f.Add([]byte{1, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0})
	f.Add([]byte{1, 0x81, 0x00})
	f.Add([]byte{1, 0xFF, 0xFF, 0xFF, 0xFF, 0x0F, 9})
	f.Fuzz(func(t *testing.T, b []byte) {
		for _, ns := range []int{12, 24} {
			env, err := ParseEnvelope(b, ns)
			if err != nil {
				if !errors.Is(err, ErrMalformed) {
					t.Fatalf("error %v is not ErrMalformed", err)
				}
				continue
			}
			// A parsed envelope re-encodes to exactly its input.
			re := appendHeader(nil, env.Version)
			re = append(append(re, env.Nonce...), env.Sealed...)
			if !bytes.Equal(re, b) {
				t.Fatalf("re-encoded %x, input %x", re, b)
			}
			s, err := FormatText(b)
			if err != nil {
				t.Fatal(err)
			}
			back, err := ParseText(s)
			if err != nil || !bytes.Equal(back, b) {
				t.Fatalf("text round trip: %x, %v", back, err)
			}
		}
	})
}

// FuzzParseText: the text parser never panics, and whatever it accepts is
// canonical: formatting the result gives back the input.
func FuzzParseText(f *testing.F) {
	f.Add("hsmgate:v1:AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA==")
	f.Add("hsmgate:v300:qw==")
	f.Add("hsmgate:v01:AA==")
	f.Fuzz(func(t *testing.T, s string) {
		b, err := ParseText(s)
		if err != nil {
			if !errors.Is(err, ErrMalformed) {
				t.Fatalf("error %v is not ErrMalformed", err)
			}
			return
		}
		back, err := FormatText(b)
		if err != nil || back != s {
			t.Fatalf("ParseText(%q) then FormatText = %q, %v", s, back, err)
		}
	})
}

func TestParseNames(t *testing.T) {
	for _, n := range KeyTypeNames() {
		if KeyTypeName(ParseKeyType(n)) != n {
			t.Errorf("ParseKeyType(%q) does not round trip", n)
		}
	}
	if len(KeyTypeNames()) != 10 {
		t.Errorf("KeyTypeNames = %v, want 10 names", KeyTypeNames())
	}
	if ParseResidency("hsm") != inHSM || ParseHashAlgorithm("sha2-384") != pb.TransitHashAlgorithm_TRANSIT_HASH_ALGORITHM_SHA2_384 ||
		ParseSignatureAlgorithm("pkcs1v15") != pb.TransitSignatureAlgorithm_TRANSIT_SIGNATURE_ALGORITHM_PKCS1V15 {
		t.Error("Parse* helpers")
	}
}

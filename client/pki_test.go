package client

import (
	"crypto/sha256"
	"errors"
	"hash"
	"testing"
)

func newSHA256() hash.Hash { return sha256.New() }

func TestParseRevocationReason(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want RevocationReason
	}{
		{"keyCompromise", ReasonKeyCompromise},
		{"key-compromise", ReasonKeyCompromise},
		{"KEY_COMPROMISE", ReasonKeyCompromise},
		{"superseded", ReasonSuperseded},
		{"cACompromise", ReasonCACompromise},
		{"ca-compromise", ReasonCACompromise},
		{"privilegeWithdrawn", ReasonPrivilegeWithdrawn},
		{"1", ReasonKeyCompromise},
		{"0", ReasonUnspecified},
	} {
		got, err := ParseRevocationReason(tc.in)
		if err != nil || got != tc.want {
			t.Errorf("ParseRevocationReason(%q): got %v, %v; want %v", tc.in, got, err, tc.want)
		}
		if back, err := ParseRevocationReason(got.String()); err != nil || back != got {
			t.Errorf("ParseRevocationReason(%q.String()): got %v, %v", got, back, err)
		}
	}
	for _, bad := range []string{"", "7", "-1", "compromised", "11"} {
		if _, err := ParseRevocationReason(bad); !errors.Is(err, ErrInvalidArgument) {
			t.Errorf("ParseRevocationReason(%q): got %v, want ErrInvalidArgument", bad, err)
		}
	}
}

func TestSplitSANs(t *testing.T) {
	dns, ips, uris, err := SplitSANs([]string{"a.example.com", "10.0.0.1", "::1", "spiffe://cluster/ns/x", "localhost"})
	if err != nil {
		t.Fatal(err)
	}
	if len(dns) != 2 || dns[0] != "a.example.com" || dns[1] != "localhost" {
		t.Errorf("dns: got %v", dns)
	}
	if len(ips) != 2 || ips[0].String() != "10.0.0.1" || ips[1].String() != "::1" {
		t.Errorf("ips: got %v", ips)
	}
	if len(uris) != 1 || uris[0].String() != "spiffe://cluster/ns/x" {
		t.Errorf("uris: got %v", uris)
	}
}

func TestParseEnvelope(t *testing.T) {
	wrapped := []byte{1, 1, 9, 9, 9}
	good := append(append(append([]byte(EnvelopeMagic), byte(len(wrapped))), wrapped...), make([]byte, 12+16)...)
	if w, n, s, h, err := parseEnvelope(good); err != nil || string(w) != string(wrapped) || len(n) != 12 || len(s) != 16 || len(h) != 4+1+5 {
		t.Fatalf("parseEnvelope(good): got %x %d %d %d %v", w, len(n), len(s), len(h), err)
	}
	for name, b := range map[string][]byte{
		"empty":          nil,
		"no magic":       []byte("HGE2\x05"),
		"zero length":    append([]byte(EnvelopeMagic), 0),
		"length too big": append([]byte(EnvelopeMagic), 0x81, 0x08),
		"truncated key":  append([]byte(EnvelopeMagic), 9, 1, 2),
		"no tag":         append(append([]byte(EnvelopeMagic), byte(len(wrapped))), wrapped...),
	} {
		if _, _, _, _, err := parseEnvelope(b); !errors.Is(err, ErrInvalidArgument) {
			t.Errorf("%s: got %v, want ErrInvalidArgument", name, err)
		}
	}
}

// FuzzParseEnvelope: no input panics; parts of an accepted envelope lie
// within it.
func FuzzParseEnvelope(f *testing.F) {
	f.Add(append(append([]byte(EnvelopeMagic), 2, 1, 1), make([]byte, 28)...))
	f.Add([]byte(EnvelopeMagic + "\xff\xff\xff\xff\x0f"))
	f.Fuzz(func(t *testing.T, b []byte) {
		w, n, s, h, err := parseEnvelope(b)
		if err != nil {
			return
		}
		if len(h)+len(n)+len(s) != len(b) || len(w) == 0 || len(w) > maxWrappedKey {
			t.Fatalf("parts %d+%d+%d of %d bytes, wrapped %d", len(h), len(n), len(s), len(b), len(w))
		}
	})
}

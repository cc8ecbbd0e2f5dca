package textform

import (
	"bytes"
	"errors"
	"testing"
)

func TestRoundTrip(t *testing.T) {
	for _, tc := range []struct {
		name    string
		version uint32
		body    []byte
		text    string
	}{
		{"v1", 1, []byte{0xde, 0xad, 0xbe, 0xef}, "hsmgate:v1:3q2+7w=="},
		{"v127", 127, []byte("x"), "hsmgate:v127:eA=="},
		{"v128 two-byte varint", 128, []byte("xy"), "hsmgate:v128:eHk="},
		{"max", 4294967295, []byte("z"), "hsmgate:v4294967295:eg=="},
	} {
		t.Run(tc.name, func(t *testing.T) {
			bin := append(AppendHeader(nil, tc.version), tc.body...)
			if got := len(bin) - len(tc.body); got != HeaderLen(tc.version) {
				t.Errorf("HeaderLen: got %d, want %d", HeaderLen(tc.version), got)
			}
			text, err := Format(bin)
			if err != nil || text != tc.text {
				t.Fatalf("Format: got %q, %v; want %q", text, err, tc.text)
			}
			back, err := Parse(text)
			if err != nil || !bytes.Equal(back, bin) {
				t.Fatalf("Parse: got %x, %v; want %x", back, err, bin)
			}
			v, raw, err := ParseVersioned(text)
			if err != nil || v != tc.version || !bytes.Equal(raw, tc.body) {
				t.Errorf("ParseVersioned: got %d %x %v; want %d %x", v, raw, err, tc.version, tc.body)
			}
			if got := FormatVersioned(tc.version, tc.body); got != tc.text {
				t.Errorf("FormatVersioned: got %q, want %q", got, tc.text)
			}
		})
	}
}

func TestMalformed(t *testing.T) {
	for _, s := range []string{
		"", "hsmgate:v", "hsmgate:v1", "hsmgate:v1:", "hsmgate:v0:eA==", "hsmgate:v01:eA==",
		"hsmgate:v4294967296:eA==", "hsmgate:v-1:eA==", "hsmgate:v1:eA", "hsmgate:v1:eA==\n",
		"hsmgate:v1:e\nA==", " hsmgate:v1:eA==", "vault:v1:eA==", "hsmgate:v1:!!!!",
	} {
		if _, err := Parse(s); !errors.Is(err, ErrMalformed) {
			t.Errorf("Parse(%q): got %v, want ErrMalformed", s, err)
		}
	}
	for _, b := range [][]byte{nil, {0x02, 1, 0}, {0x01}, {0x01, 0}, {0x01, 0x80, 0x00, 9}, {0x01, 1}} {
		if _, err := Format(b); !errors.Is(err, ErrMalformed) {
			t.Errorf("Format(%x): got %v, want ErrMalformed", b, err)
		}
	}
	var me *MalformedError
	if _, err := Parse("nope"); !errors.As(err, &me) || me.Reason == "" {
		t.Errorf("Parse(nope): got %v, want a *MalformedError with a reason", err)
	}
}

// FuzzParse: whatever Parse accepts, Format gives back unchanged.
func FuzzParse(f *testing.F) {
	for _, s := range []string{"hsmgate:v1:3q2+7w==", "hsmgate:v128:eHk=", "hsmgate:v0:eA==", "hsmgate:v1:eA"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		b, err := Parse(s)
		if err != nil {
			return
		}
		back, err := Format(b)
		if err != nil || back != s {
			t.Fatalf("Format(Parse(%q)): got %q, %v", s, back, err)
		}
	})
}

package kwp

import (
	"bytes"
	"encoding/hex"
	"errors"
	"testing"
)

func unhex(t *testing.T, s string) []byte {
	t.Helper()
	b, err := hex.DecodeString(s)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// RFC 5649 section 6 test vectors.
func TestRFC5649Vectors(t *testing.T) {
	kek := "5840df6e29b02af1ab493b705bf16ea1ae8338f4dcc176a8"
	cases := []struct{ name, key, wrapped string }{
		{"20 bytes", "c37b7e6492584340bed12207808941155068f738", "138bdeaa9b8fa7fc61f97742e72248ee5ae6ae5360d1ae6a5f54f373fa543b6a"},
		{"7 bytes", "466f7250617369", "afbeb0f07dfbf5419200f2ccb50bb24f"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			got, err := Wrap(unhex(t, kek), unhex(t, c.key))
			if err != nil {
				t.Fatal(err)
			}
			if want := unhex(t, c.wrapped); !bytes.Equal(got, want) {
				t.Fatalf("Wrap = %x, want %x", got, want)
			}
			pt, err := Unwrap(unhex(t, kek), got)
			if err != nil {
				t.Fatal(err)
			}
			if want := unhex(t, c.key); !bytes.Equal(pt, want) {
				t.Fatalf("Unwrap = %x, want %x", pt, want)
			}
		})
	}
}

func TestRoundTripAndTamper(t *testing.T) {
	kek := bytes.Repeat([]byte{7}, 32)
	for n := 1; n <= 70; n++ {
		pt := bytes.Repeat([]byte{byte(n)}, n)
		w, err := Wrap(kek, pt)
		if err != nil {
			t.Fatal(err)
		}
		got, err := Unwrap(kek, w)
		if err != nil || !bytes.Equal(got, pt) {
			t.Fatalf("n=%d: round trip got %x, %v", n, got, err)
		}
		for i := range w {
			w2 := bytes.Clone(w)
			w2[i] ^= 1
			if _, err := Unwrap(kek, w2); !errors.Is(err, ErrInvalid) {
				t.Fatalf("n=%d: flipped byte %d: got err %v, want ErrInvalid", n, i, err)
			}
		}
	}
	for _, bad := range [][]byte{nil, make([]byte, 8), make([]byte, 17), make([]byte, 24)} {
		if _, err := Unwrap(kek, bad); !errors.Is(err, ErrInvalid) {
			t.Errorf("Unwrap(%d bytes): got %v, want ErrInvalid", len(bad), err)
		}
	}
	if _, err := Wrap(kek, nil); err == nil {
		t.Error("Wrap(empty): got nil error")
	}
}

// FuzzUnwrap: Unwrap never panics, and KWP being deterministic, whatever
// it accepts wraps back to exactly its input.
func FuzzUnwrap(f *testing.F) {
	kek := bytes.Repeat([]byte{7}, 32)
	w, _ := Wrap(kek, []byte("seed material"))
	f.Add(w)
	f.Add(make([]byte, 16))
	f.Fuzz(func(t *testing.T, c []byte) {
		pt, err := Unwrap(kek, c)
		if err != nil {
			return
		}
		back, err := Wrap(kek, pt)
		if err != nil || !bytes.Equal(back, c) {
			t.Fatalf("Wrap(Unwrap(%x)) = %x, %v", c, back, err)
		}
	})
}

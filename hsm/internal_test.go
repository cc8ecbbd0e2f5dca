package hsm

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"errors"
	"math/big"
	"testing"
	"time"
)

func FuzzUnpad8(f *testing.F) {
	f.Add([]byte{})
	f.Add([]byte("key material"))
	f.Add(bytes.Repeat([]byte{0}, 9))
	f.Fuzz(func(t *testing.T, b []byte) {
		got, err := unpad8(pad8(b))
		if err != nil || !bytes.Equal(got, b) {
			t.Fatalf("unpad8(pad8(%x)): got %x, %v; want %x", b, got, err, b)
		}
		if len(pad8(b))%8 != 0 {
			t.Fatalf("pad8: got %d bytes, want a multiple of 8", len(pad8(b)))
		}
		_, _ = unpad8(b) // arbitrary input must not panic
	})
}

func TestUnpad8(t *testing.T) {
	for name, in := range map[string][]byte{
		"empty":             nil,
		"zeros":             make([]byte, 16),
		"no marker":         []byte("abcdefgh"),
		"marker not at end": {0x80, 1, 0, 0, 0, 0, 0, 0},
	} {
		t.Run(name, func(t *testing.T) {
			if _, err := unpad8(in); err == nil {
				t.Fatalf("unpad8(%x): got nil error, want ErrInvalidInput", in)
			}
		})
	}
	t.Run("extra zeros a token left", func(t *testing.T) {
		got, err := unpad8(append(pad8([]byte("abc")), make([]byte, 8)...))
		if err != nil || string(got) != "abc" {
			t.Fatalf("got %q, %v; want \"abc\"", got, err)
		}
	})
}

func TestECDSADER(t *testing.T) {
	for _, c := range []elliptic.Curve{elliptic.P256(), elliptic.P384()} {
		t.Run(c.Params().Name, func(t *testing.T) {
			k, err := ecdsa.GenerateKey(c, rand.Reader)
			if err != nil {
				t.Fatal(err)
			}
			d := sha256.Sum256([]byte("m"))
			r, s, err := ecdsa.Sign(rand.Reader, k, d[:])
			if err != nil {
				t.Fatal(err)
			}
			size := (c.Params().BitSize + 7) / 8
			raw := append(r.FillBytes(make([]byte, size)), s.FillBytes(make([]byte, size))...)
			der, err := ecdsaDER(raw)
			if err != nil {
				t.Fatal(err)
			}
			if !ecdsa.VerifyASN1(&k.PublicKey, d[:], der) {
				t.Fatalf("VerifyASN1 of converted signature: got false, want true")
			}
		})
	}
	t.Run("small r", func(t *testing.T) {
		raw := append(make([]byte, 32), big.NewInt(5).FillBytes(make([]byte, 32))...)
		raw[31] = 1
		der, err := ecdsaDER(raw)
		if err != nil || !bytes.Equal(der, []byte{0x30, 6, 2, 1, 1, 2, 1, 5}) {
			t.Fatalf("got %x, %v; want 3006020101020105", der, err)
		}
	})
	t.Run("odd length", func(t *testing.T) {
		if _, err := ecdsaDER(make([]byte, 63)); err == nil {
			t.Fatal("got nil error, want one")
		}
	})
}

func TestBackoffDelay(t *testing.T) {
	b := &backoff{base: 50 * time.Millisecond, max: 5 * time.Second}
	for n := 1; n <= 70; n++ {
		d := b.max
		if n <= 7 {
			d = b.base << (n - 1)
		}
		for range 20 {
			if got := b.delay(n); got < d/2 || got > d {
				t.Fatalf("delay after %d failures: got %v, want within [%v, %v]", n, got, d/2, d)
			}
		}
	}
}

func TestBackoffWait(t *testing.T) {
	b := &backoff{base: time.Hour, max: time.Hour}
	if err := b.wait(context.Background()); err != nil {
		t.Fatalf("wait while healthy: got %v, want nil", err)
	}
	b.fail()
	c, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := b.wait(c); !errors.Is(err, ErrUnavailable) {
		t.Fatalf("wait with a deadline before the attempt is due: got %v, want ErrUnavailable", err)
	}
	c2, cancel2 := context.WithCancel(context.Background())
	cancel2()
	if err := b.wait(c2); !errors.Is(err, ErrUnavailable) || !errors.Is(err, context.Canceled) {
		t.Fatalf("wait with a cancelled ctx: got %v, want ErrUnavailable and Canceled", err)
	}
	if !b.ok() || b.failing() {
		t.Fatalf("ok after a failure: want recovered and not failing")
	}
	if err := b.wait(c); err != nil {
		t.Fatalf("wait after ok: got %v, want nil", err)
	}
}

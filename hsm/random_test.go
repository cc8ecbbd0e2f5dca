package hsm_test

import (
	"bytes"
	"context"
	"errors"
	"io"
	"testing"

	"github.com/hsmgate/hsmgate/hsm"
	"github.com/hsmgate/hsmgate/hsm/hsmtest"
)

func TestRandom(t *testing.T) {
	m := hsmtest.Module(t)
	for _, n := range []int{0, 1, 32, 4096} {
		b, err := m.Random(ctx, n)
		if err != nil || len(b) != n {
			t.Fatalf("Random(%d): got %d bytes, %v; want %d", n, len(b), err, n)
		}
	}
	t.Run("differs", func(t *testing.T) {
		a, _ := m.Random(ctx, 32)
		b, _ := m.Random(ctx, 32)
		if bytes.Equal(a, b) {
			t.Fatalf("two Random(32): got equal outputs %x", a)
		}
	})
	t.Run("bad lengths", func(t *testing.T) {
		for _, n := range []int{-1, hsm.MaxRandom + 1} {
			if _, err := m.Random(ctx, n); !errors.Is(err, hsm.ErrInvalidInput) {
				t.Errorf("Random(%d): got %v, want ErrInvalidInput", n, err)
			}
		}
	})
	t.Run("Rand reader", func(t *testing.T) {
		buf := make([]byte, 200<<10)
		if _, err := io.ReadFull(m.Rand(), buf); err != nil {
			t.Fatal(err)
		}
		if bytes.Equal(buf[:64], make([]byte, 64)) || bytes.Equal(buf[len(buf)-64:], make([]byte, 64)) {
			t.Fatalf("Rand: got zeros")
		}
	})
	t.Run("canceled context", func(t *testing.T) {
		c, cancel := context.WithCancel(ctx)
		cancel()
		if _, err := m.Random(c, 8); !errors.Is(err, context.Canceled) {
			t.Fatalf("Random with a canceled context: got %v, want context.Canceled", err)
		}
	})
}

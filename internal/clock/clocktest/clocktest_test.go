package clocktest

import (
	"sync"
	"testing"
	"time"
)

func TestFake(t *testing.T) {
	start := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	f := New(start)
	t.Run("stands still", func(t *testing.T) {
		if got := f.Now(); !got.Equal(start) {
			t.Errorf("got %v, want %v", got, start)
		}
	})
	t.Run("advance", func(t *testing.T) {
		f.Advance(90 * time.Minute)
		f.Advance(-30 * time.Minute)
		if got, want := f.Now(), start.Add(time.Hour); !got.Equal(want) {
			t.Errorf("got %v, want %v", got, want)
		}
	})
	t.Run("set", func(t *testing.T) {
		f.Set(start)
		if got := f.Now(); !got.Equal(start) {
			t.Errorf("got %v, want %v", got, start)
		}
	})
	t.Run("concurrent", func(t *testing.T) {
		f.Set(start)
		var wg sync.WaitGroup
		for range 8 {
			wg.Go(func() { f.Advance(time.Second); _ = f.Now() })
		}
		wg.Wait()
		if got, want := f.Now(), start.Add(8*time.Second); !got.Equal(want) {
			t.Errorf("got %v, want %v", got, want)
		}
	})
}

package storetest

import (
	"context"
	"fmt"
	"testing"

	"github.com/hsmgate/hsmgate/keystore"
)

// Bench runs the same Put/Get benchmarks against any store: Put
// (unconditional, 256-byte values, 1000 keys), PutCAS (read revision then
// compare-and-swap on one key), Get, GetParallel, and List of 100 entries.
// newStore is called once per sub-benchmark.
func Bench(b *testing.B, newStore func(b *testing.B) keystore.Store) {
	ctx := context.Background()
	val := make([]byte, 256)
	keys := make([]string, 1000)
	for i := range keys {
		keys[i] = fmt.Sprintf("bench/key/%04d", i)
	}
	fill := func(b *testing.B, s keystore.Store, n int) {
		b.Helper()
		for _, k := range keys[:n] {
			if _, err := s.Put(ctx, k, val, keystore.AnyRevision); err != nil {
				b.Fatalf("Put: %v", err)
			}
		}
	}
	b.Run("Put", func(b *testing.B) {
		s := newStore(b)
		b.SetBytes(int64(len(val)))
		b.ResetTimer()
		for i := 0; b.Loop(); i++ {
			if _, err := s.Put(ctx, keys[i%len(keys)], val, keystore.AnyRevision); err != nil {
				b.Fatalf("Put: %v", err)
			}
		}
	})
	b.Run("PutCAS", func(b *testing.B) {
		s := newStore(b)
		rev, err := s.Put(ctx, keys[0], val, keystore.MustNotExist)
		if err != nil {
			b.Fatalf("Put: %v", err)
		}
		b.ResetTimer()
		for b.Loop() {
			if rev, err = s.Put(ctx, keys[0], val, rev); err != nil {
				b.Fatalf("Put: %v", err)
			}
		}
	})
	b.Run("Get", func(b *testing.B) {
		s := newStore(b)
		fill(b, s, len(keys))
		b.SetBytes(int64(len(val)))
		b.ResetTimer()
		for i := 0; b.Loop(); i++ {
			if _, err := s.Get(ctx, keys[i%len(keys)]); err != nil {
				b.Fatalf("Get: %v", err)
			}
		}
	})
	b.Run("GetParallel", func(b *testing.B) {
		s := newStore(b)
		fill(b, s, len(keys))
		b.SetBytes(int64(len(val)))
		b.ResetTimer()
		b.RunParallel(func(pb *testing.PB) {
			for i := 0; pb.Next(); i++ {
				if _, err := s.Get(ctx, keys[i%len(keys)]); err != nil {
					b.Errorf("Get: %v", err)
					return
				}
			}
		})
	})
	b.Run("List100", func(b *testing.B) {
		s := newStore(b)
		fill(b, s, 100)
		b.ResetTimer()
		for b.Loop() {
			es, err := s.List(ctx, "bench/key/")
			if err != nil || len(es) != 100 {
				b.Fatalf("List: %d entries, %v", len(es), err)
			}
		}
	})
}

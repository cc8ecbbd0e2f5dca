package bbolt_test

import (
	"context"
	"fmt"
	"path/filepath"
	"sync/atomic"
	"testing"

	"github.com/hsmgate/hsmgate/keystore"
	"github.com/hsmgate/hsmgate/keystore/bbolt"
	"github.com/hsmgate/hsmgate/keystore/storetest"
)

func BenchmarkStore(b *testing.B) {
	for _, nosync := range []bool{false, true} {
		name := "fsync"
		if nosync {
			name = "nosync"
		}
		b.Run(name, func(b *testing.B) {
			storetest.Bench(b, func(b *testing.B) keystore.Store {
				return open(b, filepath.Join(b.TempDir(), "store.db"), bbolt.Options{NoSync: nosync})
			})
		})
	}
}

// BenchmarkPutParallel: concurrent Puts of distinct keys with fsync, the
// pattern of concurrent issuance (one certificate record per request); they
// share commits.
func BenchmarkPutParallel(b *testing.B) {
	for _, p := range []int{1, 8, 32} {
		b.Run(fmt.Sprintf("goroutines=%dxGOMAXPROCS", p), func(b *testing.B) {
			s := open(b, filepath.Join(b.TempDir(), "store.db"), bbolt.Options{})
			var n atomic.Int64
			b.SetParallelism(p)
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					if _, err := s.Put(context.Background(), fmt.Sprintf("k/%d", n.Add(1)), make([]byte, 600), keystore.MustNotExist); err != nil {
						b.Error(err)
						return
					}
				}
			})
		})
	}
}

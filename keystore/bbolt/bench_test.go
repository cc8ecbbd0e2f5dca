package bbolt_test

import (
	"path/filepath"
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

package bbolt

import (
	"path/filepath"
	"testing"

	bolt "go.etcd.io/bbolt"
)

// TestBoltOptions: the store runs bbolt with the options the package doc
// chooses, and never trades away the fsync of a commit for them.
func TestBoltOptions(t *testing.T) {
	for _, c := range []struct {
		name   string
		opts   Options
		noSync bool
	}{
		{"default", Options{}, false},
		{"NoSync for tests", Options{NoSync: true}, true},
	} {
		t.Run(c.name, func(t *testing.T) {
			s, err := Open(filepath.Join(t.TempDir(), "store.db"), c.opts)
			if err != nil {
				t.Fatal(err)
			}
			defer s.Close()
			db := s.db
			if db.NoSync != c.noSync || db.NoGrowSync {
				t.Errorf("NoSync %v, NoGrowSync %v; want %v and false (each commit and each growth of the file fsynced)", db.NoSync, db.NoGrowSync, c.noSync)
			}
			if !db.NoFreelistSync || db.FreelistType != bolt.FreelistMapType {
				t.Errorf("NoFreelistSync %v, FreelistType %q; want true and %q", db.NoFreelistSync, db.FreelistType, bolt.FreelistMapType)
			}
		})
	}
}

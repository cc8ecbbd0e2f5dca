package etcd

// ActiveWatches returns the number of watch goroutines still running.
func ActiveWatches(s *Store) int64 { return s.watches.Load() }

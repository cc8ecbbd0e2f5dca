package bbolt

import bolt "go.etcd.io/bbolt"

// WithBoltOptions returns o with f applied to the bbolt options Open uses.
func WithBoltOptions(o Options, f func(*bolt.Options)) Options {
	o.tune = f
	return o
}
